"""sipstate harness: the pre-fork SIP server, load generator, runner, results and reports."""
__version__ = "0.1.0"
