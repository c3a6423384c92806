"""The training skim: one parquet file per chunk of the preselected events' features and Lund planes.

In skim mode (``ProcessorConfig.skim_dir``) the processor writes, instead of histograms, one
parquet file per chunk and dataset under ``skim_dir/<dataset>/`` (named by a hash of the chunk's
file and entry range, so a re-run overwrites rather than duplicates). Columns: the event features
(:data:`EVENT_FEATURES`), ``mt``, ``deta``, the jets' pT, ``weight`` (``genWeight x xsec x lumi /
sumw``, x ``1 / fraction`` with an event subset), ``gen_weight``, ``dataset``, ``label`` (1 for
signal), ``mzprime``, ``rinv``, the event ids, ``parent`` (the split key, ``(run << 40) | parent``
or ``| event`` without a ``parent`` branch), the padded Lund arrays of J0 and J1 with masks, and
``dark_dr_j0``/``dark_dr_j1``: the distance Delta R between the jet axis and the nearest dark quark
of the generator record (:func:`dark_quark_dr`; NaN without that record: backgrounds, data, files
made before the generator wrote it), from which LundNet's training labels the signal jets
(``signal_jet_label``, docs/training_data.md). The LundNet scores are NaN (the trainers fill them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import awkward as ak
import numpy as np

from svjscout.core.features import EVENT_FEATURES
from svjscout.processors.settings import DatasetInfo, ProcessorConfig

__all__ = ["write_skim", "skim_name", "dark_quark_dr", "DARK_QUARKS"]

#: The generator record of the dark quarks of the Z' decay (samples/generate.py writes it for signal):
#: a NanoAOD collection ``nGenDarkQuark``, ``GenDarkQuark_{pt,eta,phi,mass,pdgId}``.
DARK_QUARKS = "GenDarkQuark"


def skim_name(metadata) -> str:
    """The file name (without suffix) of a chunk's skim: a hash of its file and entry range."""
    key = f"{metadata.get('filename', '')}:{metadata.get('entrystart', 0)}:{metadata.get('entrystop', 0)}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def dark_quark_dr(events, idx: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Delta R from each jet axis to the nearest generator dark quark of its event.

    Args:
        events: the chunk's events (NanoEvents or an awkward record array).
        idx: (n,) the selected events' positions in ``events``.
        eta, phi: (n,) the jet axes of those events (rad for phi).

    Returns:
        (n,) float32: min over the event's :data:`DARK_QUARKS` of sqrt(deta^2 + dphi^2); NaN where
        the file has no such collection or the event none of them (backgrounds, data, older files).

    >>> import awkward as ak
    >>> ev = ak.zip({"GenDarkQuark": ak.zip({"eta": [[0.0, 1.0]], "phi": [[0.0, 3.0]]})}, depth_limit=1)
    >>> [round(float(x), 3) for x in dark_quark_dr(ev, np.array([0]), np.array([0.9]), np.array([-3.0]))]
    [0.3]
    """
    n = len(idx)
    fields = getattr(events, "fields", [])
    if n == 0 or DARK_QUARKS not in fields:
        return np.full(n, np.nan, np.float32)
    quarks = events[DARK_QUARKS][idx]
    q_eta, q_phi = ak.values_astype(quarks.eta, np.float64), ak.values_astype(quarks.phi, np.float64)
    dphi = (q_phi - np.asarray(phi, np.float64)[:, None] + np.pi) % (2 * np.pi) - np.pi
    dr = np.sqrt((q_eta - np.asarray(eta, np.float64)[:, None]) ** 2 + dphi ** 2)
    nearest = ak.to_numpy(ak.fill_none(ak.min(dr, axis=1), np.nan))
    return nearest.astype(np.float32)


def write_skim(cfg: ProcessorConfig, events, dataset: str, info: DatasetInfo, feats: dict, lund, mask,
               w: np.ndarray, idx: np.ndarray, jet_axes: dict[str, np.ndarray] | None = None) -> Path:
    """Write the skim of one chunk's selected events ``idx`` (``feats``, ``lund``, ``mask``, ``w``
    are those events'); returns the file written.

    ``jet_axes``: ``eta_j0``, ``phi_j0``, ``eta_j1``, ``phi_j1`` of those events (for the dark-quark
    match, :func:`dark_quark_dr`); without it the ``dark_dr_*`` columns are NaN."""
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
    for j in ("j0", "j1"):
        cols[f"dark_dr_{j}"] = (dark_quark_dr(events, idx, jet_axes[f"eta_{j}"], jet_axes[f"phi_{j}"])
                                if jet_axes is not None else np.full(n, np.nan, np.float32))
    table = ak.zip({k: ak.Array(list(v)) if k == "dataset" else ak.from_numpy(np.ascontiguousarray(v))
                    for k, v in cols.items()}, depth_limit=1)
    out = Path(cfg.skim_dir) / dataset
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{skim_name(events.metadata)}.parquet"
    ak.to_parquet(table, path)
    return path
