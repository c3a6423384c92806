"""Each dataset's normalisation inputs from its files: sum of generator weights, cross section.

:func:`file_normalisation` reads one file's ``Runs`` tree (``genEventSumw``, ``xsec``) and its
generator metadata; :func:`dataset_info` turns a dataset's files into the :class:`DatasetInfo`
the processor normalises with (values given explicitly win over the files'); and
:func:`processor_config_from_fileset` does it for a whole coffea fileset, so that the processor
can be built from Python without a job file:

>>> # cfg = processor_config_from_fileset({"qcd": ["qcd.root"]}, {"qcd": "background"},
>>> #                                     lundnet_model="lundnet.onnx", twin_model="twin.onnx")

``svjscout run`` (:mod:`svjscout.jobs.runner`) uses the same functions in its preflight.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.processors.files import open_root
from svjscout.processors.schema import BranchMap, check_file
from svjscout.processors.settings import DatasetInfo, ProcessorConfig

__all__ = ["FileNorm", "file_normalisation", "combine_xsecs", "XSEC_TOLERANCE", "dataset_info",
           "fileset_paths", "processor_config_from_fileset", "read_file_norm"]

log = logging.getLogger(__name__)


@dataclass
class FileNorm:
    """What the preflight learnt of one usable file: entries, sum of weights, cross section, metadata."""

    entries: int
    sumw: float | None
    xsec: float | None
    meta: dict
    generated: int | None = None  # the Runs tree's genEventCount: the events generated, before any skim


def file_normalisation(path: str, tree: str, gen_weight: str, sum_gen_weight: bool,
                        require_complete: bool = True) -> tuple[float | None, float | None, dict, int | None]:
    """(sumw, xsec or None, generator metadata, events generated or None) of one file, read through
    :func:`open_root`.

    ``sumw`` is the ``Runs`` tree's ``genEventSumw`` (the events generated, before any skim), the
    events generated its ``genEventCount``. A file without them gives the sum of its ``genWeight``
    only when ``sum_gen_weight`` (the dataset's ``sumw_from: genWeight``); otherwise None: a skimmed
    file's genWeight sum undercounts sumw.
    """
    with open_root(path, "the normalisation (Runs tree, svjscout_meta)", require_complete) as f:
        meta: dict = {}
        if "svjscout_meta" in f:
            meta = json.loads(str(f["svjscout_meta"]))
        if "Runs" in f and "genEventSumw" in f["Runs"].keys():
            runs = f["Runs"].arrays(library="np")
            xsec = float(runs["xsec"][0]) if "xsec" in runs else None
            generated = int(np.sum(runs["genEventCount"])) if "genEventCount" in runs else None
            return float(np.sum(runs["genEventSumw"])), xsec, meta, generated
        if not sum_gen_weight:
            return None, None, meta, None
        return float(np.sum(f[tree][gen_weight].array(library="np"))), None, meta, None


def read_file_norm(path: str, bmap: BranchMap, is_mc: bool, sum_gen_weight: bool) -> FileNorm:
    """Open and check one file (:func:`check_file`: tree, branches, readability) and, for MC, read
    its normalisation (:func:`file_normalisation`).

    Raises:
        InputFileError: the file cannot be used (names it), e.g. its tree has no events.
    """
    n = check_file(path, bmap, is_mc)
    if n == 0:
        raise InputFileError(f"{path}: tree {bmap.tree!r} has no events")
    if not is_mc:
        return FileNorm(n, None, None, {})
    s, x, meta, generated = file_normalisation(path, bmap.tree, bmap.gen_weight, sum_gen_weight)
    return FileNorm(n, s, x, meta, generated)


#: Files of one dataset whose recorded cross sections differ by less than this (relative) are
#: independent runs of one generator setup; their estimates are combined.
XSEC_TOLERANCE = 0.05


def combine_xsecs(dataset: str, xsecs: list[tuple[str, float, float]]) -> float | None:
    """One cross section for a dataset from its files' (path, xsec, sumw).

    Equal values pass through. Values within :data:`XSEC_TOLERANCE` of each other (e.g. Pythia's
    estimate from several generation runs of the same process) are averaged with the files' sum
    of weights as weights, which is the estimate of the combined run. A larger spread means the
    files are not one process: :class:`ConfigError` naming the dataset and every file's value.
    """
    if not xsecs:
        return None
    values = np.array([x for _, x, _ in xsecs], dtype=float)
    if np.all(values == values[0]):
        return float(values[0])
    if values.min() <= 0 or values.max() / values.min() - 1 > XSEC_TOLERANCE:
        listing = ", ".join(f"{p}: {x:g} pb" for p, x, _ in xsecs)
        raise ConfigError(f"dataset {dataset!r}: files disagree on xsec by more than {XSEC_TOLERANCE:.0%} "
                          f"({listing}); set datasets.{dataset}.xsec")
    weights = np.array([max(s, 0.0) for _, _, s in xsecs], dtype=float)
    if weights.sum() <= 0:
        weights = np.ones_like(values)
    combined = float(np.sum(weights * values) / weights.sum())
    log.info("dataset %r: %d files with cross sections %s pb combined to %g pb (sum-of-weights weighted)",
             dataset, len(values), np.unique(values).tolist(), combined)
    return combined


def dataset_info(name: str, kind: str, files: dict[str, FileNorm], xsec: float | None = None,
                 sumw: float | None = None, mzprime: float | None = None, rinv: float | None = None) -> DatasetInfo:
    """A dataset's :class:`DatasetInfo` from its usable files (values given here win over the files').

    The sum of weights is the sum over ``files`` (a dataset that lost files is normalised to what
    is processed); the cross section the files' (:func:`combine_xsecs`); ``mzprime`` and ``rinv``
    of a signal from the generator metadata of its first file.

    Raises:
        ConfigError: an MC dataset without a cross section or sum of weights (names the dataset).
    """
    is_mc = kind != "data"
    total = sum(f.sumw for f in files.values() if f.sumw is not None)
    xsecs = [(p, f.xsec, f.sumw or 0.0) for p, f in files.items() if f.xsec is not None]
    gen_cfg = next(iter(files.values())).meta.get("config", {}) if files else {}
    info = DatasetInfo(
        kind=cast(Literal["signal", "background", "data"], kind),  # a str from the caller: pydantic checks it
        xsec=xsec if xsec is not None else (combine_xsecs(name, xsecs) if is_mc else None),
        sumw=sumw if sumw is not None else (total if is_mc else None),
        mzprime=mzprime if mzprime is not None else (gen_cfg.get("mzprime") if kind == "signal" else None),
        rinv=rinv if rinv is not None else (gen_cfg.get("rinv") if kind == "signal" else None),
    )
    if is_mc and (not info.xsec or not info.sumw):
        raise ConfigError(f"dataset {name!r}: no cross section found in its files; set datasets.{name}.xsec")
    return info


def fileset_paths(fileset: dict) -> dict[str, list[str]]:
    """``{dataset: [path, ...]}`` of a coffea fileset (``{dataset: [paths]}``, ``{dataset: {"files":
    [paths] or {path: tree}}}``)."""
    out = {}
    for name, spec in fileset.items():
        files = spec.get("files", spec) if isinstance(spec, dict) else spec
        out[name] = list(files)
    return out


def processor_config_from_fileset(fileset: dict, kinds: dict[str, str], branch_map: BranchMap | None = None,
                                  sum_gen_weight: bool = False, **settings) -> ProcessorConfig:
    """A :class:`ProcessorConfig` for a coffea fileset: every file checked (tree, branches) and each
    dataset's cross section and sum of weights read from its files, as ``svjscout run`` does.

    Args:
        fileset: coffea's fileset; ``kinds``: dataset -> ``signal`` / ``background`` / ``data``.
        sum_gen_weight: files without a ``Runs`` tree count their ``genWeight`` (unskimmed files only).
        settings: the analysis settings (:class:`ProcessorConfig` keys: ``lundnet_model``,
            ``twin_model``, ``wp``, ``cuts``, ...), and optionally ``datasets`` entries to override.

    Raises:
        InputFileError: a file that cannot be used (names it); ConfigError: a dataset without a
            kind, or whose normalisation is unknown.
    """
    bmap = branch_map or BranchMap()
    given = settings.pop("datasets", {}) or {}
    infos = {}
    for name, paths in fileset_paths(fileset).items():
        if name not in kinds:
            raise ConfigError(f"dataset {name!r}: no kind given (kinds: signal, background or data)")
        is_mc = kinds[name] != "data"
        files = {}
        for path in paths:
            files[path] = read_file_norm(path, bmap, is_mc, sum_gen_weight)
        extra = dict(given.get(name, {}))
        extra.pop("kind", None)
        infos[name] = dataset_info(name, kinds[name], files, **extra)
    return ProcessorConfig(datasets=infos, branch_map=bmap, **settings)
