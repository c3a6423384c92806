"""Differentiable expected significance of the binned ABCD analysis (analysis-aware training).

The twin pair's recipe (BCE under decorrelation and closure constraints) optimises a proxy. This
module writes the figure the working-point scan maximises (datacards/significance.py, `<Z_A>`)
as a differentiable function of the scores X, Y, so that the networks can be trained on it:

1. **Soft regions.** Hard cuts become logistic steps of temperature T (annealed towards 0 in
   training): ``g_x = sigmoid((X - x0) / T)``, ``g_y = sigmoid((Y - y0) / T)``; memberships
   A = g_x (1 - g_y), B = g_x g_y (signal region), C = (1 - g_x)(1 - g_y), D = (1 - g_x) g_y,
   summing to 1 per event. The thresholds may be learned too.
2. **Soft yields** per M_T bin (hard bins: M_T does not depend on the networks; M_T above the
   last edge counts in the last bin, like the processor's histograms) and region, in events at
   the analysis luminosity: ``n_R,i = scale x sum_e w_e g_R,e``. Their Monte Carlo variance
   groups the detector copies of one generated event (``sum_p (sum_{e in p} w_e g_R,e)^2``).
3. **Prediction** ``nhat_B,i = n_A,i n_D,i / n_C,i``: the background-only ABCD fit to Asimov data
   reproduces A, C, D. The division is guarded by a floor ``n_min`` on the control-region yields
   (its gradient is 0 below the floor, where the prediction is meaningless anyway).
4. **Background uncertainty** per bin, in quadrature:
   * the statistical error of the prediction from the (Asimov) data in A, C, D:
     ``nhat^2 (1/n_A + 1/n_C + 1/n_D)``;
   * the non-closure ``(n_B - nhat_B)^2``: the square of ``|n_B - nhat_B|``, smooth where the
     absolute value is not;
   * the Monte Carlo error of that non-closure (the closure test's own precision, which the
     cards' non-closure rule also uses): ``v_B + nhat^2 (v_A/n_A^2 + v_C/n_C^2 + v_D/n_D^2)``.
   The background entering Z is ``b = nhat_B + b_floor``: one typical background MC event's
   weight, since a prediction below a single MC event is not resolved by the sample (without it
   an optimiser can empty a bin's A and B of MC and claim an infinite significance).
5. **Significance.** Per signal point k and bin i the modified Asimov significance with
   background uncertainty (Cowan et al.), with ``t = sigma^2 / b``:
   ``Z^2 = 2 [ (s+b) ln(1 + s / (b + (s+b) t)) - (b/t) ln(1 + t s / (b (1+t))) ]``
   (algebraically the scan's formula; ``2((s+b) ln(1+s/b) - s)`` for ``t < 1e-9``); the signal is
   rescaled so that every point has the reference point's total plane yield (the scan's
   ``stilde``); ``Z_k = sqrt(sum_i Z_k,i^2)``; the objective is ``<Z_A> = mean_k Z_k``.

Robustness (docs/analysis_objective.md; each piece switched by a field of :class:`ObjectiveSettings`
or by the training code, models/twin_training/analysis.py):

* **Non-closure from two halves of the parents** (``nonclosure_halves``): the background events
  are split in two by a hash of their generated event (``group``, re-salted per step), each half
  predicts B on its own (yields x 2) and the non-closure term is ``delta_1 delta_2`` with
  ``delta_h = n_B,h - nhat_B,h``. The halves are independent, so ``E[delta_1 delta_2] = delta^2``
  (the population non-closure, up to the O(1/N) bias of a ratio) whereas ``(n_B - nhat_B)^2``
  of the same events is ``delta^2 + Var``, a noise the optimiser can train to zero. Only its
  positive part enters the uncertainty (a negative product, pure noise, is worth nothing).
* **Kish N_eff** per region and bin (:func:`kish_neff`: ``n^2 / v`` of the soft yields and their
  grouped variances) and :func:`neff_shortfall`, the scan's rule ``N_eff >= 10`` as a penalty.
* **Signal in every region** (``signal_contamination``): the datacards put the signal into A, C
  and D too; the background-only fit to the Asimov data ``b + s`` then predicts
  ``nhat' = (n_A + s_A)(n_D + s_D) / (n_C + s_C)`` in B, so the excess seen is
  ``s_B + nhat_B - nhat'`` over a background ``nhat'`` whose data-statistics error is that of the
  contaminated control regions (per signal point).

Signal systematics are not in the objective: their variations are computed by the processor
from the jets (processors/variations.py), which a training sample of features does not carry;
the cards' signal lnN (a few per cent) change Z at second order next to the background terms.

Every function is written in float64 and differentiable in the scores and thresholds; the
gradients are checked against finite differences in tests/test_abcd_objective.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

__all__ = ["ObjectiveSettings", "soft_memberships", "binned_yields", "asimov_z2", "abcd_prediction",
           "abcd_significance", "significance_from_yields", "parent_halves", "halves_nonclosure", "kish_neff",
           "neff_shortfall"]


@dataclass(frozen=True)
class ObjectiveSettings:
    """Fixed inputs of :func:`abcd_significance`.

    Attributes:
        mt_edges: M_T bin edges in GeV (the analysis's card binning).
        yield_scale: multiplies the event weights to give events at the analysis luminosity
            (1 / fraction of the sample used, e.g. 1/0.6 on the training split).
        n_min: floor on the control-region yields in the prediction (events).
        b_floor: added to the predicted background in Z (events; see the module doc).
        data_stat, nonclosure, mc_stat: which terms enter the background uncertainty.
        reference: index of the signal point whose total yield every point is rescaled to.
        nonclosure_halves: the non-closure term from two halves of the parents
            (:func:`halves_nonclosure`) instead of ``(n_B - nhat_B)^2`` of the same events.
        signal_contamination: signal in A, C, D enters the prediction (the datacards' model).
        nonclosure_grad: the non-closure term passes its gradient (False: its value enters Z but
            the networks get no gradient from it, so they cannot fit its noise; closure is then
            the MDMM constraints' job; docs/analysis_objective.md).
    """

    mt_edges: tuple[float, ...]
    yield_scale: float = 1.0
    n_min: float = 1e-3
    b_floor: float = 0.0
    data_stat: bool = True
    nonclosure: bool = True
    mc_stat: bool = True
    reference: int = 0
    nonclosure_halves: bool = False
    signal_contamination: bool = False
    nonclosure_grad: bool = True


def soft_memberships(x: torch.Tensor, y: torch.Tensor, x0: torch.Tensor | float, y0: torch.Tensor | float,
                     temperature: float) -> torch.Tensor:
    """(n, 4) soft memberships [A, B, C, D] of events with scores x, y; rows sum to 1."""
    gx = torch.sigmoid((x - x0) / temperature)
    gy = torch.sigmoid((y - y0) / temperature)
    return torch.stack([gx * (1 - gy), gx * gy, (1 - gx) * (1 - gy), (1 - gx) * gy], dim=1)


def mt_bin_index(mt: torch.Tensor, edges: Sequence[float]) -> torch.Tensor:
    """Bin index of each M_T in ``edges`` (overflow in the last bin, underflow -1)."""
    e = torch.as_tensor(list(edges), dtype=torch.float64, device=mt.device)
    if e.numel() < 2 or not bool(torch.all(e[1:] > e[:-1])):
        raise ValueError(f"abcd objective: M_T edges {list(edges)} must be >= 2 increasing values")
    idx = torch.bucketize(mt.to(torch.float64), e, right=True) - 1
    return torch.where(mt.to(torch.float64) >= e[-1], torch.full_like(idx, e.numel() - 2), idx)


def binned_yields(memb: torch.Tensor, w: torch.Tensor, cell: torch.Tensor, n_cells: int,
                  group: torch.Tensor | None = None, replica: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft yields and their Monte Carlo variances per cell and region.

    Args:
        memb: (n, 4) memberships.  w: (n,) weights.  cell: (n,) int64 cell index in [0, n_cells)
            (events with -1 are ignored).
        group: (n,) int64 id of the generated event (detector copies share it); None: every
            event its own group.
        replica: (n,) bootstrap factors ``r`` (Poisson(1), one per group) of a replica: the
            yields are ``sum r w g`` and the variances ``sum_groups r (sum w g)^2``, both linear in
            ``r`` and so unbiased for the sample's (``(r w)^2`` would double the variances:
            ``E[r^2] = 2``).

    Returns:
        ``(n, v)``, each (n_cells, 4): ``n = sum w g``, ``v = sum_groups (sum_{e in group} w g)^2``.
    """
    ok = cell >= 0
    memb, w, cell = memb[ok], w[ok], cell[ok]
    part = memb * w[:, None]
    r = None if replica is None else replica[ok].to(part.dtype)[:, None]
    n = torch.zeros(n_cells, 4, dtype=part.dtype, device=part.device).index_add(0, cell, part if r is None
                                                                                  else part * r)
    if group is None:
        v = torch.zeros_like(n).index_add(0, cell, part * part if r is None else part * part * r)
        return n, v
    key = group[ok].to(torch.int64) * n_cells + cell
    uniq, inv = torch.unique(key, return_inverse=True)
    per_group = torch.zeros(len(uniq), 4, dtype=part.dtype, device=part.device).index_add(0, inv, part)
    sq = per_group * per_group
    if r is not None:  # the group's factor (shared by its events)
        sq = sq * torch.zeros(len(uniq), 1, dtype=part.dtype, device=part.device).index_copy(0, inv, r)
    v = torch.zeros_like(n).index_add(0, uniq % n_cells, sq)
    return n, v


def asimov_z2(s: torch.Tensor, b: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Squared modified Asimov significance with background uncertainty (elementwise; b > 0).

    ``sigma2`` is the absolute variance of b. Written with ``t = sigma2 / b`` as
    ``2 [(s+b) log1p(s / (b + (s+b) t)) - (b/t) log1p(t s / (b (1+t)))]``; for ``t < 1e-9`` its
    limit ``2 ((s+b) log1p(s/b) - s)``. Both branches are evaluated on safe arguments, so the
    gradient of the branch not taken is finite (no NaN leaks through ``torch.where``).
    """
    s = s.clamp_min(0.0)
    t = sigma2 / b
    small = t < 1e-9
    ts = torch.where(small, torch.ones_like(t), t)
    sb = s + b
    z2_sys = 2.0 * (sb * torch.log1p(s / (b + sb * ts)) - (b / ts) * torch.log1p(ts * s / (b * (1.0 + ts))))
    z2_nosys = 2.0 * (sb * torch.log1p(s / b) - s)
    return torch.where(small, z2_nosys, z2_sys).clamp_min(0.0)


def abcd_prediction(n: torch.Tensor, v: torch.Tensor, settings: ObjectiveSettings,
                    nonclosure: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """ABCD prediction of B and its variance per bin from background yields ``n`` and MC
    variances ``v`` ((..., bins, 4) in [A, B, C, D] order, events at the analysis luminosity).

    ``nonclosure``: the estimate of the squared non-closure to use (e.g. the positive part of
    :func:`halves_nonclosure`); None: ``(n_B - nhat_B)^2`` of these yields.

    Returns:
        ``(nhat_B, sigma2, parts)``: (..., bins) each; ``parts`` holds every variance term.
    """
    n_a, n_b, n_c, n_d = (n[..., r] for r in range(4))
    ga, gc, gd = (q.clamp_min(settings.n_min) for q in (n_a, n_c, n_d))
    nhat = ga * gd / gc
    zero = torch.zeros_like(nhat)
    nc = (n_b - nhat) ** 2 if nonclosure is None else nonclosure
    if not settings.nonclosure_grad:
        nc = nc.detach()
    parts = {
        "data_stat": nhat ** 2 * (1 / ga + 1 / gc + 1 / gd) if settings.data_stat else zero,
        "nonclosure": nc if settings.nonclosure else zero,
        "mc_stat": (v[..., 1] + nhat ** 2 * (v[..., 0] / ga ** 2 + v[..., 2] / gc ** 2 + v[..., 3] / gd ** 2))
        if settings.mc_stat else zero,
    }
    return nhat, parts["data_stat"] + parts["nonclosure"] + parts["mc_stat"], parts


def parent_halves(group: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """0/1 half of each event from a hash of its generated-event id ``group`` (>= 0) and ``salt``:
    copies of one parent share a half; another salt gives another, independent split."""
    h = (group.to(torch.int64) + int(salt) * 0x632BE5AB) & 0xFFFFFFFF
    for _ in range(2):  # a 32-bit integer mix (lowbias32-like); every product stays below 2^63
        h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return h & 1


def halves_nonclosure(memb: torch.Tensor, w: torch.Tensor, cell: torch.Tensor, n_cells: int, half: torch.Tensor,
                      n_min: float = 1e-3) -> torch.Tensor:
    """``delta_1 delta_2`` per cell: the non-closure ``n_B - n_A n_D / n_C`` of each half of the
    background (``half`` 0/1, by parent), yields x 2 so that each half estimates the whole. The
    halves share no parent, so the product's expectation is ``delta^2`` of the population (no
    variance term to fit); it is negative as often as the noise wants."""
    deltas = []
    for h in (0, 1):
        sel = half == h
        n, _ = binned_yields(memb[sel], 2.0 * w[sel], cell[sel], n_cells)
        ga, gc, gd = (n[:, r].clamp_min(n_min) for r in (0, 2, 3))
        deltas.append(n[:, 1] - ga * gd / gc)
    return deltas[0] * deltas[1]


def kish_neff(n: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Kish ``N_eff = (sum w g)^2 / sum (w g)^2`` elementwise from soft yields ``n`` and their
    variances ``v`` (:func:`binned_yields`); 0 where ``v`` or ``n`` is not positive (the
    datacards' ``kish_neff``; with hard cuts the same number)."""
    ok = (v > 0) & (n > 0)
    return torch.where(ok, n * n / torch.where(ok, v, torch.ones_like(v)), torch.zeros_like(n))


def neff_shortfall(neff: torch.Tensor, neff_min: float) -> torch.Tensor:
    """Penalty of the rule ``N_eff >= neff_min`` in every region and bin: the sum over cells of
    ``relu(1 - N_eff / neff_min)^2`` (0 where the rule holds, 1 per empty cell)."""
    if neff_min <= 0:
        return neff.new_zeros(())
    return torch.relu(1.0 - neff / neff_min).pow(2).sum()


def significance_from_yields(n_bkg: torch.Tensor, v_bkg: torch.Tensor, n_sig: torch.Tensor,
                             settings: ObjectiveSettings, nonclosure: torch.Tensor | None = None
                             ) -> dict[str, torch.Tensor]:
    """``<Z_A>`` from region yields: background ``n_bkg``, ``v_bkg`` (..., bins, 4) and signal
    ``n_sig`` (..., points, bins, 4) before the rescaling to the reference point's total
    (leading dimensions: e.g. a grid of working points). ``nonclosure`` (..., bins): see
    :func:`abcd_prediction`. Keys as :func:`abcd_significance`'s."""
    nhat, sigma2, parts = abcd_prediction(n_bkg, v_bkg, settings, nonclosure)
    total = n_sig.sum(dim=(-2, -1)).detach()  # the memberships sum to 1: independent of the scores
    ref = total[..., settings.reference:settings.reference + 1]
    scale = torch.where(total > 0, ref / total.clamp_min(1e-300), torch.zeros_like(total))
    s_all = n_sig * scale[..., None, None]
    if settings.signal_contamination:  # the b-only fit absorbs the signal in A, C, D
        nh_c, _, parts_c = abcd_prediction(n_bkg.unsqueeze(-3) + s_all, torch.zeros_like(s_all),
                                           replace(settings, nonclosure=False, mc_stat=False))
        s = s_all[..., 1] + nhat.unsqueeze(-2) - nh_c
        b = nh_c + settings.b_floor
        sig2 = parts_c["data_stat"] + (parts["nonclosure"] + parts["mc_stat"]).unsqueeze(-2)
    else:
        s = s_all[..., 1]
        b = (nhat + settings.b_floor).unsqueeze(-2)
        sig2 = sigma2.unsqueeze(-2)
    z2 = asimov_z2(s, b, sig2)
    z_points = torch.sqrt(z2.sum(dim=-1) + 1e-30)
    return {"z_mean": z_points.mean(dim=-1), "z_points": z_points, "z2_bins": z2, "s": s,
            "b": nhat + settings.b_floor, "nhat": nhat, "n_bkg": n_bkg, "sigma2": sigma2,
            "neff": kish_neff(n_bkg, v_bkg), **{f"var_{k}": t for k, t in parts.items()}}


def abcd_significance(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, point: torch.Tensor, mt: torch.Tensor,
                      x0: torch.Tensor | float, y0: torch.Tensor | float, temperature: float,
                      settings: ObjectiveSettings, n_points: int, group: torch.Tensor | None = None,
                      salt: int = 0, replica: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``<Z_A>`` of the ABCD analysis in one plane, differentiable in x, y, x0 and y0.

    Args:
        x, y: (n,) scores of the plane's selected events.  w: (n,) physics weights (events at
            the analysis luminosity once multiplied by ``settings.yield_scale``).
        point: (n,) int64 signal point index in [0, n_points), -1 for background.
        mt: (n,) M_T in GeV.  x0, y0: thresholds.  temperature: of the soft steps.
        group: (n,) int64 generated-event id of the background (copies share it), or None.
        salt: of the halves (``settings.nonclosure_halves``; :func:`parent_halves`).
        replica: (n,) Poisson-bootstrap factors of a replica, one per ``group`` (see
            :func:`binned_yields`); None: the sample itself.

    Returns:
        dict of tensors: ``z_mean`` (0-d), ``z_points`` (n_points,), ``z2_bins`` (n_points, bins),
        ``s`` (n_points, bins, the signal excess in B), ``b`` (bins, the background-only
        prediction plus ``b_floor``), ``nhat``, ``n_bkg`` (bins, 4), ``neff`` (bins, 4, Kish
        N_eff of the background), ``sigma2`` and the variance terms (bins,); with the halves
        also ``nonclosure_product`` (bins, the raw ``delta_1 delta_2``).
    """
    f64 = torch.float64
    x, y, w, mt = x.to(f64), y.to(f64), w.to(f64) * settings.yield_scale, mt.to(f64)
    memb = soft_memberships(x, y, x0, y0, temperature)
    mbin = mt_bin_index(mt, settings.mt_edges)
    n_bins = len(settings.mt_edges) - 1
    bkg = point < 0
    rep = None if replica is None else replica.to(f64)
    n_bkg, v_bkg = binned_yields(memb[bkg], w[bkg], mbin[bkg], n_bins, None if group is None else group[bkg],
                                 None if rep is None else rep[bkg])
    nonclosure = product = None
    if settings.nonclosure_halves:
        gid = group[bkg] if group is not None else torch.arange(int(bkg.sum()), device=x.device)
        wb = w[bkg] if rep is None else w[bkg] * rep[bkg]
        product = halves_nonclosure(memb[bkg], wb, mbin[bkg], n_bins, parent_halves(gid, salt), settings.n_min)
        nonclosure = product.clamp_min(0.0)
    sig = ~bkg
    cell = torch.where(mbin[sig] >= 0, point[sig] * n_bins + mbin[sig], torch.full_like(mbin[sig], -1))
    n_sig, _ = binned_yields(memb[sig], w[sig], cell, n_points * n_bins, None, None if rep is None else rep[sig])
    out = significance_from_yields(n_bkg, v_bkg, n_sig.reshape(n_points, n_bins, 4), settings, nonclosure)
    if product is not None:
        out["nonclosure_product"] = product
    return out
