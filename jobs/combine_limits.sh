#!/usr/bin/env bash
# Run CMS Combine (AsymptoticLimits) on every card listed in DIR/datacards/index.json.
#
# Usage: jobs/combine_limits.sh DIR [extra combine options...]
#   DIR         output folder of `svjscout run` / `svjscout datacards` (holding DIR/datacards/index.json)
#               or the DIR/datacards folder itself.
#   extra opts  passed to `combine` (e.g. --rMax 50, --cminDefaultMinimizerStrategy 0).
# Env: MASS (default 120, only used in output file names), OBS=1 to include the observed limit
#      (default: expected only, `--run blind`, right for the Asimov cards), PYTHON (default python3;
#      any Python 3, only its json module is used: svjscout need not be importable here).
#
# Runs in a plain CMSSW/Combine shell. For each POINT of index.json (cards of other folders, e.g.
# left by an earlier run, are ignored): text2workspace.py datacard.txt -o workspace.root, then
#   combine -M AsymptoticLimits workspace.root -n .POINT -m $MASS
# which writes higgsCombine.POINT.AsymptoticLimits.mH$MASS.root next to the card. Then, in the
# svjscout environment:  svjscout limits DIR --from-combine   (writes DIR/limits.json + plots).
# Exit codes: 0 ok, 2 usage or no index.json, 3 combine/text2workspace.py not on PATH, 4 a point failed.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -lt 1 ]] && exit 2 || exit 0
fi
DIR="$1"; shift
CARDS="$DIR"
[[ -d "$DIR/datacards" ]] && CARDS="$DIR/datacards"
MASS="${MASS:-120}"
PYTHON="${PYTHON:-python3}"

source "$(dirname "${BASH_SOURCE[0]}")/combine_common.sh"
require_combine

BLIND=(--run blind)
[[ "${OBS:-0}" == "1" ]] && BLIND=()

listed_cards "$CARDS"  # the cards of the current index (LISTED), stdlib json only

failed=0; n=0
for rel in "${LISTED[@]}"; do
  card="$CARDS/$rel"
  pdir="$(dirname "$card")"; point="$(basename "$pdir")"; n=$((n + 1))
  echo "== $point"
  if ! ( cd "$pdir" && rm -f higgsCombine*.AsymptoticLimits.*.root \
         && text2workspace.py datacard.txt -o workspace.root > text2workspace.log 2>&1 \
         && combine -M AsymptoticLimits workspace.root -n ".$point" -m "$MASS" "${BLIND[@]}" "$@" > combine.log 2>&1 ); then
    echo "   FAILED (see $pdir/text2workspace.log, $pdir/combine.log)" >&2
    failed=$((failed + 1))
  fi
done

echo "$n point(s), $failed failed"
echo "next, in the svjscout environment: svjscout limits $DIR --from-combine"
[[ $failed -eq 0 ]] || exit 4
