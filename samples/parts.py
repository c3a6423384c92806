"""Finished chunks of a generated file, stored so that an interrupted generation resumes.

``svjscout generate -o OUT.root`` stores every finished chunk ``k`` in the folder ``OUT.root.parts/``
beside the output, as two files written atomically (a temporary name, then a rename):

* ``chunk_00000k.parquet``: the chunk's columns (:func:`awkward.to_parquet`, ZSTD; awkward's own
  form travels in the file, so types, records and jagged columns read back exactly);
* ``chunk_00000k.json``: the sidecar, written last (a part without it is unfinished and generated
  again): the chunk's counts and sums (``n_generated``, ``sumw``, ``sumw2``, ``ps_sumw``, ...,
  floats as Python writes them, so they read back bit for bit), its timing, the number of events
  asked for, and the **configuration digest** with the configuration itself.

The digest is the SHA-256 of the :class:`~svjscout.samples.generate.GenerationConfig` (every field
but ``workers``, which never changes a file), the Pythia settings it expands to, and the svjscout
and Pythia versions. A part whose digest differs from the run's is refused
(:class:`~svjscout.core.exceptions.GenerationError` naming the file and every field that
differs): delete the folder (or pass ``--fresh``) to start again. The file assembled from the
parts in chunk order is the file an uninterrupted run writes: the same chunk seeds, the same
columns, the same ``Runs`` sums (docs/generation.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from svjscout.core.exceptions import GenerationError

#: GenerationConfig fields that never change a generated file (left out of the digest)
EXECUTION_FIELDS = ("workers",)
#: result entries not stored in the sidecar (the columns go to the parquet file)
_NOT_IN_SIDECAR = ("columns",)


def parts_folder(out: str | Path) -> Path:
    """The parts folder of the output file ``out``: ``OUT.parts`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def identity(cfg, pythia_version: str, svjscout_version: str) -> dict:
    """What a part's contents depend on: the configuration (less :data:`EXECUTION_FIELDS`), the
    Pythia settings it expands to and the program versions."""
    config = {k: v for k, v in asdict(cfg).items() if k not in EXECUTION_FIELDS}
    return {"config": config, "settings": cfg.settings(), "pythia_version": pythia_version,
            "svjscout_version": svjscout_version}


def digest(ident: dict) -> str:
    """SHA-256 (hex) of an :func:`identity`, as canonical JSON."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def _differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable ``key: stored != current`` lines between two identities."""
    out = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} in the part, {b!r} in this run")
    return out


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _atomic(path: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path`` (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class PartStore:
    """The parts folder of one output file and one configuration identity."""

    def __init__(self, folder: str | Path, ident: dict):
        self.folder = Path(folder)
        self.ident = ident
        self.digest = digest(ident)

    def data_path(self, chunk: int) -> Path:
        return self.folder / f"chunk_{chunk:06d}.parquet"

    def sidecar_path(self, chunk: int) -> Path:
        return self.folder / f"chunk_{chunk:06d}.json"

    def stored(self) -> list[int]:
        """Chunks with a finished part (sidecar present), sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(int(p.stem.split("_")[1]) for p in self.folder.glob("chunk_*.json"))

    def check(self, chunk: int, n_events: int) -> dict:
        """The sidecar of ``chunk``, after checking that this run would write the same part.

        Raises:
            GenerationError: the part was written by another configuration (naming the file and
                each field that differs), for another number of events, or its data file is missing.
        """
        path = self.sidecar_path(chunk)
        try:
            side = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise GenerationError(f"{path}: unreadable part sidecar ({err}); delete it to generate chunk "
                                  f"{chunk} again") from err
        if side.get("config_digest") != self.digest:
            diff = _differences(side.get("identity", {}), self.ident) or ["(the digest only)"]
            raise GenerationError(
                f"{path}: chunk {chunk} was generated with another configuration (digest "
                f"{str(side.get('config_digest'))[:12]} != {self.digest[:12]}): " + "; ".join(diff)
                + f". Delete {self.folder} (or pass --fresh) to start again")
        if side.get("n_events") != n_events:
            raise GenerationError(f"{path}: chunk {chunk} holds {side.get('n_events')} events, this run asks "
                                  f"for {n_events}")
        if not self.data_path(chunk).is_file():
            raise GenerationError(f"{self.data_path(chunk)}: the data of chunk {chunk} is missing (its sidecar "
                                  f"{path.name} is there); delete the sidecar to generate the chunk again")
        return side

    def save(self, chunk: int, n_events: int, result: dict) -> None:
        """Store one chunk's result: its columns (parquet), then the sidecar (the commit mark)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        cols = result["columns"]
        numpy_cols = [k for k, v in cols.items() if not isinstance(v, ak.Array)]
        record = ak.zip(dict(cols), depth_limit=1)
        _atomic(self.data_path(chunk), lambda tmp: ak.to_parquet(record, tmp, compression="zstd"))
        side = {
            "chunk": chunk,
            "n_events": n_events,
            "config_digest": self.digest,
            "identity": self.ident,
            "columns": list(cols),
            "numpy_columns": numpy_cols,
            "result": _encode({k: v for k, v in result.items() if k not in _NOT_IN_SIDECAR}),
        }
        _atomic(self.sidecar_path(chunk), lambda tmp: tmp.write_text(json.dumps(side, indent=1, default=str)))

    def load(self, chunk: int, n_events: int) -> dict:
        """The result of ``chunk`` as :func:`generate_chunk` returned it (columns read back exactly)."""
        side = self.check(chunk, n_events)
        path = self.data_path(chunk)
        try:
            record = ak.from_parquet(path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises many kinds; name the file
            raise GenerationError(f"{path}: unreadable part of chunk {chunk} ({err}); delete it and its sidecar "
                                  f"to generate the chunk again") from err
        numpy_cols = set(side["numpy_columns"])
        cols = {k: (ak.to_numpy(record[k]) if k in numpy_cols else record[k]) for k in side["columns"]}
        return {**_decode(side["result"]), "columns": cols}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
