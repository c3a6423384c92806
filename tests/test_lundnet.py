"""Tests of LundNet (models/lundnet.py), its ONNX export and its training (models/train_lundnet.py)."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
from conftest import benchmark_module

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from svjscout.core.exceptions import InputFileError, ModelMismatchError  # noqa: E402
from svjscout.models.export import check_features, read_metadata  # noqa: E402
from svjscout.models.lundnet import (  # noqa: E402
    LUND3_FEATURES,
    REFERENCE,
    SMALL,
    LundNet,
    LundNetConfig,
    count_parameters,
    export_lundnet_onnx,
    fold_batchnorm,
    load_lundnet_session,
)
from svjscout.models.train_lundnet import (  # noqa: E402
    TEST,
    TRAIN,
    VAL,
    TrainConfig,
    load_skim,
    train_lundnet,
    training_weights,
)
from svjscout.processors.lund import LUND_FEATURES  # noqa: E402

TINY = LundNetConfig(block_widths=(8, 16), fusion=16, head=8, max_len=12)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one torch thread is faster (and fair to a shared machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _jets(n: int, max_len: int, n_feat: int = 5, seed: int = 0, signal_shift: float = 0.0):
    """Random padded jets: (x float32 (n, max_len, n_feat), mask float32 (n, max_len))."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, n)
    mask = (np.arange(max_len)[None, :] < lengths[:, None]).astype(np.float32)
    x = (rng.normal(0, 1, (n, max_len, n_feat)) + signal_shift).astype(np.float32) * mask[..., None]
    return x, mask


def _randomise_batchnorm(model: LundNet, seed: int = 1) -> None:
    """Non-trivial running statistics and affine parameters (so folding is exercised)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if hasattr(mod, "running_var"):
                n = mod.running_var.shape[0]
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=g) * 0.2)
        model.feat_mean.copy_(torch.randn(model.feat_mean.shape[0], generator=g))
        model.feat_std.copy_(torch.rand(model.feat_std.shape[0], generator=g) + 0.5)


@pytest.fixture(scope="module")
def small_model() -> LundNet:
    torch.manual_seed(3)
    model = LundNet(SMALL)
    _randomise_batchnorm(model)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_model):
    path = tmp_path_factory.mktemp("onnx") / "lundnet_test.onnx"
    export_lundnet_onnx(small_model, path, SMALL.features, {"kind": "test"}, {"svj_test": 0.9, "all": 0.8})
    return path


def test_sizes():
    assert 350_000 < count_parameters(LundNet(REFERENCE)) < 430_000
    assert count_parameters(LundNet(SMALL)) < 60_000
    assert LundNet(LundNetConfig(features=LUND3_FEATURES)).feat_mean.shape == (3,)
    with pytest.raises(ValueError, match="unknown"):
        LundNet(LundNetConfig(features=("ln_kt", "bogus")))


def test_padding_does_not_change_score(small_model):
    x20, m20 = _jets(64, 20, seed=5)
    x40 = np.zeros((64, 40, 5), np.float32)
    m40 = np.zeros((64, 40), np.float32)
    x40[:, :20], m40[:, :20] = x20, m20
    x40[:, 20:] = 0.0
    s20 = small_model.predict(x20, m20)
    s40 = small_model.predict(x40, m40)
    assert s20.shape == (64,)
    np.testing.assert_allclose(s20, s40, atol=1e-6)
    # garbage in padded slots is ignored too
    junk = x40.copy()
    junk[m40 == 0] = 7.0
    np.testing.assert_allclose(small_model.predict(junk, m40), s40, atol=1e-6)
    # a jet's score does not depend on the other jets of the batch (evaluation mode)
    np.testing.assert_allclose(small_model.predict(x20[:1], m20[:1]), s20[:1], atol=1e-6)
    # ... and real nodes matter
    moved = x20.copy()
    moved[m20 == 1] += 0.5
    assert np.abs(small_model.predict(moved, m20) - s20).max() > 1e-3


def test_fold_batchnorm_is_exact(small_model):
    x, m = _jets(100, 16, seed=9)
    folded = fold_batchnorm(small_model)
    with torch.no_grad():
        a = small_model(torch.from_numpy(x), torch.from_numpy(m)).numpy()
        b = folded(torch.from_numpy(x), torch.from_numpy(m)).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_onnx_matches_torch(exported, small_model):
    import onnx

    model = onnx.load(str(exported))
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in model.graph.input] == ["lund", "mask"]
    assert [o.name for o in model.graph.output] == ["score"]
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[1]  # dynamic N and L
    sess = load_lundnet_session(exported)
    for n, length in ((1000, 32), (3, 50), (1, 1)):
        x, m = _jets(n, length, seed=n)
        got = sess.run(["score"], {"lund": x, "mask": m})[0]
        assert got.shape == (n,)
        np.testing.assert_allclose(got, small_model.predict(x, m), atol=1e-5)
    meta = read_metadata(exported)
    assert meta["features"] == list(LUND_FEATURES)
    assert meta["model"] == "lundnet"
    assert meta["auc"] == {"svj_test": 0.9, "all": 0.8}
    assert meta["max_len"] == "32" and meta["version"]
    check_features(exported, meta, LUND_FEATURES)


def test_export_refuses_bad_inputs(tmp_path, small_model):
    with pytest.raises(ValueError, match="lundnet"):
        export_lundnet_onnx(small_model, tmp_path / "model.onnx", SMALL.features, {}, {})
    with pytest.raises(ValueError, match="features"):
        export_lundnet_onnx(small_model, tmp_path / "lundnet.onnx", LUND3_FEATURES, {}, {})


def test_check_features_refuses_other_features(tmp_path):
    model = LundNet(LundNetConfig(block_widths=(8,), fusion=8, head=4, features=LUND3_FEATURES, max_len=8)).eval()
    path = export_lundnet_onnx(model, tmp_path / "lundnet3.onnx", LUND3_FEATURES, {}, {"all": 0.5})
    meta = read_metadata(path)
    assert meta["features"] == list(LUND3_FEATURES)
    with pytest.raises(ModelMismatchError, match="features"):
        check_features(path, meta, LUND_FEATURES)


def test_optimisation_reduces_loss():
    torch.manual_seed(0)
    xs, ms = _jets(64, 12, seed=1, signal_shift=0.7)
    xb, mb = _jets(64, 12, seed=2)
    x = torch.from_numpy(np.concatenate([xs, xb]))
    m = torch.from_numpy(np.concatenate([ms, mb]))
    y = torch.cat([torch.ones(64), torch.zeros(64)])
    model = LundNet(TINY)
    model.set_normalisation(x.numpy(), m.numpy())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x, m), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_training_weights_balance_classes():
    label = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    weight = np.array([1.0, 1.0, 5.0, 2.0, 2.0, 4.0, 8.0, 0.0])  # negative weights: refused (test_twin.py)
    dataset = np.array(["s1", "s1", "s2", "b1", "b1", "b2", "b2", "b2"], dtype=object)
    w = training_weights(label, weight, dataset)
    assert w[label == 1].sum() == pytest.approx(4.0)
    assert w[label == 0].sum() == pytest.approx(4.0)
    assert w[:2].sum() == pytest.approx(w[2])  # every signal point the same total
    assert w[5] == pytest.approx(2 * w[3]) and w[7] == 0.0  # background keeps physics weights


def _write_skim(path, n_events: int, seed: int, signal: bool, dataset: str, max_len: int = 32):
    """A synthetic skim file with the processors' column layout."""
    rng = np.random.default_rng(seed)
    cols = {}
    for j in ("j0", "j1"):
        x, m = _jets(n_events, max_len, seed=seed + (j == "j1"), signal_shift=0.8 if signal else 0.0)
        x[..., LUND_FEATURES.index("ln_m")] += 4.0 * m
        cols[f"lund_{j}"], cols[f"lund_{j}_mask"] = x, m.astype(bool)
    cols.update(
        weight=rng.uniform(0.5, 1.5, n_events),
        dataset=np.array([dataset] * n_events),
        label=np.full(n_events, int(signal), np.int8),
        mzprime=np.full(n_events, 2000.0 if signal else np.nan, np.float32),
        rinv=np.full(n_events, 0.3 if signal else np.nan, np.float32),
        event=np.arange(1, n_events + 1, dtype=np.uint64) * 7,
        met=rng.uniform(100, 500, n_events).astype(np.float32),
    )
    ak.to_parquet(ak.zip(cols, depth_limit=1), str(path))
    return path


@pytest.fixture(scope="module")
def skim(tmp_path_factory):
    d = tmp_path_factory.mktemp("skim")
    for sub in ("svj", "qcd"):
        (d / sub).mkdir()
    return [
        _write_skim(d / "svj" / "sig.parquet", 150, 11, True, "svj_mz2000_rinv0.3"),
        _write_skim(d / "qcd" / "qcd.parquet", 200, 12, False, "qcd_pt300to500"),
        _write_skim(d / "tt.parquet", 80, 13, False, "ttbar"),
        _write_skim(d / "qcd" / "qcd2.parquet", 60, 14, False, "qcd_pt500toinf"),
    ]


def test_split_is_by_event_and_deterministic(skim):
    a = load_skim(skim, max_len=20, seed=4)
    b = load_skim(list(reversed(skim)), max_len=20, seed=4)
    assert a.lund.shape == (2 * 490, 20, 5) and a.mask.shape == (2 * 490, 20)
    assert (a.split[0::2] == a.split[1::2]).all()  # J0 and J1 of an event together
    assert set(np.unique(a.split)) == {TRAIN, VAL, TEST}
    key = lambda s: sorted(zip(s.dataset, s.split, s.lund[:, 0, 0]))  # noqa: E731
    assert key(a) == key(b)
    top = load_skim([skim[2].parent], max_len=20, seed=4)  # a folder: parquet files found recursively
    assert key(top) == key(a)
    c = load_skim(skim, max_len=20, seed=5)
    assert not (c.split == a.split).all()
    with pytest.raises(InputFileError, match="nothere.parquet"):
        load_skim([skim[0], skim[0].parent / "nothere.parquet"], max_len=20)


def test_skim_missing_column_is_named(tmp_path):
    path = tmp_path / "bad.parquet"
    ak.to_parquet(ak.zip({"lund_j0": np.zeros((3, 4, 5), np.float32), "weight": np.ones(3)}, depth_limit=1), str(path))
    with pytest.raises(InputFileError, match="lund_j0_mask"):
        load_skim([path], max_len=8)


@pytest.mark.slow
def test_train_lundnet_end_to_end(tmp_path, skim):
    cfg = TrainConfig(model=TINY, epochs=3, patience=2, seed=2, batch_size=32, lr=3e-3, threads=1,
                      progress=False, command="pytest")
    res = train_lundnet(skim, tmp_path / "out", cfg)
    for name in ("lundnet.onnx", "lundnet_checkpoint.pt", "report.md", "report.json", "roc.png", "scores.png",
                 "loss.png"):
        assert (tmp_path / "out" / name).exists(), name
    report = json.loads(res.report_json.read_text())
    assert set(report["auc"]) == {"svj_mz2000_rinv0.3", "all"}
    assert set(report["auc"]["all"]) == {"qcd_pt300to500", "qcd_pt500toinf", "qcd", "ttbar", "all"}
    assert set(report["baselines"]) == {"n_declusterings", "jet_mass"}
    assert res.auc["all"]["all"] > 0.7  # the synthetic signal is easy
    assert 1 <= res.best_epoch <= len(res.history) <= 3
    meta = read_metadata(res.onnx_path)
    assert meta["features"] == list(LUND_FEATURES) and meta["training"]["command"] == "pytest"
    assert "svj_mz2000_rinv0.3" in meta["auc"] and "all" in meta["auc"]
    assert "| all |" in res.report_md.read_text()


def test_cli_help():
    from click.testing import CliRunner

    from svjscout.jobs.commands_train_lundnet import lundnet_cmd

    res = CliRunner().invoke(lundnet_cmd, ["--help"])
    assert res.exit_code == 0
    for opt in ("--out", "--epochs", "--seed", "--device", "--small / --reference", "--max-len"):
        assert opt in res.output


def test_evaluate_onnx_on_skim(tmp_path, skim, exported):
    from svjscout.models.train_lundnet import evaluate_lundnet_onnx

    res = evaluate_lundnet_onnx(exported, skim, seed=2)
    assert set(res["auc"]) == {"svj_mz2000_rinv0.3", "all"}
    assert 0.0 <= res["auc"]["all"]["all"] <= 1.0
    assert set(res["baselines"]) == {"n_declusterings", "jet_mass"}
    assert sum(res["jets"].values()) < 2 * 490  # the test subset only


def test_auc_table_groups_backgrounds():
    from svjscout.models.train_lundnet import auc_table

    dataset = np.array(["s1", "s1", "qcd_pt1", "qcd_pt2", "ttbar", "ttbar"], dtype=object)
    label = np.array([1, 1, 0, 0, 0, 0])
    score = np.array([0.9, 0.8, 0.1, 0.85, 0.2, 0.3])
    table = auc_table(score, label, np.ones(6), dataset)
    assert list(table) == ["s1", "all"]
    assert list(table["s1"]) == ["qcd_pt1", "qcd_pt2", "ttbar", "qcd", "all"]
    assert table["s1"]["ttbar"] == 1.0 and table["s1"]["qcd_pt2"] == 0.5
    assert table["s1"]["qcd"] == pytest.approx(0.75)


def test_shipped_model_metadata_and_padding():
    from svjscout.models import shipped_model

    path = shipped_model("lundnet")
    if not path.exists():
        pytest.skip("models/lundnet.onnx not shipped yet")
    meta = read_metadata(path)
    check_features(path, meta, LUND_FEATURES)
    assert meta["model"] == "lundnet" and "all" in meta["auc"]
    assert path.stat().st_size < 5_000_000
    sess = load_lundnet_session(path)
    x20, m20 = _jets(32, 20, seed=21)
    x40 = np.zeros((32, 40, 5), np.float32)
    m40 = np.zeros((32, 40), np.float32)
    x40[:, :20], m40[:, :20] = x20, m20
    s20 = sess.run(["score"], {"lund": x20, "mask": m20})[0]
    s40 = sess.run(["score"], {"lund": x40, "mask": m40})[0]
    np.testing.assert_allclose(s20, s40, atol=1e-6)
    assert ((s20 >= 0) & (s20 <= 1)).all()


def test_compare_lundnets_benchmark(skim, exported, capsys):
    """benchmarks/compare_lundnets.py: a model against itself differs by exactly 0 in every
    replica; its central AUC per signal point is evaluate_lundnet_onnx's on the same subset."""
    from svjscout.models.train_lundnet import evaluate_lundnet_onnx

    mod = benchmark_module("compare_lundnets")
    mod.main([str(p) for p in skim] + [f"a={exported}", f"b={exported}", "--seed", "2", "--bootstrap", "20"])
    out = capsys.readouterr().out
    rows = [r for r in out.splitlines() if r.startswith("| svj_")]
    # every background process (qcd's two bins are one process) and all
    assert [r.split(" | ")[0].split(" (not backed")[0] for r in rows] == [
        "| svj_mz2000_rinv0.3 vs all", "| svj_mz2000_rinv0.3 vs qcd", "| svj_mz2000_rinv0.3 vs ttbar"]
    for r in rows:
        assert r.rstrip(" |").endswith("+0.0000 [+0.0000, +0.0000]")
        n_eff = [float(v) for v in r.split(" | ")[2].split(" / ")]
        assert ("not backed" in r) == (min(n_eff) < 10)
    ref = evaluate_lundnet_onnx(exported, skim, seed=2)["auc"]["svj_mz2000_rinv0.3"]["all"]
    central = float(rows[0].split(" | ")[3].split(" ")[0])
    assert central == pytest.approx(ref, abs=5e-5)
    with pytest.raises(SystemExit):
        mod.main([str(skim[0]), "--bootstrap", "5", f"a={exported}"])
