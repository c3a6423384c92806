#!/usr/bin/env bash
# The fit validation of `svjscout validate` with real CMS Combine, on the same cards.
#
# Usage: jobs/combine_validate.sh DIR [NTOYS]
#   DIR     output folder of `svjscout run` (DIR/datacards/index.json; DIR/validation/cards/ is
#           written by `svjscout validate DIR` or the run's validate stage)
#   NTOYS   toys per test (default 100)
# Env: INJECT (default "0 1": injected signal strengths), SEED (default 12345),
#      RMIN, RMAX (default -3, 100: r of the bias fits; RMIN < 0 so that fits at r = 0 are not on
#      a boundary, above -min(bkg/sig) of the cards), PYTHON (default python3; json module only).
#
# In each DIR/datacards/POINT/, per injected r:
#   combine -M GenerateOnly -t NTOYS --toysFrequentist --expectSignal R --saveToys -n .POINT.bias_rR
#   combine -M FitDiagnostics -t NTOYS --toysFrequentist --toysFile ... --rMin RMIN --rMax RMAX
#           --cminDefaultMinimizerStrategy 0 -n .POINT.bias_rR
# and in DIR/validation/cards/VP/ (background MC as pseudo-data):
#   combine -M GoodnessOfFit --algo saturated --fixedSignalStrength 0 -n .VP.gof            (observed)
#   combine -M GoodnessOfFit --algo saturated --fixedSignalStrength 0 -t NTOYS --toysFrequentist -n .VP.gof
# Impacts need CombineHarvester's combineTool.py (`-M Impacts`): run when it is on PATH (IMPACTS=0: never).
# Then, in the svjscout environment: svjscout validate DIR --from-combine
# (reads these outputs into DIR/validation/combine/validation.json and the same figures).
# Exit codes: 0 ok, 2 usage or missing inputs, 3 combine not on PATH, 4 a step failed.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -lt 1 ]] && exit 2 || exit 0
fi
DIR="$1"; NTOYS="${2:-100}"
CARDS="$DIR/datacards"
PYTHON="${PYTHON:-python3}"
SEED="${SEED:-12345}"
RANGE=(--rMin "${RMIN:--3}" --rMax "${RMAX:-100}")
source "$(dirname "${BASH_SOURCE[0]}")/combine_common.sh"
require_combine
listed_cards "$CARDS"

failed=0
for rel in "${LISTED[@]}"; do
  pdir="$(dirname "$CARDS/$rel")"; point="$(basename "$pdir")"
  ( cd "$pdir" && text2workspace.py datacard.txt -o workspace.root > t2w_validate.log 2>&1 ) \
    || { echo "$point: text2workspace.py FAILED (see $pdir/t2w_validate.log)" >&2; failed=$((failed + 1)); continue; }
  for r in ${INJECT:-0 1}; do
    tag="$point.bias_r$r"
    if ! ( cd "$pdir" \
        && combine -M GenerateOnly workspace.root -t "$NTOYS" -s "$SEED" --toysFrequentist --expectSignal "$r" \
             --saveToys -n ".$tag" > "gen_$tag.log" 2>&1 \
        && combine -M FitDiagnostics workspace.root -t "$NTOYS" -s "$SEED" --toysFrequentist \
             --toysFile "higgsCombine.$tag.GenerateOnly.mH120.$SEED.root" "${RANGE[@]}" \
             --cminDefaultMinimizerStrategy 0 -n ".$tag" > "fit_$tag.log" 2>&1 ); then
      echo "$point r=$r: FAILED (see $pdir/gen_$tag.log, $pdir/fit_$tag.log)" >&2; failed=$((failed + 1))
    else
      echo "$point r=$r: $NTOYS toys fitted"
    fi
  done
  if [[ "${IMPACTS:-1}" == "1" ]] && command -v combineTool.py >/dev/null 2>&1; then
    ( cd "$pdir" && combineTool.py -M Impacts -d workspace.root -m 120 --doInitialFit "${RANGE[@]}" > impacts.log 2>&1 \
      && combineTool.py -M Impacts -d workspace.root -m 120 --doFits "${RANGE[@]}" >> impacts.log 2>&1 \
      && combineTool.py -M Impacts -d workspace.root -m 120 -o impacts.json >> impacts.log 2>&1 ) \
      || { echo "$point: impacts FAILED (see $pdir/impacts.log)" >&2; failed=$((failed + 1)); }
  fi
done

VP="$DIR/validation/cards/VP"
if [[ -f "$VP/datacard.txt" ]]; then
  if ( cd "$VP" && text2workspace.py datacard.txt -o workspace.root > t2w.log 2>&1 \
      && combine -M GoodnessOfFit workspace.root --algo saturated --fixedSignalStrength 0 -n .VP.gof > gof_obs.log 2>&1 \
      && combine -M GoodnessOfFit workspace.root --algo saturated --fixedSignalStrength 0 -t "$NTOYS" -s "$SEED" \
           --toysFrequentist -n .VP.gof > gof_toys.log 2>&1 ); then
    echo "VP goodness of fit: observed and $NTOYS toys"
  else
    echo "VP goodness of fit FAILED (see $VP/*.log)" >&2; failed=$((failed + 1))
  fi
else
  echo "no $VP/datacard.txt: run 'svjscout validate $DIR' first for the goodness of fit" >&2
fi
echo "next, in the svjscout environment: svjscout validate $DIR --from-combine"
[[ $failed -eq 0 ]] || exit 4
