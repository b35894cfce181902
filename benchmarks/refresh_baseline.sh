#!/usr/bin/env bash
# Refresh benchmarks/baseline/ with ci_smoke runs from this machine, pooled.
#
#   benchmarks/refresh_baseline.sh                 # run ci_smoke N times (SIPSTATE_BASELINE_RUNS,
#                                                  # default 4: 12 repeats, ~5 min), pool them
#   benchmarks/refresh_baseline.sh RUN [RUN ...]   # pool existing run folders instead
#
# Several sittings, pooled (harness/pool.py): a baseline from one sitting carries that
# sitting's machine state, and CI then flags runs that are fine (measured: 1 false alarm
# in 10 against a one-sitting baseline, see benchmarks/README.md).
# Refuses runs with failed runs or a saturated generator (harness compare would reject
# such a baseline with exit 2). Review `git diff --stat benchmarks/baseline` and commit
# the folder together with the change that explains the new figures.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/ci_settings.sh
BASELINE=benchmarks/baseline

RUNS=()
if [ $# -ge 1 ]; then
    RUNS=("$@")
else
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/sipstate-baseline.XXXXXX")
    for i in $(seq 1 "${SIPSTATE_BASELINE_RUNS:-4}"); do
        "$HARNESS" run scenarios/ci_smoke.yaml --output "$OUT/run$i"
        RUNS+=("$OUT/run$i/latest")
    done
fi
for run in "${RUNS[@]}"; do
    [ -f "$run/runs.csv" ] || { echo "refresh_baseline: $run: no runs.csv (not a run folder)" >&2; exit 2; }
    # Self-comparison doubles as validation: exit 2 names failed or saturated runs.
    "$HARNESS" compare "$run" "$run" >/dev/null
done

rm -rf "$BASELINE.new"
"$PYTHON" -m harness.pool "$BASELINE.new" "${RUNS[@]}"
rm -rf "$BASELINE"
mv "$BASELINE.new" "$BASELINE"
echo "refresh_baseline: $BASELINE now holds $(($(wc -l < "$BASELINE/runs.csv") - 1)) runs from ${#RUNS[@]} sitting(s)"
