"""Benchmark: one twin-MLP training step and the constraint noise floors, by minibatch size.

A synthetic background-dominated skim (12 features, M_T, deta, weights) of ``--events`` events;
per batch size: the mean time of one full MDMM step (forward of both MLPs, 5 DisCo terms, the
SP/VP normalisation, per-M_T-bin and occupancy terms, backward, Adam), of one step of the
analysis-aware objective (``objective: analysis``: soft <Z_A> of the binned ABCD analysis over
two signal points with parent-grouped MC variances, models/abcd_objective.py) with the MDMM
constraints and without them, and of one floor draw (all 11 constraints on null scores, no
gradient). Prints a markdown table.

Usage: python benchmarks/bench_twin_step.py [--events 7000] [--batches 4096,16384,55000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=7000)
    ap.add_argument("--batches", default="4096,16384,55000")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from svjscout.models.abcd_objective import ObjectiveSettings, abcd_significance
    from svjscout.models.mdmm import MDMM, Constraint
    from svjscout.models.train_twin import (
        CONSTRAINTS,
        SkimData,
        TwinTrainConfig,
        _loss_terms,
        _Tensors,
        constraint_floors,
    )
    from svjscout.models.twin import TwinMLP
    from svjscout.models.twin_training.losses import closure_wps_for_step  # the working points of a step

    rng = np.random.default_rng(0)
    n = args.events
    label = (rng.random(n) < 0.2).astype(np.float32)
    d = SkimData(features=rng.normal(size=(n, 12)).astype(np.float32), mt=650 + rng.exponential(400, n),
                 deta=rng.uniform(-2.2, 2.2, n), weight=rng.uniform(0.5, 2.0, n), label=label,
                 mzprime=np.where(label == 1, 2000.0, np.nan), rinv=np.where(label == 1, 0.3, np.nan),
                 dataset=np.array(["x"] * n, dtype=object), event=np.arange(n, dtype=np.uint64))
    t = _Tensors(d, d.weight)
    point = torch.as_tensor(np.where(label == 1, rng.integers(0, 2, n), -1))
    group = torch.as_tensor(np.arange(n) // 10)  # 10 detector copies per generated event
    settings = ObjectiveSettings(mt_edges=(650, 800, 1000, 1300, 1700, 2500), b_floor=1.0)
    rows = []
    for bs in (int(b) for b in args.batches.split(",")):
        cfg = TwinTrainConfig(batch_size=bs, floor_draws=args.repeat, progress=False,
                              mt_edges=(650, 800, 1000, 1300, 1700, 2500), x0=0.5, y0=0.5, hidden=(32, 32))
        model = TwinMLP(12, cfg.hidden)
        model.set_standardisation(d.features)
        mdmm = MDMM([Constraint(c, cfg.eps[c]) for c in CONSTRAINTS])
        opt = torch.optim.Adam(list(model.parameters()) + list(mdmm.parameters()), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        times = []
        for i in range(args.repeat + 1):
            idx = torch.randint(t.n, (bs,), generator=gen)
            t0 = time.perf_counter()
            bce, _, vals = _loss_terms(model, t, idx, cfg, wps=closure_wps_for_step(cfg, gen))
            res = mdmm(bce, vals)
            opt.zero_grad()
            res.loss.backward()
            opt.step()
            if i:  # the first step compiles numba kernels
                times.append(time.perf_counter() - t0)
        ana = {}
        for constrained in (True, False):
            times_a = []
            for i in range(args.repeat + 1):
                idx = torch.randint(t.n, (bs,), generator=gen)
                t0 = time.perf_counter()
                bce, _, vals = _loss_terms(model, t, idx, cfg, wps=closure_wps_for_step(cfg, gen))
                lx, ly = model.logits(t.f[idx])
                z = abcd_significance(torch.sigmoid(lx), torch.sigmoid(ly), t.w_phys[idx], point[idx], t.mt[idx],
                                      0.5, 0.5, 0.02, settings, 2, group[idx])["z_mean"]
                loss = mdmm(-z, vals).loss if constrained else -z
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i:
                    times_a.append(time.perf_counter() - t0)
            ana[constrained] = float(np.mean(times_a))
        t0 = time.perf_counter()
        constraint_floors(t, cfg, resample=True, seed=1)
        floor_draw = (time.perf_counter() - t0) / args.repeat
        rows.append((bs, np.mean(times), ana[True], ana[False], floor_draw))
    print(f"twin step benchmark: {n} events ({int((label == 0).sum())} background), {args.threads} thread(s)\n")
    print("| batch size | MDMM step [s] | analysis step, constraints on [s] "
          "| analysis step, off [s] | floor draw [s] |")
    print("|---|---|---|---|---|")
    for bs, step, a_on, a_off, fd in rows:
        print(f"| {bs:,} | {step:.3f} | {a_on:.3f} | {a_off:.3f} | {fd:.3f} |")


if __name__ == "__main__":
    main()
