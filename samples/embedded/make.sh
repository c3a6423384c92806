#!/usr/bin/env bash
# Regenerates the embedded sample (samples/embedded/*.root) exactly. ~2.5 CPU-hours (QCD ~1.7 of them).
# Every file: CMS's Run-3 ScoutingNano layout (the generator's default: all PF candidates with their
# vertexIndex, vertices, rho, the emulated DST_HT410_PFScouting bit), CMS SVJ benchmark settings and
# CP5 (samples/processes.py), Run-2 pileup (mean 35, entering once: samples/detector.py),
# generator-level H_T pre-filter at 350 GeV and a PF-MET skim at 150 GeV, both looser than the
# preselection (see svjscout.samples.generate).
# QCD: pT-hat > 140 GeV biased with power 2, 40 detector copies per event with the jet-response tail
# sampled 20x more often, the parent roulette (parents out of M_T reach kept with p = 0.3, weight
# 1/p) and one shared pileup library (docs/generation_efficiency.md; every weight undoes its step),
# skimmed to the copies that pass the analysis preselection (svjscout.jobs.commands_skim; Runs tree
# unchanged); ttbar: 3 copies; W and Z (real MET from neutrinos): none; all three skimmed to the
# preselection too (their cutflows start there, like QCD's; the signal files keep theirs). Resumable: an interrupted
# generation resumes from its stored chunks (FILE.parts) when the same command is run again.
set -euo pipefail
cd "$(dirname "$0")"
J=${J:-2}
common="--pileup 35 --ht-min 350 --met-min 150 --no-progress --workers $J"
nops="UncertaintyBands:doVariations = off"
svjscout generate svj -n 350 --seed 101 --mzprime 2000 --rinv 0.3 --chunk-size 250 $common -o svj_mz2000_rinv0.3.root
svjscout generate svj -n 350 --seed 102 --mzprime 1500 --rinv 0.3 --chunk-size 250 $common -o svj_mz1500_rinv0.3.root
svjscout generate svj -n 350 --seed 103 --mzprime 3000 --rinv 0.5 --chunk-size 250 $common -o svj_mz3000_rinv0.5.root
svjscout generate qcd -n 120000 --seed 201 --pthat-min 140 -k 40 --tail-bias 20 --roulette --shared-pileup \
  --pythia "$nops" --chunk-size 500 $common -o qcd_all.root
python -m svjscout.jobs.commands_skim qcd_all.root qcd.root   # keep the preselected copies (lossless)
rm qcd_all.root
# a second QCD file (same dataset; the processor adds the files' genEventSumw): the real-MET stream
# split (section 6 of docs/generation_efficiency.md): every parent without real MET is dropped before
# pileup and detector with probability 0.9 (weight 10), real MET (|sum pT(nu)| >= 30 GeV or R_T >= 0.15) kept
svjscout generate qcd -n 160000 --seed 202 --pthat-min 140 -k 40 --tail-bias 20 --roulette --roulette-p-min 0.1 \
  --roulette-mt 1000000 --roulette-nu-pt 30 --roulette-rt 0.15 --shared-pileup --pythia "$nops" --chunk-size 500 \
  $common -o qcd_s202_all.root
python -m svjscout.jobs.commands_skim qcd_s202_all.root qcd_s202.root
rm qcd_s202_all.root
# ttbar (3 copies), W and Z: generated with the shared library, skimmed to the preselection like QCD
svjscout generate ttbar -n 16000 --seed 301 -k 3 --shared-pileup --pythia "$nops" --chunk-size 250 $common -o ttbar_all.root
svjscout generate wjets -n 5000 --seed 401 --shared-pileup --pythia "$nops" --chunk-size 250 $common -o wjets_all.root
svjscout generate zjets -n 12000 --seed 501 --shared-pileup --pythia "$nops" --chunk-size 250 $common -o zjets_all.root
for p in ttbar wjets zjets; do
  python -m svjscout.jobs.commands_skim ${p}_all.root $p.root
  rm ${p}_all.root
done
