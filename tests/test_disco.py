"""Fast O(n log n) weighted dCorr against the direct O(n^2) formula and the dcor package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svjscout.models.disco import dcorr, dcorr_numpy, dcorr_reference


def _sample(n: int, ties: bool, seed: int):
    torch.manual_seed(seed)
    x = torch.randn(n, dtype=torch.float64)
    y = x**2 + 0.5 * torch.randn(n, dtype=torch.float64)
    if ties:
        x = torch.round(x * 3) / 3
        y = torch.round(y * 2) / 2
    w = torch.rand(n, dtype=torch.float64) + 0.05
    return x, y, w


@pytest.mark.slow
@pytest.mark.parametrize("n,ties", [(3, False), (9, True), (300, False), (1000, True), (2000, False), (5000, True)])
def test_fast_matches_reference_value_and_gradient(n, ties):
    x, y, w = _sample(n, ties, seed=n + ties)
    x1, y1 = x.clone().requires_grad_(), y.clone().requires_grad_()
    fast = dcorr(x1, y1, w)
    fast.backward()
    x2, y2 = x.clone().requires_grad_(), y.clone().requires_grad_()
    ref = dcorr_reference(x2, y2, w)
    ref.backward()
    assert fast.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-12)
    for g1, g2 in ((x1.grad, x2.grad), (y1.grad, y2.grad)):
        scale = g2.abs().max().item()
        assert scale > 0
        assert (g1 - g2).abs().max().item() <= 1e-6 * scale


def test_gradient_by_gradcheck():
    torch.manual_seed(3)
    x = torch.randn(40, dtype=torch.float64, requires_grad=True)
    y = (x.detach() ** 3 + torch.randn(40, dtype=torch.float64)).requires_grad_()
    w = torch.rand(40, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: dcorr(a, b, w), (x, y), eps=1e-6, atol=1e-7)


def test_float32_input_keeps_dtype_and_unweighted_default():
    torch.manual_seed(4)
    x = torch.rand(500, requires_grad=True)
    y = torch.rand(500)
    d = dcorr(x, y)
    assert d.dtype == torch.float32
    d.backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    ref = dcorr_reference(x.detach().double(), y.double())
    assert d.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.slow
def test_agrees_with_dcor_package():
    dcor = pytest.importorskip("dcor")
    rng = np.random.default_rng(5)
    for n in (50, 600):
        x = rng.normal(size=n)
        y = np.sin(3 * x) + 0.3 * rng.normal(size=n)
        ours = dcorr(torch.from_numpy(x), torch.from_numpy(y)).item()
        # dcor.distance_correlation is dCorr (the V-statistic, not squared), as in docs/physics.md
        theirs = dcor.distance_correlation(x, y)
        assert ours == pytest.approx(theirs, rel=1e-9)
        assert ours**2 == pytest.approx(dcor.distance_correlation_sqr(x, y), rel=1e-9)
        assert dcorr_numpy(x, y) == pytest.approx(theirs, rel=1e-9)


def test_independent_near_zero_dependent_clearly_positive():
    torch.manual_seed(6)
    n = 5000
    x = torch.randn(n, dtype=torch.float64)
    y = torch.randn(n, dtype=torch.float64)
    w = torch.rand(n, dtype=torch.float64)
    assert dcorr(x, y, w).item() < 0.05
    # y = x^2 on symmetric x: Pearson correlation ~0, dCorr is not
    sym = torch.rand(n, dtype=torch.float64) * 2 - 1
    assert abs(torch.corrcoef(torch.stack([sym, sym**2]))[0, 1].item()) < 0.05
    assert dcorr(sym, sym**2, w).item() > 0.4


def test_degenerate_inputs():
    x = torch.ones(10, dtype=torch.float64, requires_grad=True)
    y = torch.arange(10, dtype=torch.float64)
    d = dcorr(x, y)
    assert d.item() == 0.0
    d.backward()
    assert x.grad is None or torch.all(x.grad == 0)
    with pytest.raises(ValueError, match="shape"):
        dcorr(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="weights"):
        dcorr(torch.zeros(3), torch.zeros(3), torch.zeros(4))


# ---- bias-corrected dCorr^2 and the device path (issue 29) ----------------------------------------------------

def _brute_u_dcorr_sqr(x, y, w):
    """The weighted U-statistic by explicit loops over distinct index tuples (tiny n)."""
    import itertools

    n = len(x)
    a_mat = np.abs(x[:, None] - x[None, :])
    b_mat = np.abs(y[:, None] - y[None, :])

    def avg(f, k):
        num = den = 0.0
        for t in itertools.permutations(range(n), k):
            ww = float(np.prod(w[list(t)]))
            num += ww * f(*t)
            den += ww
        return num / den

    def ucov(a, b):
        return (avg(lambda i, j: a[i, j] * b[i, j], 2) + avg(lambda i, j, k, m: a[i, j] * b[k, m], 4)
                - 2 * avg(lambda i, j, k: a[i, j] * b[i, k], 3))

    return ucov(a_mat, b_mat) / np.sqrt(ucov(a_mat, a_mat) * ucov(b_mat, b_mat))


def test_u_dcorr_sqr_matches_dcor_unweighted():
    dcor = pytest.importorskip("dcor")
    from svjscout.models.disco import u_dcorr_sqr, u_dcorr_sqr_reference

    rng = np.random.default_rng(21)
    for n, ties in ((4, False), (9, True), (200, False), (1500, True)):
        x = rng.normal(size=n)
        y = np.sin(2 * x) + rng.normal(size=n)
        if ties:
            x, y = np.round(x * 2) / 2, np.round(y * 3) / 3
        ref = dcor.u_distance_correlation_sqr(x, y)
        assert u_dcorr_sqr(x, y) == pytest.approx(ref, abs=1e-10)
        if n <= 200:
            assert u_dcorr_sqr_reference(torch.from_numpy(x), torch.from_numpy(y)).item() == pytest.approx(ref,
                                                                                                            abs=1e-10)
    # a weight scale does not matter, unit weights are the unweighted estimator
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert u_dcorr_sqr(x, y, np.full(50, 3.7)) == pytest.approx(dcor.u_distance_correlation_sqr(x, y), abs=1e-12)


def test_u_dcorr_sqr_weighted_matches_brute_force_and_dense():
    from svjscout.models.disco import u_dcorr_sqr, u_dcorr_sqr_reference

    rng = np.random.default_rng(22)
    for n in (5, 7):
        x = rng.normal(size=n)
        y = x**2 + 0.5 * rng.normal(size=n)
        w = rng.uniform(0.1, 2.0, n)
        brute = _brute_u_dcorr_sqr(x, y, w)
        assert u_dcorr_sqr(x, y, w) == pytest.approx(brute, abs=1e-10)
        dense = u_dcorr_sqr_reference(*(torch.from_numpy(v) for v in (x, y, w))).item()
        assert dense == pytest.approx(brute, abs=1e-10)
    n = 800
    x = np.round(rng.normal(size=n) * 4) / 4
    y = np.round((x + rng.normal(size=n)) * 3) / 3
    w = rng.exponential(1.0, n)
    assert u_dcorr_sqr(x, y, w) == pytest.approx(
        u_dcorr_sqr_reference(*(torch.from_numpy(v) for v in (x, y, w))).item(), abs=1e-10)
    with pytest.raises(ValueError, match="expected >= 4"):
        u_dcorr_sqr(x[:3], y[:3])


@pytest.mark.parametrize("n,ties", [(6, False), (300, False), (400, True)])
def test_u_dcorr_sqr_gradient_matches_dense_autograd(n, ties):
    """The analytic O(n log n) backward of the U-statistic against autograd through the O(n^2) formula."""
    from svjscout.models.disco import u_dcorr_sqr, u_dcorr_sqr_reference

    x, y, w = _sample(n, ties, seed=40 + n)
    x1, y1 = x.clone().requires_grad_(), y.clone().requires_grad_()
    fast = u_dcorr_sqr(x1, y1, w)
    fast.backward()
    x2, y2 = x.clone().requires_grad_(), y.clone().requires_grad_()
    ref = u_dcorr_sqr_reference(x2, y2, w)
    ref.backward()
    assert isinstance(fast, torch.Tensor) and fast.item() == pytest.approx(ref.item(), abs=1e-12)
    for g1, g2 in ((x1.grad, x2.grad), (y1.grad, y2.grad)):
        scale = g2.abs().max().item()
        assert scale > 0 and (g1 - g2).abs().max().item() <= 1e-9 * scale


def test_u_dcorr_sqr_gradcheck_and_float32():
    from svjscout.models.disco import u_dcorr_sqr

    torch.manual_seed(8)
    x = torch.randn(30, dtype=torch.float64, requires_grad=True)
    y = (x.detach() ** 2 + torch.randn(30, dtype=torch.float64)).requires_grad_()
    w = torch.rand(30, dtype=torch.float64) + 0.1
    assert torch.autograd.gradcheck(lambda a, b: u_dcorr_sqr(a, b, w), (x, y), eps=1e-6, atol=1e-7)
    xf = torch.rand(200, requires_grad=True)
    d = u_dcorr_sqr(xf, torch.rand(200))
    assert d.dtype == torch.float32
    d.backward()
    assert xf.grad.dtype == torch.float32 and torch.isfinite(xf.grad).all()


@pytest.mark.parametrize("n,draws", [(200, 300), (2000, 60)])
def test_u_dcorr_sqr_unbiased_under_independence_v_statistic_not(n, draws):
    """Mean over independent draws: the U-statistic's is ~0 at any n, the V-statistic's ~c/n > 0."""
    from svjscout.models.disco import u_dcorr_sqr

    rng = np.random.default_rng(n)
    w = rng.exponential(1.0, n)  # fixed weights (the weighted estimator is unbiased for fixed weights)
    for weights in (None, w):
        u, v = np.empty(draws), np.empty(draws)
        for k in range(draws):
            x = rng.normal(size=n)
            y = rng.exponential(size=n)
            u[k] = u_dcorr_sqr(x, y, weights)
            v[k] = dcorr_numpy(x, y, weights) ** 2
        se_u, se_v = u.std(ddof=1) / np.sqrt(draws), v.std(ddof=1) / np.sqrt(draws)
        assert abs(u.mean()) < 4 * se_u, (n, u.mean(), se_u)
        assert v.mean() > 10 * se_v and v.mean() > 5 * abs(u.mean()) + 4 * se_u, (n, v.mean(), u.mean())


def test_dense_method_matches_fast_on_cpu():
    """The device path (``method="dense"``, torch on the input's device) against the exact fast one."""
    x, y, w = _sample(700, True, seed=9)
    out = {}
    for method in ("fast", "dense"):
        xi, yi = x.clone().requires_grad_(), y.clone().requires_grad_()
        d = dcorr(xi, yi, w, method=method)
        d.backward()
        out[method] = (d.item(), xi.grad, yi.grad)
    assert out["dense"][0] == pytest.approx(out["fast"][0], rel=1e-10)
    for k in (1, 2):
        assert (out["dense"][k] - out["fast"][k]).abs().max().item() <= 1e-9 * out["fast"][k].abs().max().item()
    assert dcorr(x, y, method="dense").item() == pytest.approx(dcorr(x, y).item(), rel=1e-10)
    with pytest.raises(ValueError, match="method"):
        dcorr(x, y, method="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_one_step_matches_cpu():
    """One optimisation step of a small network under a dCorr penalty: CUDA (dense, float32 on the
    device) against the CPU (fast, float64 inside)."""
    torch.manual_seed(0)
    n = 4096
    feats = torch.randn(n, 4)
    mt = feats[:, 0] ** 2 + 0.5 * torch.randn(n)
    w = torch.rand(n) + 0.1
    results = {}
    for dev in ("cpu", "cuda"):
        torch.manual_seed(1)
        net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        score = torch.sigmoid(net(feats.to(dev))).squeeze(1)
        d = dcorr(score, mt.to(dev), w.to(dev))
        assert d.device.type == dev and d.dtype == torch.float32
        opt.zero_grad()
        d.backward()
        grads = [p.grad.detach().cpu().clone() for p in net.parameters()]
        opt.step()
        results[dev] = (d.item(), grads, [p.detach().cpu() for p in net.parameters()])
    assert results["cuda"][0] == pytest.approx(results["cpu"][0], rel=1e-4)
    for gc, gg in zip(results["cpu"][1], results["cuda"][1]):
        assert (gc - gg).abs().max().item() <= 1e-3 * gc.abs().max().item() + 1e-7
    for pc, pg in zip(results["cpu"][2], results["cuda"][2]):
        assert (pc - pg).abs().max().item() <= 1e-5
