# Sourced by the benchmark scripts (from the repository root): the harness and Python to
# use, and the comparison settings of the CI regression benchmark, so that ci_bench.sh and
# false_alarms.sh judge alike. Why these values: ci_bench.sh's header.
HARNESS=${HARNESS:-$( [ -x .venv/bin/harness ] && echo .venv/bin/harness || echo harness )}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
REFERENCE=${SIPSTATE_BENCH_REFERENCE:-shm}
THRESHOLD=${SIPSTATE_BENCH_THRESHOLD:-35}
CI_COMPARE_ARGS=(--reference "$REFERENCE" --threshold "$THRESHOLD"
                 --metric cpu_us_per_call --metric lost_dialogs --metric throughput_cps)
