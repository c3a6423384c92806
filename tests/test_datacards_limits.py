"""Quick asymptotic CLs limits (svjscout.datacards.limits, .likelihood)."""

import json

import numpy as np
import pytest
from scipy import optimize, stats

from svjscout.core.exceptions import DatacardError
from svjscout.datacards import card_limits, parse_datacard, quick_limits, write_datacards
from svjscout.datacards.limits import QUANTILES, cls_asymptotic, expected_target
from svjscout.datacards.parser import parse_text
from svjscout.datacards.toys import realistic_toy
from svjscout.datacards.writer import format_card

ONE_BIN = """imax 1
jmax 1
kmax 0
---
bin b1
observation {obs}
---
bin b1 b1
process sig bkg
process 0 1
rate {s} {b}
"""


def _closed_form_expected(s, b, quantile):
    """No systematics: q_A(mu) = 2 [mu s - b ln(1 + mu s / b)]; solve sqrt(q_A) = target."""
    qa = lambda mu: 2 * (mu * s - b * np.log1p(mu * s / b))  # noqa: E731
    t = stats.norm.isf(0.05 * quantile) + stats.norm.ppf(quantile)
    return optimize.brentq(lambda mu: np.sqrt(qa(mu)) - t, 1e-9, 1e4)


@pytest.mark.parametrize("s,b", [(10.0, 100.0), (3.0, 5.0), (50.0, 1e4)])
def test_one_bin_expected_matches_closed_form(s, b):
    lim = card_limits(parse_text(ONE_BIN.format(obs=b, s=s, b=b)), observed=False)
    for key, q in QUANTILES.items():
        assert lim[key] == pytest.approx(_closed_form_expected(s, b, q), rel=1e-3), key
    # median, large-b sanity: ~ 1.96 sqrt(b) / s
    if b > 1000:
        assert lim["exp0"] == pytest.approx(1.96 * np.sqrt(b) / s, rel=0.01)
    assert lim["obs"] is None


@pytest.mark.parametrize("n", [85.0, 100.0, 130.0])
def test_one_bin_observed_matches_closed_form(n):
    s, b = 10.0, 100.0

    def nll(mu):
        nu = mu * s + b
        return nu - n * np.log(nu)

    mu_hat = max(0.0, (n - b) / s)

    def cls(mu):
        q = 2 * (nll(mu) - nll(mu_hat)) if mu > mu_hat else 0.0
        qa = 2 * (mu * s - b * np.log1p(mu * s / b))
        return cls_asymptotic(q, qa)

    expected = optimize.brentq(lambda mu: cls(mu) - 0.05, 1e-6, 100)
    lim = card_limits(parse_text(ONE_BIN.format(obs=n, s=s, b=b)), observed=True)
    assert lim["obs"] == pytest.approx(expected, rel=1e-3)
    if n != b:
        assert (lim["obs"] < lim["exp0"]) == (n < b)
    else:  # Asimov-like observation: observed = median expected
        assert lim["obs"] == pytest.approx(lim["exp0"], rel=1e-3)


def test_cls_formula_median_point():
    qa = expected_target(0.5) ** 2
    assert cls_asymptotic(qa, qa) == pytest.approx(0.05, rel=1e-9)


def _abcd_card(a, c, d, s_b, s_other=0.0, nonclosure=0.0, lumi=1.016):
    n = len(a)
    bkg = np.array([a, np.zeros(n), c, d], dtype=float)
    sig = np.array([np.full(n, s_other), s_b, np.full(n, s_other), np.full(n, s_other)], dtype=float)
    obs = bkg.copy()
    obs[1] = bkg[0] * bkg[3] / bkg[2]
    return parse_text(format_card("t", bkg, sig, obs, np.full(n, 1.0 + nonclosure), lumi_unc=lumi,
                                  header=["observation: background-only Asimov"]))


def test_abcd_card_with_precise_control_regions_matches_one_bin():
    # huge control regions: bkg in B is known to ~5e-5, so the limit equals the one-bin closed form
    a, c, d, s = 1e9, 1e12, 1e9, 3000.0
    lim = card_limits(_abcd_card([a], [c], [d], [s], lumi=1.0))
    b = a * d / c
    assert lim["exp0"] == pytest.approx(_closed_form_expected(s, b, 0.5), rel=0.005)
    assert lim["obs"] is None


def test_abcd_card_scaling_and_ordering():
    card1 = _abcd_card([200.0, 50.0], [4000.0, 900.0], [300.0, 80.0], [20.0, 15.0], s_other=1.0, nonclosure=0.1)
    card2 = _abcd_card([200.0, 50.0], [4000.0, 900.0], [300.0, 80.0], [40.0, 30.0], s_other=2.0, nonclosure=0.1)
    l1, l2 = card_limits(card1), card_limits(card2)
    vals = [l1[k] for k in QUANTILES]
    assert all(np.diff(vals) > 0)
    for k in QUANTILES:
        assert l2[k] == pytest.approx(l1[k] / 2, rel=2e-3)
    # a larger non-closure uncertainty weakens the limit
    l3 = card_limits(_abcd_card([200.0, 50.0], [4000.0, 900.0], [300.0, 80.0], [20.0, 15.0],
                                s_other=1.0, nonclosure=0.5))
    assert l3["exp0"] > l1["exp0"]


def test_quick_limits_on_written_cards(tmp_path):
    h, ds = realistic_toy(n_mt=2, n_signal=2, n_background=1)
    index = write_datacards(h, ds, (0.775, 0.875), tmp_path)
    out = tmp_path / "limits.json"
    lim = quick_limits(tmp_path, out=out)
    assert sorted(lim) == sorted(index["points"])
    on_disk = json.loads(out.read_text())
    for _point, v in on_disk.items():
        verdict = {k: index[k] for k in ("backed", "verdict") if k in index}
        assert set(v) == {"exp-2", "exp-1", "exp0", "exp+1", "exp+2", "obs", "capped_by_combine", *verdict}
        assert v["obs"] is None and isinstance(v["capped_by_combine"], list)
        assert {k: v[k] for k in verdict} == verdict  # the working point's verdict, as index.json says
        assert 0 < v["exp-2"] < v["exp0"] < v["exp+2"]
    from_index = quick_limits(index)
    for point in lim:
        assert from_index[point]["exp0"] == pytest.approx(lim[point]["exp0"], rel=1e-6)
    one = quick_limits(tmp_path / "datacards" / index["cards"][0])
    assert list(one) == [index["cards"][0].split("/")[0]]


def test_unsupported_systematic_is_named():
    text = ONE_BIN.format(obs=10, s=1, b=10).replace("kmax 0", "kmax 1") + "jes shape - 1\n"
    with pytest.raises(DatacardError, match="jes"):
        card_limits(parse_text(text))


def test_no_signal_raises():
    with pytest.raises(DatacardError, match="no expected events"):
        card_limits(parse_text(ONE_BIN.format(obs=10, s=0, b=10)))


def test_quick_limits_skips_or_raises_on_a_bad_card(tmp_path):
    for point, sig in (("good", 10), ("nosig", 0)):
        d = tmp_path / "datacards" / point
        d.mkdir(parents=True)
        (d / "datacard.txt").write_text(ONE_BIN.format(obs=100, s=sig, b=100))
    (tmp_path / "datacards" / "index.json").write_text(
        '{"points": {"good": {"card": "good/datacard.txt"}, "nosig": {"card": "nosig/datacard.txt"}}}')
    lim = quick_limits(tmp_path, observed=False)
    assert list(lim) == ["good"]
    with pytest.raises(DatacardError, match="no expected events"):
        quick_limits(tmp_path, on_error="raise")


def test_cards_not_found(tmp_path):
    with pytest.raises(DatacardError, match="no datacards index.json"):
        quick_limits(tmp_path)


def test_parsed_card_from_path(tmp_path):
    p = tmp_path / "pt" / "datacard.txt"
    p.parent.mkdir()
    p.write_text(ONE_BIN.format(obs=100, s=10, b=100))
    assert card_limits(parse_datacard(p), observed=False)["exp0"] == pytest.approx(2.09, abs=0.01)


def test_median_sigma_band_mode():
    s, b = 10.0, 100.0
    lim = card_limits(parse_text(ONE_BIN.format(obs=b, s=s, b=b)), observed=False, band="median_sigma")
    med = _closed_form_expected(s, b, 0.5)
    sigma = med / stats.norm.isf(0.025)
    for key, q in QUANTILES.items():
        assert lim[key] == pytest.approx(sigma * (stats.norm.isf(0.05 * q) + stats.norm.ppf(q)), rel=1e-3), key
    with pytest.raises(DatacardError, match="band"):
        card_limits(parse_text(ONE_BIN.format(obs=b, s=s, b=b)), band="nope")


def test_abcd_card_likelihood_matches_independent_implementation():
    # the generic card -> likelihood translation vs a direct ABCD likelihood written from the arrays:
    # at the quick median limit r0, the independent profile q_A(r0) must equal 1.96^2
    a, c, d = np.array([200.0, 50.0]), np.array([4000.0, 900.0]), np.array([300.0, 80.0])
    sb, so, u, lumi = np.array([20.0, 15.0]), 1.0, 0.2, 1.05
    card = _abcd_card(a, c, d, sb, s_other=so, nonclosure=u, lumi=lumi)
    r0 = card_limits(card)["exp0"]
    obs = np.array([a, a * d / c, c, d])  # Asimov, rows A, B, C, D
    sig = np.array([np.full(2, so), sb, np.full(2, so), np.full(2, so)])

    def nll(p, r):
        A, C, D = p[0:2], p[2:4], p[4:6]
        th_nc, th_l = p[6:8], p[8]
        bkg = np.array([A, A * D / C * (1 + u) ** th_nc, C, D])
        nu = bkg + r * sig * lumi**th_l
        return np.sum(nu - obs + obs * np.log(obs / nu)) + 0.5 * (np.sum(th_nc**2) + th_l**2)

    x0 = np.concatenate([a, c, d, [0.0, 0.0, 0.0]])
    bounds = [(1e-3, None)] * 6 + [(-5, 5)] * 3
    best = optimize.minimize(nll, x0, args=(r0,), bounds=bounds, method="L-BFGS-B",
                             options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 10000})
    assert 2 * best.fun == pytest.approx(stats.norm.isf(0.025) ** 2, rel=2e-3)


# --- closed forms with Combine's asymmetric lnN and gmN (independent scipy minimisation) ----------------------------

def _log_kappa(theta, kdown, kup):
    """Combine's logKappaForX (interface/CombineMathFuncs.h, v10.6.0), written out independently."""
    lo, hi = -np.log(kdown), np.log(kup)
    if abs(theta) >= 0.5:
        return hi if theta >= 0 else lo
    x = 2 * theta
    return 0.5 * (hi + lo) + 0.5 * (hi - lo) * (3 * x**5 - 10 * x**3 + 15 * x) / 8


def _piecewise_log_kappa(theta, kdown, kup):
    return np.log(kup) if theta >= 0 else -np.log(kdown)


def _expected_by_scipy(nll, n_nuis, bounds, ref, quantiles=QUANTILES):
    """Expected limits from ``q_A(mu) = 2 [min_nuis nll(mu, nuis) - ref]`` (scipy, many starts)."""
    def qa(mu):
        best = np.inf
        for start in ([0.0] * n_nuis, [0.3] * n_nuis):
            start = [min(max(v, lo + 1e-6), hi - 1e-6) for v, (lo, hi) in zip(start, bounds)]
            res = optimize.minimize(lambda t: nll(mu, t), start, method="L-BFGS-B", bounds=bounds,
                                    options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 5000})
            best = min(best, res.fun)
        return max(0.0, 2 * (best - ref))

    out = {}
    for key, p in quantiles.items():
        t = stats.norm.isf(0.05 * p) + stats.norm.ppf(p)
        out[key] = optimize.brentq(lambda mu, t=t: np.sqrt(qa(mu)) - t, 1e-3, 1e3, xtol=1e-9, rtol=1e-8)
    return out


ASYM_CARD = ONE_BIN.replace("kmax 0", "kmax 2") + "bu lnN - 0.97/1.35\nsu lnN 0.8/1.05 -\n"


@pytest.mark.parametrize("log_kappa", [_log_kappa, _piecewise_log_kappa])
def test_asymmetric_lnn_expected_limits_match_combine_formula(log_kappa):
    """One bin, asymmetric lnN on both processes: the quick limits equal a direct minimisation of the
    Asimov likelihood under Combine's interpolation, and differ from the piecewise one."""
    s, b = 10.0, 50.0

    def nll(mu, t):
        nu = mu * s * np.exp(t[1] * log_kappa(t[1], 0.8, 1.05)) + b * np.exp(t[0] * log_kappa(t[0], 0.97, 1.35))
        return nu - b * np.log(nu) + 0.5 * (t[0] ** 2 + t[1] ** 2)

    ref = _expected_by_scipy(nll, 2, [(-7, 7), (-7, 7)], nll(0.0, [0.0, 0.0]))
    lim = card_limits(parse_text(ASYM_CARD.format(obs=b, s=s, b=b)), observed=False)
    for key in QUANTILES:
        if log_kappa is _log_kappa:
            assert lim[key] == pytest.approx(ref[key], rel=3e-4), key
        else:  # the piecewise form is measurably different: the test above can fail
            assert abs(lim[key] / ref[key] - 1) > 1e-2, key


GMN_CARD = ONE_BIN.replace("kmax 0", "kmax 2") + "bu lnN - 1.1\nsigstat gmN {N} {alpha} -\n"


@pytest.mark.slow
@pytest.mark.parametrize("N,alpha", [(3, 2.0), (8, 0.5)])
def test_gmn_expected_limits_match_independent_minimisation(N, alpha):
    """Signal with a gmN (rate N alpha, Poisson constraint of its yield, global observable N)."""
    from svjscout.datacards.likelihood import gmn_range

    b = 20.0

    def nll(mu, t):
        g = max(t[1], 1e-300)
        nu = mu * alpha * g + b * 1.1 ** t[0]
        return nu - b * np.log(nu) + 0.5 * t[0] ** 2 + g - N * np.log(g)

    ref = _expected_by_scipy(nll, 2, [(-7, 7), gmn_range(N)], nll(0.0, [0.0, float(N)]))
    lim = card_limits(parse_text(GMN_CARD.format(obs=b, s=N * alpha, b=b, N=N, alpha=alpha)), observed=False)
    for key in QUANTILES:
        assert lim[key] == pytest.approx(ref[key], rel=3e-4), key
    # without the gmN (the same rate, no MC-statistics term) the limits are stronger
    plain = card_limits(parse_text(ONE_BIN.replace("kmax 0", "kmax 1").format(obs=b, s=N * alpha, b=b)
                                   + "bu lnN - 1.1\n"), observed=False)
    assert plain["exp0"] < lim["exp0"] * (1 - 1e-3)


@pytest.mark.slow
def test_gmn_with_zero_count_sets_no_limit():
    card = parse_text(GMN_CARD.format(obs=20.0, s=0, b=20.0, N=0, alpha=0.7))
    with pytest.raises(DatacardError, match="no expected events|no limit"):
        card_limits(card, observed=False)


def test_combine_band_caps():
    """Combine brackets the +1/+2 sigma bisection at median + 2/4 sigma, sigma = median / 1.96."""
    from svjscout.datacards.limits import capped_quantiles, combine_band_caps

    caps = combine_band_caps(1.0)
    assert (caps["exp+1"] == pytest.approx(1 + 2 / stats.norm.ppf(0.975))
            and caps["exp+1"] == pytest.approx(2.0204, abs=1e-4))
    assert (caps["exp+2"] == pytest.approx(1 + 4 / stats.norm.ppf(0.975))
            and caps["exp+2"] == pytest.approx(3.0409, abs=1e-4))
    assert capped_quantiles({"exp0": 1.0, "exp+1": 1.9, "exp+2": 3.5}) == ["exp+2"]
    assert capped_quantiles({"exp0": 1.0, "exp+1": 2.5, "exp+2": 6.0}) == ["exp+1", "exp+2"]
    assert capped_quantiles({"exp0": 1.0, "exp+1": 1.5, "exp+2": 2.1}) == []


def test_band_cap_flagged_on_a_low_count_card():
    """Few expected events: the q_A crossing of +2 sigma lies far above 3.04 x the median (capped),
    a high-count card is Gaussian and never capped."""
    low = card_limits(parse_text(ONE_BIN.format(obs=0.05, s=1.0, b=0.05)), observed=False)
    assert low["exp+2"] > 3.05 * low["exp0"] and "exp+2" in low["capped_by_combine"]
    high = card_limits(parse_text(ONE_BIN.format(obs=1e4, s=50.0, b=1e4)), observed=False)
    assert high["capped_by_combine"] == []
