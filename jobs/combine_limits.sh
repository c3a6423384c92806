#!/usr/bin/env bash
# Run CMS Combine (AsymptoticLimits) on every card listed in DIR/datacards/index.json.
#
# Usage: jobs/combine_limits.sh DIR [extra combine options...]
#   DIR         output folder of `svjscout run` / `svjscout datacards` (holding DIR/datacards/index.json)
#               or the DIR/datacards folder itself.
#   extra opts  passed to `combine` (e.g. --rMax 50, --cminDefaultMinimizerStrategy 0); an option given
#               here replaces the script's default of the same name.
# Env: MASS (default 120, only used in output file names), OBS=1 to include the observed limit
#      (default: expected only, `--run blind`, right for the Asimov cards), PYTHON (default python3;
#      any Python 3, only its json module is used: svjscout need not be importable here),
#      RMAX_FACTOR (default 5): --rMax is RMAX_FACTOR x the point's quick median limit from
#      DIR/limits.json when there is one (Combine's default rMax 20 and its step search start
#      at 5 % of rMax are far off for limits of 1e-3), RREL_ACC (default 0.001), CMIN_TOL (0.001).
#
# Accuracy: Combine's defaults --rAbsAcc 0.0005 --rRelAcc 0.005 stop its search once the bracket is
# 0.0005 wide: as large as our smallest limits, which then come out empty. The script passes
# --rAbsAcc 0 --rRelAcc $RREL_ACC (a relative accuracy only), a fallback minimizer
# (--cminFallbackAlgo Minuit2,Simplex,0:0.1: without it one MIGRAD failure inside Combine's bisection,
# delta(nll) 722 between 3.2 and 3.8 on a demo card, sent its +1 sigma limit 3 % low) and
# --cminDefaultMinimizerTolerance $CMIN_TOL (default 0.001; with Combine's 0.1 the demo cards' +-1 sigma
# limits came out 3-7 % low: its fits stop short on the ABCD cards).
#
# Runs in a plain CMSSW/Combine shell. For each POINT of index.json (cards of other folders, e.g.
# left by an earlier run, are ignored): text2workspace.py datacard.txt -o workspace.root, then
#   combine -M AsymptoticLimits workspace.root -n .POINT -m $MASS --rAbsAcc 0 --rRelAcc ... --cminFallbackAlgo ...
#           --cminDefaultMinimizerTolerance ... [--rMax ...]
# (with -v 2) which writes higgsCombine.POINT.AsymptoticLimits.mH$MASS.root next to the card. A point
# whose log lacks any of the five expected quantiles (an empty limit tree) counts as failed, naming
# its card; one whose crossing search has a non-monotone delta(nll) (a fit Combine did not converge)
# is warned about, naming the card and the quantile.
# Then, in the svjscout environment:  svjscout limits DIR --from-combine  (writes DIR/limits.json + plots;
# it refuses, leaving limits.json untouched, if a point has no result).
# Exit codes: 0 ok, 2 usage or no index.json, 3 combine/text2workspace.py not on PATH, 4 a point failed.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'
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

RUNDIR="$(dirname "$CARDS")"  # the run folder (parent of datacards/), where limits.json lives
ACC=()
has_option --rAbsAcc "$@" || ACC+=(--rAbsAcc 0)
has_option --rRelAcc "$@" || ACC+=(--rRelAcc "${RREL_ACC:-0.001}")
has_option --cminFallbackAlgo "$@" || ACC+=(--cminFallbackAlgo "Minuit2,Simplex,0:0.1")
has_option --cminDefaultMinimizerTolerance "$@" || ACC+=(--cminDefaultMinimizerTolerance "${CMIN_TOL:-0.001}")

failed=0; warned=0; n=0
for rel in "${LISTED[@]}"; do
  card="$CARDS/$rel"
  pdir="$(dirname "$card")"; point="$(basename "$pdir")"; n=$((n + 1))
  RANGE=()
  if ! has_option --rMax "$@"; then
    med="$(quick_limit "$RUNDIR/limits.json" "$point" exp0)"
    [[ -n "$med" ]] && RANGE=(--rMax "$("${PYTHON}" -c "print(repr(${RMAX_FACTOR:-5} * $med))")")
  fi
  echo "== $point ${RANGE[*]}"
  if ! ( cd "$pdir" && rm -f higgsCombine*.AsymptoticLimits.*.root \
         && text2workspace.py "$(basename "$card")" -o workspace.root > text2workspace.log 2>&1 \
         && combine -M AsymptoticLimits workspace.root -n ".$point" -m "$MASS" "${BLIND[@]}" "${ACC[@]}" \
                    "${RANGE[@]}" -v 2 "$@" > combine.log 2>&1 ); then
    echo "   FAILED: $card (see $pdir/text2workspace.log, $pdir/combine.log)" >&2
    failed=$((failed + 1))
    continue
  fi
  got="$(count_expected "$pdir/combine.log")"
  if [[ "${got:-0}" -lt 5 ]]; then
    echo "   FAILED: combine gave ${got:-0} of 5 expected limits (an empty or partial limit tree) for $card;" >&2
    echo "           see $pdir/combine.log (try a larger --rMax or other --rRelAcc)" >&2
    failed=$((failed + 1))
    continue
  fi
  bad="$(nonmonotone_searches "$pdir/combine.log")"
  if [[ -n "$bad" ]]; then
    echo "   WARNING: Combine's profile likelihood is not monotone in r for $card (fits it did not converge):" >&2
    echo "$bad" | sed 's/^/            /' >&2
    echo "            those quantiles are unreliable: rerun with e.g. --rMax or --cminDefaultMinimizerStrategy changed," >&2
    echo "            or compare with benchmarks/compare_combine.py" >&2
    warned=$((warned + 1))
  fi
done

echo "$n point(s), $failed failed, $warned with non-converged Combine fits (warned above)"
if [[ $failed -ne 0 ]]; then
  echo "ERROR: $failed point(s) without a Combine limit (named above); svjscout limits --from-combine will refuse them" >&2
  exit 4
fi
echo "next, in the svjscout environment: svjscout limits $DIR --from-combine"
