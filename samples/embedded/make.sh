#!/usr/bin/env bash
# Regenerates the embedded sample (samples/embedded/*.root) exactly. ~3 CPU-hours (QCD ~2.2 of them).
# Every file: CMS's Run-3 ScoutingNano layout (the generator's default: all PF candidates with their
# vertexIndex, vertices, rho, the emulated DST_HT410_PFScouting bit), CMS SVJ benchmark settings and
# CP5 (samples/processes.py), Run-2 pileup (mean 35, entering once: samples/detector.py),
# generator-level H_T pre-filter at 350 GeV and a PF-MET skim at 150 GeV, both looser than the
# preselection (see svjscout.samples.generate).
# QCD (docs/generation_efficiency.md, sections 6-7; every weight undoes its step): pT-hat > 140 GeV
# biased with power 2, 40 detector copies per event with the jet-response tail sampled 20x more
# often, one shared pileup library, the real-MET stream split (a parent without real MET goes on to
# pileup and detector with p = 0.1, weight 10) and the b and c hadrons decayed 20 times per event
# (--decay-repeats 20); two files of one dataset (the processor adds their genEventSumw). Skimmed to
# the copies that pass the analysis preselection (svjscout.jobs.commands_skim; Runs tree unchanged),
# then one copy per parent (weight x m) and the Russian roulette on light copies (1 % of the
# expected N_eff in each plane x M_T bin): the N_eff over parents barely moves, the files shrink 6x.
# ttbar: 3 copies; W and Z (real MET from neutrinos): none; all three skimmed. The
# signal files keep their cutflows from the MET skim. Resumable: an interrupted generation resumes
# from its stored chunks (FILE.parts) when the same command is run again.
set -euo pipefail
cd "$(dirname "$0")"
J=${J:-2}
common="--pileup 35 --ht-min 350 --met-min 150 --no-progress --workers $J"
nops="UncertaintyBands:doVariations = off"
svjscout generate svj -n 350 --seed 101 --mzprime 2000 --rinv 0.3 --chunk-size 250 $common -o svj_mz2000_rinv0.3.root
svjscout generate svj -n 350 --seed 102 --mzprime 1500 --rinv 0.3 --chunk-size 250 $common -o svj_mz1500_rinv0.3.root
svjscout generate svj -n 350 --seed 103 --mzprime 3000 --rinv 0.5 --chunk-size 250 $common -o svj_mz3000_rinv0.5.root
qcd="--pthat-min 140 -k 40 --tail-bias 20 --roulette --roulette-p-min 0.1 --roulette-mt 1000000 --roulette-nu-pt 30
     --roulette-rt 0.15 --shared-pileup --decay-repeats 20 --chunk-size 500"
thin="--max-copies-per-parent 1 --light-roulette 0.01"
svjscout generate qcd -n 100000 --seed 203 $qcd --pythia "$nops" $common -o qcd_all.root
python -m svjscout.jobs.commands_skim qcd_all.root qcd.root $thin
rm qcd_all.root
svjscout generate qcd -n 200000 --seed 204 $qcd --pythia "$nops" $common -o qcd_s204_all.root
python -m svjscout.jobs.commands_skim qcd_s204_all.root qcd_s204.root $thin
rm qcd_s204_all.root
# ttbar (3 copies), W and Z: generated with the shared library, skimmed to the preselection like QCD
svjscout generate ttbar -n 48000 --seed 301 -k 3 --shared-pileup --pythia "$nops" --chunk-size 250 $common -o ttbar_all.root
svjscout generate wjets -n 6500 --seed 401 --shared-pileup --pythia "$nops" --chunk-size 250 $common -o wjets_all.root
svjscout generate zjets -n 26000 --seed 501 --shared-pileup --pythia "$nops" --chunk-size 250 $common -o zjets_all.root
for p in ttbar wjets zjets; do
  python -m svjscout.jobs.commands_skim ${p}_all.root $p.root
done
rm ttbar_all.root wjets_all.root zjets_all.root
