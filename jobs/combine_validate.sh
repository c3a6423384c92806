#!/usr/bin/env bash
# The fit validation of `svjscout validate` with real CMS Combine, on the same cards and with the
# same injections and ranges of r.
#
# Usage: jobs/combine_validate.sh DIR [NTOYS]
#        jobs/combine_validate.sh --settings DIR   (print the per-point settings, run nothing)
#   DIR     output folder of `svjscout run` (DIR/datacards/index.json, DIR/limits.json;
#           DIR/validation/ is written by `svjscout validate DIR` or the run's validate stage)
#   NTOYS   toys per injection and for the goodness of fit (default 100; run `svjscout validate
#           DIR --toys NTOYS` too, to compare like with like)
# Settings per point and injection (what the in-package validation used):
#   DIR/validation/combine_settings.json, written by `svjscout validate`: injected r (0, 1x and 2x
#   the point's median expected limit exp0 of limits.json by default) and the r range of the fits
#   [RMIN, RMAX] = [-0.9 min(b/s) over the bins with signal (the physical floor: no channel's yield
#   turns negative), r_inj + max(10 sigma_r(Asimov), |floor|)]. Without that file the same is
#   derived here from limits.json and the card's rates (sigma_r ~ exp0 / 2).
# Env: INJECT (e.g. "0 1x 2x" or "0 0.5": overrides the settings; "Nx" = N x exp0), RMIN, RMAX
#      (override the range of r), SEED (default 12345), IMPACTS (default 1), PYTHON (default
#      python3; json module only), FIT_OPTS (minimiser options of the fits, default below),
#      EXTRA (more options for the fits).
#
# In each DIR/datacards/POINT/, per injection (TAG = POINT.bias_rR):
#   text2workspace.py datacard.txt -o workspace.root
#   combine -M GenerateOnly -t NTOYS -s SEED --toysFrequentist [--bypassFrequentistFit] \
#           --expectSignal R --rMin RMIN --rMax RMAX --saveToys -n .TAG
#   (--rMin/--rMax at generation too: r's range in the workspace is [0, 20], and ROOT 6.40 silently
#   clips --expectSignal into it, so r = 334 would generate toys at r = 20)
#   combine -M FitDiagnostics -t NTOYS -s SEED --toysFrequentist --toysFile <those toys> \
#           --rMin RMIN --rMax RMAX --skipBOnlyFit FIT_OPTS -n .TAG
#   FIT_OPTS (env) default: --cminPreFit 1 --robustFit 1 --cminDefaultMinimizerStrategy 1
#           --cminDefaultMinimizerTolerance 0.001
# --toysFrequentist: toys with Poisson counts and global observables drawn around the nuisances'
# values, as the in-package toys; without it Combine's toy fits of these cards fail (see
# /work/shared/combine.md). --bypassFrequentistFit (blinded cards: the observation is the
# background-only Asimov set, so the pre-fit values ARE the background-only fit): the toys are
# generated from the same model as the in-package toys, not from a fit of the observation with r
# fixed at R. Unblinded cards: Combine fits the observation first; the in-package toys come from a
# fit of A, C, D only, so the two generate from different points.
# The r range matters: with a fixed RMIN=-3 RMAX=100 (far outside the cards' r scale of 1e-4..1e-1)
# Combine converged 35/50, 31/50, 31/50 on the demo cards (issue 27). Toys whose fit ends at RMIN
# (fit_status 0, rLoErr 0) are kept and counted as at the boundary by --from-combine.
# In DIR/validation/cards/VP/ (background MC as pseudo-data):
#   combine -M GoodnessOfFit --algo saturated --fixedSignalStrength 0 -n .VP.gof            (observed)
#   combine -M GoodnessOfFit --algo saturated --fixedSignalStrength 0 -t NTOYS --toysFrequentist -n .VP.gof
# (lnN nuisances in [-7, 7], Combine's default; the in-package fits use the same range.)
# Impacts need CombineHarvester's combineTool.py (`-M Impacts`): run when it is on PATH (IMPACTS=0: never).
# Then, in the svjscout environment: svjscout validate DIR --from-combine
# (reads these outputs into DIR/validation/combine/validation.json and the same figures).
# Exit codes: 0 ok, 2 usage or missing inputs, 3 combine not on PATH, 4 a step failed or gave no toys.
set -euo pipefail

usage() { sed -n '2,49p' "$0" | sed 's/^# \{0,1\}//'; }
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  usage; [[ $# -lt 1 ]] && exit 2 || exit 0
fi
PYTHON="${PYTHON:-python3}"

# settings DIR: one line per point and injection: POINT CARD TAG R RMIN RMAX (tab-separated)
settings() {
  "$PYTHON" - "$1" "${INJECT:-}" "${RMIN:-}" "${RMAX:-}" <<'PY'
import json, os, sys

d, inject, rmin_env, rmax_env = sys.argv[1:5]
cards = os.path.join(d, "datacards")
index = json.load(open(os.path.join(cards, "index.json")))
sfile = os.path.join(d, "validation", "combine_settings.json")
settings = json.load(open(sfile)) if os.path.isfile(sfile) else None
lfile = os.path.join(d, "limits.json")
limits = json.load(open(lfile)) if os.path.isfile(lfile) else {}


def floor(path):
    """-0.9 min(b/s) over the bins with signal, from the card's bin/process/rate rows."""
    rows = [ln.split() for ln in open(path) if ln.strip() and not ln.startswith("#")]
    rate = next(r[1:] for r in rows if r[0] == "rate")
    binrow = next(r[1:] for r in rows if r[0] == "bin" and len(r) - 1 == len(rate))
    ids = [r[1:] for r in rows if r[0] == "process"]
    ids = next(i for i in ids if all(t.lstrip("-").isdigit() for t in i))
    sig, bkg = {}, {}
    for b, i, v in zip(binrow, ids, rate):
        tgt = sig if int(i) <= 0 else bkg
        tgt[b] = tgt.get(b, 0.0) + float(v)
    ratios = [bkg.get(b, 0.0) / s for b, s in sig.items() if s > 0]
    return -0.9 * min(ratios) if ratios else 0.0


for point, meta in index["points"].items():
    rows = []
    known = settings["points"].get(point) if settings else None
    if known and not inject:
        rows = [(i["r_inj"], i["rmin"], i["rmax"]) for i in known["injections"]]
    else:
        lim = limits.get(point) or {}
        exp0 = lim.get("exp0") if isinstance(lim, dict) else None
        lo = floor(os.path.join(cards, meta["card"]))
        for item in (inject or "0 1x 2x").replace(",", " ").split():
            if item.lower().endswith("x") or item.lower() == "exp0":
                if not exp0:
                    print(f"{point}: no exp0 in {lfile}: injection {item} skipped", file=sys.stderr)
                    continue
                r = (1.0 if item.lower() == "exp0" else float(item[:-1])) * float(exp0)
            else:
                r = float(item)
            same = [i for i in (known or {}).get("injections", []) if f"{i['r_inj']:.6g}" == f"{r:.6g}"]
            if same:  # the in-package validation's range for this r
                rows.append((r, same[0]["rmin"], same[0]["rmax"]))
                continue
            sig = float(exp0) / 2.0 if exp0 else 1.0
            rows.append((r, lo, r + max(10.0 * sig, abs(lo))))
    for r, lo, hi in rows:
        lo = float(rmin_env) if rmin_env else lo
        hi = float(rmax_env) if rmax_env else hi
        print(f"{point}\t{meta['card']}\t{point}.bias_r{r:.6g}\t{r:.6g}\t{lo:.8g}\t{hi:.8g}")
PY
}

if [[ "$1" == "--settings" ]]; then
  [[ -f "${2:-}/datacards/index.json" ]] || { echo "ERROR: no ${2:-DIR}/datacards/index.json" >&2; exit 2; }
  printf 'point\tcard\ttag\tr_inj\trmin\trmax\n'; settings "$2"; exit 0
fi

DIR="$1"; NTOYS="${2:-100}"
CARDS="$DIR/datacards"
SEED="${SEED:-12345}"
read -r -a EXTRA_OPTS <<< "${EXTRA:-}"
# r is nearly degenerate with the cards' large log-normal non-closure (a flat valley). Combine's
# defaults (strategy 0, tolerance 0.1) stop near the start value; a tight tolerance alone fails on
# Minuit's machine-accuracy limit (the NLL, offset at the start point far from the minimum, is
# ~3e5 there); --cminPreFit 1 (a first, loose fit, then the real one from there), strategy 1,
# tolerance 0.001 and --robustFit 1 (profile crossings for the interval) reproduce the in-package
# profile fits toy by toy (r within 1 %, errors within 2 %; docs/validation.md).
read -r -a FIT_OPTS <<< "${FIT_OPTS:---cminPreFit 1 --robustFit 1 --cminDefaultMinimizerStrategy 1 --cminDefaultMinimizerTolerance 0.001}"
source "$(dirname "${BASH_SOURCE[0]}")/combine_common.sh"
require_combine
listed_cards "$CARDS"
BYPASS=(--bypassFrequentistFit)
if "$PYTHON" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("unblinded") else 1)' "$CARDS/index.json"; then
  BYPASS=()
fi
[[ -f "$DIR/validation/combine_settings.json" ]] || echo "note: no $DIR/validation/combine_settings.json" \
  "(run 'svjscout validate $DIR' first): injections and r ranges from limits.json and the cards" >&2

failed=0
declare -A T2W=()
while IFS=$'\t' read -r point card tag r rmin rmax; do
  pdir="$(dirname "$CARDS/$card")"
  if [[ -z "${T2W[$point]:-}" ]]; then
    ( cd "$pdir" && text2workspace.py datacard.txt -o workspace.root > t2w_validate.log 2>&1 ) \
      || { echo "$point: text2workspace.py FAILED (see $pdir/t2w_validate.log)" >&2; failed=$((failed + 1)); continue; }
    T2W[$point]=1
  fi
  rm -f "$pdir/fitDiagnostics.$tag.root"
  if ! ( cd "$pdir" \
      && combine -M GenerateOnly workspace.root -t "$NTOYS" -s "$SEED" --toysFrequentist "${BYPASS[@]}" \
           --expectSignal "$r" --rMin "$rmin" --rMax "$rmax" --saveToys -n ".$tag" > "gen_$tag.log" 2>&1 \
      && combine -M FitDiagnostics workspace.root -t "$NTOYS" -s "$SEED" --toysFrequentist \
           --toysFile "higgsCombine.$tag.GenerateOnly.mH120.$SEED.root" --rMin "$rmin" --rMax "$rmax" \
           --skipBOnlyFit "${FIT_OPTS[@]}" "${EXTRA_OPTS[@]}" -n ".$tag" > "fit_$tag.log" 2>&1 ); then
    echo "$point r=$r: FAILED (see $pdir/gen_$tag.log, $pdir/fit_$tag.log)" >&2; failed=$((failed + 1))
  elif [[ ! -s "$pdir/fitDiagnostics.$tag.root" ]]; then
    echo "$point r=$r: no fitDiagnostics.$tag.root (see $pdir/fit_$tag.log)" >&2; failed=$((failed + 1))
  else
    echo "$point r=$r in [$rmin, $rmax]: $NTOYS toys fitted"
  fi
done < <(settings "$DIR")

if [[ "${IMPACTS:-1}" == "1" ]] && command -v combineTool.py >/dev/null 2>&1; then
  for rel in "${LISTED[@]}"; do
    pdir="$(dirname "$CARDS/$rel")"; point="$(basename "$pdir")"
    range=$(settings "$DIR" | awk -F'\t' -v p="$point" '$1 == p {print "--rMin " $5 " --rMax " $6; exit}')
    # shellcheck disable=SC2086
    ( cd "$pdir" && combineTool.py -M Impacts -d workspace.root -m 120 --doInitialFit $range > impacts.log 2>&1 \
      && combineTool.py -M Impacts -d workspace.root -m 120 --doFits $range >> impacts.log 2>&1 \
      && combineTool.py -M Impacts -d workspace.root -m 120 -o impacts.json >> impacts.log 2>&1 ) \
      || { echo "$point: impacts FAILED (see $pdir/impacts.log)" >&2; failed=$((failed + 1)); }
  done
fi

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
