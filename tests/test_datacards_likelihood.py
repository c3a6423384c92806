"""Likelihood built from a parsed card (svjscout.datacards.likelihood)."""

import numpy as np
import pytest

from svjscout.datacards.likelihood import Fitter, build_model
from svjscout.datacards.parser import parse_text
from svjscout.exceptions import DatacardError

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
