"""Data-quality stages of the processor: the same code path for data and simulation (issue 31 item 3).

Each stage is a named cutflow row (:data:`DQ_ROWS`, placed in :data:`svjscout.core.cuts.CUT_ORDER`)
or, for CHS, a counted candidate-level step; docs/dataquality.md gives each stage's source.

* ``lumi_mask`` (data): the golden JSON through coffea's :class:`~coffea.lumi_tools.LumiMask`;
  simulation: every event passes.
* ``hlt``: the trigger decision read from the file, the OR of the era's paths
  (``data_quality.trigger.paths``; a NanoAOD bit is named after the path without ``HLT_`` and
  version). Data without any of the bits are refused (:class:`InputFileError` naming the file and
  the branches); simulation without them falls back to the emulation, the ``trigger`` row
  (H_T > 410 GeV), and every event passes ``hlt`` (counted as ``hlt_emulated``).
* ``good_vertex``: at least ``min_good`` valid primary vertices with ndof > 4, |z| <= 24 cm,
  rho <= 2 cm (CMS's good offline vertex). Files without vertices: simulation passes (counted as
  ``no_vertices``), data are refused.
* ``jet_id``: every analysis AK8 jet (the ``two_ak8`` jets) passes the scouting jet ID computed
  from its constituents' pdgIds (:func:`jet_id`); off by default (it reads the candidates' pdgId).
* ``hem_veto`` (era 2018): an AK4 or AK8 jet (pT > 30 GeV) in -3.0 < eta < -1.3,
  -1.57 < phi < -0.87 vetoes data events of runs >= 319077; simulation: the affected events are
  weighted by the unaffected fraction of the 2018 luminosity (``mc: weight``) or dropped.
* ``phi_spike``: a leading AK8 jet within a hot cell of the era's map (a JSON file) vetoes the event.
* CHS: PF candidates whose ``vertexIndex`` is > 0 (a pileup vertex) are dropped before clustering
  (counted as ``chs_removed``), where the branch map names the field and the file has it.

With the defaults every stage passes every event of a file without trigger bits, vertices and
vertex indices (files of the generator's older ``svjscout`` layout): the histograms and cards are
those of the processor without these stages. The embedded sample (CMS's Run-3 layout) has all
three, so its data path is the one data take (docs/dataquality.md, "Effect on the embedded sample").
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

import awkward as ak
import numpy as np
from coffea.lumi_tools import LumiMask
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from svjscout.core.exceptions import ConfigError, InputFileError, MissingBranchError
from svjscout.processors.prefilter import jagged_from_flat

__all__ = ["DQ_ROWS", "DEFAULT_TRIGGER_PATHS", "DataQualitySettings", "TriggerSettings", "VertexSettings",
           "HEMSettings", "PhiSpikeSettings", "JetIDSettings", "CHSSettings", "trigger_bits", "lumi_mask",
           "good_vertex", "hem_jets", "phi_spike_veto", "load_phi_spike_map", "jet_fractions", "jet_id",
           "select_candidates", "wrap_phi"]

#: The data-quality cutflow rows (their place in the cut order is :data:`svjscout.core.cuts.CUT_ORDER`).
DQ_ROWS = ("lumi_mask", "hlt", "good_vertex", "jet_id", "hem_veto", "phi_spike")

#: HLT scouting paths per era (NanoAOD bit names: no ``HLT_`` prefix, no version). Run 2: the PF
#: scouting H_T path of the SVJ scouting ntuples (SVJScouting_ntuplizer, ScoutingNanoAOD_fromData.cc,
#: ``DST_HT410_PFScouting_v``); Run 3: the PF scouting path of 2022 and early 2023
#: (``DST_Run3_PFScoutingPixelTracking``), its hadronic successor from 2023C-v2 on
#: (``DST_PFScouting_JetHT``). docs/dataquality.md gives the sources.
DEFAULT_TRIGGER_PATHS: dict[str, list[str]] = {
    "2016": ["DST_HT410_PFScouting"],
    "2017": ["DST_HT410_PFScouting"],
    "2018": ["DST_HT410_PFScouting"],
    "2022": ["DST_Run3_PFScoutingPixelTracking"],
    "2023": ["DST_Run3_PFScoutingPixelTracking", "DST_PFScouting_JetHT"],
    "2024": ["DST_PFScouting_JetHT"],
}


def _era_str(v):
    """YAML reads ``2018`` as an int: eras are strings."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class TriggerSettings(BaseModel):
    """``data_quality.trigger``: the HLT paths per era (OR of the bits) and how simulation is triggered.

    ``mc``: ``auto`` (the bits where the file has them, else the emulation), ``bits`` (refuse a file
    without them), ``emulation`` (never read the bits: the ``trigger`` row alone).
    ``scale_factor``: weight simulation by the H_T trigger scale factor ``trigger_ht_sf`` of
    ``analysis.systematics.payload`` (nominal), evaluated at the event's H_T.
    """

    model_config = ConfigDict(extra="forbid")

    paths: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_TRIGGER_PATHS.items()})
    mc: Literal["auto", "bits", "emulation"] = "auto"
    scale_factor: bool = False

    @field_validator("paths", mode="before")
    @classmethod
    def _keys_as_str(cls, v):
        if isinstance(v, dict):
            return {_era_str(k): val for k, val in v.items()}
        return v

    @field_validator("paths")
    @classmethod
    def _names(cls, v):
        for era, names in v.items():
            if not names:
                raise ValueError(f"data_quality.trigger.paths[{era!r}] is empty: list at least one HLT path")
            for name in names:
                last = name.rsplit("_", 1)[-1]
                if name.startswith("HLT_") or (last[:1] == "v" and last[1:].isdigit()):
                    raise ValueError(f"data_quality.trigger.paths[{era!r}]: {name!r}: give the NanoAOD bit name, "
                                     "without the HLT_ prefix and the _vN version (e.g. DST_HT410_PFScouting)")
        return v

    def paths_of(self, era: str | None) -> list[str]:
        """The era's paths; without an era, every era's (their union, in order)."""
        if era is not None:
            return list(self.paths.get(era, []))
        out: list[str] = []
        for names in self.paths.values():
            out += [n for n in names if n not in out]
        return out


class VertexSettings(BaseModel):
    """``data_quality.vertex``: the good-vertex requirement (CMS's good offline primary vertex)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ndof_min: float = 4.0  # ndof > ndof_min
    abs_z_max: float = 24.0  # |z| <= abs_z_max (cm)
    rho_max: float = 2.0  # sqrt(x^2 + y^2) <= rho_max (cm)
    min_good: int = Field(default=1, ge=1)


class HEMSettings(BaseModel):
    """``data_quality.hem``: the 2018 HEM 15/16 veto (runs >= ``run_min`` of the listed eras).

    ``mc``: ``weight`` (events with a jet in the window weighted by ``1 - mc_affected_fraction``,
    the fraction of the era's luminosity with the failure), ``drop`` (such events fail the row, as
    SVJProcessing's ``apply_hem_veto`` does for simulation in its t-channel and lepton
    configurations; its s-channel scouting preselection only stores the decision) or ``off``.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    eras: list[str] = ["2018"]
    run_min: int = 319077
    eta: tuple[float, float] = (-3.0, -1.3)
    phi: tuple[float, float] = (-1.57, -0.87)
    pt_min: float = 30.0
    mc: Literal["weight", "drop", "off"] = "weight"
    mc_affected_fraction: float = Field(default=0.647, ge=0.0, le=1.0)  # 38.7 / 59.8 fb^-1 (docs/dataquality.md)

    @field_validator("eras", mode="before")
    @classmethod
    def _eras_as_str(cls, v):
        return [_era_str(e) for e in v] if isinstance(v, list) else v


class PhiSpikeSettings(BaseModel):
    """``data_quality.phi_spike``: the hot-cell map (JSON; docs/dataquality.md gives its format)."""

    model_config = ConfigDict(extra="forbid")

    map: str | None = None
    n_jets: int = Field(default=2, ge=1)  # the leading AK8 jets checked


class JetIDSettings(BaseModel):
    """``data_quality.jet_id``: the scouting AK8 jet ID from the constituents (SVJProcessing's).

    A jet passes with |eta| <= abs_eta_max, charged hadron energy fraction > chf_min, neutral hadron
    fraction < nhf_max, photon fraction < nemf_max, muon fraction < muf_max, electron fraction <
    cef_max, charged multiplicity > chm_min and more than ``n_min`` constituents.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    abs_eta_max: float = 2.6
    chf_min: float = 0.0
    nhf_max: float = 0.9
    nemf_max: float = 0.9
    muf_max: float = 0.8
    cef_max: float = 0.8
    chm_min: int = 0
    n_min: int = 1


class CHSSettings(BaseModel):
    """``data_quality.chs``: drop PF candidates of pileup vertices (``vertexIndex > 0``) before clustering."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True


class DataQualitySettings(BaseModel):
    """``analysis.data_quality``: the data-quality stages (docs/dataquality.md, docs/config.md).

    ``era``: the job's era (for datasets without their own); ``eras``: dataset -> era and
    ``lumi_masks``: data dataset -> golden JSON, filled from ``datasets.NAME.era`` and
    ``datasets.NAME.lumi_mask`` of a job (jobs/config.py).
    """

    model_config = ConfigDict(extra="forbid")

    era: str | None = None
    eras: dict[str, str] = {}
    lumi_masks: dict[str, str] = {}
    trigger: TriggerSettings = Field(default_factory=TriggerSettings)
    vertex: VertexSettings = Field(default_factory=VertexSettings)
    hem: HEMSettings = Field(default_factory=HEMSettings)
    phi_spike: PhiSpikeSettings = Field(default_factory=PhiSpikeSettings)
    jet_id: JetIDSettings = Field(default_factory=JetIDSettings)
    chs: CHSSettings = Field(default_factory=CHSSettings)

    @field_validator("era", mode="before")
    @classmethod
    def _era(cls, v):
        return _era_str(v)

    @field_validator("eras", mode="before")
    @classmethod
    def _eras(cls, v):
        return {k: _era_str(e) for k, e in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _eras_known(self):
        for where, era in [("data_quality.era", self.era)] + [(f"datasets.{k}.era", e) for k, e in self.eras.items()]:
            if era is not None and era not in self.trigger.paths:
                raise ValueError(f"{where}: era {era!r} has no trigger paths in analysis.data_quality.trigger.paths "
                                 f"(eras {sorted(self.trigger.paths)})")
        return self

    def era_of(self, dataset: str) -> str | None:
        """The dataset's era (``eras``), else the job's (``era``), else None."""
        return self.eras.get(dataset, self.era)


# -- the stages --------------------------------------------------------------------------------
def _filename(events) -> str:
    try:
        return str(events.metadata.get("filename", "the input file"))
    except Exception:  # noqa: BLE001 - metadata is optional
        return "the input file"


def _get_branch(events, name: str):
    """A branch by its full file name (``X_y``: field ``y`` of collection ``X`` in NanoEvents), or None."""
    if name in events.fields:
        return events[name]
    if "_" in name:
        prefix, rest = name.split("_", 1)
        if prefix in events.fields and rest in events[prefix].fields:
            return events[prefix][rest]
    return None


def trigger_bits(events, paths: list[str], branches: dict[str, str]) -> tuple[np.ndarray | None, list[str], list[str]]:
    """The OR of the trigger bits ``paths`` per event (None if the file has none of them).

    Args:
        paths: NanoAOD bit names; ``branches``: path -> the file's branch (default: the path;
            e.g. the Run-2 SVJ ntuples' ``scouting_trig`` for ``DST_HT410_PFScouting``).

    Returns:
        (decision or None, the branches found, the branches missing).
    """
    found, missing, decision = [], [], None
    for path in paths:
        name = branches.get(path, path)
        arr = _get_branch(events, name)
        if arr is None:
            missing.append(name)
            continue
        found.append(name)
        bit = ak.to_numpy(arr).astype(bool)
        decision = bit if decision is None else decision | bit
    return decision, found, missing


@lru_cache(maxsize=8)
def _lumi_mask(path: str):
    if "://" not in path and not Path(path).is_file():
        raise ConfigError(f"analysis.data_quality.lumi_masks: golden JSON {path!r} does not exist")
    try:
        return LumiMask(path)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"golden JSON {path!r} cannot be read as a lumi mask ({err})") from err


def lumi_mask(path: str, run: np.ndarray, lumi: np.ndarray) -> np.ndarray:
    """Per event, whether (run, luminosity block) is certified in the golden JSON ``path``
    (coffea's :class:`~coffea.lumi_tools.LumiMask`).

    >>> import json, tempfile
    >>> p = tempfile.mktemp(suffix=".json"); _ = open(p, "w").write(json.dumps({"1": [[2, 3]]}))
    >>> lumi_mask(p, np.array([1, 1, 2]), np.array([2, 4, 2])).tolist()
    [True, False, False]
    """
    return np.asarray(_lumi_mask(str(path))(np.asarray(run, np.uint32), np.asarray(lumi, np.uint32)), bool)


def good_vertex(events, collection: str, fields: dict[str, str], s: VertexSettings) -> np.ndarray | None:
    """Per event, whether it has at least ``s.min_good`` good primary vertices (None: no vertex
    collection in the file). A vertex is good with ``isValidVtx`` (where the file has it),
    ndof > ndof_min, |z| <= abs_z_max, sqrt(x^2 + y^2) <= rho_max (cm)."""
    cols = {}
    for ours in ("x", "y", "z", "ndof", "isValidVtx"):
        arr = _get_branch(events, f"{collection}_{fields.get(ours, ours)}")
        if arr is None and ours != "isValidVtx":
            return None
        cols[ours] = arr
    good = (cols["ndof"] > s.ndof_min) & (abs(cols["z"]) <= s.abs_z_max)
    good = good & (np.sqrt(cols["x"] ** 2 + cols["y"] ** 2) <= s.rho_max)
    if cols["isValidVtx"] is not None:
        good = good & (cols["isValidVtx"] != 0)
    return ak.to_numpy(ak.sum(good, axis=1)) >= s.min_good


def wrap_phi(dphi):
    """dphi in [-pi, pi)."""
    return (dphi + np.pi) % (2 * np.pi) - np.pi


def hem_jets(jets: ak.Array, s: HEMSettings) -> np.ndarray:
    """Per event, whether a jet (events x jets, ``pt, eta, phi``) with pT > pt_min lies in the HEM window."""
    inside = ((jets.pt > s.pt_min) & (jets.eta > s.eta[0]) & (jets.eta < s.eta[1])
              & (jets.phi > s.phi[0]) & (jets.phi < s.phi[1]))
    return ak.to_numpy(ak.any(inside, axis=1))


@lru_cache(maxsize=8)
def load_phi_spike_map(path: str) -> dict[str, tuple[np.ndarray, float]]:
    """A phi-spike map: ``{era: {"r2": dR^2 radius, "cells": [[eta, phi], ...]}}`` as
    ``{era: (cells (n, 2), r2)}``.

    Raises:
        ConfigError: unreadable file or a malformed era entry (names the file and the era).
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"analysis.data_quality.phi_spike.map: cannot read {path!r} ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a phi-spike map is a JSON object era -> {{r2, cells}}")
    out = {}
    for era, entry in raw.items():
        if era.startswith("_"):  # comments
            continue
        try:
            cells = np.asarray(entry["cells"], dtype=float).reshape(-1, 2)
            r2 = float(entry["r2"])
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{path}: era {era!r}: expected {{\"r2\": float, \"cells\": [[eta, phi], ...]}} "
                              f"({err})") from err
        if not r2 > 0:
            raise ConfigError(f"{path}: era {era!r}: r2 must be > 0, got {r2}")
        out[str(era)] = (cells, r2)
    return out


def phi_spike_veto(eta: np.ndarray, phi: np.ndarray, cells: np.ndarray, r2: float) -> np.ndarray:
    """Per jet, whether it lies within dR^2 < r2 of a hot cell (``cells``: (n, 2) eta, phi).

    >>> phi_spike_veto(np.array([0.0, 1.0]), np.array([3.1, 0.0]), np.array([[0.0, -3.1]]), 0.01).tolist()
    [True, False]
    """
    if len(cells) == 0:
        return np.zeros(len(eta), bool)
    deta = np.asarray(eta)[:, None] - cells[None, :, 0]
    dphi = wrap_phi(np.asarray(phi)[:, None] - cells[None, :, 1])
    return np.any(deta ** 2 + dphi ** 2 < r2, axis=1)


def jet_fractions(constituents: ak.Array) -> dict[str, ak.Array]:
    """Energy fractions and multiplicities of jets from their constituents (jets x constituents
    with ``pt, eta, mass, pdgId``): ``chf`` (charged hadrons, |pdgId| 211), ``nhf`` (neutral
    hadrons 130 and HF hadrons 1), ``nemf`` (photons 22 and HF EM 2), ``muf`` (13), ``cef`` (11),
    ``chm`` (charged multiplicity: 211, 11, 13), ``n`` (constituents). E = sqrt((pT cosh eta)^2 + m^2).
    """
    e = np.sqrt((constituents.pt * np.cosh(constituents.eta)) ** 2 + constituents.mass ** 2)
    pid = abs(constituents.pdgId)
    total = ak.sum(e, axis=-1)
    safe = ak.where(total > 0, total, 1.0)

    def frac(mask):
        return ak.sum(e[mask], axis=-1) / safe

    return {"chf": frac(pid == 211), "nhf": frac((pid == 130) | (pid == 1)), "nemf": frac((pid == 22) | (pid == 2)),
            "muf": frac(pid == 13), "cef": frac(pid == 11),
            "chm": ak.sum((pid == 211) | (pid == 11) | (pid == 13), axis=-1), "n": ak.num(pid, axis=-1)}


def jet_id(jets: ak.Array, s: JetIDSettings) -> ak.Array:
    """Per jet (events x jets with ``eta`` and ``constituents`` carrying ``pdgId``), the scouting jet ID."""
    f = jet_fractions(jets.constituents)
    return ((abs(jets.eta) <= s.abs_eta_max) & (f["chf"] > s.chf_min) & (f["nhf"] < s.nhf_max)
            & (f["nemf"] < s.nemf_max) & (f["muf"] < s.muf_max) & (f["cef"] < s.cef_max)
            & (f["chm"] > s.chm_min) & (f["n"] > s.n_min))


def select_candidates(pf: ak.Array, vertex: ak.Array | None) -> tuple[ak.Array, int, int]:
    """The candidates the processor clusters, keeping every field of ``pf``: finite ``pt, eta, phi,
    mass``, ``pt > 0`` and, with ``vertex`` (the vertex index per candidate), not from a pileup
    vertex (``vertex > 0``: CHS). The same candidates as
    :func:`svjscout.processors.prefilter.clean_candidates` without ``vertex``.

    Returns:
        (events x candidates, non-finite candidates dropped, pileup candidates dropped).
    """
    counts = ak.to_numpy(ak.num(pf.pt, axis=1)).astype(np.int64)
    cols = {k: ak.to_numpy(ak.flatten(pf[k], axis=1)) for k in pf.fields}
    finite = np.ones(len(cols["pt"]), bool)
    for k in ("pt", "eta", "phi", "mass"):
        finite &= np.isfinite(cols[k])
    finite &= cols["pt"] > 0
    keep = finite.copy()
    if vertex is not None:
        vtx = ak.to_numpy(ak.flatten(vertex, axis=1))
        if len(vtx) != len(keep):
            raise InputFileError("the PF candidates' vertex index has another length than their pt")
        keep &= ~(vtx > 0)
    n_nonfinite = int(np.count_nonzero(~finite))
    n_chs = int(np.count_nonzero(finite & ~keep))
    return jagged_from_flat(counts, cols, None if keep.all() else keep), n_nonfinite, n_chs


def missing_bits_error(filename: str, dataset: str, era: str | None, missing: list[str]) -> InputFileError:
    """The refusal of data without a trigger bit (names the file and the branches)."""
    return MissingBranchError(
        f"{filename}: dataset {dataset!r} is data but has none of the trigger branches {missing} of era {era!r} "
        "(analysis.data_quality.trigger.paths; the branch names follow schema.trigger_branches): data are never "
        "triggered by the emulation")
