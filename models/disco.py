"""Weighted distance correlation (DisCo): a fast O(n log n) version and the direct O(n^2) one.

Both compute dCorr exactly as ``docs/physics.md`` defines it: the weighted V-statistic with
``d_ij = |x_i - x_j|``, weighted double centring, ``dCov = sqrt(dCov^2)`` and
``dCorr = dCov / sqrt(dVar(x) dVar(y))`` in ``[0, 1]``. This equals
``dcor.distance_correlation`` (not its ``_sqr`` variant) for unit weights.

The fast version (:func:`dcorr`) is a custom :class:`torch.autograd.Function` whose forward and
backward passes both run in O(n log n) time and O(n) memory:

* with the weights normalised to ``sum w = 1``, the row sums ``a_i = sum_j w_j |x_i - x_j|``
  are prefix sums over the sorted sample, and the double centring collapses to
  ``dCov^2 = S_xy - 2 sum_i w_i a_i b_i + (sum_i w_i a_i)(sum_i w_i b_i)``;
* the cross term ``S_xy = sum_ij w_i w_j |x_i - x_j| |y_i - y_j|`` is written with
  ``|u| = u sign(u)`` as ``sum_i w_i [x_i y_i Q(w) - x_i Q(wy) - y_i Q(wx) + Q(wxy)]_i`` where
  ``Q(v)_i = sum_j v_j sign(x_i - x_j) sign(y_i - y_j)`` is a two-dimensional dominance sum,
  evaluated with a Fenwick (binary indexed) tree over the y ranks while sweeping x
  (Huo & Szekely 2016, generalised to weights);
* the gradients need only ``Q(w), Q(wx), Q(wy)`` again and one-dimensional signed sums
  ``sum_j v_j sign(x_i - x_j)`` (sort + cumulative sums).

Ties in x or y are handled exactly (tied pairs contribute zero). See ``docs/twin.md``.

Devices (issue 29): :func:`dcorr` takes ``method``: ``"fast"`` is the exact O(n log n) path
above (NumPy/numba on the CPU in float64, the result moved back to the input's device and
dtype); ``"dense"`` is the O(n^2) formula of :func:`dcorr_reference` run by torch on the
input's device and dtype (differentiable by autograd, no host transfer); ``"auto"`` (default)
takes ``"fast"`` for CPU tensors and ``"dense"`` for tensors on another device (CUDA) when
``n <= dense_max`` (memory ~6 n^2 elements), ``"fast"`` otherwise.

Bias-corrected dCorr^2 (issue 29, :func:`u_dcorr_sqr`): the V-statistic dCorr^2 above has a
positive expectation under independence that falls like ~1/n, so an eps on it depends on the
sample size. The U-centred estimator of Szekely & Rizzo (2014), ``dCov_U^2 / sqrt(dVar_U^2(x)
dVar_U^2(y))``, has expectation ~0 under independence whatever n (it can be negative). With
weights it is written as the U-statistic it is (Huo & Szekely 2016),
``dCov_U^2 = T1 + T2 - 2 T3`` with weighted means over *distinct* indices

    T1 = sum_{i!=j} w_i w_j A_ij B_ij / sum_{i!=j} w_i w_j
    T2 = sum_{i,j,k,l distinct} w_i w_j w_k w_l A_ij B_kl / sum_{distinct} w_i w_j w_k w_l
    T3 = sum_{i,j,k distinct} w_i w_j w_k A_ij B_ik / sum_{distinct} w_i w_j w_k

(``A_ij = |x_i - x_j|``, ``B_ij = |y_i - y_j|``), each an unbiased estimate of the same product of
expectations under independence for fixed weights; for unit weights it is exactly Szekely &
Rizzo's estimator (``dcor.u_distance_correlation_sqr``). The distinct-index sums reduce to the
row sums ``a_i`` and to ``sum_ij p_i q_j A_ij B_ij`` for ``(p, q)`` in ``(w, w), (w, w^2),
(w^2, w^2)``, all O(n log n) with the dominance sums above.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["dcorr", "dcorr_reference", "dcorr_numpy", "DCorrFunction", "u_dcorr_sqr", "u_dcorr_sqr_reference",
           "UDCorrSqrFunction", "DENSE_MAX"]

#: Largest n for which ``method="auto"`` runs the dense O(n^2) dCorr on a non-CPU device.
DENSE_MAX = 8192

try:  # numba is a dependency; the pure-numpy fallback is only for exotic installs.
    import numba

    _njit = numba.njit(cache=True, nogil=True)
except ImportError:  # pragma: no cover
    numba = None

    def _njit(f):
        return f


@_njit
def _fenwick_sweep(order, group_end, yrank, m, vals, less, greater):
    """Sweep ``order``; for each element sum ``vals`` over elements strictly earlier in the sweep.

    Elements of one tie group (``order[s:group_end[s]]``) are all queried before any is
    inserted, so "earlier" means "strictly smaller key". The sums are split by the y rank:
    ``less[i] += sum over earlier j with yrank_j < yrank_i``, ``greater[i] += ... > yrank_i``.

    Args:
        order: (n,) int64 indices in sweep order.
        group_end: (n,) int64, for a position p the end position of its tie group.
        yrank: (n,) int64 dense ranks of y in 1..m.
        m: number of distinct y values.
        vals: (n, c) float64 channels.
        less, greater: (n, c) float64 outputs, accumulated into.
    """
    n, c = vals.shape
    tree = np.zeros((m + 1, c))
    total = np.zeros(c)
    lo = np.zeros(c)
    le = np.zeros(c)
    p = 0
    while p < n:
        q = group_end[p]
        for t in range(p, q):
            i = order[t]
            r = yrank[i]
            for ch in range(c):
                lo[ch] = 0.0
                le[ch] = 0.0
            k = r - 1  # prefix over ranks < r
            while k > 0:
                for ch in range(c):
                    lo[ch] += tree[k, ch]
                k -= k & (-k)
            k = r  # prefix over ranks <= r
            while k > 0:
                for ch in range(c):
                    le[ch] += tree[k, ch]
                k -= k & (-k)
            for ch in range(c):
                less[i, ch] += lo[ch]
                greater[i, ch] += total[ch] - le[ch]
        for t in range(p, q):
            i = order[t]
            k = yrank[i]
            while k <= m:
                for ch in range(c):
                    tree[k, ch] += vals[i, ch]
                k += k & (-k)
            for ch in range(c):
                total[ch] += vals[i, ch]
        p = q


class _Sorted:
    """Sort of a key with its tie groups: everything the sums below need, computed once.

    Attributes:
        order: (n,) int64 argsort of the key.
        start, end: (n,) int64, per sorted position the start / end (exclusive) of its tie group.
        rank: (n,) int64 dense rank (1..m) of each element in original order.
        m: number of distinct values.
    """

    def __init__(self, key: np.ndarray):
        n = len(key)
        self.order = np.argsort(key, kind="stable").astype(np.int64)
        ks = key[self.order]
        new = np.ones(n, dtype=bool)
        new[1:] = ks[1:] != ks[:-1]
        gid = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], n)
        self.start = starts[gid].astype(np.int64)
        self.end = ends[gid].astype(np.int64)
        self.rank = np.empty(n, dtype=np.int64)
        self.rank[self.order] = gid + 1
        self.m = int(gid[-1] + 1) if n else 0


def _signed_sums(srt: _Sorted, vals: np.ndarray) -> np.ndarray:
    """``out[i, c] = sum_j vals[j, c] * sign(key_i - key_j)`` in O(n) given the sort.

    Args:
        srt: sort of the key (n elements).
        vals: (n, c) float64.

    Returns:
        (n, c) float64.
    """
    cs = np.zeros((vals.shape[0] + 1, vals.shape[1]))
    np.cumsum(vals[srt.order], axis=0, out=cs[1:])
    out = np.empty_like(vals)
    out[srt.order] = cs[srt.start] - (cs[-1] - cs[srt.end])
    return out


def _dominance_sums(sx: _Sorted, sy: _Sorted, vals: np.ndarray) -> np.ndarray:
    """``Q[i, c] = sum_j vals[j, c] sign(x_i - x_j) sign(y_i - y_j)`` in O(n log n).

    Args:
        sx, sy: sorts of x and y (n elements).
        vals: (n, c) float64.

    Returns:
        (n, c) float64.
    """
    n, c = vals.shape
    vals = np.ascontiguousarray(vals, dtype=np.float64)
    lo_f = np.zeros((n, c))
    gr_f = np.zeros((n, c))
    _fenwick_sweep(sx.order, sx.end, sy.rank, sy.m, vals, lo_f, gr_f)  # j with x_j < x_i
    lo_b = np.zeros((n, c))
    gr_b = np.zeros((n, c))
    rev_end = (n - sx.start[::-1]).astype(np.int64)
    _fenwick_sweep(sx.order[::-1].copy(), rev_end, sy.rank, sy.m, vals, lo_b, gr_b)  # x_j > x_i
    return lo_f - gr_f + gr_b - lo_b


def _forward_stats(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict:
    """All O(n log n) intermediate quantities of the fast dCorr (weights sum to 1, x, y centred)."""
    srx, sry = _Sorted(x), _Sorted(y)
    sx = _signed_sums(srx, np.stack([w, w * x], axis=1))
    sy = _signed_sums(sry, np.stack([w, w * y], axis=1))
    cx, cy = sx[:, 0], sy[:, 0]  # c_i = sum_j w_j sign(x_i - x_j)
    a = x * cx - sx[:, 1]  # a_i = sum_j w_j |x_i - x_j|
    b = y * cy - sy[:, 1]
    q = _dominance_sums(srx, sry, np.stack([w, w * x, w * y, w * x * y], axis=1))
    s_xy = float(np.sum(w * (x * y * q[:, 0] - x * q[:, 2] - y * q[:, 1] + q[:, 3])))
    ga, gb = float(w @ a), float(w @ b)
    v = s_xy - 2.0 * float(np.sum(w * a * b)) + ga * gb
    # dVar^2: S_xx = sum_ij w_i w_j (x_i - x_j)^2 = 2 (sum w x^2) - 2 (sum w x)^2
    mx, my = float(w @ x), float(w @ y)
    s_xx = 2.0 * float(w @ (x * x)) - 2.0 * mx * mx
    s_yy = 2.0 * float(w @ (y * y)) - 2.0 * my * my
    p = s_xx - 2.0 * float(np.sum(w * a * a)) + ga * ga
    r = s_yy - 2.0 * float(np.sum(w * b * b)) + gb * gb
    return dict(a=a, b=b, cx=cx, cy=cy, q=q, v=v, p=p, r=r, ga=ga, gb=gb, srx=srx, sry=sry)


def _value(v: float, p: float, r: float) -> float:
    """dCorr from dCov^2 (v) and dVar^2 (p, r); 0 for a constant variable."""
    if p <= 0.0 or r <= 0.0 or v <= 0.0:
        return 0.0
    return float(np.sqrt(v / np.sqrt(p * r)))


def _prepare(x, y, weights):
    """float64 numpy copies: x, y centred on their weighted means, weights normalised to sum 1."""
    xn = np.asarray(x, dtype=np.float64).reshape(-1)
    yn = np.asarray(y, dtype=np.float64).reshape(-1)
    if xn.shape != yn.shape:
        raise ValueError(f"dcorr: x has shape {xn.shape}, y has shape {yn.shape}; expected equal 1-D shapes")
    if weights is None:
        wn = np.full(xn.shape, 1.0 / max(len(xn), 1))
    else:
        wn = np.asarray(weights, dtype=np.float64).reshape(-1)
        if wn.shape != xn.shape:
            raise ValueError(f"dcorr: weights have shape {wn.shape}, expected {xn.shape}")
        total = wn.sum()
        if not total > 0:
            raise ValueError(f"dcorr: sum of weights is {total}, expected > 0")
        wn = wn / total
    xn = xn - wn @ xn
    yn = yn - wn @ yn
    return xn, yn, wn


def dcorr_numpy(x, y, weights=None) -> float:
    """Fast weighted dCorr of numpy arrays (no gradient).

    Args:
        x, y: (n,) arrays.
        weights: (n,) non-negative weights or ``None`` (unit weights).

    Returns:
        dCorr in [0, 1] as a float.
    """
    xn, yn, wn = _prepare(x, y, weights)
    if len(xn) < 2:
        return 0.0
    st = _forward_stats(xn, yn, wn)
    return _value(st["v"], st["p"], st["r"])


class DCorrFunction(torch.autograd.Function):
    """Autograd function: weighted dCorr value in O(n log n), analytic O(n log n) backward.

    Gradients flow to ``x`` and ``y``; the weights are treated as constants.
    """

    @staticmethod
    def forward(ctx, x, y, weights):  # noqa: D102
        xn, yn, wn = _prepare(x.detach().cpu().numpy(), y.detach().cpu().numpy(),
                              None if weights is None else weights.detach().cpu().numpy())
        if len(xn) < 2:
            ctx.zero = True
            return x.new_zeros(())
        st = _forward_stats(xn, yn, wn)
        val = _value(st["v"], st["p"], st["r"])
        ctx.zero = val == 0.0
        ctx.stash = (xn, yn, wn, st, val)
        ctx.dtypes = (x.dtype, y.dtype)
        return torch.tensor(val, dtype=x.dtype, device=x.device)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        if ctx.zero or not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None
        xn, yn, w, st, val = ctx.stash
        a, b, cx, cy, q = st["a"], st["b"], st["cx"], st["cy"], st["q"]
        v, p, r, ga, gb = st["v"], st["p"], st["r"], st["ga"], st["gb"]
        # dCorr = v^(1/2) p^(-1/4) r^(-1/4)
        k_v, k_p, k_r = val / (2.0 * v), -val / (4.0 * p), -val / (4.0 * r)
        g = float(grad_out)

        def grad_one(u, srt, c_u, a_u, b_other, t_u, g_u, g_other, k_self):
            # e_k = sum_i w_i b_i sign(u_k - u_i), f_k = sum_i w_i a_i sign(u_k - u_i)
            ef = _signed_sums(srt, np.stack([w * b_other, w * a_u], axis=1))
            dv = 2.0 * w * t_u - 2.0 * w * (b_other * c_u + ef[:, 0]) + 2.0 * w * c_u * g_other
            dp = 4.0 * w * u - 4.0 * w * (a_u * c_u + ef[:, 1]) + 4.0 * g_u * w * c_u
            return k_v * dv + k_self * dp

        # T^x_k = sum_j w_j sign(x_k - x_j) |y_k - y_j| = y_k Q(w) - Q(wy); T^y symmetric.
        tx = yn * q[:, 0] - q[:, 2]
        ty = xn * q[:, 0] - q[:, 1]
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = torch.from_numpy(g * grad_one(xn, st["srx"], cx, a, b, tx, ga, gb, k_p)).to(grad_out.device,
                                                                                              ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            gy = torch.from_numpy(g * grad_one(yn, st["sry"], cy, b, a, ty, gb, ga, k_r)).to(grad_out.device,
                                                                                              ctx.dtypes[1])
        return gx, gy, None


def dcorr(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None, method: str = "auto",
          dense_max: int = DENSE_MAX) -> torch.Tensor:
    """Weighted distance correlation, differentiable in x and y.

    Args:
        x: (n,) tensor (e.g. a classifier score, dimensionless).
        y: (n,) tensor (e.g. M_T in GeV; dCorr is scale invariant).
        weights: (n,) non-negative event weights, or ``None`` for unit weights. Treated as
            constants (no gradient). Their overall scale does not matter.
        method: ``"fast"`` (exact O(n log n) time, O(n) memory, float64 on the CPU),
            ``"dense"`` (O(n^2) on the input's device and dtype) or ``"auto"``: ``"fast"`` on
            the CPU, ``"dense"`` on another device up to ``dense_max`` events, else ``"fast"``.
        dense_max: see ``method``.

    Returns:
        0-d tensor in [0, 1] with the dtype and device of ``x``; 0 for fewer than 2 events or a
        constant input.
    """
    if x.dim() != 1 or y.dim() != 1:
        raise ValueError(f"dcorr: expected 1-D x and y, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if method not in ("auto", "fast", "dense"):
        raise ValueError(f"dcorr: method={method!r}, expected 'auto', 'fast' or 'dense'")
    if method == "auto":
        method = "dense" if x.device.type != "cpu" and x.numel() <= int(dense_max) else "fast"
    if method == "dense":
        if x.shape != y.shape or (weights is not None and weights.shape != x.shape):
            raise ValueError(f"dcorr: x {tuple(x.shape)}, y {tuple(y.shape)}, weights "
                             f"{None if weights is None else tuple(weights.shape)}: expected equal 1-D shapes")
        if x.numel() < 2:
            return x.new_zeros(())
        y = y.to(x.dtype)
        w = None if weights is None else weights.to(device=x.device, dtype=x.dtype)
        if w is not None and not float(w.sum()) > 0:
            raise ValueError(f"dcorr: sum of weights is {float(w.sum())}, expected > 0")
        return dcorr_reference(x, y, w)
    return DCorrFunction.apply(x, y, weights)


def _centred(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    row = d @ w  # r_i = sum_j w_j d_ij (weights sum to 1)
    grand = w @ row
    return d - row[:, None] - row[None, :] + grand


def dcorr_reference(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Direct O(n^2) weighted dCorr (the ``docs/physics.md`` formula), differentiable by autograd.

    Args:
        x, y: (n,) tensors.
        weights: (n,) non-negative weights or ``None``.

    Returns:
        0-d tensor in [0, 1]. Memory is O(n^2): use only for n up to ~2e4.
    """
    if weights is None:
        weights = torch.ones_like(x)
    w = weights / weights.sum()
    dx = _centred((x[:, None] - x[None, :]).abs(), w)
    dy = _centred((y[:, None] - y[None, :]).abs(), w)
    ww = w[:, None] * w[None, :]
    v = (ww * dx * dy).sum()
    p = (ww * dx * dx).sum()
    r = (ww * dy * dy).sum()
    if float(p.detach()) <= 0.0 or float(r.detach()) <= 0.0 or float(v.detach()) <= 0.0:
        return (v * 0.0).detach()
    return torch.sqrt(v / torch.sqrt(p * r))


def _u_parts(x, y, w, srx, sry):
    """Everything the weighted U-statistic dCorr^2 and its gradient need (weights sum to 1, x, y centred)."""
    w2 = w * w
    p2, p3, p4 = float(w2.sum()), float(np.sum(w2 * w)), float(np.sum(w2 * w2))
    d2 = 1.0 - p2
    d3 = 1.0 - 3 * p2 + 2 * p3
    d4 = 1.0 - 6 * p2 + 3 * p2 * p2 + 8 * p3 - 6 * p4
    sx = _signed_sums(srx, np.stack([w, w * x], axis=1))
    sy = _signed_sums(sry, np.stack([w, w * y], axis=1))
    cx, cy = sx[:, 0], sy[:, 0]
    a = x * cx - sx[:, 1]  # a_i = sum_j w_j |x_i - x_j|
    b = y * cy - sy[:, 1]
    # dominance sums Q(q), Q(qx), Q(qy), Q(qxy) for q = w and q = w^2
    q = _dominance_sums(srx, sry, np.stack([w, w * x, w * y, w * x * y, w2, w2 * x, w2 * y, w2 * x * y], axis=1))

    def f(k):  # F(q)_i = sum_j q_j |x_i - x_j| |y_i - y_j|
        c = q[:, 4 * k:4 * k + 4]
        return x * y * c[:, 0] - x * c[:, 2] - y * c[:, 1] + c[:, 3]

    f_w, f_w2 = f(0), f(1)
    return dict(w=w, w2=w2, d2=d2, d3=d3, d4=d4, a=a, b=b, cx=cx, cy=cy, q=q, f_w=f_w, f_w2=f_w2)


def _sq(x, p, q):
    """sum_ij p_i q_j (x_i - x_j)^2 in closed form."""
    return float(p @ (x * x) * q.sum() - 2 * (p @ x) * (q @ x) + p.sum() * (q @ (x * x)))


def _u_values(x, y, pt) -> tuple[float, float, float]:
    """(dCov_U^2(x, y), dVar_U^2(x), dVar_U^2(y)) from :func:`_u_parts` (the module docstring's T1 + T2 - 2 T3)."""
    w, w2, a, b = pt["w"], pt["w2"], pt["a"], pt["b"]
    d2, d3, d4 = pt["d2"], pt["d3"], pt["d4"]
    ga, gb = float(w @ a), float(w @ b)
    s11, s12, s22 = float(w @ pt["f_w"]), float(w @ pt["f_w2"]), float(w2 @ pt["f_w2"])
    v = s11 / d2 + (ga * gb - 4.0 * float(np.sum(w2 * a * b)) + 2.0 * s22) / d4 \
        - 2.0 * (float(np.sum(w * a * b)) - s12) / d3

    def var(u, au):
        g = float(w @ au)
        return _sq(u, w, w) / d2 + (g * g - 4.0 * float(np.sum(w2 * au * au)) + 2.0 * _sq(u, w2, w2)) / d4 \
            - 2.0 * (float(np.sum(w * au * au)) - _sq(u, w, w2)) / d3

    return v, var(x, a), var(y, b)


def _u_grad(u, other, srt, c_u, a_u, b_o, t_w, t_w2, pt, g_other) -> tuple[np.ndarray, np.ndarray]:
    """(d dCov_U^2 / du, d dVar_U^2(u) / du) for u = x (or y, with the roles swapped).

    ``t_w``, ``t_w2``: T^u(q)_k = sum_j q_j sign(u_k - u_j) |v_k - v_j| for q = w, w^2;
    ``g_other`` = sum_i w_i b_i of the other variable.
    """
    w, w2, d2, d3, d4 = pt["w"], pt["w2"], pt["d2"], pt["d3"], pt["d4"]
    e = _signed_sums(srt, np.stack([w * b_o, w2 * b_o, w * a_u, w2 * a_u], axis=1))
    # dCov: S(p, q) = sum_ij p_i q_j A_ij B_ij, dS/du_k = p_k T(q)_k + q_k T(p)_k
    dn1 = 2.0 * w * t_w
    ds12 = w * t_w2 + w2 * t_w
    ds22 = 2.0 * w2 * t_w2
    # sum_i r_i a_i b_i: d/du_k = r_k b_k c_k + w_k sum_i r_i b_i sign(u_k - u_i)
    dm1 = w * b_o * c_u + w * e[:, 0]
    dm2 = w2 * b_o * c_u + w * e[:, 1]
    dga = 2.0 * w * c_u
    dv = dn1 / d2 + (dga * g_other - 4.0 * dm2 + 2.0 * ds22) / d4 - 2.0 * (dm1 - ds12) / d3
    # dVar: the same with B = A (closed-form squared distances)
    ga = float(w @ a_u)

    def dsq(p, q):
        return 2.0 * p * (u * q.sum() - q @ u) + 2.0 * q * (u * p.sum() - p @ u)

    dm1p = 2.0 * w * a_u * c_u + 2.0 * w * e[:, 2]
    dm2p = 2.0 * w2 * a_u * c_u + 2.0 * w * e[:, 3]
    dp = dsq(w, w) / d2 + (2.0 * ga * dga - 4.0 * dm2p + 2.0 * dsq(w2, w2)) / d4 - 2.0 * (dm1p - dsq(w, w2)) / d3
    return dv, dp


def _u_check(xn, wn, who: str) -> None:
    if len(xn) < 4 or np.count_nonzero(wn) < 4:
        raise ValueError(f"{who}: {np.count_nonzero(wn)} events with weight > 0, expected >= 4")


class UDCorrSqrFunction(torch.autograd.Function):
    """Autograd function: weighted U-statistic dCorr^2 in O(n log n), analytic O(n log n) backward
    (gradients to ``x`` and ``y``; weights are constants)."""

    @staticmethod
    def forward(ctx, x, y, weights):  # noqa: D102
        xn, yn, wn = _prepare(x.detach().cpu().numpy(), y.detach().cpu().numpy(),
                              None if weights is None else weights.detach().cpu().numpy())
        _u_check(xn, wn, "u_dcorr_sqr")
        srx, sry = _Sorted(xn), _Sorted(yn)
        pt = _u_parts(xn, yn, wn, srx, sry)
        v, p, r = _u_values(xn, yn, pt)
        ctx.zero = p <= 0.0 or r <= 0.0
        val = 0.0 if ctx.zero else float(v / np.sqrt(p * r))
        ctx.stash = (xn, yn, srx, sry, pt, v, p, r, val)
        ctx.dtypes = (x.dtype, y.dtype)
        return torch.tensor(val, dtype=x.dtype, device=x.device)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        if ctx.zero or not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None
        xn, yn, srx, sry, pt, v, p, r, val = ctx.stash
        q, w = pt["q"], pt["w"]
        g = float(grad_out)
        root = np.sqrt(p * r)
        gx = gy = None
        if ctx.needs_input_grad[0]:
            t_w, t_w2 = yn * q[:, 0] - q[:, 2], yn * q[:, 4] - q[:, 6]
            dv, dp = _u_grad(xn, yn, srx, pt["cx"], pt["a"], pt["b"], t_w, t_w2, pt, float(w @ pt["b"]))
            gx = torch.from_numpy(g * (dv / root - 0.5 * val * dp / p)).to(grad_out.device, ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            t_w, t_w2 = xn * q[:, 0] - q[:, 1], xn * q[:, 4] - q[:, 5]
            dv, dr = _u_grad(yn, xn, sry, pt["cy"], pt["b"], pt["a"], t_w, t_w2, pt, float(w @ pt["a"]))
            gy = torch.from_numpy(g * (dv / root - 0.5 * val * dr / r)).to(grad_out.device, ctx.dtypes[1])
        return gx, gy, None


def u_dcorr_sqr(x, y, weights=None):
    """Bias-corrected (U-centred) squared distance correlation, weighted, in O(n log n).

    Szekely & Rizzo (2014) for unit weights (equals ``dcor.u_distance_correlation_sqr``); with
    weights the U-statistic of the module docstring. Its expectation under independence is ~0
    for any n, so a threshold on it does not depend on the sample size (the V-statistic
    ``dcorr**2`` is biased upwards by ~1/n). It can be negative.

    Args:
        x, y: (n,) arrays, or tensors (then differentiable in x and y with an analytic
            O(n log n) backward, :class:`UDCorrSqrFunction`), n >= 4 events with weight > 0.
        weights: (n,) non-negative weights or ``None`` (constants).

    Returns:
        float for array inputs, a 0-d tensor (dtype and device of ``x``) for tensor ``x``; 0 when
        ``x`` or ``y`` has no U-centred spread (e.g. constant).
    """
    if isinstance(x, torch.Tensor):
        y = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y), dtype=x.dtype, device=x.device)
        if weights is not None and not isinstance(weights, torch.Tensor):
            weights = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        if x.dim() != 1 or y.dim() != 1:
            raise ValueError(f"u_dcorr_sqr: expected 1-D x and y, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
        return UDCorrSqrFunction.apply(x, y, weights)
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().numpy()
    xn, yn, wn = _prepare(x, y, weights)
    _u_check(xn, wn, "u_dcorr_sqr")
    v, p, r = _u_values(xn, yn, _u_parts(xn, yn, wn, _Sorted(xn), _Sorted(yn)))
    if p <= 0.0 or r <= 0.0:
        return 0.0
    return float(v / np.sqrt(p * r))


def u_dcorr_sqr_reference(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Direct O(n^2) U-centred dCorr^2 (differentiable by autograd; unit weights: Szekely & Rizzo's
    U-centring ``A~_ij = a_ij - a_i./(n-2) - a_.j/(n-2) + a../((n-1)(n-2))``). With weights the
    same distinct-index sums as :func:`u_dcorr_sqr`, written with the n x n matrices.

    Args:
        x, y: (n,) tensors, n >= 4; weights: (n,) or ``None``.
    """
    if weights is None:
        weights = torch.ones_like(x)
    w = (weights / weights.sum()).to(x.dtype)

    def ucov(a_mat, b_mat):
        w2 = w * w
        p2, p3, p4 = w2.sum(), (w2 * w).sum(), (w2 * w2).sum()
        d2, d3 = 1 - p2, 1 - 3 * p2 + 2 * p3
        d4 = 1 - 6 * p2 + 3 * p2 * p2 + 8 * p3 - 6 * p4
        a, b = a_mat @ w, b_mat @ w
        ab = a_mat * b_mat
        s11, s12, s22 = w @ ab @ w, w @ ab @ w2, w2 @ ab @ w2
        n2 = (w @ a) * (w @ b) - 4 * (w2 * a * b).sum() + 2 * s22
        return s11 / d2 + n2 / d4 - 2 * ((w * a * b).sum() - s12) / d3

    dx = (x[:, None] - x[None, :]).abs()
    dy = (y[:, None] - y[None, :]).abs()
    v, p, r = ucov(dx, dy), ucov(dx, dx), ucov(dy, dy)
    if float(p.detach()) <= 0.0 or float(r.detach()) <= 0.0:
        return (v * 0.0).detach()
    return v / torch.sqrt(p * r)
