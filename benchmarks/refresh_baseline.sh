#!/usr/bin/env bash
# Refresh benchmarks/baseline/ from a fresh run of scenarios/ci_smoke.yaml on this machine.
#
#   benchmarks/refresh_baseline.sh            # run ci_smoke, replace the baseline, self-check
#   benchmarks/refresh_baseline.sh RUN_DIR    # adopt an existing run folder instead
#
# Refuse to adopt a run with failed runs or a saturated generator (harness compare would
# reject such a baseline with exit 2). Review `git diff --stat benchmarks/baseline` and
# commit the folder together with the change that explains the new figures.
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS=${HARNESS:-$( [ -x .venv/bin/harness ] && echo .venv/bin/harness || echo harness )}
BASELINE=benchmarks/baseline

if [ $# -ge 1 ]; then
    RUN=$1
else
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/sipstate-baseline.XXXXXX")
    "$HARNESS" run scenarios/ci_smoke.yaml --output "$OUT"
    RUN=$OUT/latest
fi
RUN=$(cd "$RUN" && pwd -P)
[ -f "$RUN/runs.csv" ] || { echo "refresh_baseline: $RUN: no runs.csv (not a run folder)" >&2; exit 2; }

# Self-comparison doubles as validation: exit 2 names failed or saturated runs.
"$HARNESS" compare "$RUN" "$RUN" >/dev/null

rm -rf "$BASELINE.new"
mkdir -p "$BASELINE.new/hdr"
cp "$RUN/manifest.json" "$RUN/runs.csv" "$RUN/timeseries.csv" "$BASELINE.new/"
[ -f "$RUN/runs.parquet" ] && cp "$RUN/runs.parquet" "$BASELINE.new/"
cp "$RUN"/hdr/*.hgrm "$BASELINE.new/hdr/" 2>/dev/null || true
rm -rf "$BASELINE"
mv "$BASELINE.new" "$BASELINE"
echo "refresh_baseline: $BASELINE now holds $(($(wc -l < "$BASELINE/runs.csv") - 1)) runs from $RUN"
