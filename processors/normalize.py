"""Normalisation of a processor output: ``xsec * lumi / sumw`` per dataset, parent-grouped variances.

The processor fills every histogram with the events' generator weights (``genWeight``, 1 for
data) and scales nothing; :func:`normalize` turns a summed output into yields. It is a pure
function: it returns a NEW output and leaves its argument as it was, and it is idempotent: the
output records, per dataset, that it is normalised and by which factor
(``output["normalisation"]``), and a second call returns it unchanged (a dataset recorded with
another factor than the settings give is refused: the output was normalised with other settings).
:meth:`SVJProcessor.postprocess` calls it, so coffea's ``processor.Runner`` gives normalised
histograms; ``svjscout run`` (:mod:`svjscout.jobs.runner`) gets them the same way.

Scaling once, after the sum, makes the histograms bit-identical whatever the chunking or the
number of workers (sums of integer weights are exact in float64).

Statistical errors of detector copies: a generated ("parent") event passed K times through the
detector response gives K correlated events (branch ``parent``, weights ``w_parent / K``). The
variance of a bin is then ``sum_p (sum_{i in p, i in bin} w_i)^2`` over parents p, not the
``sum_i w_i^2`` that the histogram's Weight storage accumulates. For MC events with a
``parent`` branch every chunk returns its ``xy_mt`` fills (``output["parent_fills"]``: parent
key, flat bin, weight; :func:`parent_fills`) and :func:`normalize` replaces the ``xy_mt`` and
``mt_abcd`` variances by the parent-grouped ones (:func:`parent_grouped_variance`). Files
without ``parent`` (data, K = 1, older samples) are unchanged.

After :func:`normalize`, ``output["parent_fills"]`` holds per such dataset the scaled weight sums
of each (parent key, flat ``xy_mt`` bin) (``{"key", "bin", "weight"}`` numpy arrays, and ``"subset"``, the
parent's subset code, with several subsets of ``analysis.event_subset``), from which
the variance of any union of bins (an ABCD region) can be grouped by parent too
(:meth:`svjscout.datacards.parents.StatInputs.from_output` takes them explicitly), and ``output["parent_errors"]``
summarises them (``{dataset: {fills, selected, parent_bins, complete}}``). Both are absent without
parent ids.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
from coffea import processor

from svjscout.core.exceptions import ConfigError
from svjscout.core.parents import group_fills, parent_grouped_variance
from svjscout.core.regions import REGION_INDEX, REGIONS
from svjscout.processors import histograms as H
from svjscout.processors.settings import ProcessorConfig

__all__ = ["normalize", "is_normalized", "normalisation_factors", "flat_bins", "parent_fills", "dense_hists",
           "parent_grouped_variance", "NORMALISATION_KEY"]

log = logging.getLogger(__name__)

#: The output key recording, per dataset, the factor its histograms were scaled by.
NORMALISATION_KEY = "normalisation"


def flat_bins(h, categories: dict | None = None, **coords) -> np.ndarray:
    """Per entry, the flat index into ``h.view(flow=True)`` (C order) of the bin a fill with
    these coordinates lands in (scalars broadcast; flow bins included, like the fill).

    ``categories`` (``{axis name: [names]}``) replaces a category axis of ``h`` by the fixed axis of
    those names (with its overflow bin): a chunk's histograms have a growing dataset axis of their
    own dataset only, its parent records index the output's histograms, which have every dataset.
    """
    categories = categories or {}
    idx, shape = [], []
    for ax in h.axes:
        if ax.name in categories:
            names, value = list(categories[ax.name]), coords[ax.name]
            idx.append(np.asarray(names.index(value) if isinstance(value, str) else [names.index(v) for v in value],
                                  dtype=np.int64))
            shape.append(len(names) + 1)
            continue
        i = np.asarray(ax.index(coords[ax.name]), dtype=np.int64)
        idx.append(i + 1 if ax.traits.underflow else i)
        shape.append(ax.extent)
    return np.ravel_multi_index(np.broadcast_arrays(*idx), tuple(shape)).astype(np.int64)


def parent_fills(keys: np.ndarray, bins: np.ndarray, weights: np.ndarray, subset: np.ndarray | None = None) -> dict:
    """One chunk's record of histogram fills: parent key (uint64), flat bin (int64), weight
    (float64) per filled event, as coffea column accumulators (concatenated when chunks merge);
    with ``subset`` also each fill's subset code (int8, :mod:`svjscout.core.splits`: several
    subsets of ``analysis.event_subset``)."""
    out = {"key": processor.column_accumulator(np.asarray(keys, dtype=np.uint64)),
           "bin": processor.column_accumulator(np.asarray(bins, dtype=np.int64)),
           "weight": processor.column_accumulator(np.asarray(weights, dtype=np.float64))}
    if subset is not None:
        out["subset"] = processor.column_accumulator(np.asarray(subset, dtype=np.int8))
    return out


def _subset_of_keys(keys: np.ndarray, subset: np.ndarray, grouped_keys: np.ndarray, dataset: str) -> np.ndarray:
    """The subset code of every key of ``grouped_keys``, from the records' ``keys`` and ``subset``
    (one subset per parent: the split is by parent; two codes for one key are refused)."""
    order = np.lexsort((subset, keys))
    k, s = keys[order], subset[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    uk, us = k[first], s[first]
    last = np.ones(len(k), dtype=bool)
    last[:-1] = k[1:] != k[:-1]
    if not np.array_equal(us, s[last]):
        raise ConfigError(f"dataset {dataset!r}: a parent key carries two subset codes in its records (two generated "
                          "events with one parent id?): the subsets cannot be told apart")
    return us[np.searchsorted(uk, grouped_keys)]


def normalisation_factors(config: ProcessorConfig) -> dict[str, dict]:
    """Per dataset of ``config``: ``{"factor", "xsec", "sumw", "lumi", "subset_scale"}``, with
    ``factor = xsec * lumi / sumw * subset_scale`` for MC and 1 for data."""
    out = {}
    for dataset, info in config.datasets.items():
        scale = config.subset_scale(info)
        out[dataset] = {"factor": info.norm(config.lumi) * scale, "kind": info.kind, "xsec": info.xsec,
                        "sumw": info.sumw, "lumi": config.lumi if info.is_mc else None, "subset_scale": scale}
    return out


def is_normalized(output: dict) -> bool:
    """Whether ``output`` went through :func:`normalize` (it records its factors)."""
    return bool(output.get(NORMALISATION_KEY))


def _pending(output: dict, factors: dict[str, dict]) -> list[str]:
    """The datasets of ``factors`` not yet normalised in ``output``; refuses a dataset recorded
    with another factor (the output was normalised with other settings)."""
    done = output.get(NORMALISATION_KEY) or {}
    for dataset, rec in done.items():
        want = factors.get(dataset)
        if want is not None and not np.isclose(rec["factor"], want["factor"], rtol=1e-12, atol=0):
            raise ConfigError(f"dataset {dataset!r}: the output is normalised already with factor "
                              f"{rec['factor']:.10g}, the settings give {want['factor']:.10g} (xsec, sumw, "
                              f"analysis.lumi or analysis.event_subset differ); normalise the raw output instead")
    return [d for d in factors if d not in done]


def normalize(output: dict, config: ProcessorConfig, datasets=None) -> dict:
    """A new output with every dataset scaled by ``xsec * lumi / sumw`` (and the parent-grouped
    variances); ``output`` itself is not modified. Idempotent: datasets already normalised (listed
    in ``output["normalisation"]``) are left as they are, so a second call returns its argument.

    With ``analysis.event_subset`` MC datasets are scaled by ``1 / fraction`` of the subset too
    (:meth:`ProcessorConfig.subset_scale`): the yields of the full sample, estimated.
    ``datasets`` (default: all of ``config``) restricts the normalisation to some datasets (the
    dask-awkward mode normalises each dataset's output; their sum is then normalised as a whole).

    Values scale by the factor, variances by its square; the cutflow's weighted column too.
    Before scaling, the ``xy_mt`` variances of datasets with detector copies become
    ``sum_p (sum_{i in p} w_i)^2`` per bin over parents p (:func:`_parent_grouped_xy_mt`), and
    those of ``mt_abcd`` the same per region and M_T bin (:func:`_parent_grouped_mt_abcd`).
    """
    factors = normalisation_factors(config)
    if datasets is not None:
        unknown = sorted(set(datasets) - set(factors))
        if unknown:
            raise ConfigError(f"dataset(s) {unknown} are not in the processor's datasets {sorted(factors)}")
        factors = {d: f for d, f in factors.items() if d in datasets}
    todo = _pending(output, factors)
    if not todo:
        return output
    out = dict(output)
    if "hists" in output:
        out["hists"] = dense_hists(output["hists"], config)
    if "cutflow" in output:
        out["cutflow"] = {ds: dict(c) for ds, c in output["cutflow"].items()}
    if "parent_fills" in output:
        out["parent_fills"] = {ds: dict(rec) for ds, rec in output["parent_fills"].items()}
    if "parent_errors" in output:
        out["parent_errors"] = copy.deepcopy(output["parent_errors"])
    summary = _parent_grouped_xy_mt(out, todo)
    if summary:
        out["parent_errors"] = {**out.get("parent_errors", {}), **summary}
        _parent_grouped_mt_abcd(out, config, summary)
    hists = out.get("hists", {})
    for dataset in todo:
        norm = factors[dataset]["factor"]
        if dataset in out.get("parent_fills", {}):
            out["parent_fills"][dataset]["weight"] = out["parent_fills"][dataset]["weight"] * norm
        for h in hists.values():
            if dataset not in h.axes["dataset"]:
                continue
            i = h.axes["dataset"].index(dataset)
            view = h.view(flow=True)
            view.value[i] *= norm
            view.variance[i] *= norm**2
        if dataset in out.get("cutflow", {}):
            out["cutflow"][dataset]["weighted"] = out["cutflow"][dataset]["weighted"] * norm
    out[NORMALISATION_KEY] = {**(output.get(NORMALISATION_KEY) or {}), **{d: factors[d] for d in todo}}
    return out


def dense_hists(hists: dict, config: ProcessorConfig) -> dict:
    """New histograms on the output's fixed dataset axes (:func:`~svjscout.processors.histograms.densify`):
    every dataset of ``config`` in sorted order, the signal datasets for ``xy_mt_syst``, as
    :func:`~svjscout.processors.histograms.book` gives them; a chunk's have its own dataset only."""
    every = sorted(config.datasets)
    signal = sorted(d for d, info in config.datasets.items() if info.kind == "signal")
    out = {}
    for name, h in hists.items():
        try:
            out[name] = H.densify(h, signal if name == "xy_mt_syst" else every)
        except ValueError as err:
            raise ConfigError(f"histogram {name!r}: {err} (an output of another job's configuration?)") from err
    return out


def _records(rec: dict) -> dict[str, np.ndarray]:
    return {k: (v.value if isinstance(v, processor.column_accumulator) else np.asarray(v)) for k, v in rec.items()}


def _parent_grouped_xy_mt(output: dict, datasets=None) -> dict:
    """Replace the unscaled ``xy_mt`` variances of the datasets in ``output["parent_fills"]`` (those
    of ``datasets``, all without) by the parent-grouped ones (:func:`parent_grouped_variance`), in
    ``output`` (the caller's copy); returns a summary per dataset.

    Every selected event fills ``xy_mt`` once, so a dataset whose records number its cutflow's
    last row has all its fills recorded and its variance is the grouped one. A dataset mixing
    files with and without ``parent`` keeps the Weight storage's ``sum w^2`` and adds the
    recorded parents' cross terms (grouped - naive). Where no parent has two fills in one bin
    the variance is left as filled (it is ``sum w^2`` already, bit for bit).

    The records of those datasets become the compact, sorted per-(parent, bin) sums
    (:func:`group_fills`; plain numpy arrays), which :func:`normalize` scales like the histograms.
    """
    fills = output.get("parent_fills") or {}
    h = output.get("hists", {}).get("xy_mt")
    summary = {}
    view = h.view(flow=True) if h is not None else None
    names = list(h.axes["dataset"]) if h is not None else []
    for dataset in sorted(fills):
        if datasets is not None and dataset not in datasets:
            continue
        rec = _records(fills[dataset])
        n = len(rec["weight"])
        selected = int(output.get("cutflow", {}).get(dataset, {}).get("raw", [0])[-1])
        complete = n == selected
        gk, gb, gw = group_fills(rec["key"], rec["bin"], rec["weight"])
        fills[dataset] = {"key": gk, "bin": gb, "weight": gw}
        if "subset" in rec:
            fills[dataset]["subset"] = _subset_of_keys(rec["key"], rec["subset"], gk, dataset)
        summary[dataset] = {"fills": n, "selected": selected, "parent_bins": len(gw), "complete": complete}
        if len(gw) == n or dataset not in names or view is None:  # view is None only when names is empty
            continue
        shape, i = view.shape, names.index(dataset)
        var = np.bincount(gb, weights=gw**2, minlength=view.size).reshape(shape)[i]
        if complete:
            view.variance[i] = var
        else:
            order = np.lexsort((rec["weight"], rec["bin"]))
            naive = np.bincount(rec["bin"][order], weights=rec["weight"][order] ** 2,
                                minlength=view.size).reshape(shape)[i]
            view.variance[i] = view.variance[i] + (var - naive)
            log.info("dataset %r: %d of %d selected events have a parent id; their copies' correlations are "
                     "added to the xy_mt variances", dataset, n, selected)
    return summary


def _parent_grouped_mt_abcd(output: dict, config: ProcessorConfig, summary: dict) -> None:
    """The same for ``mt_abcd`` (complete datasets of ``summary`` only), grouped per (parent,
    region, M_T bin): a parent's copies in different ``xy_mt`` bins of one region add before squaring too."""
    h, xy = output.get("hists", {}).get("mt_abcd"), output.get("hists", {}).get("xy_mt")
    if h is None or xy is None:
        return
    view, xy_shape = h.view(flow=True), xy.view(flow=True).shape
    names = list(h.axes["dataset"])
    ix0 = H.edge_index(xy.axes["x"], config.wp[0], "x0") + 1  # flow layout: bin i at i + 1
    iy0 = H.edge_index(xy.axes["y"], config.wp[1], "y0") + 1
    # mt_abcd's region-axis index per (x above, y above), through the one region rule (core.regions)
    axis_of = np.array([h.axes["region"].index(r) for r in REGIONS])
    for dataset, s in summary.items():
        if not s["complete"] or s["parent_bins"] == s["fills"] or dataset not in names:
            continue
        rec = output["parent_fills"][dataset]
        d, p, ix, iy, imt = np.unravel_index(rec["bin"], xy_shape)
        region = axis_of[REGION_INDEX[(ix >= ix0).astype(int), (iy >= iy0).astype(int)]]
        bins = np.ravel_multi_index((d, p, region, imt), view.shape)
        var = parent_grouped_variance(rec["key"], bins, rec["weight"], view.size)[0]
        i = names.index(dataset)
        view.variance[i] = var.reshape(view.shape)[i]
