"""Datacard writer, index.json, M_T merging (svjscout.datacards.writer)."""

import json
import os

import numpy as np
import pytest

from svjscout.core.exceptions import DatacardError, UnbackedError
from svjscout.datacards import (
    abcd_prediction,
    nonclosure_uncertainties,
    parse_datacard,
    validate_datacard,
    write_datacards,
)
from svjscout.datacards.regions import region_yields
from svjscout.datacards.toys import build_xy_mt, factorised, falling, realistic_toy, rising
from svjscout.datacards.writer import merge_groups

WP = (0.775, 0.875)
#: the statistics guard off: the toys test the card layout bin by bin
NO_GUARD = {"min_neff": 0.0, "max_rel_err": np.inf}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    h, ds = realistic_toy(n_mt=3, n_signal=2, n_background=2)
    out = tmp_path_factory.mktemp("cards")
    index = write_datacards(h, ds, WP, out, source="toy.coffea", signal_systematics={"jes": 1.03}, **NO_GUARD)
    return h, ds, out, index


def test_files_and_index(written):
    h, ds, out, index = written
    cdir = out / "datacards"
    assert sorted(index["points"]) == ["svj_mz1500_rinv0.3", "svj_mz2000_rinv0.3"]
    for card in index["cards"]:
        assert (cdir / card).is_file()
    on_disk = json.loads((cdir / "index.json").read_text())
    assert on_disk["wp"] == {"x0": 0.775, "y0": 0.875} and on_disk["merges"] == [] and on_disk["floors"] == []
    assert on_disk["cards"] == index["cards"] and on_disk["version"] == "0.1.0"
    assert index["points"]["svj_mz2000_rinv0.3"]["card"] == os.path.join("svj_mz2000_rinv0.3", "datacard.txt")


def test_card_structure(written):
    h, ds, out, index = written
    path = out / "datacards" / "svj_mz2000_rinv0.3" / "datacard.txt"
    text = path.read_text()
    assert text.startswith("#") and "svjscout 0.1.0" in text and "x0=0.775 y0=0.875" in text and "toy.coffea" in text
    card = parse_datacard(path)
    assert card.imax == 12 and card.jmax == 1 and card.kmax == 2 + 3
    assert card.bins[:4] == ["SP_A_0", "SP_B_0", "SP_C_0", "SP_D_0"]
    assert all(b.split("_")[1] in "ABCD" for b in card.bins)
    # the yields are in the rates, the free rateParams are O(1) with a range away from 0
    assert all(float(r) > 0.0 for r in card.col_rates[1::2])
    free = [rp for rp in card.rate_params if not rp.is_formula]
    assert len(free) == 9 and all(rp.value == 1.0 and rp.range == (0.1, 10.0) for rp in free)
    assert "shapes * * FAKE" in text
    nc = [s for s in card.systematics if "nonclosure" in s.name]
    assert [s.name for s in nc] == ["nonclosure_bin0", "nonclosure_bin1", "nonclosure_bin2"]
    for i, s in enumerate(nc):  # only on bkg in B_i
        cols = [(b, p) for (b, p), v in zip(zip(card.col_bins, card.col_procs), s.values) if v != "-"]
        assert cols == [(f"SP_B_{i}", "bkg")]
    lumi = card.systematic("lumi")
    assert all((v == "1.016") == (p == "sig") for v, p in zip(lumi.values, card.col_procs))
    rpB = card.rate_param("bkg_SP_B_1")
    assert rpB.formula == "(@0*@1/@2)" and rpB.args == ["bkg_SP_A_1", "bkg_SP_D_1", "bkg_SP_C_1"]
    assert validate_datacard(card) == []


def test_round_trip_numbers(written):
    h, ds, out, index = written
    card = parse_datacard(out / "datacards" / "svj_mz1500_rinv0.3" / "datacard.txt")
    bkg = region_yields(h, ds, WP, which="background")
    sig = region_yields(h, ds, WP, which="svj_mz1500_rinv0.3")
    # fit bins = closure bins: each fit bin's kappa is its own closure's
    assert index["closure_bins"] == [[0], [1], [2]] and index["backed"]
    u = nonclosure_uncertainties(h, ds, WP, groups=index["mt_groups"])
    for i in range(3):
        for k, r in enumerate("ABCD"):
            assert card.rate(f"SP_{r}_{i}", "sig") == pytest.approx(sig.n[k, i], rel=1e-7)
            if r != "B":
                assert card.rate(f"SP_{r}_{i}", "bkg") == pytest.approx(bkg.n[k, i], rel=1e-7)
                assert card.rate_param(f"bkg_SP_{r}_{i}").value == 1.0
        assert card.rate(f"SP_B_{i}", "bkg") == pytest.approx(bkg.n[0, i] * bkg.n[3, i] / bkg.n[2, i], rel=1e-7)
        kappa = card.systematic(f"nonclosure_bin{i}").values[card.col_bins.index(f"SP_B_{i}") + 1]
        assert float(kappa) == pytest.approx(1 + u[i], rel=1e-7)
    obs = card.obs()
    t = abcd_prediction(h, ds, WP)
    np.testing.assert_allclose([obs[f"SP_B_{i}"] for i in range(3)], t.nhat_B, rtol=1e-7)
    np.testing.assert_allclose([obs[f"SP_C_{i}"] for i in range(3)], t.n_C, rtol=1e-7)


def _zero_bin_toy():
    bkg = factorised(1e5, falling(3.0), falling(3.0), [1.0, 1.0, 1.0, 1.0])
    bkg[:, :, 3] = 0.0  # empty last M_T bin
    bkg[31:, 35:, 0] = 0.0  # first bin: nothing in B (x > 0.775, y > 0.875)
    sig = factorised(100.0, rising(3.0), rising(3.0), [1.0, 1.0, 1.0, 1.0])
    h = build_xy_mt({"bkg": {"SP": bkg, "VP": bkg}, "svj": {"SP": sig}}, [650.0, 800.0, 1000.0, 1500.0, 3000.0], 1.0)
    ds = {"bkg": {"kind": "background"}, "svj": {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3}}
    return h, ds


def test_merge_rule():
    b = np.ones((4, 5))
    b[1, 0] = 0.0
    b[:, 4] = 0.0
    b[2, 2] = -0.5  # group [2, 3] sums to 0.5 > 0
    groups, merges = merge_groups(b)
    assert groups == [[0, 1], [2, 3, 4]]  # last group merges downwards
    assert merges[0]["bins"] == [0] and "B" in merges[0]["reason"]


def test_zero_background_merged_and_reported(tmp_path):
    h, ds = _zero_bin_toy()
    index = write_datacards(h, ds, WP, tmp_path)
    assert index["mt_groups"] == [[0, 1], [2, 3]]
    assert len(index["merges"]) == 2 and index["floors"] == []
    assert index["mt_edges"] == [650.0, 1000.0, 3000.0]
    card = parse_datacard(tmp_path / "datacards" / "svj_mz2000_rinv0.3" / "datacard.txt")
    assert card.imax == 8 and validate_datacard(card) == []


def test_zero_background_floor_mode(tmp_path):
    h, ds = _zero_bin_toy()
    index = write_datacards(h, ds, WP, tmp_path, zero_bkg="floor", floor_value=0.01, allow_unbacked=True)
    assert index["mt_groups"] == [[0], [1], [2], [3]] and index["merges"] == []
    assert not index["backed"] and any("B empty" in r for r in index["verdict"]["reasons"])
    floored = {(f["region"], f["bin"]) for f in index["floors"]}
    assert floored == {("B", 0), ("A", 3), ("B", 3), ("C", 3), ("D", 3)}
    card = parse_datacard(tmp_path / "datacards" / "svj_mz2000_rinv0.3" / "datacard.txt")
    assert card.rate("SP_C_3", "bkg") == pytest.approx(0.01)
    assert validate_datacard(card) == []


def test_negative_signal_yield_set_to_zero(tmp_path):
    h, ds = _zero_bin_toy()
    v = h.view(flow=False)
    i = list(h.axes["dataset"]).index("svj")
    v["value"][i, 0, 0, 0, 1] = -50.0  # region C, M_T bin 1, negative weights
    index = write_datacards(h, ds, WP, tmp_path, zero_bkg="floor", allow_unbacked=True)
    neg = index["points"]["svj_mz2000_rinv0.3"]["negative_signal_set_to_zero"]
    assert [(n["region"], n["bin"]) for n in neg] == [("C", 1)]
    card = parse_datacard(tmp_path / "datacards" / "svj_mz2000_rinv0.3" / "datacard.txt")
    assert card.rate("SP_C_1", "sig") == 0.0


def test_data_observation(tmp_path):
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1)
    index = write_datacards(h, ds, WP, tmp_path, asimov=False, unblind=True, lumi_unc=1.025, **NO_GUARD)
    card = parse_datacard(tmp_path / "datacards" / index["cards"][0])
    data = region_yields(h, ds, WP, which="data")
    assert card.obs()["SP_D_1"] == np.round(data.n[3, 1]) and all(float(o).is_integer() for o in card.observation)
    assert "1.025" in card.systematic("lumi").values and index["asimov"] is False
    with pytest.raises(DatacardError, match="zero_bkg"):
        write_datacards(h, ds, WP, tmp_path, zero_bkg="nope")


def test_merge_rule_on_effective_events():
    """Hand-made yields with known Kish N_eff: weights w per event, N_eff = n for equal weights."""
    # region B of bins 0 and 1: 4 events of weight 2.5 each (N_eff 4); bin 2: 12 events (N_eff 12);
    # bin 3: 3 events of weight 1 and one of weight 9 (sum 12, sum w^2 84: N_eff 144/84 = 1.71)
    n = np.full((4, 4), 100.0)
    var = np.full((4, 4), 1.0)  # N_eff 10,000 elsewhere
    n[1] = [10.0, 10.0, 30.0, 12.0]
    var[1] = [25.0, 25.0, 75.0, 84.0]
    groups, merges = merge_groups(n, 0.0, var, min_neff=6.0)
    # bin 0 (4) + bin 1 (4) = N_eff 8 >= 6; bin 2 alone 12; bin 3 (1.71) merges down into bin 2: (42)^2/159 = 11.1
    assert groups == [[0, 1], [2, 3]]
    assert "N_eff 4.0" in merges[0]["reason"] and "N_eff 1.7" in merges[1]["reason"]
    assert merge_groups(n, 0.0, var, min_neff=0.0)[0] == [[0], [1], [2], [3]]
    with pytest.raises(DatacardError, match="var"):
        merge_groups(n, 0.0, None, min_neff=5.0)


def test_index_reports_neff_closure_and_signal_free_bins(tmp_path):
    h, ds = realistic_toy(n_mt=3, n_signal=1, n_background=1)
    # nothing passes: every M_T bin merged into one fit (= closure) bin, and the cards say UNBACKED
    index = write_datacards(h, ds, WP, tmp_path, min_neff=1e9, allow_unbacked=True)
    assert index["mt_groups"] == [[0, 1, 2]] and index["closure_bins"] == [[0]] and len(index["closure"]["bins"]) == 1
    assert index["below_min_neff"] and len(index["nonclosure_kappa"]) == 1 and not index["backed"]
    bkg = region_yields(h, ds, WP, which="background").merged(index["mt_groups"])
    for i, neff in enumerate(index["fit_n_eff"]):
        for k, r in enumerate("ABCD"):
            assert neff[r] == pytest.approx(bkg.n[k, i] ** 2 / bkg.var[k, i], rel=1e-9)
    assert index["mt_bins"][-1].endswith("inf)") and index["last_bin_holds_overflow"]
    point = next(iter(index["points"].values()))
    sig = region_yields(h, ds, WP, which=point["dataset"]).n[1]
    assert point["bins_without_signal_in_B"] == [index["mt_bins"][i] for i in np.flatnonzero(~(sig > 0))]
    card = (tmp_path / "datacards" / point["card"]).read_text()
    assert "inf)" in card and "fit bins = closure bins" in card and card.startswith("# UNBACKED: ")
    with pytest.raises(UnbackedError, match="N_eff >= 1e\\+09"):  # without allow_unbacked: nothing written
        write_datacards(h, ds, WP, tmp_path / "refused", min_neff=1e9)
    assert not (tmp_path / "refused").exists()
