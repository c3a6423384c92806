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
from svjscout.processors.normalize import flat_bins, parent_grouped_variance
from svjscout.processors.schema import parent_key

K = 3
N_EVENTS = 200  # of the embedded file: enough selected events, a fast test
SOURCE = "qcd.root"  # its own detector copies are ignored: each row becomes an event (``parent`` dropped)


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
    from svjscout.samples.skim import collections_of

    cols = {c: v[rows] for c, v in collections_of(arrays[[f for f in arrays.fields if f != "parent"]]).items()}
    if copies:
        cols["event"] = np.arange(1, n * k + 1, dtype=np.uint64)
        cols["genWeight"] = (cols["genWeight"].astype(np.float64) / k).astype(np.float32)
        runs = {**runs, "nDetectorCopies": np.full(len(runs["run"]), k, dtype=np.int32)}
    if parent:
        cols["parent"] = rows.astype(np.uint64)
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


@pytest.mark.slow
def test_copies_independent_of_chunking_and_executor(run_all, inputs, toy_models, tmp_path):
    """Chunks of 7 events split the copies of a parent across chunks (and dask workers)."""
    job = _job(tmp_path / "job.yaml", {"copies": inputs["copies"]}, toy_models,
               executor="{name: dask, workers: 2, chunksize: 7}")
    out, _ = run_processor(job)
    assert out["counts"]["copies"]["chunks"] == -(-K * N_EVENTS // 7)
    a, b = _xy(run_all, "copies"), _xy(out, "copies")
    assert np.array_equal(a.value, b.value)
    assert np.array_equal(a.variance, b.variance)


@pytest.mark.slow
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
    from svjscout.core.exceptions import InputFileError

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


# -- region and M_T-group variances downstream (datacards/parents.py) ---------------------------
#
# Real copies of one event differ in their jet response, so they spread over score bins. That is
# built here at the unit level: per parent, K copies of weight w / K at different (x, y) bins of
# one region at WP = (0.5, 0.5), their records made by the processor's own code (flat_bins,
# group_fills via _parent_grouped_xy_mt), then passed with xy_mt (StatInputs) as `svjscout run` does.

WP_R = (0.5, 0.5)
MT_R = [650.0, 800.0, 1000.0, 1300.0, 1800.0]
DS_R = {"bkg": {"kind": "background"}, "svj": {"kind": "signal", "mzprime": 2000, "rinv": 0.3}}


def _events(n_par, k, seed, mt_spread=0.0):
    """Per copy: parent, plane, x, y, mt, weight; each parent's copies in one region at WP_R."""
    rng = np.random.default_rng(seed)
    par = np.repeat(np.arange(n_par), k)
    hi_x, hi_y = (np.repeat(rng.random(n_par) < p, k) for p in (0.45, 0.4))
    x = np.where(hi_x, 0.5, 0.0) + rng.uniform(0, 0.5, n_par * k)
    y = np.where(hi_y, 0.5, 0.0) + rng.uniform(0, 0.5, n_par * k)
    mt = np.repeat(rng.uniform(660, 1790, n_par), k) + rng.normal(0, mt_spread, n_par * k) * (mt_spread > 0)
    plane = np.repeat(rng.choice(["SP", "VP"], n_par), k)
    w = np.repeat(rng.uniform(0.5, 1.5, n_par), k) / k
    return {"parent": par, "plane": plane, "x": x, "y": y, "mt": np.clip(mt, 651, 1799), "w": w}


def _histogram(events: dict, with_records: bool = True):
    """xy_mt of DS_R filled with ``{dataset: events}``; with records as normalize leaves them."""
    from svjscout.processors import histograms as H
    from svjscout.processors.normalize import _parent_grouped_xy_mt

    h = H.book(MT_R, list(DS_R), 20)["xy_mt"]
    fills, flow = {}, {}
    for ds, e in events.items():
        c = {"dataset": ds, "plane": e["plane"], "x": e["x"], "y": e["y"], "mt": e["mt"]}
        h.fill(**c, weight=e["w"])
        fills[ds] = {"key": e["parent"].astype(np.uint64), "bin": flat_bins(h, **c), "weight": e["w"]}
        flow[ds] = {"raw": np.array([len(e["w"])])}
    out = {"hists": {"xy_mt": h}, "cutflow": flow, "datasets": DS_R}
    if with_records:
        out["parent_fills"] = fills
        out["parent_errors"] = _parent_grouped_xy_mt(out)
    return out


def _closed_form(e: dict, plane: str, groups) -> np.ndarray:
    """sum_p (sum of p's weights in region r and M_T group g)^2, shape (4, len(groups)), by hand."""
    group_of = {m: k for k, g in enumerate(groups) for m in g}
    sums: dict = {}
    for p, pl, x, y, mt, w in zip(e["parent"], e["plane"], e["x"], e["y"], e["mt"], e["w"]):
        m = int(np.searchsorted(MT_R, mt, side="right")) - 1
        if pl != plane or m not in group_of:
            continue
        r = "ABCD".index({(True, False): "A", (True, True): "B", (False, False): "C", (False, True): "D"}[
            (bool(x >= WP_R[0]), bool(y >= WP_R[1]))])
        sums[(p, r, group_of[m])] = sums.get((p, r, group_of[m]), 0.0) + w
    out = np.zeros((4, len(groups)))
    for (_, r, g), s in sums.items():
        out[r, g] += s**2
    return out


def test_region_variance_is_the_closed_form():
    from svjscout.datacards.parents import StatInputs
    from svjscout.datacards.regions import region_yields

    e = _events(600, K, seed=11, mt_spread=80.0)  # copies spread over x, y and M_T bins
    out = _histogram({"bkg": e})
    h = out["hists"]["xy_mt"]
    per_bin = {p: region_yields(h, DS_R, WP_R, plane=p, which="background") for p in ("SP", "VP")}
    rec = StatInputs.from_output(out).parents
    assert rec is not None
    singles = [[0], [1], [2], [3]]
    for plane in ("SP", "VP"):
        y = region_yields(h, DS_R, WP_R, plane=plane, which="background", parents=rec)
        assert np.allclose(y.n, per_bin[plane].n, rtol=0, atol=0)
        assert np.allclose(y.var, _closed_form(e, plane, singles), rtol=1e-12, atol=0)
        # the per-bin sums missed the copies' cross terms (copies in different score bins)
        assert (y.var >= per_bin[plane].var * (1 - 1e-12)).all() and y.var.sum() > 1.5 * per_bin[plane].var.sum()
        for groups in ([[0, 1], [2, 3]], [[0, 1, 2, 3]], [[0], [1, 2, 3]]):
            m = y.merged(groups)
            assert np.allclose(m.var, _closed_form(e, plane, groups), rtol=1e-12, atol=0)
            assert m.var.sum() > y.var[:, [i for g in groups for i in g]].sum()  # copies across M_T bins
            for k, g in enumerate(groups):
                assert np.allclose(y.group_var(g), m.var[:, k], rtol=1e-12, atol=0)
        # merged twice: the groups refer to the merged bins, the variances to the original ones
        assert np.allclose(y.merged([[0, 1], [2], [3]]).merged([[0, 1], [2]]).var,
                           _closed_form(e, plane, [[0, 1, 2], [3]]), rtol=1e-12, atol=0)
        # Poisson (data-like) variances never use the records
        assert np.array_equal(region_yields(h, DS_R, WP_R, plane=plane, which="background", poisson=True,
                                            parents=rec).var, per_bin[plane].n.clip(0))


def test_own_parents_leave_every_region_variance_unchanged_bit_for_bit():
    from svjscout.datacards import scan_working_points
    from svjscout.datacards.parents import StatInputs, pairs_of
    from svjscout.datacards.regions import mt_abcd_at, region_yields

    events = {"bkg": _events(800, 1, seed=3, mt_spread=0.0), "svj": _events(300, 1, seed=4)}
    plain, own = _histogram(events, with_records=False), _histogram(events)
    i0, i1 = StatInputs.from_output(plain), StatInputs.from_output(own)
    assert i0.parents is None and i1.parents is not None
    assert pairs_of(i1.xy_mt, i1.parents, ["bkg", "svj"], "SP") is None
    h0, h1 = i0.xy_mt, i1.xy_mt
    assert np.array_equal(h0.view(flow=True), h1.view(flow=True))
    for which in ("background", ["svj"]):
        for plane in ("SP", "VP"):
            a, b = (region_yields(i.xy_mt, DS_R, WP_R, plane=plane, which=which, parents=i.parents) for i in (i0, i1))
            assert np.array_equal(a.var, b.var) and np.array_equal(a.n, b.n)
            assert np.array_equal(a.merged([[0, 1], [2, 3]]).var, b.merged([[0, 1], [2, 3]]).var)
    assert np.array_equal(mt_abcd_at(h0, WP_R).view(flow=True),
                          mt_abcd_at(h1, WP_R, parents=i1.parents).view(flow=True))
    grid = (np.arange(0.3, 0.71, 0.1).round(2),) * 2
    t0, t1 = (scan_working_points(i, DS_R, grid=grid).table for i in (i0, i1))
    assert t0.equals(t1)


def test_scan_variances_are_exact_at_every_point():
    from svjscout.datacards.parents import StatInputs
    from svjscout.datacards.regions import (
        cumulative_2d,
        plane_arrays,
        region_yields,
        regions_from_cumsum,
    )
    from svjscout.datacards.scan import _parent_aware

    e = _events(500, K, seed=7, mt_spread=80.0)
    inputs = StatInputs.from_output(_histogram({"bkg": e}))
    h, rec = inputs.xy_mt, inputs.parents
    ix = iy = np.arange(0, 21, 2)
    _, bw = plane_arrays(h, ["bkg"], "SP")
    var, off = _parent_aware(regions_from_cumsum(cumulative_2d(bw), ix, iy), h, rec, ["bkg"], "SP", ix, iy)
    for i, x0 in enumerate(ix / 20):
        for j, y0 in enumerate(iy / 20):
            y = region_yields(h, DS_R, (x0, y0), plane="SP", which="background", parents=rec)
            # the scan's cumulative sums leave rounding of the largest entry in empty regions
            assert np.allclose(var[:, i, j], y.var, rtol=1e-12, atol=1e-14 * np.abs(var).max())
            g = [0, 1, 2]
            merged = var[:, i, j][:, g].sum(axis=1) + off[:, i, j][:, g][:, :, g].sum(axis=(1, 2))
            assert np.allclose(merged, y.group_var(g), rtol=1e-12, atol=1e-14 * np.abs(var).max())


def test_records_follow_the_histogram_not_its_copies(tmp_path, caplog):
    import pickle

    from coffea.util import save

    from svjscout.datacards.parents import StatInputs
    from svjscout.datacards.regions import region_yields
    from svjscout.jobs.commands_datacards import _load

    out = _histogram({"bkg": _events(300, K, seed=5)})
    h = out["hists"]["xy_mt"]
    plain = region_yields(h, DS_R, WP_R, which="background").var
    rec = StatInputs.from_output(out).parents
    aware = region_yields(h, DS_R, WP_R, which="background", parents=rec).var
    assert not np.allclose(aware, plain)
    assert not hasattr(h, "svjscout_parents")  # nothing rides on the histogram object
    assert b"svjscout" not in pickle.dumps(out["parent_fills"])  # plain data: any pickle reader loads it
    # a slice has other axes, a scaled copy other values: neither uses the records (one warning per call)
    assert rec.valid_for(h[{"plane": "SP"}]) is None and rec.valid_for(h[{"x": slice(2, None)}]) is None
    assert rec.valid_for(h * 2.0) is None and "differ from those their parent records" in caplog.text
    caplog.clear()
    assert np.allclose(region_yields(h * 2.0, DS_R, WP_R, which="background", parents=rec).var, 4 * plain, rtol=1e-12)
    assert caplog.text.count("differ from those their parent records") == 1
    # a bare histogram has no records, whatever records exist elsewhere
    assert StatInputs.of(h).parents is None
    save(out, tmp_path / "new.coffea")
    xy, ds = _load(str(tmp_path / "new.coffea"))
    assert xy.parents is not None
    assert np.allclose(region_yields(xy.xy_mt, ds, WP_R, which="background", parents=xy.parents).var, aware,
                       rtol=1e-12, atol=0)
    out.pop("parent_fills")
    save(out, tmp_path / "none.coffea")
    xy, ds = _load(str(tmp_path / "none.coffea"))
    assert xy.parents is None and np.array_equal(region_yields(xy.xy_mt, ds, WP_R, which="background").var, plain)


def test_cards_and_closure_see_the_parents_not_the_copies(tmp_path):
    """K copies of weight w/K spread over a region's bins count as the parents alone (weight w,
    one fill each): the same Kish N_eff, closure errors, merging and non-closure in the cards."""
    from svjscout.datacards import abcd_prediction, signal_systematics, write_datacards
    from svjscout.datacards.parents import StatInputs

    copied = {"bkg": _events(3000, K, seed=21), "svj": _events(800, K, seed=22)}
    alone = {d: {**{c: v[::K] for c, v in e.items()}, "w": e["w"][::K] * K} for d, e in copied.items()}

    def build(k, records):
        return StatInputs.from_output(_histogram(copied if k == K else alone, with_records=records))

    parents, copies, naive = build(1, False), build(K, True), build(K, False)
    kw = {"min_neff": 60.0, "max_rel_err": np.inf, "validate": False, "allow_unbacked": True}
    idx = {n: write_datacards(h, DS_R, WP_R, tmp_path / n, **kw) for n, h in
           (("parents", parents), ("copies", copies), ("naive", naive))}
    a, b = idx["parents"], idx["copies"]
    assert a["mt_groups"] == b["mt_groups"] and a["closure_bins"] == b["closure_bins"]
    for p, c in zip(a["closure"]["bins"], b["closure"]["bins"]):
        for plane in ("SP", "VP"):
            assert c[plane]["n_eff"] == pytest.approx(p[plane]["n_eff"], rel=1e-9)
            assert c[plane]["sigma_delta"] == pytest.approx(p[plane]["sigma_delta"], rel=1e-9)
    for p, c in zip(a["fit_n_eff"], b["fit_n_eff"]):
        assert c == pytest.approx(p, rel=1e-9)
    assert b["nonclosure_kappa"] == pytest.approx(a["nonclosure_kappa"], rel=1e-9)
    # without the records the copies' N_eff is about K times too large, and the guard merges less
    from svjscout.datacards.regions import region_yields

    assert len(a["mt_groups"]) > 1 and len(idx["naive"]["mt_groups"]) > len(a["mt_groups"])
    neff_naive, neff_a = (region_yields(i.xy_mt, DS_R, WP_R, parents=i.parents).merged(a["mt_groups"]).neff
                          for i in (naive, parents))
    assert np.median(neff_naive / neff_a) > 0.7 * K
    for plane in ("SP", "VP"):
        ta, tb = (abcd_prediction(i.xy_mt, DS_R, WP_R, plane=plane, parents=i.parents) for i in (parents, copies))
        assert np.allclose(tb.sigma_nhat_B, ta.sigma_nhat_B, rtol=1e-9) and np.allclose(tb.var_B, ta.var_B, rtol=1e-9)
    # the signal's MC-statistics nuisances likewise
    groups = a["mt_groups"]
    sa, sb = (signal_systematics(i.xy_mt, None, DS_R, WP_R, groups, "svj",
                                 parents=i.parents) for i in (parents, copies))
    assert sb.mcstat.keys() == sa.mcstat.keys() and len(sa.mcstat) > 0
    assert all(sb.mcstat[c] == pytest.approx(sa.mcstat[c], rel=1e-9) for c in sa.mcstat)
    assert sb.mcstat_b_total == pytest.approx(sa.mcstat_b_total, rel=1e-9)


def test_processor_output_region_variances(run_all):
    """The processor's own output: identical copies, so region variances of `copies` equal those of
    the parents (`orig`), and mt_abcd_at rebuilds the processor's parent-grouped mt_abcd."""
    from svjscout.datacards.parents import StatInputs
    from svjscout.datacards.regions import mt_abcd_at, region_yields

    out = run_all
    rec = StatInputs.from_output(out).parents  # from output["parent_fills"], the processor's records
    assert rec is not None and sorted(rec.datasets) == ["copies", "mixed", "own"]
    xy = out["hists"]["xy_mt"]
    ds = {d: {"kind": "background"} for d in xy.axes["dataset"]}
    every = [list(range(len(xy.axes["mt"])))]
    for plane in ("SP", "VP"):
        o, c = (region_yields(xy, ds, WP_R, plane=plane, which=[d], parents=rec) for d in ("orig", "copies"))
        assert np.allclose(c.n, o.n, rtol=1e-6, atol=0) and np.allclose(c.var, o.var, rtol=1e-6, atol=0)
        assert np.allclose(c.merged(every).var, o.merged(every).var, rtol=1e-6, atol=0) and o.var.sum() > 0
    rebuilt = mt_abcd_at(xy, (0.5, 0.5), parents=rec)[{"dataset": "copies"}].view(flow=False)
    filled = out["hists"]["mt_abcd"][{"dataset": "copies"}].view(flow=False)
    assert np.allclose(rebuilt.value, filled.value, rtol=1e-9) and np.allclose(rebuilt.variance, filled.variance,
                                                                               rtol=1e-9)
