"""Twin MLPs: ONNX export, metadata check, and a short training run on a synthetic skim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from svjscout.core.exceptions import ConfigError, InputFileError, ModelMismatchError
from svjscout.models.export import check_features, read_metadata, write_metadata
from svjscout.models.twin import TwinMLP, export_twin_onnx
from svjscout.processors.features import EVENT_FEATURES

L_NODES = 6


def _write_skim(path: Path, n: int, seed: int, lundnet_nan: bool = False) -> Path:
    """A small skim with the processors' columns: signal has larger MET and LundNet scores."""
    import awkward as ak

    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.4).astype(np.int64)
    sig = label == 1
    cols: dict[str, np.ndarray] = {}
    cols["mt"] = 650.0 + rng.exponential(300.0, n) + 300.0 * sig
    # ~85% of the events pass the analysis preselection (R_T > 0.24, dphi_min < 0.8), the rest
    # only a looser one (R_T in (0.15, 0.24) or dphi_min in (0.8, 1.2)), like a loosened skim
    rt = 0.25 + rng.exponential(0.08, n) + 0.1 * sig
    loose = rng.random(n) < 0.15
    low_rt = loose & (rng.random(n) < 0.5)
    rt[low_rt] = rng.uniform(0.15, 0.24, n)[low_rt]
    cols["rt"] = rt
    cols["met"] = rt * cols["mt"]
    cols["met_phi"] = rng.uniform(-np.pi, np.pi, n)
    for c in ("dphi_j0j1", "dphi_j0met", "dphi_j1met"):
        cols[c] = rng.uniform(0, np.pi, n)
    cols["dphi_min"] = rng.uniform(0, 0.8, n) * (1 - 0.5 * sig)
    wide_dphi = loose & ~low_rt
    cols["dphi_min"][wide_dphi] = rng.uniform(0.8, 1.2, n)[wide_dphi]
    for c in ("z_j0j1", "z_j0met", "z_j1met"):
        cols[c] = rng.uniform(0, 0.5, n)
    cols["lundnet_j0"] = np.clip(rng.beta(2, 5, n) + 0.4 * sig, 0, 1)
    cols["lundnet_j1"] = np.clip(rng.beta(2, 5, n) + 0.3 * sig, 0, 1)
    if lundnet_nan:
        cols["lundnet_j0"][::3] = np.nan
    cols["deta"] = rng.uniform(-2.2, 2.2, n)
    cols["weight"] = np.where(sig, 0.01, 1.0) * rng.uniform(0.5, 1.5, n)
    cols["label"] = label
    pts = rng.integers(0, 2, n)
    cols["mzprime"] = np.where(sig, np.where(pts == 0, 2000.0, 3000.0), np.nan)
    cols["rinv"] = np.where(sig, 0.3, np.nan)
    cols["event"] = np.arange(n, dtype=np.uint64)
    record = {k: v for k, v in cols.items()}
    record["dataset"] = ak.Array([("svj" if s else "qcd") for s in sig])
    for jet in ("j0", "j1"):
        record[f"lund_{jet}"] = rng.normal(size=(n, L_NODES, 5)).astype(np.float32)
        record[f"lund_{jet}_mask"] = rng.random((n, L_NODES)) < 0.8
    ak.to_parquet(ak.Array(record), str(path))
    return path


def _lundnet_onnx(path: Path) -> Path:
    """A stand-in LundNet: masked mean of the first node feature -> sigmoid."""

    class Tiny(torch.nn.Module):
        def forward(self, lund, mask):
            s = (lund[..., 0] * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            return torch.sigmoid(s)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Tiny(), (torch.zeros(2, L_NODES, 5), torch.ones(2, L_NODES)), str(path),
                          input_names=["lund", "mask"], output_names=["score"],
                          dynamic_axes={"lund": {0: "N"}, "mask": {0: "N"}, "score": {0: "N"}},
                          opset_version=17, dynamo=False)
    return path


def test_onnx_export_matches_torch_and_metadata(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = TwinMLP()
    model.set_standardisation(np.random.default_rng(0).normal(100, 50, size=(500, 12)))
    path = export_twin_onnx(model, tmp_path / "twin.onnx", {"n_train": 1}, auc={"all": {"x": 0.5, "y": 0.5}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["features"]
    assert [o.name for o in sess.get_outputs()] == ["x", "y"]
    feats = np.random.default_rng(1).normal(100, 50, size=(1000, 12)).astype(np.float32)
    ox, oy = sess.run(["x", "y"], {"features": feats})
    with torch.no_grad():
        tx, ty = model(torch.from_numpy(feats))
    assert ox.shape == (1000,) and oy.shape == (1000,)
    assert np.max(np.abs(ox - tx.numpy())) < 1e-5 and np.max(np.abs(oy - ty.numpy())) < 1e-5
    assert not np.allclose(ox, oy)  # independent networks
    meta = read_metadata(path)
    assert meta["features"] == list(EVENT_FEATURES)
    assert meta["model"] == "twin" and meta["version"] and meta["training"] == {"n_train": 1}
    check_features(path, meta, EVENT_FEATURES)
    # a model whose metadata features differ is refused
    write_metadata(path, {"features": list(reversed(EVENT_FEATURES))})
    with pytest.raises(ModelMismatchError, match="features"):
        check_features(path, read_metadata(path), EVENT_FEATURES)


@pytest.mark.slow
def test_training_reduces_bce_and_writes_outputs(tmp_path):
    skims = [_write_skim(tmp_path / "a.parquet", 1500, 1), _write_skim(tmp_path / "b.parquet", 1500, 2)]
    cfg = {"epochs": 6, "batches_per_epoch": 3, "batch_size": 800, "lr": 1e-2, "seed": 3, "patience": 50,
           "progress": False, "mt_edges": [650, 900, 1300, 5000]}
    from svjscout.models.train_twin import load_checkpoint, train_twin

    res = train_twin(skims, tmp_path / "out", cfg)
    h = res.history
    assert h[0]["epoch"] == 0 and len(h) == 7
    assert min(r["val"]["bce"] for r in h[1:]) < h[0]["val"]["bce"] - 0.05
    assert h[-1]["train"]["bce"] < h[1]["train"]["bce"]
    for key in ("dcorr_xy", "closure_bins_VP"):
        assert key in h[-1]["multipliers"]
    assert res.test_metrics["auc_all"]["x"] > 0.7
    assert set(res.test_metrics["auc_per_point"]) == {"mz2000_rinv0.3", "mz3000_rinv0.3"}
    for p in (res.onnx_path, res.checkpoint_path, res.report_md, res.report_json, *res.plots.values()):
        assert Path(p).is_file() and Path(p).stat().st_size > 0
    meta = read_metadata(res.onnx_path)
    assert meta["features"] == list(EVENT_FEATURES) and meta["model"] == "twin"
    assert "auc" in meta["training"] and meta["auc"]["all"]["x"] == pytest.approx(res.test_metrics["auc_all"]["x"])
    report = json.loads(Path(res.report_json).read_text())
    assert len(report["history"]) == 7 and "dcorr" in report["test"]
    summ = report["summary"]
    for n in ("dcorr_xy", "closure_bins_SP", "occupancy_VP"):  # trained targets are never below the floor
        mean, sd = summ["floors"]["train"][n]
        assert summ["eps_used"][n] >= max(summ["config"]["eps"][n], mean + sd) - 1e-12
    assert "dcorr_xy" in summ["eps_below_floor"]  # 1,200 background events: floor ~0.06 > 0.05
    assert "floors" in report["test"] and "occupancy_SP" in report["test"]["occupancy_soft"]
    assert "test floor" in Path(res.report_md).read_text()
    model, mdmm, ckpt = load_checkpoint(res.checkpoint_path)
    assert mdmm.summary()["dcorr_xy"]["eps"] == pytest.approx(summ["eps_used"]["dcorr_xy"])
    assert ckpt["best_epoch"] == res.best_epoch
    assert mdmm.multipliers() == pytest.approx(res.history[res.best_epoch].get("multipliers", mdmm.multipliers()))
    _check_hygiene(skims, res, report, cfg)


def _check_hygiene(skims, res, report, cfg):
    """Issue 22: analysis selection, shared split, shipped-epoch multipliers, computed target check,
    AUC weights, baselines oriented on training events, validation vs test (untouched)."""
    from sklearn.metrics import roc_auc_score

    from svjscout.core import splits
    from svjscout.models.train_twin import (
        TwinTrainConfig,
        analysis_mask,
        auc_weights,
        baseline_signs,
        load_skim,
        split_codes,
        target_check,
    )

    summ, md = report["summary"], Path(res.report_md).read_text()
    data = load_skim(skims)
    tc = TwinTrainConfig.from_mapping(cfg)
    ana = analysis_mask(data, tc.cuts())
    code = split_codes(data, tc.split, tc.seed)
    assert 0.7 * len(data) < ana.sum() < 0.95 * len(data)  # the skim is looser than the analysis
    assert summ["selection"]["n_pass"] == int(ana.sum()) and summ["selection"]["n_skim"] == len(data)
    quoted = splits.FINAL if len(tc.split) == 4 else splits.TEST  # the default 4-way split quotes on final
    test = data.take(np.flatnonzero((code == quoted) & ana))
    assert res.test_metrics["n_test"] == len(test) == summ["n_test"]
    assert res.val_metrics["n_test"] == int(((code == splits.VAL) & ana).sum()) == summ["n_val"]
    # AUCs: every signal point the same total weight
    w = auc_weights(test)
    sig = test.label == 1
    totals = [w[sig & (test.mzprime == m)].sum() for m in (2000.0, 3000.0)]
    assert totals == pytest.approx([1.0, 1.0])
    # baselines oriented on the training events (some near-random features are below 0.5 on test)
    train = data.take(np.flatnonzero((code == splits.TRAIN) & ana))
    assert res.test_metrics["baseline_signs"] == baseline_signs(train)
    lsum = test.features[:, EVENT_FEATURES.index("lundnet_j0")] + test.features[:, EVENT_FEATURES.index("lundnet_j1")]
    assert res.test_metrics["baselines_auc_all"]["lundnet_sum"] == pytest.approx(
        roc_auc_score(test.label, res.test_metrics["baseline_signs"]["lundnet_sum"] * lsum, sample_weight=w))
    # multipliers of the shipped (best) epoch, not the last
    best = res.best_epoch
    if best > 0:
        assert summ["multipliers_shipped"] == pytest.approx(res.history[best]["multipliers"])
        table = md.split(f"## MDMM multipliers of the shipped model (best epoch {best})")[1]
        assert f"| dcorr_xy | {res.history[best]['multipliers']['dcorr_xy']:.4g} |" in table
    # the target check is computed: each term against its eps, and the failing ones named
    check = target_check(res.test_metrics, summ["eps_used"], summ["config"]["eps"])
    assert summ["test_targets"] == check
    for k, t in check["terms"].items():
        assert t["within_trained"] == (res.test_metrics.get("dcorr", {}).get(k, t["value"]) <= summ["eps_used"][k])
    if check["fail_trained"]:
        assert "Terms above their trained eps on the test split: " + ", ".join(check["fail_trained"]) in md
    else:
        assert "Every constrained term is within its trained eps" in md
    # validation and test reported separately; the test labelled untouched
    assert "## Test (untouched) AUCs" in md and "## Validation (used for early stopping; best epoch)" in md
    assert report["validation"]["auc_all"] == res.val_metrics["auc_all"]


def test_lundnet_scores_computed_when_nan(tmp_path):
    from svjscout.models.train_twin import load_skim

    skim = _write_skim(tmp_path / "s.parquet", 300, 4, lundnet_nan=True)
    with pytest.raises(InputFileError, match="lundnet_j0"):
        load_skim([skim])
    data = load_skim([skim], lundnet_model=str(_lundnet_onnx(tmp_path / "lundnet.onnx")))
    col = list(EVENT_FEATURES).index("lundnet_j0")
    assert np.isfinite(data.features[:, col]).all()
    import awkward as ak

    arr = ak.from_parquet(str(skim), columns=["lund_j0", "lund_j0_mask"])
    lund, mask = ak.to_numpy(arr["lund_j0"])[0], ak.to_numpy(arr["lund_j0_mask"])[0].astype(np.float32)
    expected = 1 / (1 + np.exp(-(lund[:, 0] * mask).sum() / max(mask.sum(), 1.0)))
    assert data.features[0, col] == pytest.approx(expected, rel=1e-5)


def test_config_errors_name_the_key(tmp_path):
    from svjscout.models.train_twin import TwinTrainConfig

    with pytest.raises(ConfigError, match="unknown keys"):
        TwinTrainConfig.from_mapping({"epoch": 3})
    with pytest.raises(ConfigError, match="split"):
        TwinTrainConfig.from_mapping({"split": [0.5, 0.5, 0.5]})
    with pytest.raises(ConfigError, match="eps"):
        TwinTrainConfig.from_mapping({"eps": {"dcorr_zz": 0.1}})
    yml = tmp_path / "c.yaml"
    yml.write_text("twin:\n  epochs: 7\n  eps:\n    dcorr_xy: 0.02\n")
    cfg = TwinTrainConfig.from_yaml(yml, seed=9)
    assert cfg.epochs == 7 and cfg.seed == 9 and cfg.eps["dcorr_xy"] == 0.02 and cfg.eps["closure_SP"] == 0.02
    with pytest.raises(InputFileError, match="nope.parquet"):
        from svjscout.models.train_twin import load_skim

        load_skim([tmp_path / "nope.parquet"])


def test_null_scores_and_noise_floors():
    """The floors: positive, shrinking like 1/sqrt(n), and what `adjust` raises a low eps to."""
    from svjscout.models.disco import dcorr_numpy
    from svjscout.models.train_twin import (
        TwinTrainConfig,
        _Tensors,
        constraint_floors,
        effective_eps,
        load_skim,
        null_scores,
    )

    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    s = null_scores(u, 0.775, 0.2)
    assert float((s > 0.775).double().mean()) == pytest.approx(0.2, abs=0.005)
    assert float(s.min()) >= 0 and float(s.max()) < 1
    # one working point (x0, y0), every bin: the floors' 1/sqrt(n) scaling (the closure at many
    # working points is tested in tests/test_twin_closure_wps.py)
    cfg = TwinTrainConfig(batch_size=4000, floor_draws=6, mt_edges=(650, 900, 1300, 5000), closure_wp_range=None,
                          closure_min_neff=0.0, bin_reduce="mean")
    floors = {}
    for n in (400, 6400):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            d = load_skim([_write_skim(Path(tmp) / "s.parquet", n, 5)])
        floors[n] = constraint_floors(_Tensors(d, d.weight), cfg, resample=False, seed=1)
    for key in ("dcorr_xy", "dcorr_x_mt", "closure_SP", "closure_bins_VP"):
        small, large = floors[400][key][0], floors[6400][key][0]
        assert small > 0 and large > 0
        assert 2.0 < small / large < 8.0, (key, small, large)  # ~sqrt(16) = 4
    # on a subset of rows (the validation cap) the floor is that of the subset
    sub = constraint_floors(_Tensors(d, d.weight), cfg, resample=False, seed=1, rows=torch.arange(400))
    assert sub["dcorr_xy"][0] > 2.0 * floors[6400]["dcorr_xy"][0]
    # the dCorr floor agrees with dcor-independent permutations of a real variable pair
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=240), rng.normal(size=240)
    perm = np.mean([dcorr_numpy(a, rng.permutation(b), np.ones(240)) for _ in range(50)])
    assert 0.5 * perm < floors[400]["dcorr_xy"][0] < 2.0 * perm  # ~240 background events in 400
    assert floors[400]["occupancy_SP"] == (0.0, 0.0)  # null scores fill every region
    eps, below = effective_eps(cfg, floors[400])
    mean, sd = floors[400]["dcorr_xy"]
    assert "dcorr_xy" in below and eps["dcorr_xy"] == pytest.approx(mean + sd)
    assert "occupancy_SP" not in below and eps["occupancy_SP"] == 0.0
    eps2, below2 = effective_eps(cfg, floors[400], {**eps, "dcorr_xy": 1.0})  # explicit start values
    assert eps2["dcorr_xy"] == 1.0 and "dcorr_xy" not in below2
    warn = TwinTrainConfig(floor_policy="warn")
    eps_w, below_w = effective_eps(warn, floors[400])
    assert eps_w == warn.eps and below_w == below
    with pytest.raises(ConfigError, match="floor_policy"):
        TwinTrainConfig(floor_policy="maybe")


def test_export_records_the_lundnet_pair(tmp_path):
    """The twin's metadata names its LundNet by content: the processor refuses any other."""
    import hashlib

    from svjscout.models import shipped_model

    lundnet = str(shipped_model("lundnet"))
    torch.manual_seed(0)
    model = TwinMLP()
    model.set_standardisation(np.random.default_rng(0).normal(100, 50, size=(500, 12)))
    path = export_twin_onnx(model, tmp_path / "twin.onnx", {"config": {"lundnet_model": lundnet}})
    rec = read_metadata(path)["lundnet"]
    assert rec["sha256"] == hashlib.sha256(open(lundnet, "rb").read()).hexdigest()
    assert rec["max_len"] == read_metadata(lundnet)["max_len"] and rec["features"] == read_metadata(lundnet)["features"]
    plain = export_twin_onnx(model, tmp_path / "plain.onnx", {"n_train": 1})
    assert "lundnet" not in read_metadata(plain)


@pytest.mark.parametrize("trainer", ["twin", "lundnet"])
def test_negative_weights_are_refused_by_both_trainers(trainer):
    """One policy for both trainers: negative (or NaN) weights stop the training, naming the dataset
    (clipping them, as LundNet did, or keeping them, where the weighted dCorr silently returns 0)."""
    from svjscout.core.exceptions import InputFileError

    label = np.array([0, 0, 1, 1])
    weight = np.array([1.0, -0.5, 1.0, 2.0])
    dataset = np.array(["qcd", "ttbar_nlo", "svj", "svj"], dtype=object)
    if trainer == "lundnet":
        from svjscout.models.train_lundnet import training_weights

        call = lambda w: training_weights(label, w, dataset)  # noqa: E731
    else:
        from svjscout.models.train_twin import SkimData, training_weights

        def call(w):
            n = len(w)
            d = SkimData(features=np.zeros((n, 12), np.float32), mt=np.zeros(n), deta=np.zeros(n), weight=w,
                         label=label, mzprime=np.where(label == 1, 2000.0, 0.0), rinv=np.where(label == 1, 0.3, 0.0),
                         event=np.arange(n, dtype=np.uint64), dataset=dataset)
            return training_weights(d, 1.5, False)
    with pytest.raises(InputFileError, match=r"1 of 4 training weights are negative.*ttbar_nlo"):
        call(weight)
    with pytest.raises(InputFileError, match="NaN"):
        call(np.array([1.0, np.nan, 1.0, 1.0]))
    assert np.all(call(np.abs(weight)) >= 0)


def test_constraints_use_only_analysis_events(tmp_path):
    """The constraint values with the analysis mask equal those of the analysis subset alone, whatever
    the events outside it hold; the mask follows the Cuts object (no copied numbers)."""
    from svjscout.models.train_twin import TwinTrainConfig, _loss_terms, _Tensors, analysis_mask, load_skim
    from svjscout.processors.selection import Cuts

    d = load_skim([_write_skim(tmp_path / "s.parquet", 1200, 8)])
    cfg = TwinTrainConfig(mt_edges=(650, 900, 1300, 5000))
    ana = analysis_mask(d, cfg.cuts())
    assert 0 < (~ana).sum() < 0.3 * len(d)
    looser = analysis_mask(d, Cuts(rt_min=0.15, dphi_min_max=1.3))
    assert looser.all() and (analysis_mask(d, Cuts(mt_min=900.0)) == (ana & (d.mt > 900))).all()
    assert TwinTrainConfig(analysis_cuts={"rt_min": 0.3}).cuts().rt_min == 0.3
    with pytest.raises(ConfigError, match="analysis_cuts"):
        TwinTrainConfig(analysis_cuts={"rt_minimum": 0.3})
    with pytest.raises(ConfigError, match="bce_selection"):
        TwinTrainConfig(bce_selection="some")
    torch.manual_seed(0)
    model = TwinMLP(hidden=(8,))
    model.set_standardisation(d.features)
    sub = d.take(np.flatnonzero(ana))
    with torch.no_grad():
        _, _, on_sub = _loss_terms(model, _Tensors(sub, sub.weight), None, cfg)
        d.mt[~ana] = 5000.0  # the events outside the selection must not matter
        _, _, masked = _loss_terms(model, _Tensors(d, d.weight, ana), None, cfg)
        _, _, unmasked = _loss_terms(model, _Tensors(d, d.weight), None, cfg)
    for k in ("dcorr_x_mt", "dcorr_xy", "closure_bins_SP"):
        assert float(masked[k]) == pytest.approx(float(on_sub[k]), rel=1e-5)
    assert float(unmasked["dcorr_x_mt"]) != pytest.approx(float(on_sub["dcorr_x_mt"]), rel=1e-3)


@pytest.mark.slow
def test_tradeoff_table_is_on_validation_and_fills_the_doc(tmp_path):
    from svjscout.models.train_twin import (
        TRADEOFF_BEGIN,
        TRADEOFF_END,
        fill_tradeoff_doc,
        format_tradeoff,
        tradeoff_table,
    )

    skims = [_write_skim(tmp_path / "a.parquet", 1200, 1)]
    base = {"epochs": 2, "batches_per_epoch": 2, "batch_size": 400, "seed": 3, "progress": False,
            "mt_edges": [650, 900, 1300, 5000], "floor_draws": 2}
    rows = tradeoff_table(skims, tmp_path / "tr", base, [{"alpha": 0.0}, {"alpha": 3.0, "eps": {"dcorr_xy": 0.1}}])
    assert [r["label"] for r in rows] == ["alpha=0", "alpha=3, eps.dcorr_xy=0.1"]
    for i, r in enumerate(rows):
        rep = json.loads((tmp_path / "tr" / f"{i:02d}" / "report.json").read_text())
        assert r["auc_x"] == pytest.approx(rep["validation"]["auc_all"]["x"])  # validation, not test
        assert r["dcorr_xy"] == pytest.approx(rep["validation"]["dcorr"]["dcorr_xy"])
        assert r["auc_lundnet_sum"] == pytest.approx(rep["validation"]["baselines_auc_all"]["lundnet_sum"])
    assert rep["summary"]["config"]["eps"]["dcorr_xy"] == 0.1 and rep["summary"]["config"]["alpha"] == 3.0
    table = format_tradeoff(rows)
    assert (tmp_path / "tr" / "tradeoff.md").read_text().strip() == table
    doc = tmp_path / "twin.md"
    doc.write_text(f"# x\n\n{TRADEOFF_BEGIN}\n| placeholder |\n{TRADEOFF_END}\n\nafter\n")
    fill_tradeoff_doc(table, doc)
    text = doc.read_text()
    assert "placeholder" not in text and "| alpha=0 |" in text and text.endswith("after\n")
    with pytest.raises(ConfigError, match="markers"):
        fill_tradeoff_doc(table, tmp_path / "a.parquet.md") if (tmp_path / "a.parquet.md").write_text("no") else None
