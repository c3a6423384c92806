"""Repeated heavy-flavour decays (samples/repeats.py): the table, the decays, the law, the file.

The reference for the law is Pythia itself decaying inline: a sample whose b and c hadrons decay
in the event generator and a sample whose hadrons are left undecayed and decayed n times by the
decay Pythia must agree, within their statistics, on what the decays decide (the neutrinos' MET,
the leptons, the multiplicity).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

pythia8mc = pytest.importorskip("pythia8mc")

from svjscout.core.exceptions import GenerationError  # noqa: E402
from svjscout.samples import repeats  # noqa: E402
from svjscout.samples.generate import GenerationConfig, _charges, _final_state, generate_chunk  # noqa: E402
from svjscout.samples.processes import BASE  # noqa: E402


def _table():
    return pythia8mc.Pythia("", False).particleData


def test_heavy_hadrons_are_the_weakly_decaying_b_and_c_hadrons_of_the_table():
    table = _table()
    assert tuple(repeats.heavy_hadron_ids(table)) == repeats.HEAVY_HADRONS
    for code in (411, 421, 431, 511, 521, 531, 541, 4122, 5122, 5132, 5332):  # D, B, B_c, Lambda_c/b, Xi_b, Omega_b
        assert code in repeats.HEAVY_HADRONS
    for code in (413, 423, 443, 513, 553, 4214, 5214):  # D*, J/psi, B*, Upsilon, Sigma*_c, Sigma*_b: decay inline
        assert code not in repeats.HEAVY_HADRONS
    assert table.tau0(511) > 0.4 and table.tau0(413) < 1e-6  # mm
    assert np.array_equal(np.unique(np.abs(repeats.HEAVY_CODES)), np.array(sorted(repeats.HEAVY_HADRONS)))


def test_a_decay_conserves_the_hadrons_four_momentum_and_leaves_no_heavy_hadron():
    gun = repeats.DecayGun(BASE, 12345)
    ids = [521, -511, 431]
    p = np.array([[30.0, -12.0, 85.0], [-4.0, 50.0, -20.0], [7.0, 3.0, 1.0]])
    for _ in range(50):
        out_id, p4 = gun.decay(ids, p[:, 0], p[:, 1], p[:, 2])
        m = np.array([gun.pythia.particleData.m0(c) for c in ids])
        e = np.sqrt((p**2).sum(axis=1) + m**2)
        np.testing.assert_allclose(p4.sum(axis=0), [*p.sum(axis=0), e.sum()], rtol=1e-9, atol=1e-6)
        assert not np.isin(out_id, repeats.HEAVY_CODES).any()
        assert len(out_id) >= 6


def _bb_sample(n_events: int, seed: int, n_repeats: int | None):
    """bb-bar events (no MPI, small and fast): per row (id, pt, phi), the row's weight share and its event.

    ``n_repeats`` None: Pythia decays every hadron inline; otherwise the b and c hadrons are left
    undecayed and :func:`repeats.repeat_decays` decays them ``n_repeats`` times per event.
    """
    settings = BASE + ["HardQCD:hardbbbar = on", "PhaseSpace:pTHatMin = 40.", "PartonLevel:MPI = off",
                       f"Random:seed = {seed}"]
    if n_repeats is not None:
        settings += repeats.stable_settings(list(repeats.HEAVY_HADRONS))
    pythia = pythia8mc.Pythia("", False)
    for line in settings:
        assert pythia.readString(line)
    assert pythia.init()
    batch = pythia.nextBatch(n_events)
    fs = _final_state(pythia, batch)
    if n_repeats is None:
        return fs, np.ones(len(batch)), np.arange(len(batch))
    gun = repeats.DecayGun(BASE, seed + 1)
    rows, reps = repeats.repeat_decays(fs, repeats.HEAVY_CODES, n_repeats, gun, lambda ids: _charges(pythia, ids))
    assert np.all(reps.n_rep == n_repeats)  # every bb-bar event has b hadrons
    return rows, reps.share, reps.origin


def _observables(fs) -> dict[str, np.ndarray]:
    aid = abs(fs["id"])
    nu = (aid == 12) | (aid == 14) | (aid == 16)
    mx = ak.to_numpy(ak.sum((fs["pt"] * np.cos(fs["phi"]))[nu], axis=1))
    my = ak.to_numpy(ak.sum((fs["pt"] * np.sin(fs["phi"]))[nu], axis=1))
    met = np.hypot(mx, my)
    return {"met": met, "met>10": (met > 10).astype(float), "met>25": (met > 25).astype(float),
            "muons>3": ak.to_numpy(ak.sum((aid == 13) & (fs["pt"] > 3), axis=1)).astype(float),
            "electrons>3": ak.to_numpy(ak.sum((aid == 11) & (fs["pt"] > 3), axis=1)).astype(float),
            "charged": ak.to_numpy(ak.sum(fs["charge"] != 0, axis=1)).astype(float)}


def _mean_and_error(x: np.ndarray, share: np.ndarray, origin: np.ndarray) -> tuple[float, float]:
    per_event = np.bincount(origin, weights=x * share)  # each event's average over its repeats
    return float(per_event.mean()), float(per_event.std(ddof=1) / np.sqrt(len(per_event)))


def test_repeated_decays_follow_pythias_inline_decays():
    inline = _observables(_bb_sample(1500, 101, None)[0])
    rows, share, origin = _bb_sample(600, 202, 5)
    repeated = _observables(rows)
    for key in inline:
        m1, e1 = _mean_and_error(inline[key], np.ones(len(inline[key])), np.arange(len(inline[key])))
        m2, e2 = _mean_and_error(repeated[key], share, origin)
        pull = (m1 - m2) / np.hypot(e1, e2)
        assert abs(pull) < 4, f"{key}: inline {m1:.4g} +- {e1:.2g}, repeated {m2:.4g} +- {e2:.2g}"
    assert inline["met>25"].mean() > 0.02  # the test has the statistics to see the real-MET tail
    # the repeats of one event differ: its decays are drawn anew
    met = repeated["met"].reshape(-1, 5)
    assert np.mean(np.ptp(met, axis=1) > 1.0) > 0.5


def _config(**over) -> GenerationConfig:
    base = dict(process="qcd", events=80, seed=9, pthat_min=140, pileup=0.0, ht_min=0.0, met_min=0.0,
                detector_copies=2, roulette=True, roulette_p_min=1.0, decay_repeats=3, chunk_size=80,
                layout="svjscout", extra_settings=["UncertaintyBands:doVariations = off"])
    return GenerationConfig(**{**base, **over})


def test_a_chunk_with_repeats_keeps_every_weight_and_groups_repeats_by_parent():
    cfg = _config(roulette_nu_pt=0.0)  # every row counts as real MET: kept with p = 1
    res = generate_chunk(cfg, 0, cfg.events)
    cols = res["columns"]
    w = np.asarray(cols["genWeight"], dtype=np.float64)
    # roulette p = 1, no skim: every row of every event is written K times; the shares sum to 1
    assert res["n_rows"] == len(np.unique(cols["event"])) // cfg.detector_copies
    assert w.sum() == pytest.approx(res["sumw"], rel=1e-5)
    assert len(np.unique(cols["event"])) == len(cols["event"])
    parents, per_parent = np.unique(cols["parent"], return_counts=True)
    assert len(parents) == cfg.events
    assert set(per_parent.tolist()) == {cfg.detector_copies, 3 * cfg.detector_copies}
    assert res["n_repeated"] == int(np.sum(per_parent == 3 * cfg.detector_copies)) > 10
    # the repeats of a parent carry different decays: their real MET differs in some parent
    gen_met = np.asarray(cols["GenMET_pt"])
    differs = [np.ptp(gen_met[cols["parent"] == p]) > 1.0 for p in parents[per_parent > cfg.detector_copies]]
    assert any(differs)
    again = generate_chunk(cfg, 0, cfg.events)["columns"]  # deterministic: the decay Pythia is seeded per chunk
    assert np.array_equal(np.asarray(again["GenMET_pt"]), gen_met)
    assert np.array_equal(np.asarray(again["event"]), np.asarray(cols["event"]))


def test_the_roulette_keeps_repeats_with_real_met_and_one_in_n_of_the_others():
    cfg = _config(roulette_p_min=0.5, roulette_mt=1e6, decay_repeats=10, events=60, chunk_size=60)
    res = generate_chunk(cfg, 0, cfg.events)
    rec = res["roulette"]
    assert rec["n_events"] == res["n_rows"]
    # Horvitz-Thompson: the kept rows' sum of 1/p estimates the number of rows; its variance is
    # sum (1 - p) / p <= (rows not sure) (n / p_min - 1)
    bound = 4 * np.sqrt((res["n_rows"] - rec["n_sure"]) * (cfg.decay_repeats / cfg.roulette_p_min - 1))
    assert abs(rec["sum_inv_p_kept"] - res["n_rows"]) < bound
    # the sure rows (real MET) are few and all kept; of the others about p_min per event goes on
    assert rec["n_sure"] < 0.2 * res["n_rows"]
    assert rec["n_sure"] <= rec["n_kept"] < rec["n_sure"] + 4 * cfg.events * cfg.roulette_p_min


@pytest.mark.parametrize("bad", [-1, 1.5, True, 1001])
def test_bad_decay_repeats_are_refused_naming_the_field(bad):
    with pytest.raises(GenerationError, match="decay_repeats"):
        _config(decay_repeats=bad)


def test_decay_repeats_need_the_roulette():
    with pytest.raises(GenerationError, match="decay_repeats.*roulette"):
        _config(roulette=False)


def test_the_file_says_how_to_decode_event_into_parent_repeat_and_copy(tmp_path):
    import uproot

    from svjscout.samples.generate import generate_file, read_metadata

    cfg = _config(events=40, chunk_size=20, roulette_nu_pt=0.0)
    out = tmp_path / "rep.root"
    meta = generate_file(cfg, out)
    with uproot.open(out) as f:
        runs = f["Runs"].arrays(library="np")
        ev = f["Events"].arrays(["event", "parent", "GenMET_pt"], library="np")
    n_rep, k = int(runs["nDecayRepeats"][0]), int(runs["nDetectorCopies"][0])
    assert (n_rep, k) == (3, cfg.detector_copies)
    index = ev["event"].astype(np.int64) - 1
    assert np.array_equal(index // k // n_rep + 1, ev["parent"].astype(np.int64))
    repeat = (index // k) % n_rep
    assert set(np.unique(repeat).tolist()) == {0, 1, 2}
    assert runs["genEventCount"][0] == cfg.events  # the Runs tree counts generated events, not repeats
    assert "decays" in read_metadata(out)["chunk_seeds"] and meta["config"]["decay_repeats"] == 3


def test_one_repeat_is_the_same_events_decayed_once():
    """n = 1 and n = 3 generate the same Pythia events (like for like): the events without heavy
    hadrons are identical rows; the events with them are one row against three."""
    one = generate_chunk(_config(decay_repeats=1, roulette_nu_pt=0.0), 0, 80)["columns"]
    three = generate_chunk(_config(decay_repeats=3, roulette_nu_pt=0.0), 0, 80)["columns"]
    k = 2
    assert np.array_equal(np.unique(one["parent"]), np.unique(three["parent"]))
    p1, c1 = np.unique(one["parent"], return_counts=True)
    p3, c3 = np.unique(three["parent"], return_counts=True)
    assert set(c1.tolist()) == {k}
    plain = p3[c3 == k]
    assert 10 < len(plain) < len(p3)
    for p in plain:  # the same generator record: the same real MET
        np.testing.assert_array_equal(np.asarray(one["GenMET_pt"])[one["parent"] == p],
                                      np.asarray(three["GenMET_pt"])[three["parent"] == p])


# --------------------------------------------------------------------------------------------
# cheaper kept repeats (docs/generation_efficiency.md, section 9): soft real-MET rows kept with
# p_soft, hard real-MET rows through k of the K detector copies


def _hard(cols, threshold):
    return np.asarray(cols["GenMET_pt"], dtype=np.float64) >= threshold  # no pileup: GenMET is the row's real MET


def test_hard_real_met_rows_get_k_of_the_k_copies_same_draws_reweighted():
    """With ``real_met_copies = k`` a hard real-MET row keeps copies 0..k-1 of the K-copy file, draw
    for draw (the same candidates), each weighing K / k times as much; every other row is unchanged."""
    base = dict(events=60, chunk_size=60, detector_copies=6, roulette_nu_pt=0.0, roulette_nu_pt_hard=1.5)
    full = generate_chunk(_config(**base), 0, 60)["columns"]
    few = generate_chunk(_config(**base, real_met_copies=2), 0, 60)["columns"]
    ev_full, ev_few = np.asarray(full["event"]), np.asarray(few["event"])
    hard_full = _hard(full, 1.5)
    copy_full = (ev_full.astype(np.int64) - 1) % 6
    assert 5 < len(np.unique(np.asarray(full["parent"])[hard_full])) < len(np.unique(full["parent"]))
    expected = ~hard_full | (copy_full < 2)  # the copies the k-copy file must hold
    assert np.array_equal(np.sort(ev_full[expected]), np.sort(ev_few))
    pos = {e: i for i, e in enumerate(ev_few.tolist())}
    idx = np.array([pos[e] for e in ev_full[expected].tolist()])
    w_full = np.asarray(full["genWeight"], dtype=np.float64)[expected]
    w_few = np.asarray(few["genWeight"], dtype=np.float64)[idx]
    np.testing.assert_allclose(w_few / w_full, np.where(hard_full[expected], 3.0, 1.0), rtol=1e-6)
    for key in ("ScoutingMET_pt", "ScoutingMET_phi"):  # the same detector draws
        np.testing.assert_array_equal(np.asarray(few[key])[idx], np.asarray(full[key])[expected])
    pf_full = ak.to_list(full["ScoutingParticle"]["pt"][np.flatnonzero(expected)])
    assert ak.to_list(few["ScoutingParticle"]["pt"][idx]) == pf_full
    # no skim (met_min 0, no tail bias): every row's copies sum to its weight either way
    assert np.asarray(few["genWeight"], dtype=np.float64).sum() == pytest.approx(
        np.asarray(full["genWeight"], dtype=np.float64).sum(), rel=1e-6)


def test_soft_real_met_rows_are_kept_with_p_soft_and_weighted_by_one_over_p():
    """Every row real (roulette_nu_pt 0; no row sure by its M_T): the hard ones (real MET >= 1.5 GeV)
    are sure, the soft ones kept with p_soft = 0.5 and weight share / 0.5 (Horvitz-Thompson: sum of
    1/p over the kept estimates the number of rows within sqrt(sum (1 - p) / p))."""
    cfg = _config(events=80, roulette_nu_pt=0.0, roulette_mt=1e6, roulette_nu_pt_hard=1.5, roulette_p_soft=0.5)
    res = generate_chunk(cfg, 0, 80)
    rec = res["roulette"]
    n_soft = res["n_rows"] - rec["n_sure"]
    assert rec["n_sure"] > 10 and n_soft > 50
    assert abs(rec["n_kept"] - rec["n_sure"] - 0.5 * n_soft) < 4 * np.sqrt(0.25 * n_soft)
    assert abs(rec["sum_inv_p_kept"] - res["n_rows"]) < 4 * np.sqrt(n_soft)
    # the same rows without the soft roulette: every written row is there, weighing 1 (hard) or 1/2 as much
    cols = res["columns"]
    ref = generate_chunk(_config(events=80, roulette_nu_pt=0.0, roulette_mt=1e6, roulette_nu_pt_hard=1.5), 0,
                         80)["columns"]
    pos = {e: i for i, e in enumerate(np.asarray(ref["event"]).tolist())}
    idx = np.array([pos[e] for e in np.asarray(cols["event"]).tolist()])
    ratio = np.asarray(cols["genWeight"], dtype=np.float64) / np.asarray(ref["genWeight"], dtype=np.float64)[idx]
    hard = _hard(ref, 1.5)[idx]  # the real MET is the generator's: the same in both files
    np.testing.assert_allclose(ratio, np.where(hard, 1.0, 2.0), rtol=1e-6)
    assert hard.sum() == rec["n_sure"] * cfg.detector_copies


@pytest.mark.parametrize("field,bad,match", [("roulette_p_soft", 0.0, "roulette_p_soft"),
                                             ("roulette_p_soft", 1.5, "roulette_p_soft"),
                                             ("roulette_nu_pt_hard", -1.0, "roulette_nu_pt_hard"),
                                             ("real_met_copies", -1, "real_met_copies"),
                                             ("real_met_copies", 3, "real_met_copies = 3 exceeds"),
                                             ("real_met_copies", True, "real_met_copies")])
def test_bad_cheaper_repeat_settings_are_refused_naming_the_field(field, bad, match):
    with pytest.raises(GenerationError, match=match):
        _config(**{field: bad})


def test_real_met_copies_need_the_roulette_and_exchangeable_copies():
    with pytest.raises(GenerationError, match="real_met_copies needs the roulette"):
        _config(roulette=False, decay_repeats=0, real_met_copies=1)
    with pytest.raises(GenerationError, match="tail_strata"):
        _config(detector_copies=4, tail_strata=True, real_met_copies=2)


def test_cli_flags_for_cheaper_repeats_reach_the_file(tmp_path):
    import json

    from click.testing import CliRunner

    from svjscout.jobs.cli import cli
    from svjscout.samples.generate import read_metadata

    out = tmp_path / "cli.root"
    res = CliRunner().invoke(cli, ["generate", "qcd", "-n", "20", "--seed", "5", "--pileup", "0", "--pthat-min", "140",
                                   "--roulette", "--decay-repeats", "2", "-k", "3", "--roulette-p-soft", "0.4",
                                   "--roulette-nu-pt-hard", "60", "--real-met-copies", "2", "--layout", "svjscout",
                                   "--no-progress", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{"):])["n_generated"] == 20
    meta = read_metadata(out)["config"]
    assert (meta["roulette_p_soft"], meta["roulette_nu_pt_hard"], meta["real_met_copies"]) == (0.4, 60.0, 2)
