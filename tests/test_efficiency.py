"""Generation efficiency (samples/efficiency.py, issue 30): the roulette is unbiased and reproducible,
switched to p = 1 it writes the brute-force file, the shared pileup library changes nothing the
detector measures."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("pythia8mc")

from svjscout.core.exceptions import GenerationError  # noqa: E402
from svjscout.samples import detector, efficiency  # noqa: E402
from svjscout.samples.generate import (  # noqa: E402
    GenerationConfig,
    _final_state,
    _make_pythia,
    _minbias_library,
    chunk_seed,
    generate_chunk,
)

NO_VARIATIONS = ["UncertaintyBands:doVariations = off"]


def _cfg(**kw) -> GenerationConfig:
    base = {"process": "qcd", "events": 200, "seed": 31, "pileup": 0.0, "ht_min": 350.0, "met_min": 0.0,
            "detector_copies": 1, "chunk_size": 200, "extra_settings": NO_VARIATIONS}
    return GenerationConfig(**{**base, **kw})


def test_horvitz_thompson_closed_form():
    """sum over kept of w / p estimates sum w without bias, with variance sum w^2 (1 - p) / p:
    checked over 4000 independent roulette streams (chunks) against both closed forms."""
    rng = np.random.default_rng(5)
    w = rng.exponential(1.0, 300) * rng.choice([1.0, 30.0], 300, p=[0.9, 0.1])  # pT-hat-bias-like spread
    prob = np.where(rng.random(300) < 0.1, 1.0, 0.05)
    totals = np.array([np.sum((w / prob)[efficiency.draw_keep(prob, seed=9, chunk=c)]) for c in range(4000)])
    var = np.sum(w**2 * (1 - prob) / prob)
    assert abs(totals.mean() - w.sum()) < 4 * np.sqrt(var / len(totals))
    assert totals.var() == pytest.approx(var, rel=0.1)
    # the roulette's own weights: kept w / p, the dropped keep w (they count in genEventSumw)
    kept = efficiency.draw_keep(prob, seed=9, chunk=0)
    r = efficiency.Roulette(features={}, prob=prob, kept=kept)
    parents, weights = r.apply(np.arange(300), w)
    assert np.array_equal(parents, np.flatnonzero(kept))
    assert np.allclose(weights[kept], w[kept] / prob[kept]) and np.array_equal(weights[~kept], w[~kept])


def test_keep_probability_and_validation():
    s = efficiency.RouletteSettings(p_min=0.2, mt=450.0, nu_pt=30.0, rt=0.15)
    p = efficiency.keep_probability({"nu_pt": np.array([0.0, 29.9, 30.0, 0.0, 0.0]),
                                     "rt": np.array([0.0, 0.149, 0.0, 0.15, 0.0]),
                                     "mt": np.array([449.9, 0.0, 0.0, 0.0, 450.0])}, s)
    assert p.tolist() == [0.2, 0.2, 1.0, 1.0, 1.0]
    with pytest.raises(GenerationError, match="roulette_p_min"):
        _cfg(roulette=True, roulette_p_min=0.0)
    with pytest.raises(GenerationError, match="roulette_nu_pt"):
        _cfg(roulette_nu_pt=-1.0)
    with pytest.raises(GenerationError, match="roulette_mt"):
        _cfg(roulette_mt=float("nan"))
    with pytest.raises(GenerationError, match="shared_pileup must be true or false"):
        _cfg(shared_pileup=1)
    with pytest.raises(GenerationError, match="roulette must be true or false"):
        _cfg(roulette="yes")


def test_hard_features_closed_form():
    """Two back-to-back partons' worth of particles and one neutrino: H_T, nu_pt, M_T, R_T by hand."""
    pt = ak.Array([[400.0, 300.0, 50.0]])
    eta = ak.Array([[0.0, 0.0, 0.5]])
    phi = ak.Array([[0.0, np.pi, np.pi / 2]])
    ids = ak.Array([[211, 22, 12]])
    fs = {"pt": pt, "eta": eta, "phi": phi, "id": ids, "pileup": ak.zeros_like(ids, dtype=bool)}
    visible = ak.Array([[True, True, False]])
    f = efficiency.hard_features(fs, visible)
    assert f["ht"][0] == pytest.approx(700.0)
    assert f["nu_pt"][0] == pytest.approx(50.0)
    assert f["pt_j0"][0] == pytest.approx(400.0)
    # dijet: m_JJ = 2 sqrt(400 * 300) (massless, back to back), pT_JJ = (100, 0); MET = (0, -50)
    m2 = 4 * 400 * 300
    et = np.sqrt(m2 + 100.0**2)
    mt = np.sqrt((et + 50.0) ** 2 - (100.0**2 + 50.0**2))
    assert f["mt"][0] == pytest.approx(mt, rel=1e-6)
    assert f["rt"][0] == pytest.approx(50.0 / mt, rel=1e-6)


@pytest.fixture(scope="module")
def chunks():
    """The same 200 QCD parents (pileup 25 from a 60-event library), brute force, p = 1 and p_min = 0.1."""
    kw = {"pileup": 25.0, "pileup_library": 60, "detector_copies": 2}
    brute = generate_chunk(_cfg(**kw), 0, 200)
    p1 = generate_chunk(_cfg(**kw, roulette=True, roulette_p_min=1.0), 0, 200)
    roul = generate_chunk(_cfg(**kw, roulette=True, roulette_p_min=0.1), 0, 200)
    again = generate_chunk(_cfg(**kw, roulette=True, roulette_p_min=0.1), 0, 200)
    return brute, p1, roul, again


def test_p_one_writes_the_brute_force_file(chunks):
    brute, p1, _, _ = chunks
    assert set(brute["columns"]) == set(p1["columns"])
    for key, col in brute["columns"].items():
        assert ak.to_list(col) == ak.to_list(p1["columns"][key]), key
    assert p1["sumw"] == brute["sumw"] and p1["n_pileup_events"] == brute["n_pileup_events"]


def test_roulette_same_parents_reweighted_and_reproducible(chunks):
    brute, _, roul, again = chunks
    for key, col in roul["columns"].items():  # same seed: the same file
        assert ak.to_list(col) == ak.to_list(again["columns"][key]), key
    # the normalisation counts every generated event
    assert roul["sumw"] == brute["sumw"] and roul["n_generated"] == brute["n_generated"]
    b, r = brute["columns"], roul["columns"]
    # the kept parents are the brute-force file's parents, their generator-level record unchanged
    # (same Pythia event, same pileup draws), their weight w / p with p in {0.1, 1}
    bpos = {int(p): i for i, p in enumerate(b["parent"]) if i == 0 or b["parent"][i - 1] != p}
    assert set(map(int, r["parent"])) <= set(bpos)
    for i, parent in enumerate(r["parent"]):
        j = bpos[int(parent)]
        assert r["GenMET_pt"][i] == b["GenMET_pt"][j] and r["Pileup_nPU"][i] == b["Pileup_nPU"][j]
        assert r["genWeight"][i] / b["genWeight"][j] == pytest.approx(1.0, rel=1e-6) or \
            r["genWeight"][i] / b["genWeight"][j] == pytest.approx(10.0, rel=1e-6)
    n = roul["roulette"]
    assert 0 < n["n_kept"] < n["n_events"] - 10 and n["n_sure"] < n["n_events"]  # it drops parents
    assert n["sum_inv_p_kept"] > n["n_kept"]  # some kept with p < 1


def test_roulette_unbiased_on_pythia_yield():
    """On 300 Pythia parents (K = 1, no skim: every kept parent is written once), the written sum of
    genWeight estimates the brute-force sum over the H_T-filtered parents within the roulette's
    closed-form error, for 6 roulette streams (seeds of the roulette only: the same events)."""
    brute = generate_chunk(_cfg(events=300, chunk_size=300), 0, 300)
    total = float(np.sum(brute["columns"]["genWeight"].astype(np.float64)))
    pulls = []
    for seed in range(6):
        cfg = _cfg(events=300, chunk_size=300, roulette=True, roulette_p_min=0.2)
        roul = efficiency.choose_parents(cfg, 0, _hard_state(cfg), cfg.ht_min)  # the events of `brute`
        draws = efficiency.draw_keep(roul.prob, seed=100 + seed, chunk=0) & (roul.features["ht"] >= cfg.ht_min)
        w = _weights_by_position(brute, cfg)
        est = np.sum((w / roul.prob)[draws])
        var = np.sum((w**2 * (1 - roul.prob) / roul.prob)[roul.features["ht"] >= cfg.ht_min])
        pulls.append((est - total) / np.sqrt(var))
    assert np.all(np.abs(pulls) < 4.0), pulls
    assert abs(np.mean(pulls)) < 4.0 / np.sqrt(len(pulls))


def _hard_state(cfg):
    """The hard-scatter final state of chunk 0 of ``cfg`` (the events generate_chunk sees)."""
    pythia = _make_pythia(cfg.settings(), chunk_seed(cfg.seed, 0))
    return _final_state(pythia, pythia.nextBatch(cfg.events))


def _weights_by_position(res, cfg) -> np.ndarray:
    """Per generated event of the chunk: its genWeight in the K = 1 file (0 if not written)."""
    w = np.zeros(cfg.events)
    w[res["columns"]["parent"].astype(np.int64) - 1] = res["columns"]["genWeight"]
    return w


def test_pruned_pileup_measures_the_same():
    """With a noiseless detector, the pruned library gives the same tracks, cells and MET."""
    lib = _minbias_library(7, 40)
    params = detector.DetectorParams(track_res_const=0.0, track_res_slope=0.0, ecal_stoch=0.0, ecal_const=0.0,
                                     ecal_noise=0.0, hcal_stoch=0.0, hcal_const=0.0, hf_stoch=0.0, hf_const=0.0)
    pruned = efficiency.prune_pileup(lib, params)
    n_all, n_kept = len(ak.flatten(lib["id"])), len(ak.flatten(pruned["id"]))
    assert n_kept < 0.7 * n_all  # it does prune
    no_chs = efficiency.prune_pileup(lib, detector.DetectorParams(chs=False))  # the charged tracks stay
    flat_eta = np.abs(ak.to_numpy(ak.flatten(lib["eta"])))
    assert len(ak.flatten(no_chs["id"])) == int(np.sum(flat_eta < 5.0) + np.sum(
        (flat_eta >= 5.0) & detector.is_invisible(ak.to_numpy(ak.flatten(lib["id"])))))
    out = []
    for sample in (lib, pruned):
        flat = {k: ak.to_numpy(ak.flatten(v)) for k, v in sample.items()}
        event = np.repeat(np.arange(40), ak.to_numpy(ak.num(sample["id"])))
        m = detector.measure(flat["pt"], flat["eta"], flat["phi"], flat["id"], flat["charge"], event, 40,
                             np.random.default_rng(1), params, pileup=flat["pileup"])
        out.append((m, detector.missing_pt_per_event(m, None, params)))
    (a, met_a), (b, met_b) = out
    assert len(a.tracks["pt"]) == len(b.tracks["pt"]) == 0  # CHS: no pileup track
    for key in ("pt", "eta", "phi", "kind", "event"):
        np.testing.assert_allclose(a.cells[key], b.cells[key], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(met_a[0], met_b[0], rtol=1e-9, atol=1e-9)


def test_shared_library_once_per_file():
    efficiency._LIBRARIES.clear()
    cfg = _cfg(events=40, chunk_size=20, pileup=10.0, pileup_library=30, shared_pileup=True)
    first = generate_chunk(cfg, 0, 20)
    (lib,) = efficiency._LIBRARIES.values()
    second = generate_chunk(cfg, 1, 20)
    (lib_after,) = efficiency._LIBRARIES.values()
    assert lib_after is lib  # built once, reused by the next chunk
    assert first["n_pileup_events"] == 30 and second["n_pileup_events"] == 0  # counted once per file
    efficiency._LIBRARIES.clear()  # a fresh process: the same library again, the same chunk
    again = generate_chunk(cfg, 1, 20)
    for key, col in second["columns"].items():
        assert ak.to_list(col) == ak.to_list(again["columns"][key]), key
    assert int(np.sum(second["columns"]["Pileup_nPU"])) > 0


def test_cli_flags_reach_the_generation(tmp_path):
    """`svjscout generate --roulette ... --shared-pileup` writes the file generate_file writes with those
    fields (the flags reach GenerationConfig; compared array by array)."""
    import json

    import uproot
    from click.testing import CliRunner

    from svjscout.jobs.cli import cli
    from svjscout.samples.generate import GenerationConfig, generate_file, read_metadata

    out = tmp_path / "cli.root"
    res = CliRunner().invoke(cli, ["generate", "qcd", "-n", "40", "--seed", "17", "--pileup", "3", "--chunk-size", "20",
                                   "--roulette", "--roulette-p-min", "0.5", "--roulette-mt", "300",
                                   "--roulette-nu-pt", "20", "--roulette-rt", "0.2", "--shared-pileup",
                                   "--tail-strata", "-k", "3",
                                   "--no-progress", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{"):])["n_generated"] == 40
    cfg = GenerationConfig(process="qcd", events=40, seed=17, pileup=3, chunk_size=20, detector_copies=3,
                           tail_strata=True, roulette=True, roulette_p_min=0.5, roulette_mt=300.0, roulette_nu_pt=20.0,
                           roulette_rt=0.2, shared_pileup=True)
    generate_file(cfg, tmp_path / "api.root")
    meta = read_metadata(out)["config"]
    assert meta["roulette"] is True and meta["shared_pileup"] is True and meta["roulette_p_min"] == 0.5
    assert meta["tail_strata"] is True and meta["detector_copies"] == 3
    with uproot.open(out) as a, uproot.open(tmp_path / "api.root") as b:
        ta, tb = a["Events"].arrays(library="ak"), b["Events"].arrays(library="ak")
        assert ta.fields == tb.fields and len(ta) == len(tb) > 0
        for k in ta.fields:
            assert ak.to_list(ta[k]) == ak.to_list(tb[k]), k
