"""Analysis-aware training of the twin (`objective: analysis`, models/twin_training/analysis.py):
starting from a trained pair, the objective rises, the thresholds move, the outputs say what was
optimised; bad settings are refused by name."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_twin import _write_skim

from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.models.export import read_metadata
from svjscout.models.train_twin import TwinTrainConfig, load_checkpoint, train_twin
from svjscout.models.twin_training.analysis import load_twin_init

# the 3-way split (train, val, test) of trainings before issue 29; the job test below runs the 4-way default
BASE = {"batches_per_epoch": 3, "batch_size": 800, "seed": 3, "patience": 50, "progress": False,
        "mt_edges": [650, 900, 1300, 5000], "objective_mt_edges": [650, 900, 1300, 5000], "num_threads": 1,
        "split": [0.6, 0.2, 0.2]}

#: the analysis objective as it was before issue 29 (docs/analysis_objective.md)
LEGACY = {"nonclosure_halves": False, "neff_weight": 0.0, "bootstrap_replicas": 0, "stop_wp": "learned",
          "trust_region": 0.0, "init_multipliers": False, "closure_at_wp": False, "signal_contamination": False}


@pytest.fixture(scope="module")
def bce_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("analysis_training")
    skims = [_write_skim(d / "a.parquet", 1500, 1), _write_skim(d / "b.parquet", 1500, 2)]
    res = train_twin(skims, d / "bce", {**BASE, "epochs": 4, "lr": 1e-2})
    return skims, res


def test_init_from_onnx_equals_the_checkpoint(bce_pair):
    _, res = bce_pair
    a = load_twin_init(res.onnx_path)
    b, _, _ = load_checkpoint(res.checkpoint_path)
    f = torch.randn(64, a.n_features) * 100 + 300
    for ta, tb in zip(a.eval()(f), b.eval()(f)):
        torch.testing.assert_close(ta, tb, rtol=0, atol=0)


@pytest.mark.parametrize("constraints", [False, True])
def test_analysis_objective_rises_from_a_trained_pair(bce_pair, tmp_path, constraints):
    skims, res = bce_pair
    # the objective before issue 29 (every remedy off): a deterministic full batch, whose soft
    # <Z_A> must rise step by step (the remedies make single steps noisy on purpose)
    cfg = {**BASE, "epochs": 5, "lr": 3e-3, "objective": "analysis", "init_model": str(res.onnx_path),
           "constraints": constraints, "temperature": [0.1, 0.02], "x0": 0.5, "y0": 0.5, **LEGACY}
    out = train_twin(skims, tmp_path / "ana", cfg)
    h = out.history
    # epoch 0 is the starting pair: its validation BCE is the BCE run's best
    assert h[0]["val"]["bce"] == pytest.approx(res.history[res.best_epoch]["val"]["bce"], rel=1e-5)
    z_soft = [r["train"]["z_soft"] for r in h[1:]]
    assert z_soft[-1] > z_soft[0]  # the soft <Z_A> of the training split rises
    x0s = [r["train"]["x0"] for r in h[1:]]
    assert abs(x0s[-1] - 0.5) > 1e-4  # the thresholds are learned
    temps = [r["train"]["temperature"] for r in h[1:]]
    assert temps == sorted(temps, reverse=True) and temps[0] < 0.1
    assert all("z_hard" in r["val"] for r in h)
    summ = json.loads(out.report_json.read_text())["summary"]
    obj = summ["analysis_objective"]
    assert obj["validation"]["z_mean"] == pytest.approx(h[out.best_epoch]["val"]["z_hard"], rel=1e-9)
    assert set(obj["test"]["z_points"]) == {"2000_0.3", "3000_0.3"} and obj["b_floor"] > 0
    assert summ["config"]["objective"] == "analysis" and summ["config"]["constraints"] is constraints
    text = out.report_md.read_text()
    assert "Objective: `analysis`" in text and "Expected ABCD significance" in text
    assert out.plots["objective"].is_file()
    meta = read_metadata(out.onnx_path)
    assert meta["training"]["config"]["objective"] == "analysis"
    if not constraints:  # the multipliers never move when the constraints are off
        assert all(v == 0 for v in summ["multipliers_shipped"].values())


def test_bad_settings_are_refused_by_name(bce_pair, tmp_path):
    skims, _ = bce_pair
    for bad, key in (({"objective": "limit"}, "objective"), ({"temperature": [0.01, 0.1]}, "temperature"),
                     ({"objective_plane": "CR"}, "objective_plane"), ({"b_floor": -1}, "b_floor"),
                     ({"objective_mt_edges": [900, 650]}, "objective_mt_edges")):
        with pytest.raises(ConfigError, match=key):
            TwinTrainConfig.from_mapping(bad)
    with pytest.raises(InputFileError, match="nothing.onnx"):
        train_twin(skims, tmp_path / "x", {**BASE, "epochs": 1, "objective": "analysis",
                                           "init_model": str(tmp_path / "nothing.onnx")})
    with pytest.raises(ConfigError, match="0.95"):
        train_twin(skims, tmp_path / "y", {**BASE, "epochs": 1, "objective": "analysis", "x0": 0.95})


def test_minibatch_yields_are_unbiased(bce_pair):
    # more events than batch_size: rows drawn with replacement, yields scaled by N / batch; the
    # mean over draws of the soft background yields equals the full-sample yields
    from svjscout.models.abcd_objective import binned_yields, mt_bin_index, soft_memberships
    from svjscout.models.twin_training.data import load_skim

    skims, res = bce_pair
    cfg = TwinTrainConfig.from_mapping({**BASE, "objective": "analysis", "batch_size": 200})
    from svjscout.models.twin_training.analysis import AnalysisObjective

    d = load_skim(skims)
    obj = AnalysisObjective(cfg, d, [(2000.0, 0.3), (3000.0, 0.3)])
    model = load_twin_init(res.onnx_path).eval()
    ev = obj.train_t
    n = int(ev["w"].numel())
    assert n > 200
    with torch.no_grad():
        lx, ly = model.logits(ev["f"])
    x, y = torch.sigmoid(lx).double(), torch.sigmoid(ly).double()
    memb = soft_memberships(x, y, 0.5, 0.5, 0.05)
    bins = mt_bin_index(ev["mt"], cfg.objective_mt_edges)
    full, _ = binned_yields(memb, ev["w"], bins, 3)
    g = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(400):
        rows = torch.randint(n, (200,), generator=g)
        part, _ = binned_yields(memb[rows], ev["w"][rows] * n / 200, bins[rows], 3)
        draws.append(part.numpy())
    mean = np.mean(draws, axis=0)
    err = np.std(draws, axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - full.numpy()) < 4 * err + 1e-9)


# --- issue 29: the objective made robust (docs/analysis_objective.md) ---------------------------

def _objective(bce_pair, **over):
    from svjscout.models.twin_training.analysis import AnalysisObjective
    from svjscout.models.twin_training.data import load_skim

    skims, res = bce_pair
    cfg = TwinTrainConfig.from_mapping({**BASE, "objective": "analysis", "batch_size": 5000,
                                        "init_model": str(res.onnx_path), **over})
    model = load_twin_init(res.onnx_path).eval()
    obj = AnalysisObjective(cfg, load_skim(skims), [(2000.0, 0.3), (3000.0, 0.3)], anchor=model)
    return obj, model, cfg


def test_poisson_replicas_are_seeded_per_parent_and_unbiased(bce_pair):
    from svjscout.models.abcd_objective import abcd_significance, binned_yields, mt_bin_index, soft_memberships
    from svjscout.models.twin_training.analysis import poisson_replica_weights

    obj, model, cfg = _objective(bce_pair)
    ev = obj.train_t
    group = torch.arange(3000) // 3  # three copies per parent
    a, b = poisson_replica_weights(group, 8, 11), poisson_replica_weights(group, 8, 11)
    assert torch.equal(a, b) and not torch.equal(a, poisson_replica_weights(group, 8, 12))  # the seed fixes them
    assert torch.equal(a[:, 0::3], a[:, 1::3]) and torch.equal(a[:, 0::3], a[:, 2::3])  # copies share a factor
    assert abs(float(a.mean()) - 1) < 0.05 and abs(float(a.var()) - 1) < 0.1  # Poisson(1)
    with torch.no_grad():
        lx, ly = model.logits(ev["f"])
    x, y = torch.sigmoid(lx).double(), torch.sigmoid(ly).double()
    pw = poisson_replica_weights(ev["group"], 400, 5)
    # linear in the weights: the replicas' mean yields equal the sample's (E[Poisson] = 1)
    memb = soft_memberships(x, y, 0.5, 0.5, 0.05)
    bins = mt_bin_index(ev["mt"], cfg.objective_mt_edges)
    full, _ = binned_yields(memb, ev["w"], bins, 3)
    reps = np.array([binned_yields(memb, ev["w"], bins, 3, None, pw[r])[0].numpy() for r in range(400)])
    err = reps.std(axis=0) / np.sqrt(len(reps))
    assert np.all(np.abs(reps.mean(axis=0) - full.numpy()) < 4 * err + 1e-9)
    # Z: the replicas' mean equals the full-sample Z in expectation (to the bias of a
    # nonlinear function, small next to the replicas' spread)
    st = obj.settings

    def z(replica=None):
        return float(abcd_significance(x, y, ev["w"], ev["point"], ev["mt"], 0.5, 0.5, 0.05, st, 2, ev["group"],
                                       replica=replica)["z_mean"])

    zs = np.array([z(pw[r]) for r in range(200)])
    assert abs(zs.mean() - z()) < 3 * zs.std() / np.sqrt(len(zs)) + 0.05 * zs.std()
    # the replicas' MC variances are unbiased too (a plain (w r)^2 would double them)
    v_full = binned_yields(memb, ev["w"], bins, 3, ev["group"])[1].numpy()
    v_reps = np.array([binned_yields(memb, ev["w"], bins, 3, ev["group"], pw[r])[1].numpy() for r in range(400)])
    err_v = v_reps.std(axis=0) / np.sqrt(len(v_reps))
    assert np.all(np.abs(v_reps.mean(axis=0) - v_full) < 4 * err_v + 1e-9)
    n_rep, _ = binned_yields(memb, ev["w"], bins, 3, ev["group"], pw[0])
    torch.testing.assert_close(n_rep, binned_yields(memb, ev["w"] * pw[0], bins, 3)[0])
    # the training value: R replicas, mean - bootstrap_sd x sd, deterministic given seed and step
    t1 = obj.training_value(model)
    obj.steps.zero_()
    t2 = obj.training_value(model)
    torch.testing.assert_close(t1["z_replicas"], t2["z_replicas"], rtol=0, atol=0)
    assert t1["z_replicas"].numel() == cfg.bootstrap_replicas == 8
    zr = t1["z_replicas"]
    zr = zr.detach()
    assert float(t1["z_robust"].detach()) == pytest.approx(float(zr.mean() - cfg.bootstrap_sd * zr.std()), rel=1e-12)
    t3 = obj.training_value(model)  # the next step: other replicas
    assert not torch.equal(t3["z_replicas"], t1["z_replicas"])


def test_training_loss_adds_the_neff_and_trust_terms(bce_pair):
    from svjscout.models.abcd_objective import neff_shortfall

    obj, model, cfg = _objective(bce_pair, neff_min=50.0, neff_weight=2.0, trust_region=3.0)
    out = obj.training_value(model)
    # at the start the scores are the anchor's: the trust term is 0
    assert obj.last_terms["trust_distance"] == pytest.approx(0.0, abs=1e-12)
    pen = float(neff_shortfall(out["neff"].detach(), 50.0))
    assert pen > 0 and obj.last_terms["neff_penalty"] == pytest.approx(pen, rel=1e-12)
    assert float(out["loss"].detach()) == pytest.approx(-float(out["z_robust"].detach()) + 2.0 * pen, rel=1e-12)
    with torch.no_grad():  # move the scores: the trust distance is the mean squared shift
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = obj.training_value(model)
    with torch.no_grad():
        lx, ly = model.logits(obj.train_t["f"])
    shift = ((torch.stack([torch.sigmoid(lx), torch.sigmoid(ly)], 1).double() - obj.anchor_xy) ** 2).sum(1).mean()
    assert obj.last_terms["trust_distance"] == pytest.approx(float(shift), rel=1e-9) and float(shift) > 0
    expected = -float(out["z_robust"].detach()) + 2.0 * obj.last_terms["neff_penalty"] + 3.0 * float(shift)
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-9)


def test_multipliers_come_from_the_starting_pair_clamped(bce_pair, tmp_path):
    from svjscout.models.mdmm import MDMM, Constraint
    from svjscout.models.twin_training.analysis import init_multipliers
    from svjscout.models.twin_training.config import CONSTRAINTS

    obj, _, _ = _objective(bce_pair)
    _, res = bce_pair
    stored = init_multipliers(res.onnx_path)
    assert stored == pytest.approx(init_multipliers(res.checkpoint_path))  # ONNX and checkpoint agree
    assert set(stored) == set(CONSTRAINTS)
    mdmm = MDMM([Constraint(n, 0.1) for n in CONSTRAINTS])
    loaded = obj.load_multipliers(mdmm)
    assert loaded == {n: max(0.0, v) for n, v in stored.items()}
    assert mdmm.multipliers() == pytest.approx(loaded)
    # the shipped pair: its negative multipliers (issue 29) start at 0
    shipped = init_multipliers("models/twin.onnx")
    assert shipped["dcorr_y_deta"] < 0
    obj2, _, _ = _objective(bce_pair, init_model="models/twin.onnx")
    mdmm2 = MDMM([Constraint(n, 0.1) for n in CONSTRAINTS])
    obj2.load_multipliers(mdmm2)
    assert mdmm2.multipliers()["dcorr_y_deta"] == 0.0
    assert mdmm2.multipliers()["dcorr_xy"] == pytest.approx(shipped["dcorr_xy"])
    obj3, _, _ = _objective(bce_pair, init_multipliers=False)
    mdmm3 = MDMM([Constraint(n, 0.1) for n in CONSTRAINTS])
    assert obj3.load_multipliers(mdmm3) == {} and all(v == 0 for v in mdmm3.multipliers().values())


def test_closure_follows_the_moving_thresholds(bce_pair):
    obj, _, cfg = _objective(bce_pair, x0=0.5, y0=0.5)
    with torch.no_grad():
        obj.wp_raw.copy_(torch.tensor([0.7, -0.4], dtype=torch.float64))
    x0, y0 = obj.wp()
    assert (x0, y0) != pytest.approx((0.5, 0.5))
    c = obj.constraint_config()
    assert (c.x0, c.y0) == (x0, y0) and (x0, y0) in c.closure_eval_wps()
    wps = torch.tensor([[0.4, 0.6]], dtype=torch.float64)
    torch.testing.assert_close(obj.step_wps(wps), torch.tensor([[0.4, 0.6], [x0, y0]], dtype=torch.float64))
    off, _, _ = _objective(bce_pair, closure_at_wp=False)
    assert off.constraint_config() is off.cfg and off.step_wps(wps) is wps


def test_region_grid_equals_hard_cuts_and_the_choice_is_the_best_allowed(bce_pair):
    from svjscout.models.abcd_objective import abcd_significance, binned_yields, mt_bin_index, soft_memberships
    from svjscout.models.twin_training.analysis import _GRID, region_grid

    obj, model, cfg = _objective(bce_pair, neff_min=5.0)
    ev = obj.train_t
    with torch.no_grad():
        lx, ly = model.logits(ev["f"])
    x, y = torch.sigmoid(lx).double(), torch.sigmoid(ly).double()
    grid = torch.as_tensor(_GRID, dtype=torch.float64)
    bins = mt_bin_index(ev["mt"], cfg.objective_mt_edges)
    n, v = region_grid(x, y, ev["w"], bins, 3, grid)
    g = np.random.default_rng(0)
    for i, j in g.integers(0, len(_GRID), (8, 2)):
        memb = soft_memberships(x, y, float(grid[i]), float(grid[j]), 1e-9)  # hard cuts
        n_ref, v_ref = binned_yields(memb, ev["w"], bins, 3)
        torch.testing.assert_close(n[i, j], n_ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(v[i, j], v_ref, rtol=1e-9, atol=1e-9)
    mask = torch.ones_like(ev["w"], dtype=torch.bool)
    chosen = obj.choose_wp(x, y, ev, mask, 2.0)
    # its Z is the hard-cut Z of abcd_significance (another path) at that point, and no allowed
    # point of a coarse sub-grid beats it
    st = replace(obj.hard_settings, yield_scale=2.0)

    def z_at(a, b):
        out = abcd_significance(x, y, ev["w"], ev["point"], ev["mt"], a, b, 1e-9, st, 2)
        return float(out["z_mean"]), float(out["neff"].min())

    z_c, neff_c = z_at(chosen["x0"], chosen["y0"])
    assert chosen["z_select"] == pytest.approx(z_c, rel=1e-9) and neff_c >= 5.0 and chosen["neff_rule"]
    for a in _GRID[::4]:
        for b in _GRID[::4]:
            z_ab, neff_ab = z_at(float(a), float(b))
            if neff_ab >= 5.0:
                assert z_ab <= z_c * (1 + 1e-9)


def test_choice_without_a_point_meeting_the_rule_is_never_the_emptiest(bce_pair):
    """No grid point meets N_eff >= neff_min per M_T bin: the rule on the bins summed chooses; none
    meets that either: the point whose emptiest region holds the most background, never the largest
    <Z_A> of the grid (where the background MC is emptiest). Checked against a numpy Kish of the
    region_grid yields (another path than choose_wp's tensors)."""
    from svjscout.models.abcd_objective import mt_bin_index
    from svjscout.models.twin_training.analysis import _GRID, region_grid

    obj, model, cfg = _objective(bce_pair)
    ev = obj.train_t
    with torch.no_grad():
        lx, ly = model.logits(ev["f"])
    x, y = torch.sigmoid(lx).double(), torch.sigmoid(ly).double()
    grid = torch.as_tensor(_GRID, dtype=torch.float64)
    bkg = ev["point"] < 0
    bins = mt_bin_index(ev["mt"], cfg.objective_mt_edges)
    nb, vb = region_grid(x[bkg], y[bkg], ev["w"][bkg] * 2.0, bins[bkg], len(cfg.objective_mt_edges) - 1, grid)
    nb, vb = nb.numpy(), vb.numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        per_bin = np.where((nb > 0) & (vb > 0), nb**2 / vb, 0.0).min(axis=(-2, -1))
        ns, vs = nb.sum(axis=-2), vb.sum(axis=-2)
        summed = np.where((ns > 0) & (vs > 0), ns**2 / vs, 0.0).min(axis=-1)
    assert summed.max() > per_bin.max()
    mask = torch.ones_like(ev["w"], dtype=torch.bool)
    # between the two maxima: the summed rule decides
    obj.cfg.neff_min = float(0.5 * (per_bin.max() + summed.max()))
    c = obj.choose_wp(x, y, ev, mask, 2.0)
    i, j = list(_GRID).index(c["x0"]), list(_GRID).index(c["y0"])
    assert c["neff_rule_level"] == "summed_bins" and not c["neff_rule"] and c["merged_bins"]
    assert summed[i, j] >= obj.cfg.neff_min and c["neff_min_summed"] == pytest.approx(summed[i, j], rel=1e-9)
    # its <Z_A> is the cards' view: the M_T bins merged into one (abcd_significance, another path)
    from svjscout.models.abcd_objective import abcd_significance

    edges = cfg.objective_mt_edges
    st = replace(obj.hard_settings, yield_scale=2.0, mt_edges=(edges[0], edges[-1]))
    z_ref = abcd_significance(x, y, ev["w"], ev["point"], ev["mt"], c["x0"], c["y0"], 1e-9, st, 2)["z_mean"]
    assert c["z_select"] == pytest.approx(float(z_ref), rel=1e-6)
    # and a quote at the selected point is made the same way
    obj.selected, obj.selected_merged = (c["x0"], c["y0"]), True
    q = obj._hard_z(x, y, ev, mask, 2.0, obj.selected, merged=True)
    z_grouped = abcd_significance(x, y, ev["w"], ev["point"], ev["mt"], c["x0"], c["y0"], 1e-9, st, 2,
                                  ev["group"])["z_mean"]  # variances over parents, as the quotes have them
    assert float(q["z_mean"]) == pytest.approx(float(z_grouped), rel=1e-6)
    assert float(obj._hard_z(x, y, ev, mask, 2.0, obj.selected)["z_mean"]) != pytest.approx(float(z_grouped))
    # above both: the most populated point
    obj.cfg.neff_min = float(2 * summed.max())
    c = obj.choose_wp(x, y, ev, mask, 2.0)
    i, j = list(_GRID).index(c["x0"]), list(_GRID).index(c["y0"])
    assert c["neff_rule_level"] == "most_populated" and summed[i, j] == pytest.approx(summed.max(), rel=1e-9)
    from svjscout.models.twin_training.analysis import _rule_note

    assert "NOT BACKED" in _rule_note(c) and _rule_note({"neff_rule": True}) == ""


def test_stopping_figure_is_quoted_on_other_parents_with_intervals(bce_pair):
    from svjscout.models.twin_training.analysis import parent_halves_of
    from svjscout.models.twin_training.data import load_skim

    obj, model, cfg = _objective(bce_pair, stop_bootstrap=50)
    d = load_skim(bce_pair[0])
    val = obj.hard_value(model, d, 0.5, choose=True, ci_replicas=50)
    sel = val["selected"]
    assert obj.selected == (sel["x0"], sel["y0"]) and val["selected_wp"] == [sel["x0"], sel["y0"]]
    # chosen on half 0, quoted on half 1: the quoted figure is that of half 1 alone at that point
    ev = obj._view(d)
    half = parent_halves_of(ev["group"])
    with torch.no_grad():
        x, y = (t.double() for t in obj._scores(model, ev["f"]))
        # (the fixture is small: the point may meet the N_eff rule only with the M_T bins summed,
        # and is then quoted with them summed, as it was chosen)
        mg = obj.selected_merged
        assert mg == sel["merged_bins"] == val["z_stop_merged_bins"]
        z_q = float(obj._hard_z(x, y, ev, half == 1, 4.0, obj.selected, merged=mg)["z_mean"])
        z_s = float(obj._hard_z(x, y, ev, half == 0, 4.0, obj.selected, merged=mg)["z_mean"])
    assert val["z_stop"] == pytest.approx(z_q, rel=1e-12)
    # (the grid counts hard cuts, _hard_z steps of T = 1e-6: events within ~1e-5 of a threshold; with
    # the bins summed, _hard_z's parent-grouped variance also holds the cross terms of a parent's copies
    # in different M_T bins, which the grid's sums of bins lack: a few per mille)
    assert sel["z_select"] == pytest.approx(z_s, rel=1e-2 if mg else 1e-3)
    lo, hi = val["z_stop_ci"]
    assert lo < hi and lo <= val["z_stop"] * 1.05 and hi >= val["z_stop"] * 0.95
    # another split: quoted at the chosen point on all its events
    test = obj.hard_value(model, d, 0.5, choose=False, ci_replicas=0)
    with torch.no_grad():
        z_all = float(obj._hard_z(x, y, ev, torch.ones_like(half, dtype=torch.bool), 2.0, obj.selected,
                                  merged=mg)["z_mean"])
    assert test["z_stop"] == pytest.approx(z_all, rel=1e-12) and "selected" not in test
    learned, _, _ = _objective(bce_pair, stop_wp="learned")
    v2 = learned.hard_value(model, d, 0.5)
    assert v2["z_stop"] == v2["z_mean"]


def test_job_defaults_run_end_to_end(bce_pair, tmp_path):
    # jobs/twin_train_analysis.yaml with every remedy on, made small: a few seconds end to end
    from svjscout.models.twin_training.config import TwinTrainConfig as C

    skims, res = bce_pair
    job = C.from_yaml("jobs/twin_train_analysis.yaml").as_dict()
    for key in ("nonclosure_halves", "closure_at_wp", "init_multipliers", "signal_contamination"):
        assert job[key] is True
    assert job["stop_wp"] == "selected" and job["bootstrap_replicas"] >= 2 and job["trust_region"] > 0
    assert job["neff_min"] == 10 and job["neff_weight"] > 0 and job["bootstrap_sd"] == 1
    keep = ("nonclosure_halves", "neff_min", "neff_weight", "bootstrap_replicas", "bootstrap_sd", "stop_wp",
            "trust_region", "init_multipliers", "closure_at_wp", "signal_contamination", "objective", "constraints",
            "temperature", "learn_wp", "x0", "y0", "alpha", "lr", "mdmm_lr", "split")
    cfg = {**BASE, **{k: job[k] for k in keep}, "epochs": 3, "init_model": str(res.onnx_path), "stop_bootstrap": 20}
    out = train_twin(skims, tmp_path / "job", cfg)
    h = out.history
    summ = json.loads(out.report_json.read_text())["summary"]
    obj = summ["analysis_objective"]
    # the default 4-way split: stopping on the validation halves, the quoted wp chosen on select, quoted on final
    assert summ["config"]["split"] == [0.5, 0.2, 0.15, 0.15] and "test" not in obj
    assert obj["stop_wp"] == "selected" and obj["validation_wp"] == obj["validation"]["selected_wp"]
    assert obj["selected_wp"] == [obj["select"]["x0"], obj["select"]["y0"]]
    assert obj["select"]["chosen_on"] == "the select subset"
    assert obj["final"]["selected_wp"] == obj["selected_wp"] and len(obj["final"]["z_stop_ci"]) == 2
    assert all("z_stop" in r["val"] for r in h)
    figures = [r["val_figure"] for r in h]
    assert out.best_epoch == int(np.argmin(figures))
    for r in h[1:]:
        t = r["train"]
        assert {"z_robust", "z_replica_sd", "neff_penalty", "trust_distance"} <= set(t)
        assert t["z_replica_sd"] > 0
    assert h[1]["train"]["trust_distance"] >= 0 and h[-1]["train"]["trust_distance"] > 0
    # the multipliers started from the pair's (clamped), not from 0
    from svjscout.models.twin_training.analysis import init_multipliers

    start = {k: max(0.0, v) for k, v in init_multipliers(res.onnx_path).items()}
    assert any(v > 0 for v in start.values())
    steps = BASE["batches_per_epoch"]  # Adam moves a multiplier by about mdmm_lr per step at most
    for n, v in start.items():
        assert abs(h[1]["multipliers"][n] - v) <= 1.5 * steps * job["mdmm_lr"]
    assert summ["config"]["init_multipliers"] is True
    text = out.report_md.read_text()
    assert "Stopping figure (`stop_wp: selected`)" in text and f"| final | {obj['final']['z_stop']:.3f} [" in text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_step_cpu_equals_cuda(bce_pair):
    from svjscout.models.twin_training.analysis import AnalysisObjective
    from svjscout.models.twin_training.data import load_skim

    skims, res = bce_pair
    cfg = TwinTrainConfig.from_mapping({**BASE, "objective": "analysis", "batch_size": 5000,
                                        "init_model": str(res.onnx_path)})
    d = load_skim(skims)
    vals, grads = [], []
    for dev in ("cpu", "cuda"):
        model = load_twin_init(res.onnx_path).to(dev)
        obj = AnalysisObjective(cfg, d, [(2000.0, 0.3), (3000.0, 0.3)], device=dev, anchor=model)
        assert obj.wp_raw.device.type == dev and obj.anchor_xy.device.type == dev
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)  # off the anchor: the trust term has a gradient
        out = obj.training_value(model)
        out["loss"].backward()
        vals.append(float(out["loss"]))
        grads.append(torch.cat([p.grad.flatten().double().cpu() for p in model.parameters()] +
                               [obj.wp_raw.grad.cpu()]))
    assert vals[0] == pytest.approx(vals[1], rel=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-6)
