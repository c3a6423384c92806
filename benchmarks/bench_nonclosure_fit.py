"""Is the non-closure term fittable? (issue 29, item 6; docs/analysis_objective.md)

A small MLP maps 4 noise features of 2,000 background events to two scores (standardised, so
that about half of the events pass each cut at 0.5) and is trained for 300 Adam steps to
minimise one non-closure estimate on those events:

* ``square``: ``(n_B - nhat_B)^2`` of the same events;
* ``halves``: ``max(0, delta_1 delta_2)`` from two halves of the events, re-drawn every step.

It then prints, averaged over 6 seeds, on the training events and on a fresh sample of the same
size: the same-events square, the halves product averaged over 200 splits, and the MC variance
of ``n_B - nhat_B``. Untrained, the square's expectation is ``delta^2 + Var`` and the product's
is ``delta^2``. A fitted estimate sits below those on the training events.

    python benchmarks/bench_nonclosure_fit.py
"""

from __future__ import annotations

import numpy as np
import torch

from svjscout.models.abcd_objective import binned_yields, halves_nonclosure, parent_halves, soft_memberships


def _values(net: torch.nn.Module, f: torch.Tensor, salts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    z = net(f)
    xy = torch.sigmoid((z - z.mean(0)) / z.std(0))
    m = soft_memberships(xy[:, 0], xy[:, 1], 0.5, 0.5, 0.05)
    n = len(f)
    w, cell, gid = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.int64), torch.arange(n)
    y, v = binned_yields(m, w, cell, 1)
    nhat = y[:, 0] * y[:, 3] / y[:, 2]
    var = v[:, 1] + nhat ** 2 * (v[:, 0] / y[:, 0] ** 2 + v[:, 2] / y[:, 2] ** 2 + v[:, 3] / y[:, 3] ** 2)
    prods = torch.stack([halves_nonclosure(m, w, cell, 1, parent_halves(gid, s)) for s in salts])
    return (y[:, 1] - nhat) ** 2, prods, var


def main(n: int = 2000, steps: int = 300, seeds: int = 6) -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    res = {}
    for mode in ("square", "halves"):
        rows = []
        for seed in range(seeds):
            g = torch.Generator().manual_seed(100 + seed)
            f_train = torch.randn(n, 4, generator=g, dtype=torch.float64)
            f_fresh = torch.randn(n, 4, generator=g, dtype=torch.float64)
            torch.manual_seed(seed)
            net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()
            opt = torch.optim.Adam(net.parameters(), lr=1e-2)
            with torch.no_grad():
                start = [float(t.mean()) for t in _values(net, f_train, range(200))]
            for step in range(steps):
                sq, pr, _ = _values(net, f_train, [10_000 + step])
                loss = sq.sum() if mode == "square" else pr.clamp_min(0).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                train = [float(t.mean()) for t in _values(net, f_train, range(200))]
                fresh = [float(t.mean()) for t in _values(net, f_fresh, range(200))]
            rows.append(start + train + fresh)
        res[mode] = np.array(rows)
        m = res[mode].mean(0)
        print(f"{mode:7s} start:  square {m[0]:7.1f}  product {m[1]:7.1f}  MC var {m[2]:7.1f}\n"
              f"        train:  square {m[3]:7.1f}  product {m[4]:7.1f}  MC var {m[5]:7.1f}\n"
              f"        fresh:  square {m[6]:7.1f}  product {m[7]:7.1f}  MC var {m[8]:7.1f}")
    return res


if __name__ == "__main__":
    main()
