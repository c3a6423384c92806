"""Analysis-aware training of the twin (`objective: analysis`, models/twin_training/analysis.py):
starting from a trained pair, the objective rises, the thresholds move, the outputs say what was
optimised; bad settings are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_twin import _write_skim

from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.models.export import read_metadata
from svjscout.models.train_twin import TwinTrainConfig, load_checkpoint, train_twin
from svjscout.models.twin_training.analysis import load_twin_init

BASE = {"batches_per_epoch": 3, "batch_size": 800, "seed": 3, "patience": 50, "progress": False,
        "mt_edges": [650, 900, 1300, 5000], "objective_mt_edges": [650, 900, 1300, 5000], "num_threads": 1}


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
    cfg = {**BASE, "epochs": 5, "lr": 3e-3, "objective": "analysis", "init_model": str(res.onnx_path),
           "constraints": constraints, "temperature": [0.1, 0.02], "x0": 0.5, "y0": 0.5}
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
