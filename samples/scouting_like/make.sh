#!/usr/bin/env bash
# "Scouting-like" sample for benchmarks/bench_processor.py: H_T-triggered, no MET skim, the
# backgrounds in the proportions of their cross sections. Not committed (data/ is ignored).
#
# Usage: samples/scouting_like/make.sh [OUTDIR]   (default data/scouting_like; J workers, default 2;
#        LUMI, the generated luminosity in pb^-1, default 0.3: about 22,000 triggered events,
#        about 185,000 generated, ~25 CPU-minutes)
#
# Every sample is generated with n = sigma x LUMI events (sigma: Pythia's LO cross section of the
# sample, measured once and rounded here; the file records Pythia's own value, used for the
# normalisation), so the triggered events come in the proportions of a real scouting stream:
#   QCD in pT-hat bins 120-170, 170-250, 250-400, 400-600, > 600 GeV (below 120 GeV a few per cent
#   of the triggered QCD is missing: those events have even less MET, so the prefilter would
#   reject them too); ttbar, W(-> l nu)+jet, Z(-> nu nu)+jet at the default pT-hat edges, with at
#   least 200 generated events each (sigma x LUMI is 4-40 events: oversampled, the weights correct
#   the histograms, and they are < 2 % of the events).
# Unbiased (--bias-power 0) so that events come in the proportions of their cross sections, and
# without pileup unless PILEUP is set (the benchmark's figures were measured without; pileup
# multiplies the candidates per event by ~4). ttbar keeps its pT-hat > 150 GeV window here.
# Filters: the generator-level pre-filter --ht-min 350 (looser than the trigger, saves detector
# simulation), no MET skim (--met-min 0), then the trigger itself, AK4 H_T > 410 GeV on the
# reconstructed PF candidates (benchmarks/scouting_like_trigger.py, the processor's own H_T).
set -euo pipefail
out=${1:-data/scouting_like}
J=${J:-2}
LUMI=${LUMI:-0.3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/generated"
n_of() {  # n_of SIGMA_PB [MIN]: events to generate
  python3 -c "import sys; s, m = float(sys.argv[1]), int(sys.argv[2]); print(max(m, round(s * float(sys.argv[3]))))" "$1" "${2:-1}" "$LUMI"
}
gen() {  # gen NAME PROCESS SIGMA_PB MIN SEED [ARGS...]  (a generated file already there is reused)
  local name=$1 process=$2 sigma=$3 min=$4 seed=$5
  shift 5
  local n
  n=$(n_of "$sigma" "$min")
  [ -f "$out/generated/$name.root" ] || nice -n 10 svjscout generate "$process" -n "$n" --seed "$seed" --ht-min 350 --met-min 0 --chunk-size 5000 \
    --bias-power 0 --pileup "${PILEUP:-0}" --workers "$J" --no-progress --dataset "$name" "$@" -o "$out/generated/$name.root"
  nice -n 10 python3 "$here/../../benchmarks/scouting_like_trigger.py" "$out/generated/$name.root" "$out/$name.root" --ht-min 410
}
gen qcd_pt120to170 qcd 479000 1 2101 --pthat-min 120 --pthat-max 170
gen qcd_pt170to250 qcd 110000 1 2102 --pthat-min 170 --pthat-max 250
gen qcd_pt250to400 qcd 18900 1 2103 --pthat-min 250 --pthat-max 400
gen qcd_pt400to600 qcd 1830 1 2104 --pthat-min 400 --pthat-max 600
gen qcd_pt600toinf qcd 222 1 2105 --pthat-min 600
gen ttbar ttbar 140 200 2201 --pthat-min 150
gen wjets wjets 43 200 2301
gen zjets zjets 11.7 200 2401
rm -r "$out/generated"
echo "scouting-like sample in $out:"
ls -l "$out"
