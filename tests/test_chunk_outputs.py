"""A chunk's output carries its own dataset only; the normalised output is as if every chunk had
booked every dataset (issue 33: a worker's memory and result size with many datasets)."""

import pickle

import numpy as np
import pytest
from conftest import assert_same_output, embedded_file, with_executor

from svjscout.processors import histograms as H
from svjscout.processors.normalize import dense_hists, flat_bins


def _fills(rng, n):
    return {"plane": rng.choice(["SP", "VP"], n), "x": rng.random(n), "y": rng.random(n),
            "mt": rng.uniform(600, 3000, n), "weight": rng.integers(1, 5, n).astype(float)}


def test_densify_equals_booking_every_dataset():
    """Chunks booked with their own dataset (growing axis), added in a shuffled order and densified,
    equal bin for bin the histograms booked with every dataset and filled directly (the old way)."""
    rng = np.random.default_rng(3)
    edges, datasets = [650.0, 1000.0, 2000.0], ["a", "b", "c", "d"]
    ref = H.book(edges, datasets, 8)["xy_mt"]
    chunks = []
    for _ in range(12):
        ds = str(rng.choice(datasets[:3]))  # "d" gets no chunk: zeros in the output
        f = _fills(rng, 50)
        ref.fill(dataset=ds, **f)
        h = H.book(edges, [ds], 8, growth=True)["xy_mt"]
        h.fill(dataset=ds, **f)
        chunks.append(h)
    rng.shuffle(chunks)
    total = chunks[0].copy()
    for h in chunks[1:]:
        total += h
    dense = H.densify(total, datasets)
    assert list(dense.axes["dataset"]) == datasets and not dense.axes["dataset"].traits.growth
    assert dense.axes == ref.axes
    np.testing.assert_array_equal(dense.view(flow=True).value, ref.view(flow=True).value)
    np.testing.assert_array_equal(dense.view(flow=True).variance, ref.view(flow=True).variance)
    with pytest.raises(ValueError, match="'zz'"):
        H.densify(H.book(edges, ["zz"], 8, growth=True)["xy_mt"], datasets)


def test_flat_bins_of_a_chunk_index_the_output():
    """A chunk's parent-record bins (its own-dataset histogram, the output's dataset list) are the
    bins of a fill of the histogram with every dataset."""
    rng = np.random.default_rng(5)
    edges, datasets = [650.0, 1000.0, 2000.0], ["a", "b", "c"]
    f = _fills(rng, 200)
    full = H.book(edges, datasets, 8)["xy_mt"]
    chunk = H.book(edges, ["b"], 8, growth=True)["xy_mt"]
    coords = {k: v for k, v in f.items() if k != "weight"}
    got = flat_bins(chunk, {"dataset": datasets}, dataset="b", **coords)
    full.fill(dataset="b", **f)
    counts = np.bincount(got, weights=f["weight"], minlength=full.view(flow=True).size)
    np.testing.assert_array_equal(counts.reshape(full.view(flow=True).shape), full.view(flow=True).value)
    np.testing.assert_array_equal(got, flat_bins(full, dataset="b", **coords))


def _assert_identical(a: dict, b: dict) -> None:
    """Bit for bit: histograms (values, variances, axes), cutflows, counts, parent records."""
    assert set(a["hists"]) == set(b["hists"])
    for name in a["hists"]:
        assert a["hists"][name].axes == b["hists"][name].axes, name
        va, vb = a["hists"][name].view(flow=True), b["hists"][name].view(flow=True)
        assert np.array_equal(va.value, vb.value) and np.array_equal(va.variance, vb.variance), name
    for ds in a["cutflow"]:
        assert np.array_equal(a["cutflow"][ds]["raw"], b["cutflow"][ds]["raw"])
        assert np.array_equal(a["cutflow"][ds]["weighted"], b["cutflow"][ds]["weighted"]), ds
    assert a["counts"] == b["counts"]
    assert set(a["parent_fills"]) == set(b["parent_fills"])
    for ds in a["parent_fills"]:
        for k in ("key", "bin", "weight"):
            assert np.array_equal(a["parent_fills"][ds][k], b["parent_fills"][ds][k]), (ds, k)


@pytest.mark.slow
def test_chunked_with_systematics_and_parents_equals_one_chunk(small_job, monkeypatch):
    """Systematics on (xy_mt_syst of the signals), QCD with detector copies (parent records):
    batches of 37 events inside one chunk (analysis.batch_events), clustered 11 events at a time,
    give bit-identical outputs,
    many small chunks the same histograms (to float rounding of QCD's weighted sums); a chunk's
    output holds its own dataset only, and the normalised output every dataset of the job."""
    from svjscout.jobs.runner import processor_config_from_job, run_processor
    from svjscout.processors.processor import SVJProcessor

    def analysis(**kw):
        a = small_job.analysis
        return small_job.model_copy(update={"analysis": a.model_copy(update={
            "systematics": a.systematics.model_copy(update={"enabled": True}), **kw})})

    job = analysis(batch_events=0)
    one, _ = run_processor(job)
    from svjscout.processors import processor as proc_module

    monkeypatch.setattr(proc_module, "CLUSTER_EVENTS", 11)  # FastJet called on parts of 11 events
    batched, _ = run_processor(analysis(batch_events=37))
    monkeypatch.undo()
    _assert_identical(one, batched)
    many, _ = run_processor(with_executor(job, chunksize=60))
    assert sum(c["chunks"] for c in many["counts"].values()) >= 8
    assert_same_output(one, many)
    assert "xy_mt_syst" in one["hists"] and one["hists"]["xy_mt_syst"].sum().value > 0
    for ds in ("qcd", "svj_mz2000_rinv0.3"):  # parent-grouped records: the same bins either way
        a, b = one["parent_fills"][ds], many["parent_fills"][ds]
        np.testing.assert_array_equal(a["bin"], b["bin"])
        np.testing.assert_allclose(a["weight"], b["weight"], rtol=1e-12)
    assert list(one["hists"]["xy_mt"].axes["dataset"]) == sorted(job.datasets)
    assert list(one["hists"]["xy_mt_syst"].axes["dataset"]) == sorted(d for d in job.datasets if d.startswith("svj"))
    # one chunk of a signal file: its own dataset only, and small
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.processors.schema import SVJScoutingSchema

    pcfg, _, _ = processor_config_from_job(job)
    path = embedded_file("svj_mz2000_rinv0.3.root")
    events = NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="eager",
                                         entry_stop=400, metadata={"dataset": "svj_mz2000_rinv0.3",
                                                                   "filename": path}).events()
    out = SVJProcessor(pcfg).process(events)
    for h in out["hists"].values():
        assert list(h.axes["dataset"]) == ["svj_mz2000_rinv0.3"]
    dense = dense_hists(out["hists"], pcfg)
    assert list(dense["xy_mt"].axes["dataset"]) == sorted(job.datasets)
    full_size = sum(h.view(flow=True).nbytes for h in dense.values())
    assert len(pickle.dumps(out)) < 0.6 * full_size


@pytest.mark.parametrize("value, text", [(-1, "analysis.batch_events must be >= 0"), ("x", "analysis.batch_events")])
def test_batch_events_is_validated(value, text):
    from svjscout.core.exceptions import ConfigError
    from svjscout.jobs.config import load_job

    with pytest.raises(ConfigError, match=text):
        load_job(None, {"analysis.batch_events": value})
