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
