"""Signal systematics in the datacards (svjscout.datacards.systematics, .writer).

Every expected number is summed here with numpy from the raw arrays the histograms were built
from (never through region_yields), and the limit is compared with an independent scipy likelihood.
The sources are normalisations of the M_T-integrated signal per region (A, B, C, D), pruned when
compatible with MC noise and symmetrised when one-sided; the thin-MC cases (single-event
migrations, gmN MC statistics) are in tests/test_signal_systematics_thin.py.
"""

import json
import re

import numpy as np
import pytest
from scipy import optimize

from svjscout.core.exceptions import DatacardError
from svjscout.datacards import card_limits, parse_datacard, validate_datacard, write_datacards
from svjscout.datacards.limits import expected_target
from svjscout.datacards.parser import parse_text
from svjscout.datacards.systematics import plot_systematics, summary_lines, systematics_config
from svjscout.datacards.toys import CENTERS, NBINS, build_xy_mt, build_xy_mt_syst, realistic_toy

# the toys are about the signal nuisances, not the background statistics guard (datacards/guard.py):
# write their cards whether or not the guard backs them
WKW = {"allow_unbacked": True}
WP = (0.775, 0.875)
IX, IY = round(WP[0] * NBINS), round(WP[1] * NBINS)
# region -> (x slice, y slice) of the 40 x 40 score plane (A: X>x0,Y<y0  B: X>x0,Y>y0  C: X<x0,Y<y0  D: X<x0,Y>y0)
SLICES = {"A": (slice(IX, None), slice(None, IY)), "B": (slice(IX, None), slice(IY, None)),
          "C": (slice(None, IX), slice(None, IY)), "D": (slice(None, IX), slice(IY, None))}

def _strip_time(text: str) -> str:
    return re.sub(r"(?m)^# written by svjscout .*\n", "", text)


def _raw(h, dataset, plane="SP", what="value"):
    """Raw (40, 40, n_mt) array of one dataset and plane of an xy_mt histogram."""
    return np.array(h.view(flow=False)[what][list(h.axes["dataset"]).index(dataset), ["SP", "VP"].index(plane)])


def _chan_sum(arr, region, group):
    xs, ys = SLICES[region]
    return float(arr[xs, ys][:, :, list(group)].sum())


def _variations(h, signals, zero_channel=None):
    """Per-variation arrays built from the nominal signal arrays with known factors.

    jes: smooth, different in every region and M_T bin; isr: one-sided (+3 % / +1 %); fsr: tiny
    (1e-6); pileup: only "up"; trigger: both all zero; jer: +-5 % except region A (up x 20, clipped
    to 10) and region C (down negative: the region is emptied, the up side mirrored); scale:
    one-sided with the down variation the larger (-1 % / -3 %).
    """
    n_mt = _raw(h, signals[0]).shape[-1]
    fx, fy, fm = CENTERS[:, None, None], CENTERS[None, :, None], np.arange(n_mt)[None, None, :]
    jes = 0.04 + 0.06 * fx - 0.03 * fy + 0.01 * fm
    jer_up = np.full((NBINS, NBINS, n_mt), 1.05)
    jer_dn = np.full((NBINS, NBINS, n_mt), 0.95)
    jer_up[SLICES["A"]] = 20.0
    jer_dn[SLICES["C"]] = -0.5
    out = {}
    for s in signals:
        nom = {p: _raw(h, s, p) for p in ("SP", "VP")}
        f = {"jes_up": 1 + jes, "jes_down": 1 - 0.8 * jes, "isr_up": 1.03, "isr_down": 1.01,
             "fsr_up": 1 + 1e-6, "fsr_down": 1 - 1e-6, "pileup_up": 1.02, "trigger_up": 0.0, "trigger_down": 0.0,
             "jer_up": jer_up, "jer_down": jer_dn, "scale_up": 0.99, "scale_down": 0.97}
        out[s] = {k: {p: nom[p] * v for p in nom} for k, v in f.items()}
    return out


def _zeroed_toy(n_mt=3):
    """realistic_toy with the signal svj_mz2000_rinv0.3 removed from region D (every M_T bin, SP)."""
    h, ds = realistic_toy(n_mt=n_mt, n_signal=2, n_background=2, with_data=False)
    names = list(h.axes["dataset"])
    contents = {n: {p: _raw(h, n, p) for p in ("SP", "VP")} for n in names}
    xs, ys = SLICES["D"]
    contents["svj_mz2000_rinv0.3"]["SP"][xs, ys, :] = 0.0
    weights = {n: (0.5 if ds[n]["kind"] == "background" else 0.01) for n in names}
    return build_xy_mt(contents, h.axes["mt"].edges, weights), ds


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    h, ds = _zeroed_toy()
    signals = sorted(n for n, m in ds.items() if m["kind"] == "signal")
    hs = build_xy_mt_syst(_variations(h, signals), h.axes["mt"].edges, 0.01)
    out = tmp_path_factory.mktemp("syst")
    index = write_datacards(h, ds, WP, out, xy_mt_syst=hs, systematics=None, **WKW)
    return h, hs, ds, out, index


def _card(out, index, point):
    return parse_datacard(out / "datacards" / index["points"][point]["card"])


def _values(card, name, proc="sig"):
    row = card.systematic(name)
    return {b: v for b, p, v in zip(card.col_bins, card.col_procs, row.values) if p == proc}


def _region_sum(arr, region, groups):
    return sum(_chan_sum(arr, region, g) for g in groups)


def test_region_kappas_equal_m_t_integrated_ratio(written):
    """One kappa pair per region: the variation's M_T-integrated region yield over the nominal's,
    written in every M_T bin of the region (two-sided jes); the background gets none."""
    h, hs, ds, out, index = written
    groups = index["mt_groups"]
    var = _variations(h, ["svj_mz1500_rinv0.3"])["svj_mz1500_rinv0.3"]
    nom = _raw(h, "svj_mz1500_rinv0.3")
    card = _card(out, index, "svj_mz1500_rinv0.3")
    validate_datacard(card)
    vals = _values(card, "jes")
    info = index["points"]["svj_mz1500_rinv0.3"]["systematics"]["sources"]["jes"]
    for r in "ABCD":
        n0 = _region_sum(nom, r, groups)
        kd, ku = (_region_sum(var[f"jes_{v}"]["SP"], r, groups) / n0 for v in ("down", "up"))
        assert kd < 1 < ku  # two-sided: the pair as it is
        for i in range(len(groups)):
            got = [float(t) for t in vals[f"SP_{r}_{i}"].split("/")]
            assert got == pytest.approx([kd, ku], rel=1e-7), (r, i)
        reg = info["regions"][r]
        assert reg["status"] == "kept" and not reg["symmetrised"] and reg["up"]["z"] > 2
        assert reg["up"]["effect"] == pytest.approx(ku - 1, rel=1e-9)
    # the per-bin ratios differ (jes depends on M_T): the card carries the integrated one only
    per_bin = [_chan_sum(var["jes_up"]["SP"], "B", g) / _chan_sum(nom, "B", g) for g in groups]
    assert max(per_bin) - min(per_bin) > 1e-3
    assert set(_values(card, "jes", "bkg").values()) == {"-"}  # the background has no detector systematics
    # the index: effect on the total signal in B
    nb = _region_sum(nom, "B", groups)
    assert info["B"]["up"] == pytest.approx(_region_sum(var["jes_up"]["SP"], "B", groups) / nb - 1, rel=1e-9)
    assert info["B"]["down"] == pytest.approx(_region_sum(var["jes_down"]["SP"], "B", groups) / nb - 1, rel=1e-9)
    assert info["B"]["up"] > 0 > info["B"]["down"]
    assert len(info["channels"]) == 4 * len(groups)


def test_one_sided_tiny_missing_empty_and_clipped(written):
    h, hs, ds, out, index = written
    point = "svj_mz1500_rinv0.3"
    card = _card(out, index, point)
    s = index["points"][point]["systematics"]
    names = [x.name for x in card.systematics]
    # one-sided isr (+3 % / +1 %): symmetrised to the larger, up, variation: one symmetric kappa 1.03
    assert set(s["sources"]["isr"]["symmetrised"]) == set("ABCD")
    assert set(_values(card, "isr").values()) == {"1.03"}
    # one-sided scale (-1 % / -3 %), the down variation the larger: theta = -1 gives -3 %, so k = 1/0.97
    scale = [float(v) for v in _values(card, "scale").values()]
    assert scale == pytest.approx([1 / 0.97] * 4 * len(index["mt_groups"]), rel=1e-7)
    # tiny fsr: pruned (below 0.1 %) with its numbers; half-present pileup, empty trigger: no nuisance
    for src in ("fsr", "pileup", "trigger"):
        assert src not in names
    assert "pruned in every region" in s["skipped"]["fsr"] and "fsr" in s["pruned"]
    assert all("below 0.1 %" in s["pruned"]["fsr"]["regions"][r]["why"] for r in "ABCD")
    assert "pileup_down" in s["skipped"]["pileup"] and "missing" in s["skipped"]["pileup"]
    assert "empty" in s["skipped"]["trigger"]
    # jer: region A up x20 -> 10 (recorded); region C: down yield negative, the region is emptied,
    # so the up side is mirrored (symmetric 1.05), never a clipped 0.1; region B as it is
    jer = _values(card, "jer")
    for i in range(len(index["mt_groups"])):
        assert jer[f"SP_A_{i}"] == "0.95/10" and jer[f"SP_C_{i}"] == "1.05" and jer[f"SP_B_{i}"] == "0.95/1.05"
    assert {(c["region"], c["variation"]) for c in s["sources"]["jer"]["clips"]} == {("A", "up")}
    assert s["sources"]["jer"]["emptied"] == [{"region": "C", "variation": "down"}]
    assert all("0.1" not in v.split("/") for row in card.systematics for v in row.values)
    # order: lumi, sources, mcstat, nonclosure; kmax counts them all
    assert names[:5] == ["lumi", "jes", "jer", "isr", "scale"] and names[-1].startswith("nonclosure_bin")
    assert card.kmax == len(names)


def test_zero_nominal_channel_is_dash(written):
    """No signal in region D: '-' in every source row there, no mcstat term, and the sources' D
    effect is 'no signal' (not a kappa, not a clip)."""
    h, hs, ds, out, index = written
    point = "svj_mz2000_rinv0.3"
    card = _card(out, index, point)
    validate_datacard(card)
    chans = [f"SP_D_{i}" for i in range(len(index["mt_groups"]))]
    s = index["points"][point]["systematics"]
    for chan in chans:
        assert card.rate(chan, "sig") == 0.0
        for src in ("jes", "jer", "isr"):
            assert _values(card, src)[chan] == "-"
        assert f"mcstat_{chan}" not in [x.name for x in card.systematics]
        assert "yield <= 0" in s["mcstat_skipped"][chan]
    assert s["nominal_not_positive"] == chans
    assert all(s["sources"][src]["regions"]["D"]["status"] == "no signal" for src in ("jes", "jer", "isr"))


def test_mcstat_kappas(written):
    h, hs, ds, out, index = written
    point = "svj_mz1500_rinv0.3"
    card = _card(out, index, point)
    val, var = _raw(h, point), _raw(h, point, what="variance")
    n = 0
    for i, g in enumerate(index["mt_groups"]):
        for r in "ABCD":
            sw, sw2 = _chan_sum(val, r, g), _chan_sum(var, r, g)
            chan = f"SP_{r}_{i}"
            row = _values(card, f"mcstat_{chan}")
            assert float(row[chan]) == pytest.approx(1 + np.sqrt(sw2) / sw, rel=1e-7)
            assert [v for b, v in row.items() if b != chan] == ["-"] * (len(row) - 1)
            assert set(_values(card, f"mcstat_{chan}", "bkg").values()) == {"-"}
            n += 1
    assert len([x for x in card.systematics if x.name.startswith("mcstat_")]) == n


def test_off_or_absent_reproduces_todays_cards(tmp_path):
    """Systematics off or absent: the card is the one written without xy_mt_syst (byte for byte
    apart from a time line), carrying the lumi and non-closure rows only. (The stored copy of such
    a card that this test held is gone: the writer's own format belongs to its tests.)"""
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1, with_data=False)
    hs = build_xy_mt_syst(_variations(h, ["svj_mz1500_rinv0.3"]), h.axes["mt"].edges, 0.01)
    texts = []
    for k, (syst_h, cfg) in enumerate([(None, None), (hs, False), (hs, {"enabled": False}), (None, {"jes": True})]):
        idx = write_datacards(h, ds, WP, tmp_path / str(k), xy_mt_syst=syst_h, systematics=cfg, **WKW)
        texts.append(_strip_time((tmp_path / str(k) / "datacards" / idx["cards"][0]).read_text()))
        assert idx["systematics"]["applied"] is False and "systematics" not in idx["points"]["svj_mz1500_rinv0.3"]
    assert all(t == texts[0] for t in texts)
    names = [x.name for x in parse_text(texts[0]).systematics]
    assert names[0] == "lumi" and all(n.startswith("nonclosure_bin") for n in names[1:])
    # and on: different text
    idx = write_datacards(h, ds, WP, tmp_path / "on", xy_mt_syst=hs, **WKW)
    assert _strip_time((tmp_path / "on" / "datacards" / idx["cards"][0]).read_text()) != texts[0]


def test_config_switches_and_lumi_rows(tmp_path):
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1, with_data=False)
    hs = build_xy_mt_syst(_variations(h, ["svj_mz1500_rinv0.3"]), h.axes["mt"].edges, 0.01)
    cfg = {"jer": False, "mcstat": False, "lumi": {"lumi_2018": 1.025, "lumi_corr": "0.98/1.02"}, "payloads": "x.json"}
    idx = write_datacards(h, ds, WP, tmp_path, xy_mt_syst=hs, systematics=cfg, **WKW)
    card = parse_datacard(tmp_path / "datacards" / idx["cards"][0])
    validate_datacard(card)
    names = [x.name for x in card.systematics]
    assert names[:4] == ["lumi_2018", "lumi_corr", "jes", "isr"] and "lumi" not in names
    assert not any(n.startswith("mcstat_") for n in names) and "jer" not in names
    assert set(_values(card, "lumi_corr").values()) == {"0.98/1.02"}
    assert idx["points"]["svj_mz1500_rinv0.3"]["systematics"]["skipped"]["jer"] == "switched off in the configuration"
    c = systematics_config({"sources": ["jes"]})
    assert c.use("jes") and not c.use("isr")
    with pytest.raises(DatacardError, match="lumi_x"):
        systematics_config({"lumi": {"lumi_x": -1}})
    with pytest.raises(DatacardError, match="defined twice"):
        write_datacards(h, ds, WP, tmp_path / "clash", xy_mt_syst=hs, signal_systematics={"jes": 1.03}, **WKW)


@pytest.mark.slow
def test_summary_lines_and_plot(written, tmp_path):
    h, hs, ds, out, index = written
    on_disk = json.loads((out / "datacards" / "index.json").read_text())
    lines = summary_lines(on_disk)
    assert lines[0] == "## Signal systematics"
    jes = on_disk["points"]["svj_mz1500_rinv0.3"]["systematics"]["sources"]["jes"]["regions"]["B"]
    row = next(line for line in lines[lines.index("### svj_mz1500_rinv0.3"):] if line.startswith("| jes |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "yes, in regions A, B, C, D"
    assert f"`{jes['card']}`" in cells[3]
    assert f"up {100 * jes['up']['effect']:+.1f} ± {100 * jes['up']['sigma']:.1f} %" in cells[3]
    fsr = next(line for line in lines if line.startswith("| fsr |"))
    assert "no: pruned in every region" in fsr and fsr.count("pruned, effect below 0.1 %") == 4
    assert "symmetrised" in next(line for line in lines if line.startswith("| isr |"))
    assert any(line.startswith("| trigger |") and "empty" in line for line in lines)
    assert not any("{" in line for line in lines)  # words, no dict dumps
    assert "No signal systematics" in summary_lines({"systematics": {"applied": False, "reason": "no xy_mt_syst"},
                                                      "points": {}})[2]
    paths = plot_systematics(h, hs, ds, WP, tmp_path)
    # every source with both variations filled (fsr too: tiny, but present); pileup, trigger not
    assert sorted(p.rsplit("/", 1)[1] for p in paths if p.endswith(".png")) == [
        "syst_fsr.png", "syst_isr.png", "syst_jer.png", "syst_jes.png", "syst_scale.png"]


# ---------------------------------------------------------------------------------------------
# quick limits with one lnN source against an independent scipy likelihood


def _kappa(theta, kd, ku):
    return ku**theta if theta >= 0 else kd ** (-theta)


def _scipy_median(s, b, kd, ku, knc=None):
    """Median expected limit from a hand-written Poisson likelihood of the ABCD channels of one M_T bin.

    ``s, b``: signal and background yields in A, B, C, D (b in B unused: B = A D / C); one log-normal
    nuisance on the signal (kdown/kup per region, piecewise as the quick fit), the non-closure
    lnN on the background in B, free a, c, d scaling A, C, D; Asimov data = background only.
    """
    bA, _, bC, bD = b
    n = np.array([bA, bA * bD / bC, bC, bD])

    def nll(p, mu):
        th, tnc, a, c, d = p
        k = np.array([_kappa(th, kd[r], ku[r]) for r in range(4)])
        bkg = np.array([bA * a, bA * a * bD * d / (bC * c) * (knc**tnc if knc else 1.0), bC * c, bD * d])
        nu = bkg + mu * np.asarray(s) * k
        return float(np.sum(nu - n + n * np.log(n / nu)) + 0.5 * th**2 + 0.5 * tnc**2)

    def qa(mu):
        best = min((optimize.minimize(nll, x0, args=(mu,), method="L-BFGS-B",
                                      bounds=[(-10, 10), (-10, 10), (0.1, 10), (0.1, 10), (0.1, 10)],
                                      options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000})
                    for x0 in ([0, 0, 1, 1, 1], [-0.5, 0, 1, 1, 1])), key=lambda r: r.fun)
        return 2 * best.fun

    t = expected_target(0.5)
    return optimize.brentq(lambda mu: np.sqrt(max(qa(mu), 0)) - t, 1e-6, 100.0, xtol=1e-10)


@pytest.mark.slow
def test_quick_limit_with_one_source_matches_scipy(tmp_path):
    h, ds = realistic_toy(n_mt=1, n_signal=1, n_background=1, with_data=False, scale=0.02)
    sig = "svj_mz1500_rinv0.3"
    nom = _raw(h, sig)
    fx = CENTERS[:, None, None]
    up, dn = nom * (1.15 + 0.1 * fx), nom * (0.8 - 0.05 * fx)
    hs = build_xy_mt_syst({sig: {"jes_up": {"SP": up}, "jes_down": {"SP": dn}}}, h.axes["mt"].edges, 0.01)
    idx = write_datacards(h, ds, WP, tmp_path, xy_mt_syst=hs, systematics={"mcstat": False, "lumi": {}}, **WKW)
    card = parse_datacard(tmp_path / "datacards" / idx["cards"][0])
    assert [x.name for x in card.systematics] == ["jes", "nonclosure_bin0"]
    g = [0]
    s = [_chan_sum(nom, r, g) for r in "ABCD"]
    b = [sum(_chan_sum(_raw(h, n), r, g) for n in ds if ds[n]["kind"] == "background") for r in "ABCD"]
    kd = [_chan_sum(dn, r, g) / s[k] for k, r in enumerate("ABCD")]
    ku = [_chan_sum(up, r, g) / s[k] for k, r in enumerate("ABCD")]
    ref = _scipy_median(s, b, kd, ku, knc=idx["nonclosure_kappa"][0])
    lim = card_limits(card, observed=False)
    assert lim["exp0"] == pytest.approx(ref, rel=1e-3)
    # the nuisance matters: without it the limit is clearly lower
    no_syst = _scipy_median(s, b, [1.0] * 4, [1.0] * 4, knc=idx["nonclosure_kappa"][0])
    assert ref > 1.01 * no_syst


def test_quick_limit_few_bins_fixed_background():
    """Three bins, fixed background, one asymmetric lnN on the signal (the card syntax kdown/kup)."""
    s, b = np.array([8.0, 12.0, 5.0]), np.array([40.0, 25.0, 10.0])
    kd, ku = [0.85, 0.8, 0.9], [1.1, 1.25, 1.05]
    card = "\n".join([
        "imax 3", "jmax 1", "kmax 1", "---", "bin b0 b1 b2", "observation " + " ".join(f"{v:g}" for v in b), "---",
        "bin b0 b0 b1 b1 b2 b2", "process sig bkg sig bkg sig bkg", "process 0 1 0 1 0 1",
        "rate " + " ".join(f"{s[i]:g} {b[i]:g}" for i in range(3)), "---",
        "jes lnN " + " ".join(f"{kd[i]:g}/{ku[i]:g} -" for i in range(3))]) + "\n"
    lim = card_limits(parse_text(card), observed=False)

    def qa(mu):
        def nll(th):
            nu = b + mu * s * np.array([_kappa(th, kd[i], ku[i]) for i in range(3)])
            return np.sum(nu - b + b * np.log(b / nu)) + 0.5 * th**2
        return 2 * optimize.minimize_scalar(nll, bounds=(-10, 10), method="bounded", options={"xatol": 1e-12}).fun

    ref = optimize.brentq(lambda mu: np.sqrt(qa(mu)) - expected_target(0.5), 1e-6, 100.0, xtol=1e-12)
    assert lim["exp0"] == pytest.approx(ref, rel=1e-3)


def test_one_systematics_model_for_the_processor_and_the_cards():
    """``analysis.systematics`` is one model: the processor's keys and the cards' keys in one block,
    validated at load; the card writer uses the job's model as it is and takes its defaults."""
    from svjscout.processors.variations import SOURCES, SystematicsSettings

    s = SystematicsSettings(enabled=True, prune_sigma=1.5, lumi={"lumi_2018": "0.98/1.02"})
    assert systematics_config(s) is s and s.lumi == {"lumi_2018": [0.98, 1.02]} and s.use("jes")
    with pytest.raises(ValueError, match="unknown"):
        SystematicsSettings(sources=["scale"])  # a job cannot name a source the processor lacks
    with pytest.raises(ValueError, match="lumi_x"):
        SystematicsSettings(lumi={"lumi_x": 0})
    with pytest.raises(ValueError, match="prune_sigma"):
        SystematicsSettings(prune_sigma=-1)
    api = systematics_config({"jer": False})
    assert api.enabled and api.prune_sigma == SystematicsSettings().prune_sigma
    assert not api.use("jer") and all(api.use(x) for x in SOURCES if x != "jer")
    assert systematics_config(None).use("any_source_of_the_histogram")
