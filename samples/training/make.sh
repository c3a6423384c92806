#!/usr/bin/env bash
# Regenerates the training sample used for the shipped models (not in the repository: ~60 MB).
# Usage: samples/training/make.sh OUTDIR   (~100 CPU-minutes; J=number of worker processes)
# Looser skim than the embedded sample (MET > 95 GeV) because the training job loosens R_T to
# 0.15 (jobs/train.yaml): MET > 0.15 x 650 GeV = 97.5 GeV.
set -euo pipefail
out=${1:?usage: make.sh OUTDIR}
mkdir -p "$out"
J=${J:-2}
common="--ht-min 350 --met-min 95 --chunk-size 500 --workers $J --no-progress"
svjscout generate svj -n 1500 --seed 1101 --mzprime 1500 --rinv 0.3 $common -o "$out/svj_mz1500_rinv0.3.root"
svjscout generate svj -n 1500 --seed 1102 --mzprime 2000 --rinv 0.3 $common -o "$out/svj_mz2000_rinv0.3.root"
svjscout generate svj -n 1500 --seed 1103 --mzprime 2000 --rinv 0.5 $common -o "$out/svj_mz2000_rinv0.5.root"
svjscout generate svj -n 1500 --seed 1104 --mzprime 3000 --rinv 0.3 $common -o "$out/svj_mz3000_rinv0.3.root"
svjscout generate svj -n 1500 --seed 1105 --mzprime 3000 --rinv 0.5 $common -o "$out/svj_mz3000_rinv0.5.root"
svjscout generate qcd -n 40000 --seed 1201 --pthat-min 300 --pthat-max 500 --dataset qcd_pt300to500 $common -o "$out/qcd_pt300to500.root"
svjscout generate qcd -n 10000 --seed 1202 --pthat-min 500 --dataset qcd_pt500toinf $common -o "$out/qcd_pt500toinf.root"
svjscout generate ttbar -n 4000 --seed 1301 $common -o "$out/ttbar.root"
svjscout generate wjets -n 4000 --seed 1401 $common -o "$out/wjets.root"
svjscout generate zjets -n 3000 --seed 1501 $common -o "$out/zjets.root"
# More QCD for the twin MLPs (the DisCo and closure noise floors scale like 1/sqrt(background
# events)): second runs of both pT-hat bins, merged into the same datasets (jobs/train.yaml); the
# processors average the files' cross-section estimates weighted by their sum of weights.
# Larger chunks: fewer Pythia initialisations (~2 s each).
more="--ht-min 350 --met-min 95 --chunk-size 2500 --workers $J --no-progress"
svjscout generate qcd -n 150000 --seed 1211 --pthat-min 300 --pthat-max 500 --dataset qcd_pt300to500 $more -o "$out/qcd_pt300to500_b.root"
svjscout generate qcd -n 30000 --seed 1212 --pthat-min 500 --dataset qcd_pt500toinf $more -o "$out/qcd_pt500toinf_b.root"
