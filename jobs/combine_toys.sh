#!/usr/bin/env bash
# Toy-fit robustness of the cards in real CMS Combine: generate toys from each card's model, fit
# every toy, and count the fits that converge.
#
# Usage: jobs/combine_toys.sh DIR [NTOYS] [extra combine options...]
#   DIR     output folder of `svjscout run` / `svjscout datacards` (DIR/datacards/index.json)
#   NTOYS   toys per card (default 50)
# Env: SEED (default 12345), EXPECT_SIGNAL (signal strength of the toys, default 0),
#      FREQUENTIST=1 to generate with --toysFrequentist (default: Combine's default toys),
#      RMIN, RMAX (default: Combine's range of r, [0, 20]; RMIN < 0 lets r go negative, which
#      fails where a channel's total yield would turn negative),
#      PYTHON (default python3; needs only json, and PyROOT for the count, both in a Combine shell).
#
# Per POINT of index.json, in DIR/datacards/POINT/:
#   text2workspace.py datacard.txt -o workspace.root
#   combine -M GenerateOnly -t NTOYS -s SEED --saveToys --expectSignal EXPECT_SIGNAL -n .POINT.toys
#   combine -M FitDiagnostics -t NTOYS --toysFile <that file> [--rMin RMIN --rMax RMAX] -n .POINT.toyfits
# and prints, per point, how many signal+background fits converged (fit_status == 0 in
# tree_fit_sb of fitDiagnostics.POINT.toyfits.root) and the mean and width of r.
# Seen on the demo cards (Combine v10.6, 50 default toys per card, r = 0 injected):
#   RMIN=-3 RMAX=100 jobs/combine_toys.sh OUT 50 --cminDefaultMinimizerStrategy 0
#   -> 49/50, 49/50, 50/50 fits converge. Toys whose best fit sits on the boundary r = 0 fail
#   MINOS (status -1), hence RMIN < 0 (above -min(bkg/sig) of the card, so no yield turns
#   negative); strategy 1 leaves ~25 % with a covariance forced positive definite (status 1).
#   Without the cards' `shapes * * FAKE` line no toy fits at all (product pdf underflow).
# Exit codes: 0 ok, 2 usage or no index.json, 3 combine not on PATH, 4 a point failed to run.
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -lt 1 ]] && exit 2 || exit 0
fi
DIR="$1"; shift
NTOYS="${1:-50}"; [[ $# -gt 0 ]] && shift
CARDS="$DIR"; [[ -d "$DIR/datacards" ]] && CARDS="$DIR/datacards"
PYTHON="${PYTHON:-python3}"
SEED="${SEED:-12345}"
FREQ=(); [[ "${FREQUENTIST:-0}" == "1" ]] && FREQ=(--toysFrequentist)
RANGE=(); [[ -n "${RMIN:-}" ]] && RANGE+=(--rMin "$RMIN"); [[ -n "${RMAX:-}" ]] && RANGE+=(--rMax "$RMAX")

source "$(dirname "${BASH_SOURCE[0]}")/combine_common.sh"
require_combine
listed_cards "$CARDS"

failed=0
for rel in "${LISTED[@]}"; do
  pdir="$(dirname "$CARDS/$rel")"; point="$(basename "$pdir")"
  if ! ( cd "$pdir" \
      && text2workspace.py datacard.txt -o workspace.root > t2w_toys.log 2>&1 \
      && combine -M GenerateOnly workspace.root -t "$NTOYS" -s "$SEED" --saveToys "${FREQ[@]}" \
           --expectSignal "${EXPECT_SIGNAL:-0}" -n ".$point.toys" "$@" > generate.log 2>&1 \
      && combine -M FitDiagnostics workspace.root -t "$NTOYS" -s "$SEED" "${FREQ[@]}" \
           --toysFile "higgsCombine.$point.toys.GenerateOnly.mH120.$SEED.root" "${RANGE[@]}" \
           -n ".$point.toyfits" "$@" > toyfits.log 2>&1 ); then
    echo "$point: FAILED to run (see $pdir/generate.log, $pdir/toyfits.log)" >&2
    failed=$((failed + 1)); continue
  fi
  "$PYTHON" - "$pdir/fitDiagnostics.$point.toyfits.root" "$point" "$NTOYS" <<'PY'
import math, sys
import ROOT
f = ROOT.TFile.Open(sys.argv[1])
t = f.Get("tree_fit_sb") if f else None
n_toys = int(sys.argv[3])
if not t:
    print(f"{sys.argv[2]}: no tree_fit_sb in {sys.argv[1]}: 0/{n_toys} fits")
    sys.exit(0)
ok, rs = 0, []
for e in t:
    if e.fit_status == 0:
        ok += 1
        rs.append(e.r)
mean = sum(rs) / len(rs) if rs else float("nan")
sd = math.sqrt(sum((r - mean) ** 2 for r in rs) / max(len(rs) - 1, 1)) if rs else float("nan")
print(f"{sys.argv[2]}: {ok}/{n_toys} toy fits converged (fit_status 0), r = {mean:.3f} +- {sd:.3f} (mean, sd)")
PY
done
[[ $failed -eq 0 ]] || exit 4
