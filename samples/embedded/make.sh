#!/usr/bin/env bash
# Regenerates the embedded sample (samples/embedded/*.root) exactly. ~15 CPU-minutes.
# Every file: Pythia 8 + fast detector response, generator-level H_T pre-filter at 350 GeV and a
# PF-MET skim at 150 GeV, both looser than the preselection (see svjscout.samples.generate).
set -euo pipefail
cd "$(dirname "$0")"
J=${J:-2}
common="--ht-min 350 --met-min 150 --chunk-size 500 --workers $J --no-progress"
svjscout generate svj -n 600  --seed 101 --mzprime 2000 --rinv 0.3 $common -o svj_mz2000_rinv0.3.root
svjscout generate svj -n 600  --seed 102 --mzprime 1500 --rinv 0.3 $common -o svj_mz1500_rinv0.3.root
svjscout generate svj -n 600  --seed 103 --mzprime 3000 --rinv 0.5 $common -o svj_mz3000_rinv0.5.root
svjscout generate qcd -n 20000 --seed 201 --pthat-min 300 --pthat-max 500 --dataset qcd_pt300to500 $common -o qcd_pt300to500.root
svjscout generate qcd -n 10000 --seed 202 --pthat-min 500 --dataset qcd_pt500toinf $common -o qcd_pt500toinf.root
svjscout generate ttbar -n 4000 --seed 301 $common -o ttbar.root
svjscout generate wjets -n 1500 --seed 401 $common -o wjets.root
svjscout generate zjets -n 1000 --seed 501 $common -o zjets.root
