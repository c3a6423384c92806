"""The training skim: one parquet file per chunk of the preselected events' features and Lund planes.

In skim mode (``ProcessorConfig.skim_dir``) the processor writes, instead of histograms, one
parquet file per chunk and dataset under ``skim_dir/<dataset>/`` (named by a hash of the chunk's
file and entry range, so a re-run overwrites rather than duplicates). Columns: the event features
(:data:`EVENT_FEATURES`), ``mt``, ``deta``, the jets' pT, ``weight`` (``genWeight x xsec x lumi /
sumw``, x ``1 / fraction`` with an event subset), ``gen_weight``, ``dataset``, ``label`` (1 for
signal), ``mzprime``, ``rinv``, the event ids, ``parent`` (the split key, ``(run << 40) | parent``
or ``| event`` without a ``parent`` branch) and the padded Lund arrays of J0 and J1 with masks.
The LundNet scores are NaN (the trainers fill them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import awkward as ak
import numpy as np

from svjscout.core.features import EVENT_FEATURES
from svjscout.processors.settings import DatasetInfo, ProcessorConfig

__all__ = ["write_skim", "skim_name"]


def skim_name(metadata) -> str:
    """The file name (without suffix) of a chunk's skim: a hash of its file and entry range."""
    key = f"{metadata.get('filename', '')}:{metadata.get('entrystart', 0)}:{metadata.get('entrystop', 0)}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def write_skim(cfg: ProcessorConfig, events, dataset: str, info: DatasetInfo, feats: dict, lund, mask,
               w: np.ndarray, idx: np.ndarray) -> Path:
    """Write the skim of one chunk's selected events ``idx`` (``feats``, ``lund``, ``mask``, ``w``
    are those events'); returns the file written."""
    n = len(idx)
    ids = cfg.branch_map.event_ids(events)[idx] if n else np.zeros((0, 3), np.uint64)
    cols = {f: feats[f].astype(np.float32) for f in EVENT_FEATURES if f in feats}
    cols.update({
        "lundnet_j0": np.full(n, np.nan, np.float32), "lundnet_j1": np.full(n, np.nan, np.float32),
        "mt": feats["mt"].astype(np.float32), "deta": feats["deta"].astype(np.float32),
        "pt_j0": feats["pt_j0"].astype(np.float32), "pt_j1": feats["pt_j1"].astype(np.float32),
        "weight": (w * (info.norm(cfg.lumi) * cfg.subset_scale(info))).astype(np.float64),
        "gen_weight": w.astype(np.float64),
        "dataset": np.array([dataset] * n, dtype=object), "label": np.full(n, int(info.kind == "signal"), np.int8),
        "mzprime": np.full(n, np.nan if info.mzprime is None else info.mzprime, np.float32),
        "rinv": np.full(n, np.nan if info.rinv is None else info.rinv, np.float32),
        "run": ids[:, 0], "luminosityBlock": ids[:, 1], "event": ids[:, 2],
        # (run << 40) | parent, or | event without a parent branch (every event its own parent)
        "parent": cfg.branch_map.parent_keys_or_events(events)[idx] if n else np.zeros(0, np.uint64),
        "lund_j0": lund[0], "lund_j0_mask": mask[0], "lund_j1": lund[1], "lund_j1_mask": mask[1],
    })
    table = ak.zip({k: ak.Array(list(v)) if k == "dataset" else ak.from_numpy(np.ascontiguousarray(v))
                    for k, v in cols.items()}, depth_limit=1)
    out = Path(cfg.skim_dir) / dataset
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{skim_name(events.metadata)}.parquet"
    ak.to_parquet(table, path)
    return path
