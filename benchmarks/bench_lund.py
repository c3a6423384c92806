"""Benchmark: primary Lund declusterings (numba C-A vs fastjet C-A + Lund) and LundNet inference.

Jets: anti-kt R=0.8 jets (pT > 150 GeV, |eta| < 2.4) of the embedded sample files
(samples/embedded/*.root), all of them, flattened to jets x constituents.

* ``numba``: :func:`svjscout.processors.lund.primary_lund_declusterings` (after a warm-up call);
* ``fastjet``: ``ClusterSequence(C-A, R=1000)`` + ``exclusive_jets_lund_declusterings(1)``
  on the same jets (multi-event interface; one "event" per jet);
* LundNet onnxruntime, 1 intra-op thread, batches of 256 jets padded to ``--max-len``,
  small and reference configurations (randomly initialised: the speed does not depend on
  the weights), plus the shipped ``models/lundnet.onnx`` when present.

Every figure is jets per CPU-second, best of ``--repeat`` runs (1 thread each, so this is the
single-core rate; CPU time rather than wall time because the machine may be shared).
The ``trimmed`` row cuts each batch to its longest real sequence (exact: real nodes come first).

Usage: python benchmarks/bench_lund.py [--files GLOB] [--repeat 3] [--max-len 32]
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import awkward as ak  # noqa: E402
import numpy as np  # noqa: E402

from svjscout.samples.layouts import chs_mask, pf_collection_of  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def load_jets(pattern: str) -> ak.Array:
    import fastjet
    import uproot
    import vector

    vector.register_awkward()
    out = []
    for path in sorted(glob.glob(pattern)):
        tree = uproot.open(path)["Events"]
        name = pf_collection_of(tree.keys())
        ev = tree.arrays(filter_name=f"{name}_*")
        keep = chs_mask(ev, name)  # CHS, as the processor
        pf = ak.zip({k: ev[f"{name}_{k}"][keep] for k in ("pt", "eta", "phi", "mass")}, with_name="Momentum4D")
        cs = fastjet.ClusterSequence(pf, fastjet.JetDefinition(fastjet.antikt_algorithm, 0.8))
        jets = cs.inclusive_jets(min_pt=150.0)
        idx = cs.constituent_index(min_pt=150.0)[abs(jets.eta) < 2.4]
        cons = pf[ak.flatten(idx, axis=2)]
        cons = ak.unflatten(cons, ak.flatten(ak.num(idx, axis=2)), axis=1)
        out.append(ak.flatten(cons, axis=1))
    jets = ak.concatenate(out)
    return ak.zip({f: jets[f] for f in ("pt", "eta", "phi", "mass")}, with_name="Momentum4D")


def best_of(fn, repeat: int) -> float:
    """Best CPU time (s) of ``repeat`` calls: everything here is single-threaded, so CPU time
    equals wall time on an idle core and is robust on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", default=str(ROOT / "samples" / "embedded" / "*.root"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-len", type=int, default=32)
    args = ap.parse_args()

    import fastjet
    import torch

    from svjscout.models.lundnet import (
        REFERENCE,
        SMALL,
        LundNet,
        count_parameters,
        export_lundnet_onnx,
        load_lundnet_session,
    )
    from svjscout.processors.lund import pad_lund, primary_lund_declusterings

    torch.set_num_threads(1)
    jets = load_jets(args.files)
    n_jets = len(jets)
    n_cons = ak.to_numpy(ak.num(jets))
    primary_lund_declusterings(jets[:10])  # numba compile / cache load
    t_numba = best_of(lambda: primary_lund_declusterings(jets), args.repeat)
    jetdef = fastjet.JetDefinition(fastjet.cambridge_algorithm, 1000.0)
    t_fj = best_of(lambda: fastjet.ClusterSequence(jets, jetdef).exclusive_jets_lund_declusterings(1), args.repeat)
    nodes = primary_lund_declusterings(jets)
    x, mask = pad_lund(nodes, args.max_len)
    mask = mask.astype(np.float32)

    rows = [("C-A + primary Lund, numba (this package)", n_jets / t_numba),
            ("C-A + Lund, fastjet exclusive_jets_lund_declusterings", n_jets / t_fj)]
    batch = 256
    n_rep = max(1, 4096 // n_jets) if n_jets < 4096 else 1
    xb = np.concatenate([x] * n_rep)
    mb = np.concatenate([mask] * n_rep)

    def ort_rate(path, trim: bool = False) -> float:
        sess = load_lundnet_session(path, threads=1)
        sess.run(["score"], {"lund": xb[:batch], "mask": mb[:batch]})

        def run():
            for i in range(0, len(xb), batch):
                length = max(int(mb[i : i + batch].sum(axis=1).max()), 1) if trim else args.max_len
                sess.run(["score"], {"lund": xb[i : i + batch, :length], "mask": mb[i : i + batch, :length]})

        return len(xb) / best_of(run, args.repeat)

    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in (("small", SMALL), ("reference", REFERENCE)):
            torch.manual_seed(0)
            model = LundNet(cfg)
            path = export_lundnet_onnx(model, Path(tmp) / f"lundnet_{name}.onnx", cfg.features, {}, {})
            rows.append((f"LundNet {name} ({count_parameters(model)} params), onnxruntime, "
                         f"batch {batch}, L={args.max_len}",
                         ort_rate(path)))
            rows.append((f"LundNet {name}, batches trimmed to their longest jet", ort_rate(path, trim=True)))
        shipped = ROOT / "models" / "lundnet.onnx"
        if shipped.exists():
            rows.append((f"shipped models/lundnet.onnx, batch {batch}, L={args.max_len}", ort_rate(shipped)))

    print(f"{n_jets} AK8 jets, {n_cons.mean():.1f} constituents/jet on average (max {n_cons.max()}), "
          f"{ak.mean(ak.num(nodes)):.1f} primary declusterings/jet; "
          f"jets per CPU-second (1 thread), best of {args.repeat}")
    print()
    print("| stage | jets/s |")
    print("|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
