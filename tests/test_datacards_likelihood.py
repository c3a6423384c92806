"""Likelihood built from a parsed card (svjscout.datacards.likelihood)."""

import numpy as np
import pytest

from svjscout.core.exceptions import DatacardError
from svjscout.datacards.likelihood import Fitter, build_model
from svjscout.datacards.parser import parse_text

CARD = """imax 4
jmax 1
kmax 2
---
bin A B C D
observation 110 52 1000 480
---
bin     A   A    B   B    C   C    D   D
process sig bkg  sig bkg  sig bkg  sig bkg
process 0   1    0   1    0   1    0   1
rate    1   1.0  10  1.0  0.5 1.0  1   1.0
---
lumi lnN 1.02 - 1.02 - 1.02 - 1.02 -
nc   lnN -    - -    0.9/1.2 - - - -
ra rateParam A bkg 100 [0,2000]
rc rateParam C bkg 1000 [0,20000]
rd rateParam D bkg 500 [0,10000]
rb rateParam B bkg (@0*@1/@2) ra,rd,rc
"""


def test_expected_yields_follow_the_abcd_formula():
    m = build_model(parse_text(CARD))
    assert m.names == ["r", "lumi", "nc", "ra", "rc", "rd"]
    x = np.array([2.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    _, nu, nub, *_ = m.expected(x)
    np.testing.assert_allclose(nub, [100 + 2, 50 + 20, 1000 + 1, 500 + 2])
    x2 = np.array([1.0, 1.0, -1.0, 1.1, 0.5, 2.0])  # theta_nc = -1 -> kappa_down 0.9
    _, _, nub2, *_ = m.expected(x2)
    assert nub2[1] == pytest.approx(110 * 1000 / 500 * 0.9 + 10 * 1.02)
    x3 = np.array([1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    assert m.expected(x3)[2][1] == pytest.approx(50 * 1.2 + 10)


def test_analytic_gradient_matches_numeric():
    m = build_model(parse_text(CARD))
    n, g = m.obs, np.zeros(2)
    for x in (np.array([0.7, 0.3, -0.4, 1.05, 0.97, 1.1]), np.array([0.0, -1.2, 0.8, 0.9, 1.2, 0.8])):
        ga = m.grad(x, n, g)
        gn = np.array([(m.nll(x + h, n, g) - m.nll(x - h, n, g)) / 2e-6 for h in np.eye(len(x)) * 1e-6])
        np.testing.assert_allclose(ga, gn, rtol=1e-4, atol=1e-4)


def test_fit_recovers_abcd_yields():
    m = build_model(parse_text(CARD))
    nll, x = Fitter(m).fit(r=0.0)
    val, _ = m.values(x[3:])
    # control regions fitted close to the observation; B predicted from them
    assert val[0] == pytest.approx(110, rel=0.05) and val[2] == pytest.approx(480, rel=0.05)
    assert val[3] == pytest.approx(val[0] * val[2] / val[1], rel=1e-9)


def test_cyclic_formula_rejected():
    bad = CARD.replace("rc rateParam C bkg 1000 [0,20000]", "rc rateParam C bkg (@0) rb")
    with pytest.raises(DatacardError, match="rc|rb"):
        build_model(parse_text(bad))


def test_bad_formula_rejected():
    bad = CARD.replace("(@0*@1/@2) ra,rd,rc", "(@0*e) ra,rd,rc")
    with pytest.raises(DatacardError, match="rb"):
        build_model(parse_text(bad))


# --- Combine's asymmetric lnN (logKappaForX) and gmN ---------------------------------------------------------------

def _combine_log_kappa(theta, kdown, kup):
    """logKappaForX of HiggsAnalysis-CombinedLimit (interface/CombineMathFuncs.h, v10.6.0), written out
    independently of the package: piecewise beyond |theta| = 0.5, a quintic blend inside."""
    lo, hi = -np.log(kdown), np.log(kup)
    if abs(theta) >= 0.5:
        return hi if theta >= 0 else lo
    x = 2 * theta
    return 0.5 * (hi + lo) + 0.5 * (hi - lo) * (3 * x**5 - 10 * x**3 + 15 * x) / 8


ASYM = """imax 1
jmax 1
kmax 2
---
bin b
observation 100
---
bin b b
process sig bkg
process 0 1
rate 10 100
---
u1 lnN 1.05 0.95/1.4
u2 lnN 0.9/1.2 -
"""


@pytest.mark.parametrize("theta", [-0.9, -0.5, -0.49, -0.3, -0.1, 0.0, 0.05, 0.25, 0.45, 0.5, 0.8])
def test_asymmetric_lnn_follows_combine_interpolation(theta):
    m = build_model(parse_text(ASYM))
    x = np.array([1.0, 0.0, theta])  # r, u1, u2 (u2 on the signal only)
    nu0, *_ = m.expected(x)
    assert nu0[0] == pytest.approx(10 * np.exp(theta * _combine_log_kappa(theta, 0.9, 1.2)), rel=1e-12)
    x = np.array([1.0, theta, 0.0])
    nu0, *_ = m.expected(x)
    assert nu0[1] == pytest.approx(100 * np.exp(theta * _combine_log_kappa(theta, 0.95, 1.4)), rel=1e-12)
    assert nu0[0] == pytest.approx(10 * 1.05**theta, rel=1e-12)  # symmetric: kappa^theta everywhere


def test_interpolation_differs_from_piecewise_inside_half_sigma():
    """The test above can fail: inside |theta| < 0.5 Combine's factor is not the piecewise kup^theta."""
    m = build_model(parse_text(ASYM))
    nu0, *_ = m.expected(np.array([1.0, -0.3, 0.0]))
    assert abs(nu0[1] / (100 * 0.95**0.3) - 1) > 0.003


def test_symmetric_pair_is_symmetric():
    """kdown * kup = 1 (within 1e-5) is a symmetric lnN, as Combine's addAsymmLogNormal."""
    card = ASYM.replace("0.95/1.4", f"{1 / 1.25!r}/1.25")
    m = build_model(parse_text(card))
    for theta in (-0.4, 0.2, 1.3):
        nu0, *_ = m.expected(np.array([1.0, theta, 0.0]))
        assert nu0[1] == pytest.approx(100 * 1.25**theta, rel=1e-9)


def test_gradient_with_asymmetric_lnn_and_gmn_matches_finite_differences():
    card = ASYM.replace("kmax 2", "kmax 3") + "stat gmN 4 2.5 -\n"
    m = build_model(parse_text(card))
    assert m.names == ["r", "u1", "u2", "stat"] and m.nG == 1
    n = np.array([103.0])
    for x in ([0.7, 0.3, -0.4, 3.0], [1.3, -0.45, 0.2, 6.0], [0.2, 0.49, -0.05, 1.5], [0.5, -0.8, 0.7, 0.3],
              [0.0, 0.01, 0.499, 4.0]):
        x = np.array(x)
        for gg in (None, np.array([4.6])):
            ga = m.grad(x, n, np.array([0.1, -0.2]), gglob=gg)
            h = 1e-6
            gn = np.array([(m.nll(x + e, n, np.array([0.1, -0.2]), gglob=gg)
                            - m.nll(x - e, n, np.array([0.1, -0.2]), gglob=gg)) / (2 * h) for e in np.eye(len(x)) * h])
            np.testing.assert_allclose(ga, gn, rtol=1e-5, atol=1e-6)


def test_gmn_yield_and_constraint():
    card = ASYM.replace("kmax 2", "kmax 3") + "stat gmN 4 2.5 -\n"
    m = build_model(parse_text(card))
    x = np.array([2.0, 0.0, 0.0, 6.0])
    nu0, nu, *_ = m.expected(x)
    assert nu0[0] == pytest.approx(2.5 * 6.0) and nu[0] == pytest.approx(2 * 2.5 * 6.0)
    n = np.array([100.0])
    # -ln L relative to theta_g = N: the Poisson constraint theta - N ln theta
    d = m.nll(x, n, np.zeros(2)) - m.nll(np.array([2.0, 0.0, 0.0, 4.0]), n, np.zeros(2))
    nu_a, nu_b = 100 + 30.0, 100 + 20.0
    expect = ((nu_a - 100 * np.log(nu_a)) - (nu_b - 100 * np.log(nu_b))
              + (6.0 - 4 * np.log(6.0)) - (4.0 - 4 * np.log(4.0)))
    assert d == pytest.approx(expect, rel=1e-10)
    # the background-only fit leaves the signal's gmN at N
    _, xb = Fitter(m).fit(r=0.0)
    assert xb[3] == pytest.approx(4.0, rel=1e-4)


def test_gmn_card_checks():
    bad = ASYM.replace("kmax 2", "kmax 3") + "stat gmN 4 7.5 -\n"  # 4 * 7.5 = 30 != rate 10
    with pytest.raises(DatacardError, match="stat.*rate"):
        build_model(parse_text(bad))
    bad = ASYM.replace("kmax 2", "kmax 3") + "stat gmN 2.5 4 -\n"
    with pytest.raises(DatacardError, match="integer"):
        build_model(parse_text(bad))
    two = ASYM.replace("kmax 2", "kmax 4") + "s1 gmN 4 2.5 -\ns2 gmN 2 5 -\n"
    with pytest.raises(DatacardError, match="more than one gmN"):
        build_model(parse_text(two))


def test_gmn_range_is_combines():
    """minExp / maxExp of text2workspace.py's gmN loop, recomputed here with scipy's Poisson pmf."""
    from scipy import stats

    from svjscout.datacards.likelihood import gmn_range

    for n in (0, 1, 4, 30):
        lo, hi = gmn_range(n)
        ref_lo = n + 1.0 if n > 0 else 0.0
        while ref_lo > 0 and stats.poisson.pmf(n, ref_lo) > 1e-12:
            ref_lo *= 0.8
        ref_hi = n + 1.0
        while stats.poisson.pmf(n, ref_hi) > 1e-12:
            ref_hi *= 1.2
        assert (lo, hi) == pytest.approx((ref_lo, ref_hi), rel=1e-12)
        assert stats.poisson.pmf(n, hi) < 1e-12 and lo < max(n, 1e-3)


def test_nuisance_range_is_combines():
    """A nuisance pulled far stops at Combine's lnN range +-7 (ModelTools.py: name[-7,7])."""
    card = ASYM.replace("observation 100", "observation 400")  # u1 (kup 1.4) would need theta ~ 4.1 / ... > 7
    card = card.replace("0.95/1.4", "1.1").replace("u2 lnN 0.9/1.2 -", "u2 lnN 1.01 -")
    m = build_model(parse_text(card))
    _, x = Fitter(m).fit(r=0.0)
    assert x[1] == pytest.approx(7.0, abs=1e-3)
