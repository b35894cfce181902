#!/usr/bin/env bash
# How often does the CI comparison cry wolf on this machine? Runs scenarios/ci_smoke.yaml
# 2 x PAIRS times back to back (nothing changes between runs), then judges with the CI
# settings (benchmarks/ci_settings.sh):
#   - each pair against itself (run 2k-1 as base, run 2k as new), and
#   - every run against the checked-in baseline, as CI does.
# Any regression verdict here is a false alarm. Prints the counts and the worst changes.
#
#   benchmarks/false_alarms.sh [PAIRS] [OUT_DIR]        (default 5 pairs: about 25 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:-5}
OUT=${2:-$(mktemp -d "${TMPDIR:-/tmp}/sipstate-false-alarms.XXXXXX")}
source benchmarks/ci_settings.sh
mkdir -p "$OUT"

runs=()
for i in $(seq 1 $((2 * PAIRS))); do
    echo "false_alarms: smoke run $i of $((2 * PAIRS))" >&2
    "$HARNESS" run scenarios/ci_smoke.yaml --output "$OUT/run$i" >"$OUT/run$i.log" 2>&1 || true
    runs+=("$(cd "$OUT/run$i/latest" && pwd -P)")
done

judge() {  # judge BASE NEW LABEL -> one line; returns 1 on a (false) regression
    local code=0
    "$HARNESS" compare "$1" "$2" "${CI_COMPARE_ARGS[@]}" --format json \
        --output "$OUT/$3.json" >"$OUT/$3.md" 2>"$OUT/$3.err" || code=$?
    echo "$3: exit $code"
    return $((code != 0))
}
pair_alarms=0 base_alarms=0
for k in $(seq 1 "$PAIRS"); do
    judge "${runs[$((2 * k - 2))]}" "${runs[$((2 * k - 1))]}" "pair$k" || pair_alarms=$((pair_alarms + 1))
done
for i in $(seq 1 $((2 * PAIRS))); do
    judge benchmarks/baseline "${runs[$((i - 1))]}" "baseline-vs-run$i" || base_alarms=$((base_alarms + 1))
done
echo "false alarms (threshold ${THRESHOLD}%, reference ${REFERENCE}):"
echo "  back-to-back pairs: $pair_alarms of $PAIRS"
echo "  runs vs baseline:   $base_alarms of $((2 * PAIRS))"
"$PYTHON" - "$OUT" <<'PY'
import json, pathlib, sys
rows = []
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    try:
        data = json.loads(f.read_text())
    except ValueError:
        continue
    for r in data.get("rows", []):
        if isinstance(r.get("change_pct"), (int, float)) and r.get("metric") != "lost_dialogs":
            rows.append((abs(r["change_pct"]), f.stem, r["backend"], r["metric"], r["change_pct"], r["verdict"]))
rows.sort(reverse=True)
print("largest changes (|%|, comparison, backend, metric, change, verdict):")
for row in rows[:8]:
    print(f"  {row[1]:>20} {row[2]:>8} {row[3]:>16} {row[4]:+7.1f}%  {row[5]}")
PY
echo "details: $OUT" >&2
