"""Issue 29 in the twin trainer: the 4-way split (train, val, select, final; quoted figures on
final), LundNet's nesting checked with check_nested4, out-of-fold LundNet scores on train/val
(lundnet_oof), the analysis objective's working point chosen on select and quoted on final, and
the permutation floors of the dCorr terms on the final subset's trained scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_twin import _lundnet_onnx, _write_skim

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.core.features import EVENT_FEATURES
from svjscout.models.export import read_metadata, write_metadata
from svjscout.models.train_twin import TwinTrainConfig, analysis_mask, load_skim, split_codes, train_twin

J0, J1 = EVENT_FEATURES.index("lundnet_j0"), EVENT_FEATURES.index("lundnet_j1")
SMALL = {"batches_per_epoch": 3, "batch_size": 600, "seed": 3, "patience": 50, "progress": False, "lr": 1e-2,
         "mt_edges": [650, 900, 1300, 5000], "num_threads": 1, "val_max_events": 100_000}


def _oof_table(d, shift: float = 0.05) -> dict[str, np.ndarray]:
    """A tiny out-of-fold table: every event of ``d``, scores = the skim's + ``shift`` (distinguishable)."""
    n = len(d)
    return {"dataset": np.asarray(d.dataset, dtype=object), "run": d.run, "luminosityBlock": d.lumi,
            "parent": d.parent, "event": d.event, "lundnet_j0": (d.features[:, J0] + shift).astype(np.float32),
            "lundnet_j1": (d.features[:, J1] - shift).astype(np.float32), "lundnet_fold": np.zeros(n, np.int16)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short 4-way training (the default split) with out-of-fold LundNet scores on train/val."""
    from svjscout.models.lundnet_training.crossfit import write_oof_table

    tmp = tmp_path_factory.mktemp("split4")
    skim = _write_skim(tmp / "s.parquet", 3000, 5)  # one file: (dataset, run, lumi, event) unique
    d = load_skim([skim])
    oof = write_oof_table(_oof_table(d), tmp / "lundnet_oof.parquet")
    cfg = {**SMALL, "epochs": 3, "lundnet_oof": str(oof), "permutation_floor_draws": 20}
    res = train_twin([skim], tmp / "out", cfg)
    return skim, d, oof, cfg, res


def test_split_keys_3_or_4_fractions_and_the_jobs():
    cfg = TwinTrainConfig()
    assert cfg.split == splits.DEFAULT_FRACTIONS4 and cfg.four_way and cfg.quoted_subset == "final"
    assert cfg.quoted_fraction == 0.15
    old = TwinTrainConfig(split=(0.6, 0.2, 0.2))
    assert not old.four_way and old.quoted_subset == "test" and old.quoted_fraction == 0.2
    for bad in ([0.5, 0.2, 0.1, 0.1, 0.1], [0.5, 0.5], [0.5, 0.3, 0.3, 0.1], [0.6, 0.2, 0.2, 0.0]):
        with pytest.raises(ConfigError, match="'split'"):
            TwinTrainConfig.from_mapping({"split": bad})
    with pytest.raises(ConfigError, match="permutation_floor_draws"):
        TwinTrainConfig(permutation_floor_draws=1)
    with pytest.raises(ConfigError, match="permutation_floor_estimator"):
        TwinTrainConfig(permutation_floor_estimator="w")
    with pytest.raises(ConfigError, match="lundnet_oof"):
        TwinTrainConfig(lundnet_oof=3)
    # the shipped pair's settings keep the 3-way split and the floor policy of that time; the next
    # training has 4 subsets and floor_policy warn
    shipped = TwinTrainConfig.from_yaml("jobs/twin_train_shipped.yaml")
    assert shipped.split == (0.6, 0.2, 0.2) and shipped.floor_policy == "adjust"
    new = TwinTrainConfig.from_yaml("jobs/twin_train.yaml")
    assert new.split == splits.DEFAULT_FRACTIONS4 and new.floor_policy == "warn" and new.lundnet_oof is None
    assert new.permutation_floor_draws >= 2


def test_split_codes_are_the_4_way_split(tmp_path):
    d = load_skim([_write_skim(tmp_path / "s.parquet", 2000, 7)])
    code = split_codes(d, splits.DEFAULT_FRACTIONS4, 1)
    u = splits.split_u(d.dataset, d.run, d.lumi, d.parent, 1)  # independent: the thresholds on u
    expected = np.select([u < 0.15, u < 0.30, u < 0.50], [splits.FINAL, splits.SELECT, splits.VAL], splits.TRAIN)
    np.testing.assert_array_equal(code, expected)
    three = split_codes(d, (0.6, 0.2, 0.2), 1)
    assert not ((code == splits.FINAL) & (three != splits.TEST)).any()  # final inside the 3-way test
    assert not (((code == splits.SELECT) | (code == splits.FINAL)) & (three == splits.TRAIN)).any()


def test_check_lundnet_split_uses_check_nested4(tmp_path):
    from svjscout.models.train_twin import _check_lundnet_split

    model = _lundnet_onnx(tmp_path / "lundnet.onnx")
    write_metadata(model, {"training": {"split": {"seed": 1, "val_fraction": 0.2, "test_fraction": 0.2}}})
    _check_lundnet_split(TwinTrainConfig(lundnet_model=str(model)))  # the 4-way default nests
    _check_lundnet_split(TwinTrainConfig(lundnet_model=str(model), split=(0.6, 0.2, 0.2)))  # 3-way as before
    with pytest.raises(ConfigError, match="final fraction"):  # final 0.3 > LundNet's test 0.2
        _check_lundnet_split(TwinTrainConfig(lundnet_model=str(model), split=(0.4, 0.1, 0.2, 0.3)))
    with pytest.raises(ConfigError, match="select"):  # select + final 0.5 > val + test 0.4
        _check_lundnet_split(TwinTrainConfig(lundnet_model=str(model), split=(0.4, 0.1, 0.35, 0.15)))
    with pytest.raises(ConfigError, match="seed"):
        _check_lundnet_split(TwinTrainConfig(lundnet_model=str(model), seed=2))
    with pytest.raises(ConfigError, match="test fraction"):  # the 3-way check is unchanged
        _check_lundnet_split(TwinTrainConfig(lundnet_model=str(model), split=(0.4, 0.2, 0.4)))


def test_stream_subsets_and_out_of_fold_scores(tmp_path):
    from svjscout.models.lundnet_training.crossfit import write_oof_table
    from svjscout.models.twin_training.stream import _TwinStream

    skim = _write_skim(tmp_path / "s.parquet", 2000, 8)
    d = load_skim([skim])
    oof = write_oof_table(_oof_table(d), tmp_path / "oof.parquet")
    cfg = TwinTrainConfig.from_mapping({**SMALL, "lundnet_oof": str(oof), "test_max_events": None})
    stream = _TwinStream([skim], cfg, "cpu")
    code = split_codes(d, cfg.split, cfg.event_split_seed)
    ana = analysis_mask(d, cfg.cuts())
    for got, which in ((stream.val, splits.VAL), (stream.select, splits.SELECT), (stream.test, splits.FINAL)):
        assert sorted(got.event.tolist()) == sorted(d.event[(code == which) & ana].tolist())
    # train/val take the table's scores, select/final the skim's (the deployed model's)
    by_event = {int(e): i for i, e in enumerate(d.event)}
    for sub, shifted in ((stream.train_sample, True), (stream.val, True), (stream.select, False),
                         (stream.test, False)):
        rows = np.array([by_event[int(e)] for e in sub.event])
        shift = 0.05 if shifted else 0.0
        np.testing.assert_allclose(sub.features[:, J0], d.features[rows, J0] + shift, atol=1e-6)
        np.testing.assert_allclose(sub.features[:, J1], d.features[rows, J1] - shift, atol=1e-6)
    assert stream.n_oof == int(((code == splits.TRAIN) | (code == splits.VAL)).sum())
    # the buffers streamed in the epochs carry the out-of-fold scores too
    t = stream.buffer(list(range(len(stream.source.row_groups))))
    train_rows = np.flatnonzero((code == splits.TRAIN) & ana)
    np.testing.assert_allclose(np.sort(t.f[:, J0].numpy()), np.sort(d.features[train_rows, J0] + 0.05), atol=1e-6)
    # an event missing from the table: an error naming the skim file, the table and the event
    table = _oof_table(d)
    missing = int(np.flatnonzero(code == splits.TRAIN)[0])
    keep = np.arange(len(d)) != missing
    small = write_oof_table({k: v[keep] for k, v in table.items()}, tmp_path / "oof_small.parquet")
    cfg2 = TwinTrainConfig.from_mapping({**SMALL, "lundnet_oof": str(small)})
    with pytest.raises(InputFileError, match=r"s\.parquet.*oof_small\.parquet.*1 event\(s\) not in the out-of-fold"
                       ) as err:
        _TwinStream([skim], cfg2, "cpu")
    assert f"|{int(d.event[missing])}" in str(err.value)
    # an event of the final subset missing from the table is fine (final keeps the deployed scores)
    fin = int(np.flatnonzero(code == splits.FINAL)[0])
    keep = np.arange(len(d)) != fin
    no_final = write_oof_table({k: v[keep] for k, v in table.items()}, tmp_path / "oof_nofinal.parquet")
    _TwinStream([skim], TwinTrainConfig.from_mapping({**SMALL, "lundnet_oof": str(no_final)}), "cpu")


def test_events_outside_lundnets_skim_keep_the_deployed_scores(tmp_path):
    """The twin reads more files than LundNet's skim (jobs/train.yaml's eleven QCD files against
    jobs/train_lundnet.yaml's one): train/val events of blocks the out-of-fold table does not hold
    keep the deployed model's scores (that model never saw them) when the table is stamped with that
    model; a table without the stamp, or beside another model, is refused by name."""
    from svjscout.core.modelmeta import file_sha256
    from svjscout.models.lundnet_training.crossfit import oof_table_model, write_oof_table
    from svjscout.models.twin_training.stream import _TwinStream

    skim = _write_skim(tmp_path / "s.parquet", 2000, 8)
    onnx = _lundnet_onnx(tmp_path / "lundnet.onnx")
    d = load_skim([skim])
    table = _oof_table(d)
    lund_only = np.asarray(d.dataset).astype(str) != "qcd"  # LundNet's skim: the signal only
    part = {k: v[lund_only] for k, v in table.items()}
    oof = write_oof_table(part, tmp_path / "oof.parquet", model_sha256=file_sha256(onnx))
    assert oof_table_model(oof) == file_sha256(onnx)
    cfg = TwinTrainConfig.from_mapping({**SMALL, "lundnet_oof": str(oof), "lundnet_model": str(onnx),
                                        "test_max_events": None})
    stream = _TwinStream([skim], cfg, "cpu")
    code = split_codes(d, cfg.split, cfg.event_split_seed)
    fit = (code == splits.TRAIN) | (code == splits.VAL)
    assert stream.n_oof == int((fit & lund_only).sum()) > 0
    assert stream.n_oof_unseen == int((fit & ~lund_only).sum()) > 0
    by_event = {int(e): i for i, e in enumerate(d.event)}
    rows = np.array([by_event[int(e)] for e in stream.val.event])
    shift = np.where(lund_only[rows], 0.05, 0.0)
    np.testing.assert_allclose(stream.val.features[:, J0], d.features[rows, J0] + shift, atol=1e-6)
    # the same table without the model stamp: refused where the unseen events turn up
    bare = write_oof_table(part, tmp_path / "oof_bare.parquet")
    assert oof_table_model(bare) is None
    with pytest.raises(InputFileError, match=r"oof_bare\.parquet.*outside LundNet's skim"):
        _TwinStream([skim], TwinTrainConfig.from_mapping({**cfg.__dict__, "lundnet_oof": str(bare)}), "cpu")
    # stamped with another model: refused at load, naming both
    other = write_oof_table(part, tmp_path / "oof_other.parquet", model_sha256="0" * 64)
    with pytest.raises(ConfigError, match=r"oof_other\.parquet.*written beside the LundNet.*lundnet\.onnx"):
        _TwinStream([skim], TwinTrainConfig.from_mapping({**cfg.__dict__, "lundnet_oof": str(other)}), "cpu")


@pytest.mark.slow
def test_training_quotes_on_final_with_permutation_floors(trained):
    from svjscout.models.disco import u_dcorr_sqr
    from svjscout.models.twin_training.floors import parent_codes, twin_dcorr_floors

    skim, d, oof, cfg, res = trained
    report = json.loads(Path(res.report_json).read_text())
    summ = report["summary"]
    tc = TwinTrainConfig.from_mapping(cfg)
    code = split_codes(d, tc.split, tc.event_split_seed)
    ana = analysis_mask(d, tc.cuts())
    assert summ["quoted_subset"] == "final" and summ["split"]["names"] == ["train", "val", "select", "final"]
    assert summ["n_test"] == res.test_metrics["n_test"] == int(((code == splits.FINAL) & ana).sum())
    assert summ["n_select"] == int(((code == splits.SELECT) & ana).sum())
    assert summ["n_val"] == int(((code == splits.VAL) & ana).sum())
    assert summ["lundnet_oof"]["table"] == str(oof)
    assert summ["lundnet_oof"]["events"] == int(((code == splits.TRAIN) | (code == splits.VAL)).sum())
    # the floors: the final subset's background, trained scores, U-statistic dCorr^2, block permutation
    pf = summ["permutation_floors"]
    assert pf["subset"] == "final" and pf["estimator"] == "u" and pf["draws"] == 20
    fin = d.take(np.flatnonzero((code == splits.FINAL) & ana & (d.label == 0)))
    with torch.no_grad():
        xs, ys = res.model(torch.from_numpy(fin.features))
    x, y = xs.numpy().astype(np.float64), ys.numpy().astype(np.float64)
    assert pf["terms"]["dcorr_xy"]["observed"] == pytest.approx(u_dcorr_sqr(x, y, fin.weight), rel=1e-9, abs=1e-12)
    assert pf["terms"]["dcorr_y_mt"]["observed"] == pytest.approx(u_dcorr_sqr(y, fin.mt, fin.weight), rel=1e-9,
                                                                  abs=1e-12)
    parent = parent_codes(fin.dataset, fin.run, fin.lumi, fin.parent)
    ref = twin_dcorr_floors(x, y, fin.mt, fin.deta, fin.weight, parent, 20, tc.seed + 29, "u", strata=fin.dataset)
    closure_terms = {k for k in pf["terms"] if k.startswith("closure_")}
    assert set(pf["terms"]) - closure_terms == set(ref) == {"dcorr_xy", "dcorr_x_mt", "dcorr_y_mt", "dcorr_x_deta",
                                                            "dcorr_y_deta"}
    # the closure floors at the report's working point: recomputed by hand here (hard-cut counts)
    assert closure_terms == {"closure_SP_wp", "closure_VP_wp"}
    x0, y0 = tc.reference_wp
    sp = np.abs(fin.deta) < tc.planes["SP"][1]
    w = fin.weight[sp]
    a, b = w[(x[sp] >= x0) & (y[sp] < y0)].sum(), w[(x[sp] >= x0) & (y[sp] >= y0)].sum()
    c, dd = w[(x[sp] < x0) & (y[sp] < y0)].sum(), w[(x[sp] < x0) & (y[sp] >= y0)].sum()
    want = abs(b - a * dd / c) / (a * dd / c) if min(a, c, dd) > 0 else float("nan")
    assert pf["terms"]["closure_SP_wp"]["observed"] == pytest.approx(want, rel=1e-9, nan_ok=True)
    for k, f in ref.items():
        assert pf["terms"][k]["mean"] == pytest.approx(f.mean, rel=1e-9, abs=1e-12)
        assert pf["terms"][k]["sd"] == pytest.approx(f.sd, rel=1e-9) and f.sd > 0
        # the bias-corrected null is centred near 0 whatever the size (a few sd of the mean at most)
        assert abs(f.mean) < 5 * f.sd / np.sqrt(20) + 1e-3
    md = Path(res.report_md).read_text()
    assert "## Noise floors of the trained scores (final subset, block permutation among parents)" in md
    t = pf["terms"]["dcorr_xy"]
    assert f"| dcorr_xy | {t['observed']:.4g} | {t['mean']:.4g} +- {t['sd']:.4g} | {t['z']:.2f} |" in md
    assert "train/val/select/final fractions [0.5, 0.2, 0.15, 0.15]" in md
    meta = read_metadata(res.onnx_path)["training"]
    assert meta["quoted_subset"] == "final" and meta["permutation_floors"]["terms"]["dcorr_xy"] == t
    assert meta["n_test"] == summ["n_test"]


@pytest.mark.slow
def test_analysis_final_report_chooses_on_select_and_quotes_on_final(trained):
    from svjscout.models.twin_training.analysis import AnalysisObjective, load_twin_init

    skim, d, oof, cfg, res = trained
    keys = {**SMALL, "objective": "analysis", "init_model": str(res.onnx_path),
            "objective_mt_edges": [650, 900, 1300, 5000], "stop_bootstrap": 30, "neff_min": 3.0}
    tc = TwinTrainConfig.from_mapping(keys)
    code = split_codes(d, tc.split, tc.event_split_seed)
    ana = analysis_mask(d, tc.cuts())
    sub = {c: d.take(np.flatnonzero((code == c) & ana)) for c in (splits.TRAIN, splits.VAL, splits.SELECT,
                                                                  splits.FINAL)}
    model = load_twin_init(res.onnx_path).eval()
    obj = AnalysisObjective(tc, sub[splits.TRAIN], [(2000.0, 0.3), (3000.0, 0.3)], anchor=model)
    rep = obj.final_report(model, sub[splits.VAL], sub[splits.FINAL], tc.split, d_select=sub[splits.SELECT])
    assert set(rep) >= {"validation", "select", "final", "selected_wp", "validation_wp"} and "test" not in rep
    # the working point: the best allowed grid point on ALL select events (yields x 1 / 0.15)
    ev = obj._view(sub[splits.SELECT])
    with torch.no_grad():
        x, y = (t.double() for t in obj._scores(model, ev["f"]))
    ref = obj.choose_wp(x, y, ev, torch.ones_like(ev["w"], dtype=torch.bool), 1 / 0.15)
    assert rep["selected_wp"] == [ref["x0"], ref["y0"]] and rep["select"]["z_select"] == ref["z_select"]
    # quoted on all final events at that point (yields x 1 / 0.15), with bootstrap intervals
    evf = obj._view(sub[splits.FINAL])
    with torch.no_grad():
        xf, yf = (t.double() for t in obj._scores(model, evf["f"]))
        z_final = float(obj._hard_z(xf, yf, evf, torch.ones_like(evf["w"], dtype=torch.bool), 1 / 0.15,
                                    tuple(rep["selected_wp"]))["z_mean"])
    assert rep["final"]["z_stop"] == pytest.approx(z_final, rel=1e-12)
    assert rep["final"]["selected_wp"] == rep["selected_wp"] and "selected" not in rep["final"]
    lo, hi = rep["final"]["z_stop_ci"]
    assert lo < hi and rep["final"]["ci_replicas"] == 30
    # the stopping figure stays on the validation halves
    assert rep["validation_wp"] == rep["validation"]["selected_wp"]
    # stop_wp: learned still quotes final at the select subset's point
    tl = TwinTrainConfig.from_mapping({**keys, "stop_wp": "learned"})
    obj_l = AnalysisObjective(tl, sub[splits.TRAIN], [(2000.0, 0.3), (3000.0, 0.3)], anchor=model)
    rep_l = obj_l.final_report(model, sub[splits.VAL], sub[splits.FINAL], tl.split, d_select=sub[splits.SELECT])
    assert rep_l["selected_wp"] == rep["selected_wp"]
    assert rep_l["final"]["z_stop"] == pytest.approx(z_final, rel=1e-12)


@pytest.mark.slow
def test_cli_crossfit_k_writes_the_table_the_twin_reads(tmp_path):
    """`svjscout train lundnet --crossfit-k 2` writes lundnet_oof.parquet; the twin's stream reads it
    (every train/val event found) through its config key; a bad --crossfit-k is refused by name."""
    from click.testing import CliRunner

    from svjscout.jobs.commands_train_lundnet import lundnet_cmd
    from svjscout.models.lundnet_training.crossfit import read_oof_table
    from svjscout.models.twin_training.stream import _TwinStream

    skim = _write_skim(tmp_path / "s.parquet", 500, 9)
    args = [str(skim), "--out", str(tmp_path / "lund"), "--epochs", "1", "--threads", "1", "--max-len", "6",
            "--batch-size", "128", "--no-progress", "--device", "cpu"]
    bad = CliRunner().invoke(lundnet_cmd, [*args, "--crossfit-k", "1"])
    assert isinstance(bad.exception, ConfigError) and "crossfit_k" in str(bad.exception)
    res = CliRunner().invoke(lundnet_cmd, [*args, "--crossfit-k", "2", "--crossfit-epochs", "1"])
    assert res.exit_code == 0, res.output
    oof = tmp_path / "lund" / "lundnet_oof.parquet"
    assert json.loads(res.output[res.output.index("{"):])["lundnet_oof"] == str(oof)
    table = read_oof_table(oof)
    d = load_skim([skim])
    assert sorted(table["event"].tolist()) == sorted(d.event.tolist())
    # stamped with the deployed model written beside it (the twin's check that they belong together)
    from svjscout.core.modelmeta import file_sha256
    from svjscout.models.lundnet_training.crossfit import oof_table_model

    assert oof_table_model(oof) == file_sha256(tmp_path / "lund" / "lundnet.onnx")
    cfg = TwinTrainConfig.from_mapping({**SMALL, "lundnet_oof": str(oof)})
    stream = _TwinStream([skim], cfg, "cpu")
    code = split_codes(d, cfg.split, cfg.event_split_seed)
    assert stream.n_oof == int(((code == splits.TRAIN) | (code == splits.VAL)).sum()) > 0
    by_event = {int(e): i for i, e in enumerate(table["event"])}
    rows = np.array([by_event[int(e)] for e in stream.val.event])
    np.testing.assert_allclose(stream.val.features[:, J0], table["lundnet_j0"][rows], rtol=1e-6)


@pytest.mark.slow
def test_held_out_events_trained_on_by_the_starting_pair_are_flagged(trained, caplog):
    from svjscout.models.twin_training.train import init_model_overlap

    res = trained[-1]
    shipped = "models/twin.onnx"  # trained on the 3-way split: train u >= 0.4
    assert read_metadata(shipped)["training"]["split"]["fractions"] == [0.6, 0.2, 0.2]
    ov = init_model_overlap(TwinTrainConfig(init_model=shipped))  # 4-way: val is u in [0.3, 0.5)
    assert ov["u_range"] == pytest.approx([0.4, 0.5]) and ov["subsets"] == ["val"]
    assert "training events of models/twin.onnx" in caplog.text
    assert init_model_overlap(TwinTrainConfig(init_model=shipped, split=(0.6, 0.2, 0.2))) is None
    assert init_model_overlap(TwinTrainConfig(init_model=shipped, split=(0.7, 0.1, 0.1, 0.1))) is None
    ov = init_model_overlap(TwinTrainConfig(init_model=shipped, split=(0.4, 0.2, 0.2, 0.2)))  # select [0.2, 0.4)
    assert ov["u_range"] == pytest.approx([0.4, 0.6]) and ov["subsets"] == ["val"]
    ov = init_model_overlap(TwinTrainConfig(init_model=shipped, split=(0.3, 0.2, 0.3, 0.2)))  # select [0.2, 0.5)
    assert ov["u_range"] == pytest.approx([0.4, 0.7]) and ov["subsets"] == ["select", "val"]
    assert "split seed 1 != 2" in init_model_overlap(TwinTrainConfig(init_model=shipped, split_seed=2))["why"]
    # the 4-way pair of the fixture (seed 3, train u >= 0.5): a 4-way fine-tune from it (same split seed) is
    # clean, from its checkpoint too
    assert init_model_overlap(TwinTrainConfig(init_model=str(res.onnx_path), seed=3)) is None
    assert init_model_overlap(TwinTrainConfig(init_model=str(res.checkpoint_path), split_seed=3)) is None
    ov = init_model_overlap(TwinTrainConfig(init_model=str(res.checkpoint_path), seed=3, split=(0.4, 0.3, 0.15, 0.15)))
    assert ov["u_range"] == pytest.approx([0.5, 0.6]) and ov["subsets"] == ["val"]
