#!/usr/bin/env bash
# The retrain of issues 29 and 30 in one command, on the training sample (samples/training/make.sh
# data/train): skims, LundNet with out-of-fold scores, the MDMM twin and its analysis-aware
# fine-tune over several seeds (the training seed varies; the event split stays LundNet's, seed 1, so
# every seed trains, selects and is quoted on the same events), every pair (and the shipped one) through the real chain on the
# held-out events (jobs/heldout.yaml: working point chosen on the twin's `select` subset, every
# figure on its untouched `final` subset), and the paired-bootstrap comparison.
#
# Usage (from the repository root, the sample in data/train as the job files expect):
#   models/retrain.sh OUT
# Resumable: every step writes OUT/<step>.done when it succeeds and is skipped once that exists;
# after an interruption run the same command again. The trainers run with --resume: an interrupted
# training continues from its OUT/.../train_state.pt (to the same model bit for bit); LundNet's
# fold models, trained after the full model, start again.
# Settings (environment): SEEDS ("1 2 3 4 5"), N_BOOT (100 replicas), CROSSFIT_K (5), THREADS (2),
# DEVICE (cpu), TRAIN_JOB / LUND_JOB / HELDOUT_JOB (jobs/train.yaml, jobs/train_lundnet.yaml,
# jobs/heldout.yaml), LUND_ARGS / TWIN_ARGS / ANALYSIS_ARGS / RUN_ARGS (extra options of `train
# lundnet`, of both `train twin` steps, of the fine-tune only, of `svjscout run`), DRY=1 (print
# the commands only), STEPS (run only these steps, e.g. STEPS="skim_jets lundnet lundnet_comparison":
# LundNet's steps read only jobs/train_lundnet.yaml's single files, so they can run while the
# further QCD files of samples/training/make.sh are still being generated).
# Outputs: OUT/lundnet (lundnet.onnx, lundnet_oof.parquet), OUT/twin_sS and OUT/twin_analysis_sS
# (twin.onnx, report.json, report.md), OUT/lundnet_comparison.md (benchmarks/compare_lundnets.py: the
# shipped LundNet against the new one on the same test jets), OUT/heldout_{shipped,mdmm_sS,analysis_sS} (svjscout run
# folders), OUT/comparison.md (benchmarks/compare_twin_pairs.py --bootstrap: limits and kappa per
# pair with 95 % intervals, ratios to the MDMM pair of the same seed, paired, and the target line).
# Cost on this project's 2-core machine (estimated, not yet measured on the full sample: ~450,000
# rows of MET-skimmed events, ~31,000 per QCD file; the processor at ~500-1,000 rows/s on 2 cores):
# the twin's skim ~20-30 min; measured 2026-12-07 beside the generation: the LundNet skim 110 s,
# LundNet (one QCD file, as jobs/train_lundnet.yaml) 96 s and its 5 fold models ~5 min, the LundNet
# comparison (100 replicas) 25 s; each twin ~3-5 min, each of the 11 held-out runs ~4 min (30 % of the rows), the
# comparison ~1 s per replica and run (100 replicas: ~20 min): ~2.5-3 hours with 5 seeds.
set -euo pipefail
out=${1:?usage: models/retrain.sh OUT}
SEEDS=${SEEDS:-"1 2 3 4 5"}
N_BOOT=${N_BOOT:-100}
CROSSFIT_K=${CROSSFIT_K:-5}
THREADS=${THREADS:-2}
DEVICE=${DEVICE:-cpu}
TRAIN_JOB=${TRAIN_JOB:-jobs/train.yaml}
LUND_JOB=${LUND_JOB:-jobs/train_lundnet.yaml}
HELDOUT_JOB=${HELDOUT_JOB:-jobs/heldout.yaml}
mkdir -p "$out"
out=$(cd "$out" && pwd)
partial=

# step NAME CMD...: run CMD unless OUT/NAME.done exists; mark it done when it succeeds
step() {
  local name=$1; shift
  if [[ -e "$out/$name.done" ]]; then
    echo "retrain: $name done, skipped"
    return
  fi
  if [[ -n "${STEPS:-}" && " $STEPS " != *" $name "* ]]; then
    echo "retrain: $name not in STEPS, skipped"
    partial=1
    return
  fi
  echo "retrain: $name: $*"
  if [[ -n "${DRY:-}" ]]; then return; fi
  "$@"
  touch "$out/$name.done"
}
# --overwrite: what an interrupted step left is removed (svjscout refuses to overwrite a run folder)
step skim_twin svjscout process "$TRAIN_JOB" --skim --overwrite --out "$out/skim"
step skim_jets svjscout process "$LUND_JOB" --skim --overwrite --out "$out/skim_jets"
# shellcheck disable=SC2086
step lundnet svjscout -v train lundnet "$out/skim_jets/skim" --out "$out/lundnet" --threads "$THREADS" \
  --device "$DEVICE" --crossfit-k "$CROSSFIT_K" --resume ${LUND_ARGS:-}
lund="$out/lundnet/lundnet.onnx"
oof="$out/lundnet/lundnet_oof.parquet"
# the shipped LundNet against the new one on the new one's test jets (AUCs with paired intervals)
step lundnet_comparison bash -c "python benchmarks/compare_lundnets.py '$out/skim_jets/skim' old=shipped:lundnet \
  new='$lund' --seed 1 --bootstrap '$N_BOOT' > '$out/lundnet_comparison.md'"
skims=("$out"/skim/skim/*/*.parquet)

pairs=()
for s in $SEEDS; do
  # shellcheck disable=SC2086
  step "twin_s$s" svjscout -v train twin "${skims[@]}" --lundnet "$lund" --lundnet-oof "$oof" \
    --config jobs/twin_train.yaml --job "$TRAIN_JOB" --device "$DEVICE" --seed "$s" --split-seed 1 \
    --no-progress --resume --out "$out/twin_s$s" ${TWIN_ARGS:-}
  # shellcheck disable=SC2086
  step "twin_analysis_s$s" svjscout -v train twin "${skims[@]}" --lundnet "$lund" --lundnet-oof "$oof" \
    --config jobs/twin_train_analysis.yaml --job "$TRAIN_JOB" --device "$DEVICE" --seed "$s" --split-seed 1 \
    --no-progress --resume --init "$out/twin_s$s/twin.onnx" --out "$out/twin_analysis_s$s" ${TWIN_ARGS:-} \
    ${ANALYSIS_ARGS:-}
  pairs+=("mdmm@$s=$out/heldout_mdmm_s$s:$out/twin_s$s/report.json"
          "analysis@$s=$out/heldout_analysis_s$s:$out/twin_analysis_s$s/report.json")
done

# heldout NAME LUNDNET TWIN: the pair through the real chain on the held-out events
heldout() {
  local name=$1 lundnet=$2 twin=$3
  # shellcheck disable=SC2086
  # allow_unbacked: a pair whose working point the statistics do not back still gets its cards (stamped
  # UNBACKED) so that every pair is compared; the comparison says which are backed
  step "heldout_$name" svjscout run "$HELDOUT_JOB" --set "analysis.lundnet_model=$lundnet" \
    --set "analysis.twin_model=$twin" --set datacards.allow_unbacked=true --overwrite \
    --out "$out/heldout_$name" ${RUN_ARGS:-}
}
heldout shipped shipped:lundnet shipped:twin
for s in $SEEDS; do
  heldout "mdmm_s$s" "$lund" "$out/twin_s$s/twin.onnx"
  heldout "analysis_s$s" "$lund" "$out/twin_analysis_s$s/twin.onnx"
done

step comparison bash -c "python benchmarks/compare_twin_pairs.py --bootstrap '$N_BOOT' --reference mdmm \
  ${pairs[*]} shipped='$out/heldout_shipped' --plot '$out/comparison' > '$out/comparison.md'"
if [[ -n "${partial:-}" ]]; then
  echo "retrain: the steps in STEPS are done; run again without STEPS for the rest"
else
  echo "retrain: done; the comparison is $out/comparison.md"
fi
