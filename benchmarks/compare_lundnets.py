"""LundNet models side by side on the same jets (issue 30's "old against new").

Every model scores the jets of one subset (default ``test``) of a LundNet skim, with the split of
the training (``--seed``; the default fractions of :mod:`svjscout.core.splits`) and its labels
(``truth``: a signal jet counts if a dark quark is within 0.8, the training's default). Prints
the AUC of every model per signal point against all backgrounds and against each background
process (the training's weights: every signal point the same total, backgrounds by physics
weight), with a 95 % interval from a Poisson bootstrap over the parents (a parent's jets and
detector copies move together) and, for every model after the first, the difference to the first
replica by replica (paired: the same resampled parents for every model). Each row gives the jets
and the effective number of parents (Kish) behind it, and says "not backed" below 10.

    python benchmarks/compare_lundnets.py data/retrain/skim_jets/skim \\
        old=shipped:lundnet new=data/retrain/lundnet/lundnet.onnx --bootstrap 200

Give the split seed the models were trained with (``models/retrain.sh``: 1) so that the jets
evaluated are outside the new model's training; a model trained on another sample (the shipped
one) has never seen these jets.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from svjscout.core.features import LUND_FEATURES
from svjscout.core.splits import SPLIT_NAMES
from svjscout.datacards.bootstrap import paired_difference, parent_counts, percentile_interval
from svjscout.datacards.guard import kish_neff
from svjscout.datacards.split import splitmix64
from svjscout.models import shipped_model
from svjscout.models.export import read_metadata
from svjscout.models.lundnet import load_lundnet_session
from svjscout.models.lundnet_training.data import JetSet, load_skim, training_weights
from svjscout.models.lundnet_training.evaluation import process_of
from svjscout.models.training.metrics import weighted_auc

MIN_NEFF = 10.0


def _path(spec: str) -> str:
    return str(shipped_model(spec.split(":", 1)[1])) if spec.startswith("shipped:") else spec


def score_jets(onnx_paths: list[str], skims: list[str], seed: int, subset: str) -> tuple[list[np.ndarray], JetSet]:
    """``(score per jet of every model, jets)``: the models on ``subset`` of the skims, read once
    with the longest max_len of the models and cut to each model's (the same nodes as a reading
    with that max_len: the skim keeps the widest angles first)."""
    metas = [read_metadata(p) for p in onnx_paths]
    lengths = [int(m.get("max_len", 32)) for m in metas]
    jets = load_skim(skims, max(lengths), seed).subset(SPLIT_NAMES.index(subset))
    scores = []
    for path, meta, n in zip(onnx_paths, metas, lengths, strict=True):
        cols = [LUND_FEATURES.index(f) for f in meta.get("features") or []]
        x = np.ascontiguousarray(jets.lund[:, :n][:, :, cols])
        mask = np.ascontiguousarray(jets.mask[:, :n], dtype=np.float32)
        scores.append(np.asarray(load_lundnet_session(path).run(["score"], {"lund": x, "mask": mask})[0],
                                 np.float64).ravel())
    return scores, jets


def parent_keys(jets: JetSet) -> np.ndarray:
    """A uint64 per jet naming its parent within its dataset (run, luminosityBlock, parent mixed)."""
    k = jets.keys
    assert k is not None
    with np.errstate(over="ignore"):
        key = splitmix64(splitmix64(splitmix64(k["run"]) ^ k["luminosityBlock"]) ^ k["parent"])
    return np.repeat(key, 2)  # J0 and J1 of every event


def comparisons(jets: JetSet) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"POINT vs BACKGROUND": (signal jets, background jets)}``: every signal point against all
    backgrounds and against each background process."""
    bkg = jets.label == 0
    procs = np.array([process_of(d) for d in jets.dataset], dtype=object)
    out = {}
    for point in sorted(set(jets.dataset[jets.label == 1])):
        sig = (jets.label == 1) & (jets.dataset == point)
        out[f"{point} vs all"] = (sig, bkg)
        for p in sorted(set(procs[bkg])):
            out[f"{point} vs {p}"] = (sig, bkg & (procs == p))
    return out


def neff_parents(weight: np.ndarray, key: np.ndarray) -> float:
    """Kish effective number of parents of weighted jets (a parent's jets summed first)."""
    if not len(weight):
        return 0.0
    _, inv = np.unique(key, return_inverse=True)
    w = np.bincount(inv, weight)
    return float(kish_neff(w.sum(), np.sum(w**2)))


def replica_counts(jets: JetSet, key: np.ndarray, n_boot: int) -> list[np.ndarray]:
    """Every jet's Poisson(1) count in replicas 0..n_boot-1 (its parent's: :func:`parent_counts`)."""
    out = []
    for r in range(n_boot):
        c = np.empty(len(key), np.int64)
        for d in np.unique(jets.dataset):
            sel = jets.dataset == d
            c[sel] = parent_counts(str(d), key[sel], r)
        out.append(c)
    return out


def _auc(score, label, weight) -> float:
    keep = weight != 0
    if not (np.any(label[keep] == 1) and np.any(label[keep] == 0)):
        return math.nan
    return weighted_auc(score[keep], label[keep], weight[keep])


def table(scores: dict[str, np.ndarray], jets: JetSet, n_boot: int) -> list[str]:
    """The markdown rows (see the module doc)."""
    labels = list(scores)
    w = training_weights(jets.label, jets.weight, jets.dataset)
    key = parent_keys(jets)
    counts = replica_counts(jets, key, n_boot)
    lines = ["| signal vs background | jets (sig / bkg) | N_eff parents (sig / bkg) | " + " | ".join(labels)
             + "".join(f" | {lb} - {labels[0]} (paired)" for lb in labels[1:]) + " |",
             "|---|---|---|" + "---|" * (2 * len(labels) - 1)]
    for name, (s_sel, b_sel) in comparisons(jets).items():
        sel = s_sel | b_sel
        lab, ws = jets.label[sel], w[sel]
        n_s, n_b = neff_parents(w[s_sel], key[s_sel]), neff_parents(w[b_sel], key[b_sel])
        cells, reps = [], {}
        for lb in labels:
            sc = scores[lb][sel]
            reps[lb] = np.array([_auc(sc, lab, ws * c[sel]) for c in counts])
            lo, hi = percentile_interval(reps[lb])
            cells.append(f"{_auc(sc, lab, ws):.4f} [{lo:.4f}, {hi:.4f}]")
        for lb in labels[1:]:
            med, lo, hi, _ = paired_difference(reps[labels[0]], reps[lb])
            cells.append(f"{med:+.4f} [{lo:+.4f}, {hi:+.4f}]")
        backed = "" if min(n_s, n_b) >= MIN_NEFF else f" (not backed: N_eff < {MIN_NEFF:g})"
        # jets that enter (a signal jet without a dark quark within 0.8 weighs 0 with truth labels)
        n_js, n_jb = int(np.sum(s_sel & (w != 0))), int(np.sum(b_sel & (w != 0)))
        lines.append(f"| {name}{backed} | {n_js} / {n_jb} | {n_s:.1f} / {n_b:.1f} | "
                     + " | ".join(cells) + " |")
    return lines


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="skim folder(s) or parquet file(s), then LABEL=MODEL (shipped:lundnet)")
    ap.add_argument("--seed", type=int, default=1, help="the split seed of the training [1]")
    ap.add_argument("--subset", default="test", choices=("val", "test"), help="the jets evaluated [test]")
    ap.add_argument("--bootstrap", type=int, default=200, metavar="N", help="Poisson replicas over parents [200]")
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    skims = [a for a in args.inputs if "=" not in a]
    models = dict(a.split("=", 1) for a in args.inputs if "=" in a)
    if not skims or not models:
        ap.error("give the skim(s) and at least one LABEL=MODEL")
    if args.bootstrap < 10:
        ap.error(f"--bootstrap {args.bootstrap}: at least 10 replicas (the intervals need them)")
    per_model, jets = score_jets([_path(spec) for spec in models.values()], skims, args.seed, args.subset)
    scores = dict(zip(models, per_model, strict=True))
    print(f"LundNet AUCs on the '{args.subset}' jets of {', '.join(skims)} (split seed {args.seed}; AUC [95 %] over "
          f"{args.bootstrap} Poisson replicas of the parents; differences paired to '{next(iter(models))}')\n")
    print("\n".join(table(scores, jets, args.bootstrap)))


if __name__ == "__main__":
    main()
