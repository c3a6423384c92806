"""Honest MC statistical errors with detector copies (issue 17, item 3, processor side).

A generated ("parent") event resampled K times through the detector gives K correlated events
with weight w/K; the variance of an ``xy_mt`` bin is ``sum_p (sum of p's copies' weights)^2``.
Inputs are built from one embedded file: (a) every event written K = 3 times in a row with
``parent`` = its index and genWeight / 3 (the Runs tree unchanged, plus nDetectorCopies); (b) the
original with a ``parent`` branch, every event its own parent.
"""

import awkward as ak
import numpy as np
import pytest
from conftest import embedded_file

from svjscout.jobs.config import load_job
from svjscout.jobs.runner import run_processor
from svjscout.processors.processor import flat_bins, parent_grouped_variance
from svjscout.processors.schema import parent_key

K = 3
N_EVENTS = 200  # of the embedded file: enough selected events, a fast test
SOURCE = "qcd_pt300to500.root"


def _write(src: str, dst, copies: int | None, parent: bool) -> str:
    """Copy the first N_EVENTS of ``src``; with ``copies`` each event ``copies`` times in a row
    (unique ``event``, ``parent`` = its index, genWeight / copies); with ``parent`` a parent branch."""
    import uproot

    with uproot.open(src) as f:
        arrays = f["Events"].arrays(library="ak", entry_stop=N_EVENTS)
        runs = f["Runs"].arrays(library="np")
        meta = str(f["svjscout_meta"])
    n = len(arrays)
    k = copies or 1
    rows = np.repeat(np.arange(n), k)
    cols, pf = {}, {}
    for name in arrays.fields:
        if name == "nScoutingParticle":
            continue
        if name.startswith("ScoutingParticle_"):
            pf[name.split("_", 1)[1]] = arrays[name][rows]
        else:
            cols[name] = ak.to_numpy(arrays[name])[rows]
    if copies:
        cols["event"] = np.arange(1, n * k + 1, dtype=np.uint64)
        cols["genWeight"] = (cols["genWeight"].astype(np.float64) / k).astype(np.float32)
        runs = {**runs, "nDetectorCopies": np.full(len(runs["run"]), k, dtype=np.int32)}
    if parent:
        cols["parent"] = rows.astype(np.uint64)
    cols["ScoutingParticle"] = ak.zip(pf)
    with uproot.recreate(dst) as g:
        types = {c: (v.type.content if isinstance(v, ak.Array) else v.dtype) for c, v in cols.items()}
        g.mktree("Events", types).extend(cols)
        g.mktree("Runs", {c: v.dtype for c, v in runs.items()}).extend(runs)
        g["svjscout_meta"] = meta
    return str(dst)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("parents")
    src = embedded_file(SOURCE)
    return {"orig": _write(src, d / "orig.root", None, False),
            "copies": _write(src, d / "copies.root", K, True),
            "own": _write(src, d / "own.root", None, True)}


def _job(path, files: dict, models, executor: str = "{name: iterative, chunksize: 10000}"):
    """A job with one background dataset per entry of ``files`` (a path or a list of paths)."""
    lines = ["datasets:"]
    for name, f in files.items():
        listed = ", ".join(f"'{x}'" for x in ([f] if isinstance(f, str) else f))
        lines += [f"  {name}: {{kind: background, files: [{listed}]}}"]
    lines += ["analysis:", f"  lundnet_model: {models[0]}", f"  twin_model: {models[1]}", "  wp: [0.5, 0.5]",
              f"executor: {executor}"]
    path.write_text("\n".join(lines) + "\n")
    return load_job(path)


def _xy(out, dataset):
    return out["hists"]["xy_mt"][{"dataset": dataset}].view(flow=True)


@pytest.fixture(scope="module")
def run_all(inputs, toy_models, tmp_path_factory):
    # mixed: one file without parent ids and one with detector copies (the same events)
    files = {**inputs, "mixed": [inputs["orig"], inputs["copies"]]}
    job = _job(tmp_path_factory.mktemp("job") / "job.yaml", files, toy_models)
    return run_processor(job)[0]


def test_copies_keep_values_and_parent_errors(run_all):
    out = run_all
    orig, copies = _xy(out, "orig"), _xy(out, "copies")
    n_sel = out["cutflow"]["orig"]["raw"][-1]
    assert n_sel > 10 and out["cutflow"]["copies"]["raw"][-1] == K * n_sel
    assert np.allclose(copies.value, orig.value, rtol=1e-6, atol=0)
    # identical copies fill one bin together: the error is that of the parents alone ...
    assert np.allclose(copies.variance, orig.variance, rtol=1e-6, atol=0)
    assert copies.variance.sum() > 0
    # ... where the naive sum of w^2 (K copies of weight w/K) is K times smaller
    w = np.float64(np.float32(1.0 / K))
    norm2 = (orig.variance.sum() / n_sel)  # genWeight 1: orig variance = n_sel * norm^2
    naive = K * n_sel * w**2 * norm2
    assert naive == pytest.approx(orig.variance.sum() / K, rel=1e-6)
    assert copies.variance.sum() == pytest.approx(K * naive, rel=1e-6)
    summary = out["parent_errors"]["copies"]
    assert summary == {"fills": K * n_sel, "selected": K * n_sel, "parent_bins": n_sel, "complete": True}
    # what is kept: the scaled weight sum of each (parent, bin), K copies of w/K -> w
    kept = out["parent_fills"]["copies"]
    assert len(kept["key"]) == n_sel and "orig" not in out["parent_fills"]
    full = out["hists"]["xy_mt"].view(flow=True).variance.ravel()
    assert np.allclose(np.bincount(kept["bin"], kept["weight"] ** 2, minlength=full.size)[kept["bin"]],
                       full[kept["bin"]], rtol=1e-12, atol=0)
    assert "orig" not in out["parent_errors"]  # no parent branch: nothing recorded
    # mt_abcd (grouped per parent, region and M_T bin) likewise
    abcd = out["hists"]["mt_abcd"]
    a_orig, a_copies = (abcd[{"dataset": d}].view(flow=True) for d in ("orig", "copies"))
    assert np.allclose(a_copies.value, a_orig.value, rtol=1e-6, atol=0)
    assert np.allclose(a_copies.variance, a_orig.variance, rtol=1e-6, atol=0) and a_orig.variance.sum() > 0


def test_own_parents_are_sum_w2_exactly(run_all):
    orig, own = _xy(run_all, "orig"), _xy(run_all, "own")
    assert np.array_equal(own.value, orig.value)
    assert np.array_equal(own.variance, orig.variance)
    s = run_all["parent_errors"]["own"]
    assert s["parent_bins"] == s["fills"] == s["selected"] > 0


def test_copies_independent_of_chunking_and_executor(run_all, inputs, toy_models, tmp_path):
    """Chunks of 7 events split the copies of a parent across chunks (and dask workers)."""
    job = _job(tmp_path / "job.yaml", {"copies": inputs["copies"]}, toy_models,
               executor="{name: dask, workers: 2, chunksize: 7}")
    out, _ = run_processor(job)
    assert out["counts"]["copies"]["chunks"] == -(-K * N_EVENTS // 7)
    a, b = _xy(run_all, "copies"), _xy(out, "copies")
    assert np.array_equal(a.value, b.value)
    assert np.array_equal(a.variance, b.variance)


def test_skim_parent_column(inputs, toy_models, tmp_path):
    job = _job(tmp_path / "job.yaml", {"orig": inputs["orig"], "copies": inputs["copies"]}, toy_models)
    run_processor(job, skim_dir=str(tmp_path / "skim"))
    orig = ak.from_parquet(str(tmp_path / "skim" / "orig"))
    copies = ak.from_parquet(str(tmp_path / "skim" / "copies"))
    assert len(copies) == K * len(orig) > 0
    run = ak.to_numpy(orig["run"]).astype(np.uint64)
    # without a parent branch every event is its own parent
    assert np.array_equal(ak.to_numpy(orig["parent"]), (run << np.uint64(40)) | ak.to_numpy(orig["event"]))
    assert ak.to_numpy(orig["parent"]).dtype == np.uint64
    # copies: K rows per parent key, the key of the original event index
    keys, n = np.unique(ak.to_numpy(copies["parent"]), return_counts=True)
    assert (n == K).all() and len(keys) == len(orig)
    index = (ak.to_numpy(copies["event"]) - 1) // K
    run_c = ak.to_numpy(copies["run"]).astype(np.uint64)
    assert np.array_equal(ak.to_numpy(copies["parent"]), (run_c << np.uint64(40)) | index.astype(np.uint64))


def test_flat_bins_match_the_fill():
    from svjscout.processors import histograms as H

    h = H.book([650.0, 800.0, 1000.0], ["a", "b"], 4)["xy_mt"]
    rng = np.random.default_rng(1)
    n = 500
    c = {"dataset": "b", "plane": rng.choice(["SP", "VP"], n), "x": rng.uniform(-0.1, 1.1, n),
         "y": rng.uniform(-0.1, 1.1, n), "mt": rng.uniform(600, 1100, n)}
    w = rng.uniform(0.5, 2, n)
    h.fill(**c, weight=w)
    bins = flat_bins(h, **c)
    view = h.view(flow=True)
    assert np.allclose(np.bincount(bins, weights=w, minlength=view.size).reshape(view.shape), view.value)
    assert np.allclose(np.bincount(bins, weights=w**2, minlength=view.size).reshape(view.shape), view.variance)


def test_grouped_variance_formula_and_order():
    keys = np.array([1, 1, 2, 1, 3, 3], np.uint64)
    bins = np.array([0, 0, 0, 1, 1, 1], np.int64)
    w = np.array([0.5, 0.25, 1.0, 2.0, 0.1, 0.3])
    var, naive, groups = parent_grouped_variance(keys, bins, w, 3)
    assert groups == 4
    assert np.allclose(var, [0.75**2 + 1.0, 2.0**2 + 0.4**2, 0.0])
    assert np.allclose(naive, [0.5**2 + 0.25**2 + 1.0, 4.0 + 0.01 + 0.09, 0.0])
    rng = np.random.default_rng(0)
    k, b, ww = rng.integers(0, 50, 2000).astype(np.uint64), rng.integers(0, 7, 2000), rng.normal(size=2000)
    ref = parent_grouped_variance(k, b, ww, 7)[0]
    for _ in range(3):
        p = rng.permutation(2000)
        assert np.array_equal(parent_grouped_variance(k[p], b[p], ww[p], 7)[0], ref)


def test_parent_key_range():
    from svjscout.exceptions import InputFileError

    assert parent_key(np.array([2], np.uint32), np.array([7], np.uint64))[0] == (2 << 40) | 7
    with pytest.raises(InputFileError, match="parent key"):
        parent_key(np.array([1 << 24], np.uint32), np.array([1], np.uint64))


def test_mixed_dataset_adds_the_copies_correlations(run_all):
    """Files with and without parent ids in one dataset: sum w^2 for the former, grouped for the
    latter (the sum of weights doubles, so the normalisation halves)."""
    orig, copies, mixed = _xy(run_all, "orig"), _xy(run_all, "copies"), _xy(run_all, "mixed")
    assert np.allclose(mixed.value, (orig.value + copies.value) / 2, rtol=1e-6, atol=0)
    assert np.allclose(mixed.variance, (orig.variance + copies.variance) / 4, rtol=1e-6, atol=0)
    s = run_all["parent_errors"]["mixed"]
    assert not s["complete"] and s["selected"] == s["fills"] + s["parent_bins"]
