# The comparison settings of the CI regression benchmark, sourced by ci_bench.sh and
# false_alarms.sh so that both judge alike. Why these values: ci_bench.sh's header.
REFERENCE=${SIPSTATE_BENCH_REFERENCE:-shm}
THRESHOLD=${SIPSTATE_BENCH_THRESHOLD:-35}
CI_COMPARE_ARGS=(--reference "$REFERENCE" --threshold "$THRESHOLD"
                 --metric cpu_us_per_call --metric lost_dialogs --metric throughput_cps)
