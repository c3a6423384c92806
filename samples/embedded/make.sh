#!/usr/bin/env bash
# Regenerates the embedded sample (samples/embedded/*.root) exactly. ~5 CPU-minutes.
# Every file: CMS SVJ benchmark settings and CP5 (samples/processes.py), Run-2 pileup (mean 35),
# generator-level H_T pre-filter at 350 GeV and a PF-MET skim at 150 GeV, both looser than the
# preselection (see svjscout.samples.generate). QCD: one pT-hat-biased sample, 40 detector copies
# per event with the jet-response tail sampled 20x more often (weights undo both), skimmed to the
# copies that pass the analysis preselection (svjscout.jobs.commands_skim; Runs tree unchanged); ttbar: 3
# copies; W and Z (real MET from neutrinos): none. Sized to stay under 10 MB in all (pileup makes
# ~700 PF candidates per event).
set -euo pipefail
cd "$(dirname "$0")"
J=${J:-2}
common="--pileup 35 --ht-min 350 --met-min 150 --chunk-size 250 --workers $J --no-progress"
nops="UncertaintyBands:doVariations = off"
svjscout generate svj -n 350 --seed 101 --mzprime 2000 --rinv 0.3 $common -o svj_mz2000_rinv0.3.root
svjscout generate svj -n 350 --seed 102 --mzprime 1500 --rinv 0.3 $common -o svj_mz1500_rinv0.3.root
svjscout generate svj -n 350 --seed 103 --mzprime 3000 --rinv 0.5 $common -o svj_mz3000_rinv0.5.root
svjscout generate qcd -n 8000 --seed 201 -k 40 --tail-bias 20 --pythia "$nops" $common -o qcd_all.root
python -m svjscout.jobs.commands_skim qcd_all.root qcd.root   # keep the preselected copies (lossless), ~2 MB
rm qcd_all.root
svjscout generate ttbar -n 1000 --seed 301 -k 3 --pythia "$nops" $common -o ttbar.root
svjscout generate wjets -n 480 --seed 401 --pythia "$nops" $common -o wjets.root
svjscout generate zjets -n 360 --seed 501 --pythia "$nops" $common -o zjets.root
