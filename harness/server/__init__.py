"""`harness serve`: the pre-fork SIP server under test.

config.py  the frozen ServerConfig (built by cli.py from the command line)
master.py  the arbiter: binds, prepares the Store, forks and supervises workers
worker.py  one asyncio (uvloop) loop per worker: connections, framing, heartbeat
uas.py     the SIP behaviour (UAS + registrar) on the Store; registrar.py its helpers
bench.py   `python -m harness.server.bench`: CPU per call versus SIPp's own UAS
"""
