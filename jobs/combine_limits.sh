#!/usr/bin/env bash
# Run CMS Combine (AsymptoticLimits) on every card written by `svjscout datacards`.
#
# Usage: jobs/combine_limits.sh DIR [extra combine options...]
#   DIR         output folder of `svjscout datacards` (holding DIR/datacards/POINT/datacard.txt)
#               or the DIR/datacards folder itself.
#   extra opts  passed to `combine` (e.g. --run blind, --rMax 50, --cminDefaultMinimizerStrategy 0).
# Env: MASS (default 120, only used in output file names), OBS=1 to include the observed limit
#      (default: expected only, `--run blind`, right for the Asimov cards), PYTHON (default python3).
#
# For each POINT: text2workspace.py datacard.txt -o workspace.root, then
#   combine -M AsymptoticLimits workspace.root -n .POINT -m $MASS
# which writes higgsCombine.POINT.AsymptoticLimits.mH$MASS.root next to the card.
# Afterwards: DIR/datacards/limits_combine.json is collected with svjscout.datacards.combine.
# Exit codes: 0 ok, 2 usage, 3 combine/text2workspace.py not on PATH, 4 a point failed.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -lt 1 ]] && exit 2 || exit 0
fi
DIR="$1"; shift
CARDS="$DIR"
[[ -d "$DIR/datacards" ]] && CARDS="$DIR/datacards"
MASS="${MASS:-120}"
PYTHON="${PYTHON:-python3}"

for tool in combine text2workspace.py; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "ERROR: '$tool' is not on PATH. Set up CMS Combine first (e.g. cmsenv in a CMSSW area with" >&2
    echo "       HiggsAnalysis/CombinedLimit built, or the standalone build: source env_standalone.sh)." >&2
    echo "       The in-package alternative is: svjscout limits $DIR" >&2
    exit 3
  fi
done

BLIND=(--run blind)
[[ "${OBS:-0}" == "1" ]] && BLIND=()

failed=0; n=0
for card in "$CARDS"/*/datacard.txt; do
  [[ -e "$card" ]] || { echo "ERROR: no cards in $CARDS/*/datacard.txt" >&2; exit 2; }
  pdir="$(dirname "$card")"; point="$(basename "$pdir")"; n=$((n + 1))
  echo "== $point"
  if ! ( cd "$pdir" && text2workspace.py datacard.txt -o workspace.root > text2workspace.log 2>&1 \
         && combine -M AsymptoticLimits workspace.root -n ".$point" -m "$MASS" "${BLIND[@]}" "$@" > combine.log 2>&1 ); then
    echo "   FAILED (see $pdir/text2workspace.log, $pdir/combine.log)" >&2
    failed=$((failed + 1))
  fi
done

"$PYTHON" - "$CARDS" <<'PY'
import sys
from svjscout.datacards.combine import collect_combine_limits
res = collect_combine_limits(sys.argv[1], out=sys.argv[1] + "/limits_combine.json")
print(f"collected {len(res)} point(s) -> {sys.argv[1]}/limits_combine.json")
PY
echo "$n point(s), $failed failed"
[[ $failed -eq 0 ]] || exit 4
