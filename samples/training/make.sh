#!/usr/bin/env bash
# Regenerates the training sample of the shipped models (not in the repository: ~2.6 GB).
# Usage: samples/training/make.sh OUTDIR   (~5.3 CPU-hours, QCD 4.6 of them; J = number of worker processes)
# Every file: CMS SVJ benchmark settings and CP5 (samples/processes.py), Run-2 pileup (mean 35),
# generator H_T pre-filter at 350 GeV and a PF-MET skim at 150 GeV, both looser than the
# preselection (H_T > 410 GeV; R_T > 0.24 with M_T > 650 GeV implies MET > 156 GeV).
# QCD: one pT-hat-biased sample from pT-hat 170 GeV (power 2; weights undo the bias), every event
# passed through the jet-level detector response 40 times (detector copies, `parent` branch) with
# the jet-response tail sampled 20x more often in jets above 50 GeV (likelihood-ratio weights);
# ttbar (inclusive), W and Z: 5 copies each. Background shower variations are off (the
# background comes from ABCD; only the signal's ISR/FSR enter the cards). Seeds differ from the
# embedded sample's, so no event is in both.
set -euo pipefail
out=${1:?usage: make.sh OUTDIR}
mkdir -p "$out"
J=${J:-2}
common="--pileup 35 --ht-min 350 --met-min 150 --chunk-size 500 --workers $J --no-progress"
nops="UncertaintyBands:doVariations = off"
for point in "1500 0.3 1101" "2000 0.3 1102" "2000 0.5 1103" "3000 0.3 1104" "3000 0.5 1105"; do
  set -- $point
  svjscout generate svj -n 4000 --seed "$3" --mzprime "$1" --rinv "$2" $common -o "$out/svj_mz$1_rinv$2.root"
done
svjscout generate qcd -n 48000 --seed 1201 -k 40 --tail-bias 20 --pythia "$nops" $common -o "$out/qcd.root"
# more QCD runs, same settings, other seeds (one dataset `qcd`: the processor adds the files'
# genEventSumw; parents are told apart by run = seed)
svjscout generate qcd -n 50000 --seed 1202 -k 40 --tail-bias 20 --pythia "$nops" $common -o "$out/qcd_s1202.root"
svjscout generate qcd -n 100000 --seed 1203 -k 40 --tail-bias 20 --pythia "$nops" $common -o "$out/qcd_s1203.root"
# eight more (issue 17, 10x the first file's effective statistics): 40,000 parents each, 518,000 in all
for seed in 1204 1205 1206 1207 1208 1209 1210 1211; do
  svjscout generate qcd -n 40000 --seed "$seed" -k 40 --tail-bias 20 --pythia "$nops" $common -o "$out/qcd_s$seed.root"
done
svjscout generate ttbar -n 20000 --seed 1301 -k 5 --pythia "$nops" $common -o "$out/ttbar.root"
svjscout generate wjets -n 10000 --seed 1401 -k 5 --pythia "$nops" $common -o "$out/wjets.root"
svjscout generate zjets -n 8000 --seed 1501 -k 5 --pythia "$nops" $common -o "$out/zjets.root"
