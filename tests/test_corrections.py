"""Corrections from correctionlib payloads (processors/corrections): the shipped illustrative
payload evaluated by hand from its JSON, the deterministic JER smearing, weights, errors and the
payload's reproducibility."""

from __future__ import annotations

import bisect
import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import awkward as ak
import correctionlib.schemav2 as cs
import numpy as np
import pytest
from scipy import stats

from svjscout.processors import corrections as C
from svjscout.processors.corrections import make_payloads as mp

TEST_ROOT = Path(__file__).resolve().parent / "data" / "jsonpog"


@pytest.fixture(scope="module")
def cset():
    return C.load_corrections("shipped:illustrative_run2")


@pytest.fixture(scope="module")
def raw(cset):
    """The shipped era's files read with plain json (no correctionlib), by role."""
    out = {}
    for role in C.REQUIRED:
        file_role, name = cset.names(role, "ak4")
        with gzip.open(cset.path(file_role), "rt") as f:
            out[role] = next(c for c in json.load(f)["corrections"] if c["name"] == name)
    return out


def _bin(edges, x):
    """Bin index with clamped flow, found by hand."""
    i = bisect.bisect_right(edges, x) - 1
    return min(max(i, 0), len(edges) - 2)


def _category(node, key):
    assert node["nodetype"] == "category"
    return next(item["value"] for item in node["content"] if item["key"] == key)


JETS = [(15.0, 0.0), (29.9, 0.2), (30.0, -0.5), (45.0, 1.29), (120.0, -1.31), (350.0, 2.4),
        (800.0, -2.7), (2500.0, 3.1), (9000.0, -4.9), (5.0, 6.0), (60.0, -7.0), (250.0, 0.0)]


# ---------------------------------------------------------------- JES
@pytest.mark.parametrize("direction", [1, -1])
def test_jes_variation_moves_pt_by_exactly_its_factor(cset, raw, direction):
    node = raw["jes_uncertainty"]["data"]
    assert node["nodetype"] == "multibinning" and node["inputs"] == ["JetEta", "JetPt"]
    eta_edges, pt_edges = node["edges"]
    pt = np.array([p for p, _ in JETS])
    eta = np.array([e for _, e in JETS])
    factor = C.jes_factor(cset, pt, eta, direction)
    for k, (p, e) in enumerate(JETS):
        u = node["content"][_bin(eta_edges, e) * (len(pt_edges) - 1) + _bin(pt_edges, p)]
        assert 0.01 <= u <= 0.07
        assert factor[k] == 1.0 + direction * u
        assert pt[k] * factor[k] == p * (1.0 + direction * u)
    # larger at low pT and forward
    assert C.jes_factor(cset, 20.0, 0.0, 1) > C.jes_factor(cset, 1000.0, 0.0, 1)
    assert C.jes_factor(cset, 100.0, 4.0, 1) > C.jes_factor(cset, 100.0, 0.3, 1)


def test_jes_awkward_layout_and_bad_direction(cset):
    pt = ak.Array([[300.0, 120.0], [], [45.0]])
    eta = ak.Array([[0.1, -2.0], [], [3.5]])
    f = C.jes_factor(cset, pt, eta, 1)
    assert isinstance(f, ak.Array) and ak.to_list(ak.num(f)) == [2, 0, 1]
    flat = C.jes_factor(cset, np.array([300.0, 120.0, 45.0]), np.array([0.1, -2.0, 3.5]), 1)
    assert np.array_equal(ak.to_numpy(ak.flatten(f)), flat)
    assert np.shape(C.jes_factor(cset, np.ones((2, 3)) * 50, np.zeros((2, 3)), -1)) == (2, 3)
    with pytest.raises(ValueError):
        C.jes_factor(cset, pt, eta, 0)


# ---------------------------------------------------------------- JER payload by hand
def test_jer_payload_by_hand(cset, raw):
    for syst in ("nom", "up", "down"):
        node = _category(raw["jer_scale_factor"]["data"], syst)
        for e in (-6.0, -3.0, -0.6, 0.0, 0.49, 1.2, 2.5, 4.0, 5.5):
            s = node["content"][_bin(node["edges"], e)]
            assert cset["jer_scale_factor"].evaluate(e, syst) == s
            assert s == mp.jer_sf_table(syst)[_bin(mp.JER_SF_ABS_ETA, abs(e))]
    up = np.array(mp.jer_sf_table("up"))
    nom = np.array(mp.jer_sf_table("nom"))
    down = np.array(mp.jer_sf_table("down"))
    assert np.all(up > nom) and np.all(nom > down) and np.all(down >= 1.0)
    res = raw["jer_resolution"]["data"]
    for p, e in JETS:
        formula = res["content"][_bin(res["edges"], e)]
        n, s, c = formula["parameters"]
        x = max(p, mp.JER_RES_PT_MIN)
        expect = math.sqrt(n * n / (x * x) + s * s / x + c * c)
        assert cset["jer_resolution"].evaluate(e, p, 0.0) == pytest.approx(expect, rel=1e-12)
        assert expect == pytest.approx(mp.jer_resolution_value(_bin(mp.JER_RES_ABS_ETA, abs(e)), p), rel=1e-12)
    assert 0.1 < cset["jer_resolution"].evaluate(0.0, 30.0, 0.0) < 0.2
    assert 0.03 < cset["jer_resolution"].evaluate(0.0, 1000.0, 0.0) < 0.06


# ---------------------------------------------------------------- JER smearing
def _events(n_events, seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 5, n_events)
    n = counts.sum()
    return dict(
        run=rng.integers(1, 400000, n_events), lumi=rng.integers(1, 3000, n_events),
        event=rng.integers(1, 2**40, n_events), counts=counts,
        pt=ak.unflatten(rng.uniform(30, 1500, n), counts), eta=ak.unflatten(rng.uniform(-4.5, 4.5, n), counts))


def _smear(cset, ev, sl, syst="nom"):
    seeds = C.jet_seeds(ev["run"][sl], ev["lumi"][sl], ev["event"][sl], ev["pt"][sl], salt=8)
    return C.jer_smear(cset, ev["pt"][sl], ev["eta"][sl], syst, seeds)


@pytest.mark.parametrize("syst", ["nom", "up", "down"])
def test_jer_smear_identical_for_any_chunking_and_order(cset, syst):
    n = 1200
    ev = _events(n, 1)
    full = _smear(cset, ev, slice(None), syst)
    assert ak.to_list(ak.num(full)) == ak.to_list(ev["counts"])
    assert not np.array_equal(ak.to_numpy(ak.flatten(full)), ak.to_numpy(ak.flatten(ev["pt"])))
    for chunk in (7, 100, 500, n - 1):
        parts = [_smear(cset, ev, slice(i, i + chunk), syst) for i in range(0, n, chunk)]
        assert ak.to_list(ak.concatenate(parts)) == ak.to_list(full)
    perm = np.random.default_rng(2).permutation(n)
    shuffled = _smear(cset, ev, perm, syst)
    assert ak.to_list(shuffled) == ak.to_list(full[perm])


def test_jer_smear_differs_for_different_ids(cset):
    ev = _events(2000, 3)
    seeds = C.jet_seeds(ev["run"], ev["lumi"], ev["event"], ev["pt"])
    flat = ak.to_numpy(ak.flatten(seeds))
    assert len(np.unique(flat)) == len(flat)
    z = ak.to_numpy(ak.flatten(C.gaussian_from_seeds(seeds)))
    assert len(np.unique(z)) == len(z)
    for field, other in (("event", ev["event"] + 1), ("lumi", ev["lumi"] + 1), ("run", ev["run"] + 1)):
        args = dict(run=ev["run"], luminosityBlock=ev["lumi"], event=ev["event"])
        args[{"lumi": "luminosityBlock"}.get(field, field)] = other
        moved = ak.to_numpy(ak.flatten(C.jet_seeds(jets=ev["pt"], **args)))
        assert not np.any(moved == flat)
    salted = ak.to_numpy(ak.flatten(C.jet_seeds(ev["run"], ev["lumi"], ev["event"], ev["pt"], salt=4)))
    assert not np.any(salted == flat)
    # the counts instead of the jets: the same seeds
    by_counts = C.jet_seeds(ev["run"], ev["lumi"], ev["event"], ev["counts"])
    assert ak.to_list(by_counts) == ak.to_list(seeds)


def test_jer_same_z_for_all_variations(cset):
    ev = _events(500, 4)
    seeds = C.jet_seeds(ev["run"], ev["lumi"], ev["event"], ev["pt"])
    f = {s: ak.to_numpy(ak.flatten(C.jer_factor(cset, ev["pt"], ev["eta"], s, seeds))) for s in ("nom", "up", "down")}
    # a coherent shift: up is further from 1 than nom, nom further than down (same z)
    assert np.all(np.abs(f["up"] - 1) >= np.abs(f["nom"] - 1))
    assert np.all(np.abs(f["nom"] - 1) >= np.abs(f["down"] - 1))
    assert np.array_equal(C.jer_factor(cset, ev["pt"], ev["eta"], 1, seeds),
                          C.jer_factor(cset, ev["pt"], ev["eta"], "up", seeds))
    with pytest.raises(ValueError):
        C.jer_factor(cset, ev["pt"], ev["eta"], "sideways", seeds)


def _payload_with_sf(tmp_path, value):
    """The illustrative set with a flat jer_scale_factor = value."""
    model = mp.correction_set()
    for corr in model.corrections:
        if corr.name == "jer_scale_factor":
            for item in corr.data.content:
                item.value.content = [value] * len(item.value.content)
    path = tmp_path / "sf.json"
    path.write_text(model.model_dump_json(exclude_unset=True))
    return C.load_corrections(path)


def test_jer_no_smearing_with_unit_scale_factor(tmp_path):
    unit = _payload_with_sf(tmp_path, 1.0)
    ev = _events(1000, 5)
    seeds = C.jet_seeds(ev["run"], ev["lumi"], ev["event"], ev["pt"])
    for syst in ("nom", "up", "down"):
        assert ak.to_list(C.jer_smear(unit, ev["pt"], ev["eta"], syst, seeds)) == ak.to_list(ev["pt"])
    below = _payload_with_sf(tmp_path, 0.9)  # s < 1: no smearing either (max(s^2 - 1, 0))
    assert ak.to_list(C.jer_smear(below, ev["pt"], ev["eta"], "nom", seeds)) == ak.to_list(ev["pt"])


@pytest.mark.parametrize("pt,eta,syst", [(50.0, 0.3, "nom"), (400.0, -1.8, "up"), (1000.0, 2.9, "down")])
def test_jer_spread_matches_sigma_mc_sqrt_s2_minus_1(cset, pt, eta, syst):
    n = 200_000
    ids = np.arange(n)
    seeds = C.jet_seeds(np.full(n, 317000), ids // 1000, ids, np.ones(n, dtype=np.int64))
    ptv = ak.unflatten(np.full(n, pt), np.ones(n, dtype=np.int64))
    etav = ak.unflatten(np.full(n, eta), np.ones(n, dtype=np.int64))
    rel = ak.to_numpy(ak.flatten(C.jer_smear(cset, ptv, etav, syst, seeds))) / pt - 1.0
    s = cset["jer_scale_factor"].evaluate(eta, syst)
    sigma = cset["jer_resolution"].evaluate(eta, pt, 0.0)
    expect = sigma * math.sqrt(s * s - 1.0)
    assert expect > 0.005
    # sample std of a Gaussian: relative standard error 1/sqrt(2n); 4 standard errors
    assert np.std(rel) == pytest.approx(expect, rel=4 / math.sqrt(2 * n))
    assert abs(np.mean(rel)) < 4 * expect / math.sqrt(n)
    assert stats.kstest(rel / expect, "norm").pvalue > 1e-3


def test_gaussian_from_seeds_is_standard_normal():
    z = C.gaussian_from_seeds(np.arange(500_000, dtype=np.uint64))
    assert abs(z.mean()) < 4 / math.sqrt(len(z))
    assert z.std() == pytest.approx(1.0, abs=4 / math.sqrt(2 * len(z)))
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert np.array_equal(z[123:456], C.gaussian_from_seeds(np.arange(123, 456, dtype=np.uint64)))


# ---------------------------------------------------------------- event weights
@pytest.mark.parametrize("syst", ["nom", "up", "down"])
def test_pileup_weights_average_to_one_over_mc(cset, syst):
    prof = mp.pileup_profiles()
    centres = np.arange(100) + 0.5
    w = C.pileup_weight(cset, centres, syst)
    assert np.all(w >= 0)
    assert np.sum(prof["mc"] * w) == pytest.approx(1.0, abs=1e-8)
    # the reweighted MC has the target's mean (the min-bias +-4.6 % shift of the means)
    target_mean = np.sum(prof[syst] * np.arange(100))
    assert np.sum(prof["mc"] * w * np.arange(100)) == pytest.approx(target_mean, rel=1e-6)
    # empty MC bins weigh 0, the flow is clamped
    assert np.all(w[prof["mc"] < mp.PU_MC_EMPTY] == 0)
    assert C.pileup_weight(cset, 250.0, syst) == w[-1]
    # a sampled MC profile: the mean weight is one within statistics
    rng = np.random.default_rng(7)
    n_true = rng.choice(100, size=200_000, p=prof["mc"]) + rng.uniform(0, 1, 200_000)
    ws = C.pileup_weight(cset, n_true, syst)
    assert ws.mean() == pytest.approx(1.0, abs=4 * ws.std() / math.sqrt(len(ws)))


def test_pileup_up_down_shift_target_mean():
    prof = mp.pileup_profiles()
    mean = {k: np.sum(v * np.arange(100)) for k, v in prof.items()}
    assert mean["up"] / mean["nom"] == pytest.approx(1.046, rel=1e-6)
    assert mean["down"] / mean["nom"] == pytest.approx(0.954, rel=1e-6)


def test_trigger_sf_range_and_ordering(cset, raw):
    ht = np.linspace(0, 3000, 3001)
    sf = {s: C.trigger_sf(cset, ht, s) for s in ("nom", "up", "down")}
    for v in sf.values():
        assert np.all((v >= 0) & (v <= 1.1))
    assert np.all(sf["up"] >= sf["nom"]) and np.all(sf["nom"] >= sf["down"])
    width = sf["up"] - sf["down"]
    above = ht > 410
    assert np.all(np.diff(width[above]) <= 1e-12)  # largest near the threshold
    assert np.all(np.diff(sf["nom"][above]) >= 0)  # a turn-on
    assert sf["nom"][ht == 2000][0] == 1.0
    node = _category(raw["trigger_ht_sf"]["data"], "up")
    assert C.trigger_sf(cset, 415.0, "up") == node["content"][_bin(node["edges"], 415.0)]
    with pytest.raises(ValueError):
        C.trigger_sf(cset, ht, "sideways")
    # awkward in, awkward out
    out = C.pileup_weight(cset, ak.Array([30.5, 40.2]), "nom")
    assert isinstance(out, ak.Array) and len(out) == 2


# ---------------------------------------------------------------- payload errors and reproducibility
def test_payload_missing_a_correction_names_it(tmp_path):
    model = mp.correction_set()
    model.corrections = [c for c in model.corrections if c.name not in ("pileup_weight", "jer_resolution")]
    path = tmp_path / "partial.json"
    path.write_text(model.model_dump_json(exclude_unset=True))
    with pytest.raises(C.PayloadError) as err:
        C.load_corrections(str(path))
    msg = str(err.value)
    assert "pileup_weight" in msg and "jer_resolution" in msg and str(path) in msg
    with pytest.raises(C.PayloadError, match="does not exist"):
        C.load_corrections(tmp_path / "nope.json")
    with pytest.raises(C.PayloadError, match="no shipped"):
        C.load_corrections("shipped:nope")
    # a relative path resolves against base_dir (the job file's folder)
    (tmp_path / "full.json").write_bytes(mp.payload_json())
    assert set(C.load_corrections("full.json", base_dir=tmp_path).keys()) == set(C.REQUIRED)


@pytest.mark.parametrize("era,root", [("svjscout_sim", None), ("2018_UL", TEST_ROOT)])
def test_script_regenerates_the_era_files(tmp_path, era, root):
    """The shipped era's files and the test payload are what the script writes, byte for byte."""
    root = root or mp.OUTPUT_ROOT
    out = tmp_path / era
    subprocess.run([sys.executable, "-m", "svjscout.processors.corrections.make_payloads", str(out), era],
                   check=True, capture_output=True)
    rels = list(mp.pog_files(era))
    assert len(rels) == 4
    for rel in rels:
        shipped = (root / rel).read_bytes()
        assert (out / rel).read_bytes() == shipped, rel
        # valid against correctionlib's schema
        cs.CorrectionSet.model_validate(json.loads(gzip.decompress(shipped)))


def test_assemble_payload_renames_corrections_and_keys(tmp_path, cset):
    """A CMS-like payload (other correction names, ``nominal`` for the pileup key) becomes ours."""
    model = mp.correction_set()
    for corr in model.corrections:
        corr.name = "CMS_" + corr.name
        if corr.name == "CMS_pileup_weight":
            corr.inputs[0].name, corr.inputs[1].name = "NumTrueInteractions", "weights"
            corr.data.input = "weights"
            for item in corr.data.content:
                item.key = {"nom": "nominal"}.get(item.key, item.key)
                item.value.input = "NumTrueInteractions"
    cms = tmp_path / "cms.json"
    cms.write_text(model.model_dump_json(exclude_unset=True))
    with pytest.raises(C.PayloadError, match="lacks the correction"):
        C.load_corrections(cms)
    sources = {name: (cms, "CMS_" + name) for name in C.REQUIRED}
    out = C.assemble_payload(sources, tmp_path / "ours.json.gz", key_map={"nominal": "nom"})
    mine = C.load_corrections(out)
    n = np.array([12.5, 33.3, 70.1])
    for syst in ("nom", "up", "down"):
        assert np.array_equal(C.pileup_weight(mine, n, syst), C.pileup_weight(cset, n, syst))
    assert np.array_equal(C.jes_factor(mine, np.array([40.0, 900.0]), np.array([0.1, 2.7]), 1),
                          C.jes_factor(cset, np.array([40.0, 900.0]), np.array([0.1, 2.7]), 1))
    with pytest.raises(C.PayloadError, match="no correction 'CMS_nope'"):
        C.assemble_payload(dict(sources, jes_uncertainty=(cms, "CMS_nope")), tmp_path / "x.json")
    with pytest.raises(C.PayloadError, match="needs"):  # a (real, string) correction as jes_uncertainty
        C.assemble_payload(dict(sources, jes_uncertainty=(cms, "CMS_trigger_ht_sf")), tmp_path / "x.json")


def test_payload_with_inputs_in_another_order_is_refused(tmp_path):
    model = mp.correction_set()
    for corr in model.corrections:
        if corr.name == "jer_scale_factor":
            corr.inputs = list(reversed(corr.inputs))
    path = tmp_path / "swapped.json"
    path.write_text(model.model_dump_json(exclude_unset=True))
    with pytest.raises(C.PayloadError, match="jer_scale_factor has inputs"):
        C.load_corrections(path)


def test_shipped_era_has_the_former_payloads_numbers(tmp_path, cset):
    """The illustrative numbers became the era svjscout_sim: every role, AK4 and AK8 tables, equals
    the former five-name payload (still written by make_payloads.correction_set) exactly."""
    path = tmp_path / "former.json"
    path.write_bytes(mp.payload_json())
    former = C.load_corrections(path)
    assert isinstance(cset, C.EraCorrections) and not isinstance(former, C.EraCorrections)
    rng = np.random.default_rng(5)
    eta, pt = rng.uniform(-6, 6, 5000), np.exp(rng.uniform(np.log(5.0), np.log(9000.0), 5000))
    seeds = rng.integers(0, 2**63, 5000, dtype=np.uint64)
    for jets in ("ak4", "ak8"):
        for d in (1, -1):
            assert np.array_equal(C.jes_factor(cset, pt, eta, d, jets=jets), C.jes_factor(former, pt, eta, d))
        for syst in ("nom", "up", "down"):
            assert np.array_equal(C.jer_factor(cset, pt, eta, syst, seeds, jets=jets),
                                  C.jer_factor(former, pt, eta, syst, seeds))
    ht, n = rng.uniform(0, 3000, 2000), rng.uniform(0, 120, 2000)
    for syst in ("nom", "up", "down"):
        assert np.array_equal(C.trigger_sf(cset, ht, syst), C.trigger_sf(former, ht, syst))
        assert np.array_equal(C.pileup_weight(cset, n, syst), C.pileup_weight(former, n, syst))
    assert cset.names("pileup_weight") == ("pileup", "SvjscoutSim_Illustrative_goldenJSON")
