"""The load generators of `harness load`: the built-in open/closed-loop SIP generator
(config, engine, pool, messages, recorder, procs, result) and the SIPp driver (sipp).
``python -m harness.loadgen.bench`` compares the two."""
