"""Fit validation (svjscout.datacards.validation): bias, goodness of fit, impacts, contamination."""

import logging

import numpy as np
import pytest
from conftest import ONE_BIN_ABCD

from svjscout.datacards import write_datacards
from svjscout.datacards.likelihood import build_model
from svjscout.datacards.parser import parse_datacard, parse_text
from svjscout.datacards.toys import build_xy_mt, factorised, falling, realistic_toy, rising
from svjscout.datacards.validation import (
    contamination,
    contamination_bias,
    draw_toys,
    gof_saturated,
    impacts,
    injection_test,
    ks_uniform,
    saturated_q,
)

WP = (0.775, 0.875)


@pytest.fixture(scope="module")
def known_card(tmp_path_factory):
    """A card of a known model: large control regions, a closing ABCD background, one signal."""
    logger = logging.getLogger("svjscout")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the toy's thin bins warn; restored below (other tests read the log)
    h, ds = realistic_toy(n_mt=3, n_signal=1, n_background=1)
    out = tmp_path_factory.mktemp("cards")
    try:
        index = write_datacards(h, ds, WP, out, allow_unbacked=True)
    finally:
        logger.setLevel(level)
    return parse_datacard(out / "datacards" / index["cards"][0])


@pytest.mark.slow
@pytest.mark.parametrize("r_inj", [0.0, 0.05])
def test_injected_signal_is_recovered(known_card, r_inj):
    res = injection_test(known_card, r_inj, n_toys=300, seed=4)
    pull = res["pull"]
    assert res["converged"] >= 290
    assert abs(pull["mean"]) < 3 * pull["mean_err"]
    assert abs(pull["width"] - 1) < 3 * pull["width_err"]
    assert not res["flag_bias"] or abs(pull["mean"]) > 0.14
    # the fitted r scatters around the truth
    assert abs(res["r_fit"]["mean"] - r_inj) < 3 * res["r_fit"]["mean_err"]




def _abcd_card(b_obs_scale: float = 1.0):
    a, c, d = 2000.0, 8000.0, 3000.0
    bpred = a * d / c
    return parse_text(ONE_BIN_ABCD.format(a=a, b=bpred * b_obs_scale, c=c, d=d, bpred=bpred, s=20))


def test_gof_pvalues_of_toys_are_uniform():
    """q of toys from the model: p-values against an independent ensemble are uniform, and q follows
    chi2 with ndf degrees of freedom (the closed form of the saturated test in the large-count limit)."""
    card = _abcd_card()
    m = build_model(card)
    g = gof_saturated(card, n_toys=300, seed=1)
    assert g["ndf"] == 1  # 4 bins, 3 free rateParams (B follows A*D/C)
    x = np.concatenate([[0.0], np.zeros(m.nS), np.ones(len(m.free_names))])
    obs = draw_toys(m, x, 80, np.random.default_rng(99))
    q_obs = np.array([saturated_q(m, obs.n[i], obs.glob[i], None, x) for i in range(80)])
    ref = np.array(g["q_toys"])
    p = np.array([np.mean(ref >= q) for q in q_obs])
    assert ks_uniform(p) > 0.01
    assert np.mean(ref) == pytest.approx(1.0, abs=0.25)  # E[chi2_1] = 1


def test_mismodelled_card_fails_gof_and_pulls_the_nonclosure():
    card = _abcd_card(b_obs_scale=1.3)  # region B 30 % above the ABCD prediction
    g = gof_saturated(card, n_toys=200, seed=2)
    assert g["pvalue"] < 0.01
    im = impacts(card, r_min=-20.0)
    theta = next(n for n in im["background_only"] if n["name"] == "nonclosure_bin0")
    # background only, the 5 % non-closure is pulled to absorb part of the 30 % excess (the rest
    # goes into A and D, whose rateParams also move), and it is constrained by the data
    assert theta["value"] > 2.0 and theta["error"] < 1.0
    assert im["r"] > 0  # with r free the signal (only in B here) takes the excess instead
    ok = gof_saturated(_abcd_card(), n_toys=200, seed=2)
    assert ok["pvalue"] > 0.05


def test_masked_signal_region_is_saturated():
    g = gof_saturated(_abcd_card(1.3), n_toys=20, mask_b=True)
    assert g["ndf"] == 0 and g["pvalue"] is None and abs(g["q_obs"]) < 1e-6


ONE_LNN = """imax 1
jmax 1
kmax 1
----
bin b1
observation 100
----
bin b1 b1
process sig bkg
process 0 1
rate 10 100
----
unc lnN - 1.2
"""


def test_impact_of_one_lnn_equals_the_closed_form():
    """n = 10 r + 100 kappa^theta observed at 100: r absorbs theta, whose post-fit sigma stays 1;
    fixing theta = +1 (-1) gives r = (100 - 120) / 10 = -2 (r = (100 - 100/1.2) / 10 = 1.667)."""
    im = impacts(parse_text(ONE_LNN), r_min=-20.0)
    (n,) = im["nuisances"]
    assert n["error"] == pytest.approx(1.0, abs=1e-3)
    assert n["impact_up"] == pytest.approx(-2.0, abs=1e-3)
    assert n["impact_down"] == pytest.approx(100 / 1.2 / 10 * 0.2, abs=1e-3)


def test_contamination_bias_equals_the_formula():
    b = np.array([[200.0, 50.0], [0.0, 0.0], [4000.0, 900.0], [300.0, 80.0]])
    s = np.array([[2.0, 1.0], [20.0, 15.0], [4.0, 0.0], [3.0, 2.0]])
    expected = [(202 * 303 / 4004) / (200 * 300 / 4000) - 1, (51 * 82 / 900) / (50 * 80 / 900) - 1]
    np.testing.assert_allclose(contamination_bias(b, s), expected, rtol=1e-12)
    # through the histograms: signal placed in known (x, y) bins of each region
    bkg = factorised(1e6, falling(3.0), falling(2.0), [1.0, 1.0])
    sig = np.zeros((40, 40, 2))
    sig[35, 5, :] = [50.0, 10.0]  # A (x > 0.775, y < 0.875)
    sig[5, 5, :] = [80.0, 0.0]  # C
    sig[5, 38, :] = [30.0, 30.0]  # D
    sig[38, 38, :] = [500.0, 500.0]  # B: does not enter the prediction
    h = build_xy_mt({"bkg": {"SP": bkg, "VP": 0.2 * bkg}, "s": {"SP": sig}}, [650.0, 1000.0, 2000.0], 1e-6)
    ds = {"bkg": {"kind": "background"}, "s": {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3}}
    from svjscout.datacards.regions import region_yields

    yb = region_yields(h, ds, WP, which="background").n
    res = contamination(h, ds, WP, [[0], [1]], [1.001, 1.5], ["s"])["s"]
    sa, sc, sd = np.array([50.0, 10.0]), np.array([80.0, 0.0]), np.array([30.0, 30.0])
    manual = ((yb[0] + sa) * (yb[3] + sd) / (yb[2] + sc)) / (yb[0] * yb[3] / yb[2]) - 1
    np.testing.assert_allclose(res["bias"], manual, rtol=1e-9)
    assert res["exceeds_nonclosure"] == [bool(abs(manual[0]) > 0.001), bool(abs(manual[1]) > 0.5)]


@pytest.mark.slow
def test_signal_rising_toy_has_valid_card(tmp_path):
    """validate() end to end on written cards: every section present and JSON-safe."""
    import json

    from svjscout.datacards.validation import summary_lines, validate

    bkg = factorised(1e6, falling(3.0), falling(2.0), [1.0, 1.0, 1.0])
    sig = factorised(300.0, rising(3.0), rising(3.0), [1.0, 2.0, 3.0])
    h = build_xy_mt({"bkg": {"SP": bkg, "VP": 0.3 * bkg}, "s": {"SP": sig, "VP": 0.1 * sig}},
                    [650.0, 1000.0, 1500.0, 3000.0], 1e-3)
    ds = {"bkg": {"kind": "background"}, "s": {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3}}
    index = write_datacards(h, ds, WP, tmp_path)
    res = validate(h, ds, index, limits=None, toys=20, inject=(0.0,), gof_toys=30)
    json.dumps(res, allow_nan=False, default=float)
    assert set(res) >= {"points", "gof", "contamination", "wp_stability"}
    assert len(res["wp_stability"]) == 9 and all("limit" in r for r in res["wp_stability"])
    assert res["gof"]["SP (B masked)"]["ndf"] == 0
    text = "\n".join(summary_lines(res))
    assert "Fit validation" in text and "svj_mz2000_rinv0.3" in text


def _run_folder(path):
    """A run's output folder (histograms.coffea, datacards/) of a closing toy with a rising signal."""
    from coffea.util import save

    bkg = factorised(1e6, falling(3.0), falling(2.0), [1.0, 1.0])
    sig = factorised(300.0, rising(3.0), rising(3.0), [1.0, 2.0])
    h = build_xy_mt({"bkg": {"SP": bkg, "VP": 0.3 * bkg}, "s": {"SP": sig, "VP": 0.1 * sig}},
                    [650.0, 1000.0, 3000.0], 1e-3)
    ds = {"bkg": {"kind": "background"}, "s": {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3}}
    save({"hists": {"xy_mt": h}, "datasets": ds}, path / "histograms.coffea")
    write_datacards(h, ds, WP, path)


@pytest.mark.slow
def test_validate_cli_writes_json_figures_and_summary(tmp_path):
    import json
    import subprocess
    import sys

    _run_folder(tmp_path)
    (tmp_path / "summary.md").write_text("# run\n\n## Timing\n\n- x\n")
    r = subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", "validate", str(tmp_path), "--toys", "10",
                        "--inject", "0,0.5", "--no-stability"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "validation" / "validation.json").read_text())
    assert [i["r_inj"] for i in res["points"]["svj_mz2000_rinv0.3"]["injection"]] == [0.0, 0.5]
    for name in ("bias_svj_mz2000_rinv0.3", "impacts_svj_mz2000_rinv0.3", "gof_VP", "contamination"):
        assert ((tmp_path / "validation" / f"{name}.pdf").is_file()
                and (tmp_path / "validation" / f"{name}.png").is_file())
    # the SP with B masked is a saturated model: no test, so no figure (and the summary says why)
    assert not (tmp_path / "validation" / "gof_SP.png").exists()
    summary = (tmp_path / "summary.md").read_text()
    assert summary.count("## Fit validation") == 1 and "## Timing" in summary
    assert "at boundary" in summary and "no test possible" in summary
    r = subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", "validate", str(tmp_path), "--inject", "x"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--inject" in r.stderr


@pytest.mark.skipif(__import__("shutil").which("combine") is None,
                    reason="CMS Combine is not on PATH (not on PyPI; source its environment to run this test)")
def test_combine_validate_round_trip(tmp_path):
    """Real Combine on written cards, read back by svjscout validate --from-combine."""
    import json
    import pathlib
    import subprocess
    import sys

    _run_folder(tmp_path)
    cli = [sys.executable, "-m", "svjscout.jobs.cli", "validate", str(tmp_path)]
    assert subprocess.run([*cli, "--toys", "10", "--no-stability"], capture_output=True, timeout=600).returncode == 0
    script = pathlib.Path(__file__).resolve().parents[1] / "jobs" / "combine_validate.sh"
    import os

    # the script runs in the Combine shell: its python3 is Combine's, not this environment's
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if not p.startswith(os.path.join(sys.prefix, "bin")))
    r = subprocess.run(["bash", str(script), str(tmp_path), "20"], capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "INJECT": "0", "IMPACTS": "0", "PATH": path})
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([*cli, "--from-combine"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "validation" / "combine" / "validation.json").read_text())
    inj = res["points"]["svj_mz2000_rinv0.3"]["injection"][0]
    assert inj["toys"] == 20 and inj["converged"] >= 18
    assert 0.0 <= res["gof"]["VP"]["pvalue"] <= 1.0


def test_gof_on_mc_pseudo_data_says_what_backs_it():
    """The VP goodness of fit observes the background MC itself. With per-event weight w the MC
    variance is w times a Poisson count's (closed form: sumw2 = w sumw), so the verdict is 'backed'
    for w <= 1, 'MC-limited' above (the toys are Poisson, the pseudo-data are not), and 'not backed'
    once a region holds N_eff = n / w < 10."""
    from svjscout.datacards.regions import region_yields
    from svjscout.datacards.validation import GOF_MIN_NEFF, pseudo_data_verdict

    bkg = factorised(1e7, falling(3.0), falling(2.0), [1.0, 1.0])
    ds = {"bkg": {"kind": "background"}}
    n_vp = None
    for w, verdict in ((0.5, "backed"), (5.0, "MC-limited"), (1e4, "not backed")):
        h = build_xy_mt({"bkg": {"SP": bkg, "VP": 0.3 * bkg}}, [650.0, 1000.0, 3000.0], w)
        y = region_yields(h, ds, WP, plane="VP", which="background").merged([[0], [1]])
        v = pseudo_data_verdict(y)
        n_vp = y.n
        assert v["verdict"] == verdict, (w, v)
        assert v["var_over_n_max"] == pytest.approx(w, rel=1e-9)
        assert v["neff_min"] == pytest.approx(n_vp.min() / w, rel=1e-9)
    assert n_vp.min() / 1e4 < GOF_MIN_NEFF < n_vp.min() / 5.0
