"""The shared training layer (models/training/): streamed data, unbiased buffered sampling, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from svjscout.models.training import data  # noqa: E402


def _rechunk(path: Path, rows: int) -> Path:
    """Rewrite a parquet file with row groups of ``rows`` rows."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(path))
    pq.write_table(table, str(path), row_group_size=rows)
    assert pq.ParquetFile(str(path)).metadata.num_row_groups > 1
    return path


def test_class_weights_streamed_in_chunks_equal_the_whole_sample():
    rng = np.random.default_rng(0)
    n = 1000
    label = (rng.random(n) < 0.3).astype(int)
    weight = rng.uniform(0, 2, n)
    group = np.where(label == 1, rng.choice(["a", "b", "c"], n), "bkg").astype(object)
    for ratio, balance, empty in ((1.5, False, "keep"), (1.5, True, "keep"), (1.0, True, "uniform")):
        whole = data.ClassWeights(ratio, balance, empty)
        whole.add(label, weight, group)
        chunked = data.ClassWeights(ratio, balance, empty)
        for s in range(0, n, 137):
            chunked.add(label[s:s + 137], weight[s:s + 137], group[s:s + 137])
        w = whole.apply(label, weight, group)
        assert np.allclose(chunked.apply(label, weight, group), w, rtol=1e-12)
        assert w.mean() == pytest.approx(1.0)
        assert w[label == 1].sum() / w[label == 0].sum() == pytest.approx(ratio)
        if balance:
            totals = [w[group == g].sum() for g in ("a", "b", "c")]
            assert totals == pytest.approx([totals[0]] * 3)


def test_buffered_sampling_is_uniform_per_event():
    """Systematic allocation of minibatches to buffers: every kept event has the same expected
    number of draws, whatever the row-group sizes (the weighted loss stays unbiased)."""
    counts = [5, 40, 0, 13, 100, 7, 60]
    draws = np.zeros(sum(counts))
    starts = np.cumsum([0, *counts])
    n_epochs, n_batches, batch = 4000, 3, 10
    for e in range(n_epochs):
        g = data.rng(1, e)
        bufs = data.plan_buffers(counts, 50, g)
        sizes = [sum(counts[i] for i in b) for b in bufs]
        for b in data.allocate_batches(sizes, n_batches, g):
            rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in bufs[b]])
            np.add.at(draws, rows[g.integers(0, len(rows), batch)], 1)
    expected = n_epochs * n_batches * batch / sum(counts)
    per_group = [draws[starts[i]:starts[i + 1]].mean() / expected for i in range(len(counts)) if counts[i]]
    assert per_group == pytest.approx([1.0] * len(per_group), abs=0.08)


def test_reservoir_keeps_a_uniform_subset_in_stream_order():
    res = data.Reservoir(100, seed=3)
    for s in range(0, 1000, 64):
        idx = np.arange(s, min(s + 64, 1000))
        res.add({"v": idx * 2}, idx)
    out = res.result(["v"])
    assert len(out["v"]) == 100 and np.all(np.diff(out["_index"]) > 0) and np.all(out["v"] == 2 * out["_index"])
    all_rows = data.Reservoir(None, seed=3)
    all_rows.add({"v": np.arange(10)}, np.arange(10))
    assert list(all_rows.result(["v"])["v"]) == list(range(10))


def test_resolve_device():
    assert data.resolve_device("cpu").type == "cpu"
    assert data.resolve_device("auto").type in ("cpu", "cuda")


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_twin_resume_after_interruption_is_bit_identical(tmp_path):
    """Stop a twin training mid-epoch (after 4 of 3 x 3 steps), resume from its training state in a
    new call: the model and MDMM state equal those of an uninterrupted run, bit for bit."""
    from test_twin import _write_skim

    from svjscout.models.train_twin import train_twin

    skims = [_rechunk(_write_skim(tmp_path / f"{i}.parquet", 900, i), 200) for i in (1, 2)]
    cfg = {"epochs": 3, "batches_per_epoch": 3, "batch_size": 300, "lr": 1e-2, "seed": 3, "patience": 50,
           "progress": False, "mt_edges": [650, 900, 1300, 5000], "buffer_events": 250, "floor_draws": 2,
           "device": "cpu"}
    full = train_twin(skims, tmp_path / "full", cfg)
    assert train_twin(skims, tmp_path / "cut", cfg, stop_after=4) is None
    assert (tmp_path / "cut" / "train_state.pt").is_file()
    resumed = train_twin(skims, tmp_path / "cut", {**cfg, "resume": True})
    a = torch.load(full.checkpoint_path, weights_only=False)
    b = torch.load(resumed.checkpoint_path, weights_only=False)
    _same_state(a["model"], b["model"])
    _same_state(a["mdmm"], b["mdmm"])
    assert a["best_epoch"] == b["best_epoch"]
    assert [h["val_figure"] for h in full.history] == [h["val_figure"] for h in resumed.history]
    sa = torch.load(tmp_path / "full" / "train_state.pt", weights_only=False)["states"]
    sb = torch.load(tmp_path / "cut" / "train_state.pt", weights_only=False)["states"]
    _same_state(sa["model"], sb["model"])  # the last state too, not only the best
    _same_state(sa["mdmm"], sb["mdmm"])


def test_lundnet_resume_after_interruption_is_bit_identical(tmp_path):
    from test_lundnet import TINY, _write_skim

    from svjscout.models.train_lundnet import TrainConfig, train_lundnet

    skims = [_rechunk(_write_skim(tmp_path / "sig.parquet", 150, 11, True, "svj_mz2000_rinv0.3"), 40),
             _rechunk(_write_skim(tmp_path / "qcd.parquet", 200, 12, False, "qcd_pt300to500"), 40)]

    def cfg(**kw):
        return TrainConfig(model=TINY, epochs=2, patience=5, seed=2, batch_size=32, lr=3e-3, threads=1,
                           progress=False, buffer_jets=120, device="cpu", **kw)

    full = train_lundnet(skims, tmp_path / "full", cfg())
    assert train_lundnet(skims, tmp_path / "cut", cfg(), stop_after=7) is None
    resumed = train_lundnet(skims, tmp_path / "cut", cfg(resume=True))
    a = torch.load(full.checkpoint_path, weights_only=False)["state_dict"]
    b = torch.load(resumed.checkpoint_path, weights_only=False)["state_dict"]
    _same_state(a, b)
    assert [h["val_loss"] for h in full.history] == [h["val_loss"] for h in resumed.history]
