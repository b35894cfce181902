#!/usr/bin/env bash
# CI regression benchmark: run scenarios/ci_smoke.yaml, then judge it against the
# checked-in baseline (benchmarks/baseline/) with `harness compare`.
#
#   benchmarks/ci_bench.sh [OUT_DIR]
#
# Exit status is harness compare's: 0 clean, 1 regression, 2 invalid input (a run
# failed or its generator saturated, on either side; the message names the runs).
#
# Why these settings (measured on the shared 2-core machine, see benchmarks/README.md):
# - --reference: every metric is divided by the same repeat's run of the reference
#   backend, so machine-wide drift (other jobs, CPU frequency) cancels out.
# - thresholds are wide enough for 3 repeats on a noisy host; the CI catches large
#   changes (a backend 40% slower, a dialog lost), not 5% drifts.
# - `local` loses dialogs by design (it is the unshared control) and how many depends on
#   which worker the kernel hands each connection: its count is random, so it is shown
#   but not judged; every shared backend is judged on the strict "any increase" rule.
# Environment overrides: HARNESS (command), SIPSTATE_BENCH_REFERENCE,
# SIPSTATE_BENCH_THRESHOLD, SIPSTATE_BENCH_EXPORT_DIR (also write
# github-action-benchmark.json and bencher.json there).
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS=${HARNESS:-$( [ -x .venv/bin/harness ] && echo .venv/bin/harness || echo harness )}
OUT=${1:-$(mktemp -d "${TMPDIR:-/tmp}/sipstate-ci-bench.XXXXXX")}
REFERENCE=${SIPSTATE_BENCH_REFERENCE:-shm}
THRESHOLD=${SIPSTATE_BENCH_THRESHOLD:-30}

set +e
"$HARNESS" run scenarios/ci_smoke.yaml --output "$OUT"
run_status=$?
set -e
if [ "$run_status" -ne 0 ] && [ "$run_status" -ne 1 ]; then
    echo "ci_bench: harness run exited $run_status" >&2
    exit "$run_status"
fi
# (exit 1 = some run failed: harness compare below names it and exits 2)

ARGS=(benchmarks/baseline "$OUT/latest" --reference "$REFERENCE" --threshold "$THRESHOLD"
      --metric throughput_cps --metric cpu_us_per_call --metric lost_dialogs
      --ignore local:lost_dialogs)

if [ -n "${SIPSTATE_BENCH_EXPORT_DIR:-}" ]; then
    mkdir -p "$SIPSTATE_BENCH_EXPORT_DIR"
    for fmt in github-action-benchmark bencher; do
        "$HARNESS" compare "${ARGS[@]}" --format "$fmt" \
            --output "$SIPSTATE_BENCH_EXPORT_DIR/$fmt.json" >/dev/null || true
    done
fi
exec "$HARNESS" compare "${ARGS[@]}"
