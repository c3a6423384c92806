"""Skim data for both trainers, streamed in parquet row groups: memory bounded by a buffer, not the sample.

* :class:`SkimSource`: the skim files (or folders of them), their row groups and schemas; one row
  group is read at a time (:meth:`SkimSource.read`), only the columns asked for.
* :func:`split_codes`: the event split of :mod:`svjscout.core.splits` (``parent`` falls back to
  ``event``, ``run``/``luminosityBlock`` to 0), computed per row group.
* :class:`ClassWeights`: the trainers' class weights from sums accumulated over a stream (first
  pass), applied row group by row group (one code path for the in-memory and streamed data).
* :class:`Reservoir`: a fixed-size uniform subset of a stream (validation events of the twin,
  training events for the baselines' orientation), rows kept in stream order.
* :func:`plan_buffers` / :func:`allocate_batches`: per-epoch, seeded plans. An epoch visits the
  row groups in a random order; consecutive row groups form *buffers* of about ``buffer_rows``
  kept rows (a buffer is the unit held in memory). LundNet visits every jet of every buffer once
  (shuffled within the buffer). The twin draws each minibatch of ``batch_size`` events uniformly
  with replacement inside one buffer; the buffer of minibatch ``j`` is the one holding position
  ``(j + u) / B`` of the kept rows laid end to end (systematic sampling, ``u`` uniform): a
  buffer of ``K_b`` rows serves ``B K_b / N`` minibatches in expectation, so every event has the
  same expected number of draws as in uniform sampling from the whole split, and the
  expectation of the weighted loss (the weights enter the loss) is that of the full sample.
* :func:`rng` / :func:`torch_generator`: generators seeded by ``(seed, *keys)``, e.g.
  ``(seed, epoch, batch)``: a plan can be rebuilt from the stream position alone (resume).
* :func:`resolve_device`: ``auto`` | ``cpu`` | ``cuda[:n]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.models.weights import require_nonnegative

__all__ = [
    "ClassWeights",
    "Reservoir",
    "RowGroup",
    "SkimSource",
    "allocate_batches",
    "key_columns",
    "plan_buffers",
    "resolve_device",
    "rng",
    "skim_files",
    "split_codes",
    "torch_generator",
]

#: Optional columns of the split key (absent: run/lumi 0, parent = event).
KEY_COLUMNS = ("run", "luminosityBlock", "parent")


def skim_files(paths: Sequence[str | Path]) -> list[Path]:
    """Parquet files of ``paths`` (a folder: every ``*.parquet`` below it, sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.parquet"))
            if not found:
                raise InputFileError(f"{p}: directory holds no *.parquet skim file (searched recursively)")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputFileError(f"{p}: skim file not found")
    if not files:
        raise InputFileError("no skim file given")
    return files


@dataclass(frozen=True)
class RowGroup:
    """One parquet row group: file index (into :attr:`SkimSource.files`), row-group index, rows,
    and ``start``: the global index of its first row (files and row groups in order)."""

    file: int
    index: int
    rows: int
    start: int


class SkimSource:
    """Skim parquet files read one row group at a time.

    Args:
        paths: files or folders (every ``*.parquet`` below).
        required: columns every file must have (:class:`InputFileError` names file and columns).
    """

    def __init__(self, paths: Sequence[str | Path], required: Iterable[str] = ()):
        self.files = skim_files(paths)
        self.columns: list[set[str]] = []
        self.row_groups: list[RowGroup] = []
        start = 0
        for i, path in enumerate(self.files):
            try:
                meta = pq.ParquetFile(str(path)).metadata
                names = set(pq.read_schema(str(path)).names)
            except Exception as err:
                raise InputFileError(f"{path}: not a readable parquet file: {err}") from err
            missing = [c for c in required if c not in names]
            if missing:
                raise InputFileError(f"{path}: skim column(s) {missing} missing, found {sorted(names)}")
            self.columns.append(names)
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                self.row_groups.append(RowGroup(i, g, n, start))
                start += n
        self.n_rows = start

    def __len__(self) -> int:
        return len(self.row_groups)

    def has(self, rg: RowGroup, column: str) -> bool:
        """Whether the file of ``rg`` has ``column``."""
        return column in self.columns[rg.file]

    def path(self, rg: RowGroup) -> Path:
        return self.files[rg.file]

    def read(self, rg: RowGroup, columns: Iterable[str]) -> dict[str, Any]:
        """Columns of one row group (those the file has): numpy arrays; strings as object arrays;
        list columns as awkward arrays."""
        cols = [c for c in dict.fromkeys(columns) if self.has(rg, c)]
        path = self.path(rg)
        try:
            table = pq.ParquetFile(str(path)).read_row_group(rg.index, columns=cols)
        except Exception as err:
            raise InputFileError(f"{path}: cannot read row group {rg.index}: {err}") from err
        out: dict[str, Any] = {}
        for c in cols:
            col = table.column(c)
            if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
                out[c] = ak.from_arrow(col)
            else:
                out[c] = col.to_numpy(zero_copy_only=False) if not pa.types.is_dictionary(col.type) else \
                    np.asarray(col.to_pylist(), dtype=object)
        return out

    def iter(self, columns: Iterable[str], order: Sequence[int] | None = None) -> Iterator[tuple[RowGroup, dict]]:
        """(row group, columns) for every row group (``order``: row-group indices)."""
        columns = list(columns)
        for i in (range(len(self.row_groups)) if order is None else order):
            yield self.row_groups[i], self.read(self.row_groups[i], columns)


def key_columns(cols: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(run, lumi, parent) as uint64 with the fallbacks of :mod:`svjscout.core.splits`."""
    event = np.asarray(cols["event"]).astype(np.uint64)
    n = len(event)
    run = np.asarray(cols["run"]).astype(np.uint64) if "run" in cols else np.zeros(n, np.uint64)
    lumi = (np.asarray(cols["luminosityBlock"]).astype(np.uint64) if "luminosityBlock" in cols
            else np.zeros(n, np.uint64))
    parent = np.asarray(cols["parent"]).astype(np.uint64) if "parent" in cols else event.copy()
    return run, lumi, parent


def split_codes(dataset, run, lumi, parent, seed: int, fractions: Sequence[float]) -> np.ndarray:
    """Subset codes (:data:`splits.TRAIN` / ``VAL`` / ``TEST``) of events."""
    return splits.split_of(np.asarray(dataset), run, lumi, parent, seed, fractions)


class ClassWeights:
    """Class weights from sums over a sample, accumulated in chunks.

    ``w = physics weight`` (negative ones refused, :mod:`svjscout.models.weights`); with
    ``balance`` every signal group first gets total 1 (a group of zero total weight: 1/count per
    row with ``empty_group="uniform"``, left at 0 with ``"keep"``); then background and signal
    are scaled to ``sum(signal) / sum(background) = ratio`` and a mean weight of 1 over the rows
    accumulated.

    Args:
        ratio: sum of signal / sum of background weights.
        balance: normalise every signal group (signal point) to the same total first.
        empty_group: ``uniform`` | ``keep``.
    """

    def __init__(self, ratio: float = 1.0, balance: bool = True, empty_group: str = "keep"):
        self.ratio, self.balance, self.empty_group = float(ratio), bool(balance), empty_group
        self.n = 0
        self.bkg_sum = 0.0
        self.groups: dict[Any, list[float]] = {}  # group -> [count, sum]
        self._factors: tuple[float, float, dict[Any, tuple[float, float]]] | None = None

    def add(self, label: np.ndarray, weight: np.ndarray, group: np.ndarray, where: Any = "the skim",
            dataset: np.ndarray | None = None) -> None:
        """Accumulate a chunk: labels (1 signal), physics weights, signal group keys (per row)."""
        w = require_nonnegative(weight, where, dataset)
        sig = np.asarray(label) == 1
        self.n += len(w)
        self.bkg_sum += float(w[~sig].sum())
        if sig.any():
            keys, inv = _keys(np.asarray(group)[sig])
            counts = np.bincount(inv, minlength=len(keys))
            sums = np.bincount(inv, w[sig], minlength=len(keys))
            for k, c, s in zip(keys, counts, sums):
                acc = self.groups.setdefault(k, [0, 0.0])
                acc[0] += int(c)
                acc[1] += float(s)
        self._factors = None

    def factors(self) -> tuple[float, float, dict[Any, tuple[float, float]]]:
        """(background factor, signal factor, group -> (multiplier, offset)): a signal row of group
        ``g`` gets ``signal_factor * (w * multiplier + offset)``, a background row ``w * bkg_factor``."""
        if self._factors is None:
            per: dict[Any, tuple[float, float]] = {}
            s_s = 0.0
            for k, (count, total) in self.groups.items():
                if not self.balance:
                    per[k] = (1.0, 0.0)
                elif total > 0 or (total != 0 and self.empty_group == "keep"):
                    per[k] = (1.0 / total, 0.0)
                elif self.empty_group == "uniform":
                    per[k] = (0.0, 1.0 / count)
                else:
                    per[k] = (1.0, 0.0)
                s_s += total * per[k][0] + count * per[k][1]
            r, n = self.ratio, self.n
            f_b = n / (1 + r) / self.bkg_sum if self.bkg_sum > 0 else (1.0 if self.empty_group == "keep" else 0.0)
            f_s = n * r / (1 + r) / s_s if s_s > 0 else (1.0 if self.empty_group == "keep" else 0.0)
            self._factors = (f_b, f_s, per)
        return self._factors

    def apply(self, label: np.ndarray, weight: np.ndarray, group: np.ndarray) -> np.ndarray:
        """Training weights (float64) of a chunk."""
        f_b, f_s, per = self.factors()
        w = np.asarray(weight, dtype=np.float64)
        out = w * f_b
        sig = np.asarray(label) == 1
        if sig.any():
            keys, inv = _keys(np.asarray(group)[sig])
            mult = np.array([per.get(k, (0.0, 0.0))[0] for k in keys])[inv]
            off = np.array([per.get(k, (0.0, 0.0))[1] for k in keys])[inv]
            out[sig] = f_s * (w[sig] * mult + off)
        return out


def _keys(group: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """Distinct keys of a group column (1-D; or 2-D: one tuple per row) and the inverse index."""
    if group.ndim == 2:
        uniq, inv = np.unique(group, axis=0, return_inverse=True)
        return [tuple(float(v) for v in row) for row in uniq], inv.reshape(-1)
    uniq, inv = np.unique(group.astype(str) if group.dtype == object else group, return_inverse=True)
    return [str(v) if group.dtype == object else v.item() for v in uniq], inv.reshape(-1)


class Reservoir:
    """A uniform random subset of at most ``cap`` rows of a stream (all rows if ``cap`` is None),
    returned in stream order. Each row gets a random priority (seeded by ``seed`` and the chunk's
    position), the ``cap`` smallest are kept: memory O(cap + chunk), independent of the order
    chunks arrive in for a given chunk numbering."""

    def __init__(self, cap: int | None, seed: int):
        self.cap, self.seed = cap, int(seed)
        self._parts: list[dict[str, np.ndarray]] = []
        self._n = 0
        self.seen = 0

    def add(self, cols: Mapping[str, np.ndarray], index: np.ndarray) -> None:
        """Add a chunk: columns (equal lengths) and the rows' global indices (stream order)."""
        index = np.asarray(index, dtype=np.int64)
        self.seen += len(index)
        if not len(index):
            return
        part = {k: np.asarray(v) for k, v in cols.items()} | {"_index": index}
        if self.cap is not None:
            part["_prio"] = rng(self.seed, int(index[0])).random(len(index))
        self._parts.append(part)
        self._n += len(index)
        if self.cap is not None and self._n > 2 * self.cap:
            self._shrink()

    def _shrink(self) -> None:
        cat = {k: np.concatenate([p[k] for p in self._parts]) for k in self._parts[0]}
        if self.cap is not None and len(cat["_index"]) > self.cap:
            keep = np.argpartition(cat["_prio"], self.cap - 1)[: self.cap]
            cat = {k: v[keep] for k, v in cat.items()}
        self._parts, self._n = [cat], len(cat["_index"])

    def result(self, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """The kept rows (stream order), ``_index`` included; empty arrays if nothing was added."""
        if not self._parts:
            return {}
        self._shrink()
        cat = self._parts[0]
        order = np.argsort(cat["_index"], kind="stable")
        return {k: cat[k][order] for k in (*columns, "_index")}


def plan_buffers(counts: Sequence[int], buffer_rows: int, generator: np.random.Generator) -> list[list[int]]:
    """Row groups (indices into ``counts``, the kept rows per row group) in a random order, cut
    into buffers of at least ``buffer_rows`` kept rows (the last one may hold fewer); row groups
    with no kept row are skipped."""
    order = generator.permutation(len(counts))
    buffers, cur, rows = [], [], 0
    for i in order:
        if counts[i] <= 0:
            continue
        cur.append(int(i))
        rows += int(counts[i])
        if rows >= buffer_rows:
            buffers.append(cur)
            cur, rows = [], 0
    if cur:
        buffers.append(cur)
    return buffers


def allocate_batches(sizes: Sequence[int], n_batches: int, generator: np.random.Generator) -> np.ndarray:
    """Buffer index of each of ``n_batches`` minibatches by systematic sampling over the kept rows
    laid end to end: buffer ``b`` serves ``n_batches * sizes[b] / sum(sizes)`` in expectation."""
    edges = np.cumsum(np.asarray(sizes, dtype=np.float64))
    pos = (np.arange(n_batches) + generator.random()) / n_batches * edges[-1]
    return np.searchsorted(edges, pos, side="right").clip(0, len(sizes) - 1)


def rng(seed: int, *keys: int) -> np.random.Generator:
    """numpy generator seeded by ``(seed, *keys)`` (non-negative ints)."""
    return np.random.default_rng([int(seed) % 2**63, *(int(k) % 2**63 for k in keys)])


def torch_generator(seed: int, *keys: int, device: Any = "cpu"):
    """torch generator seeded from :func:`rng` ``(seed, *keys)``."""
    import torch  # train extra: only the training needs torch (loading skims does not)

    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng(seed, *keys).integers(0, 2**62)))
    return gen


def resolve_device(name: str | None):
    """torch device for ``auto`` (CUDA if available, else CPU), ``cpu`` or ``cuda[:n]``."""
    import torch  # train extra: only the training needs torch (loading skims does not)

    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: CUDA is not available on this machine (use cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device {name!r}: {err}") from err
