"""Corrections and their uncertainties from correctionlib JSON payloads (docs/corrections.md).

The payloads are laid out like the CMS JSON POG's, one folder per era (:mod:`.pog`:
``POG/JME/<era>/jet_jerc.json.gz`` with the JEC levels, the compound ``L1L2L3Res``, the JES
uncertainty and the JER tables under CMS's own names; ``POG/LUM/<era>/puWeights.json.gz``;
``POG/HLT/<era>/trigger_sf.json.gz``); ``analysis.corrections`` picks the era
(:class:`~.pog.CorrectionsSettings`, :func:`~.pog.load_era`). The jet energy corrections
themselves are :mod:`svjscout.processors.jec`.

The signal systematics use five corrections, named here by their role:

=====================  ===============================  =======================================
role                   inputs                           output
=====================  ===============================  =======================================
``jes_uncertainty``    JetEta, JetPt (GeV)              relative JES uncertainty u
``jer_scale_factor``   JetEta, systematic (nom/up/down) data/MC resolution scale factor s
``jer_resolution``     JetEta, JetPt (GeV), Rho         relative MC resolution sigma(pT)/pT
``trigger_ht_sf``      HT (GeV), systematic             H_T trigger scale factor
``pileup_weight``      NumTrueInteractions, weights     pileup event weight
=====================  ===============================  =======================================

:func:`load_corrections` returns, for ``shipped:illustrative_run2`` (the default of
``analysis.systematics.payload``), the shipped era ``svjscout_sim`` (:class:`~.pog.EraCorrections`),
whose files carry the ILLUSTRATIVE numbers of :mod:`.make_payloads`; for a file path, a
``correctionlib.CorrectionSet`` with the five role names as correction names (the former layout;
:func:`assemble_payload` writes one from CMS payloads). The helpers take either, and numpy
arrays, scalars or awkward arrays (jagged ones are flattened, evaluated and unflattened):

* :func:`jes_factor` -- ``1 + direction * u``;
* :func:`jer_factor` / :func:`jer_smear` -- stochastic smearing
  ``pT' = pT * max(0, 1 + z * sigma_MC * sqrt(max(s^2 - 1, 0)))`` with ``z ~ N(0, 1)`` from
  :func:`gaussian_from_seeds`: a counter-based generator (splitmix64 hash + Box-Muller) keyed on
  per-jet 64-bit seeds, so a jet gets the same z whatever the chunking, order or worker;
  :func:`jet_seeds` builds the seeds from (run, luminosityBlock, event, jet index);
* :func:`trigger_sf`, :func:`pileup_weight`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import awkward as ak
import correctionlib
import correctionlib.schemav2 as cs
import numpy as np

from svjscout.processors.corrections.pog import CorrectionsSettings, EraCorrections, PayloadError, load_era

__all__ = [
    "REQUIRED", "SHIPPED", "PayloadError", "shipped_payload", "load_corrections", "jes_factor",
    "jer_factor", "jer_smear", "trigger_sf", "pileup_weight", "jet_seeds", "gaussian_from_seeds",
    "splitmix64", "assemble_payload", "INPUT_TYPES", "EraCorrections", "load_era",
]

#: The corrections a payload must hold (the processor codes against these names and inputs).
REQUIRED = ("jes_uncertainty", "jer_scale_factor", "jer_resolution", "trigger_ht_sf", "pileup_weight")
#: Payloads shipped with the package: ``shipped:NAME`` -> the shipped era holding its numbers.
SHIPPED = {"illustrative_run2": "svjscout_sim"}
SYSTEMATICS = ("nom", "up", "down")


def shipped_payload(name: str) -> EraCorrections:
    """The shipped era of ``shipped:NAME``, e.g. ``shipped_payload("illustrative_run2")``."""
    if name not in SHIPPED:
        raise PayloadError(f"no shipped correction payload {name!r} (shipped: {', '.join(SHIPPED)})")
    return load_era(CorrectionsSettings(era=SHIPPED[name]))


def load_corrections(payload: str | Path | None = "shipped:illustrative_run2", base_dir: str | Path | None = None,
                     era: EraCorrections | None = None):
    """The corrections of ``analysis.systematics.payload``.

    Args:
        payload: ``shipped:NAME`` (the shipped era with those numbers: ``svjscout_sim``), None
            (``era``: the job's ``analysis.corrections``), or the path of a correctionlib JSON file
            with the five role names (``.json`` or ``.json.gz``; the former layout).
        base_dir: folder against which a relative path is resolved (the job file's folder);
            None: the current directory.
        era: the job's era, returned when ``payload`` is None.

    Returns:
        An :class:`~.pog.EraCorrections` (shipped or era) or a ``correctionlib.CorrectionSet`` (a file).

    Raises:
        PayloadError: the file does not exist, or it lacks one of :data:`REQUIRED` (the message
            names the file and the missing corrections), or one has inputs of other types or
            order than :data:`INPUT_TYPES`.
    """
    if payload is None:
        return era if era is not None else load_era()
    text = str(payload)
    if text.startswith("shipped:"):
        return shipped_payload(text.split(":", 1)[1])
    else:
        path = Path(text).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
    if not path.is_file():
        raise PayloadError(f"correction payload {path} does not exist")
    cset = correctionlib.CorrectionSet.from_file(str(path))
    missing = [name for name in REQUIRED if name not in set(cset.keys())]
    if missing:
        raise PayloadError(f"correction payload {path} lacks the correction(s) {', '.join(missing)} "
                           f"(a payload needs {', '.join(REQUIRED)}; docs/corrections.md)")
    for name in REQUIRED:
        types = tuple(v.type for v in cset[name].inputs)
        if types != INPUT_TYPES[name]:
            raise PayloadError(f"correction payload {path}: {name} has inputs "
                               f"{[v.name for v in cset[name].inputs]} of types {types}, "
                               f"needs {INPUT_TYPES[name]} in this order (docs/corrections.md)")
    return cset


#: Input types of each required correction, in order (correctionlib evaluates positionally:
#: the names of a payload's inputs may differ, their order and types may not).
INPUT_TYPES = {
    "jes_uncertainty": ("real", "real"),  # eta, pt
    "jer_scale_factor": ("real", "string"),  # eta, systematic
    "jer_resolution": ("real", "real", "real"),  # eta, pt, rho
    "trigger_ht_sf": ("real", "string"),  # ht, systematic
    "pileup_weight": ("real", "string"),  # nTrueInt, systematic
}


def assemble_payload(sources: dict[str, tuple[str | Path, str]], output: str | Path,
                     key_map: dict[str, str] | None = None) -> Path:
    """Write a payload with the five names from corrections of other (e.g. CMS) payloads.

    Args:
        sources: ``{our name: (payload file, its correction name)}`` for each of :data:`REQUIRED`,
            e.g. ``{"pileup_weight": ("puWeights.json.gz", "Collisions18_UltraLegacy_goldenJSON")}``.
        output: the file written (``.json`` or ``.json.gz``); name it in ``systematics.payload``.
        key_map: renamed category keys, e.g. ``{"nominal": "nom"}`` (CMS pileup payloads).

    Raises:
        PayloadError: a name of :data:`REQUIRED` without a source, a correction absent from its
            file, or inputs of other types or order than :data:`INPUT_TYPES`.
    """
    missing = [name for name in REQUIRED if name not in sources]
    if missing:
        raise PayloadError(f"assemble_payload: no source for {', '.join(missing)}")
    key_map = key_map or {}

    def rename_keys(node):
        if isinstance(node, dict):
            if node.get("nodetype") == "category":
                for item in node["content"]:
                    item["key"] = key_map.get(item["key"], item["key"])
            for value in node.values():
                rename_keys(value)
        elif isinstance(node, list):
            for value in node:
                rename_keys(value)

    corrections = []
    for name in REQUIRED:
        path, theirs = sources[name]
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            found = {c["name"]: c for c in json.load(f)["corrections"]}
        if theirs not in found:
            raise PayloadError(f"{path} has no correction {theirs!r} (it has: {', '.join(sorted(found))})")
        corr = dict(found[theirs], name=name)
        types = tuple(v["type"] for v in corr["inputs"])
        if types != INPUT_TYPES[name]:
            raise PayloadError(f"{path}: {theirs!r} has inputs {[v['name'] for v in corr['inputs']]} of types "
                               f"{types}; {name} needs {INPUT_TYPES[name]} (docs/corrections.md)")
        rename_keys(corr["data"])
        corrections.append(cs.Correction.model_validate(corr))
    cset = cs.CorrectionSet(schema_version=2, description="assembled by svjscout assemble_payload",
                            corrections=corrections)
    text = json.dumps(cset.model_dump(mode="json", exclude_unset=True)).encode()
    output = Path(output)
    output.write_bytes(gzip.compress(text, mtime=0) if output.suffix == ".gz" else text)
    return output


# ---------------------------------------------------------------- array plumbing
def _flat(x):
    """(flat float64/uint64 numpy array, how to restore the input's layout)."""
    if isinstance(x, ak.Array):
        layout_depth = x.ndim
        if layout_depth == 1:
            return ak.to_numpy(x), ("ak1", None)
        if layout_depth == 2:
            return ak.to_numpy(ak.flatten(x, axis=1)), ("ak2", ak.num(x, axis=1))
        raise TypeError(f"awkward arrays of depth 1 or 2 only (got {x.type})")
    arr = np.asarray(x)
    return arr.reshape(-1), ("np", arr.shape)


def _restore(flat: np.ndarray, how):
    kind, info = how
    if kind == "ak1":
        return ak.Array(flat)
    if kind == "ak2":
        return ak.unflatten(flat, info)
    out = flat.reshape(info)
    return out[()] if out.ndim == 0 else out


def _check_syst(syst: str) -> str:
    if syst not in SYSTEMATICS:
        raise ValueError(f"systematic must be one of {SYSTEMATICS}, got {syst!r}")
    return syst


def _check_direction(direction: int) -> int:
    if direction not in (-1, 1):
        raise ValueError(f"direction must be -1 or +1, got {direction!r}")
    return int(direction)


def _evaluate(cset, name: str, *args, jets: str = "ak4"):
    """Evaluate a correction on flat arrays (an empty input gives an empty output); ``name`` is
    the role, ``args`` its inputs in the order of the table in the module docstring; ``jets``
    (ak4, ak8) picks the jet collection's tables of an era (a five-name file has one table)."""
    n = next((len(a) for a in args if isinstance(a, np.ndarray)), None)
    if n == 0:
        return np.zeros(0)
    corr = cset[f"{name}:{jets}"] if isinstance(cset, EraCorrections) else cset[name]
    return np.asarray(corr.evaluate(*args), dtype=np.float64)


# ---------------------------------------------------------------- JES
def jes_factor(cset, pt, eta, direction: int, jets: str = "ak4"):
    """The JES-varied jet scale factor ``1 + direction * u(eta, pt)``, direction -1 or +1.

    Multiply the jet's four-momentum (and its constituents) by it; u is evaluated at the
    nominal (corrected) pT and eta, from the ``jets`` (ak4, ak8) table of an era.
    """
    direction = _check_direction(direction)
    fpt, how = _flat(pt)
    feta, _ = _flat(eta)
    u = _evaluate(cset, "jes_uncertainty", feta.astype(np.float64), fpt.astype(np.float64), jets=jets)
    return _restore(1.0 + direction * u, how)


# ---------------------------------------------------------------- counter-based Gaussians
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
#: Stream constants of the two uniforms of the Box-Muller transform.
_STREAM_U1 = np.uint64(0x5851F42D4C957F2D)
_STREAM_U2 = np.uint64(0x14057B7EF767814F)


def splitmix64(x) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea, Flood 2014) of uint64 values, vectorised.

    A bijective 64-bit mixer: each output bit depends on every input bit; uint64 arithmetic
    wraps modulo 2^64.
    """
    z = np.array(x, dtype=np.uint64, copy=True, ndmin=1)
    with np.errstate(over="ignore"):
        z += _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return z


def _as_u64(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.int64)
    return arr.astype(np.uint64)


def jet_seeds(run, luminosityBlock, event, jets, salt: int = 0):
    """Per-jet 64-bit seeds from the event ids and the jet's index in its event.

    Args:
        run, luminosityBlock, event: per-event integer arrays (numpy or flat awkward).
        jets: a jagged awkward array of the event's jets (any field or the jets themselves; only
            its counts are used), or per-event jet counts. The index is the jet's position in
            this array: use the collection's order before any variation re-sorts it, so a jet
            keeps its seed (and its random number) in every variation.
        salt: distinguishes collections (e.g. 4 for AK4, 8 for AK8) so their numbers differ.

    Returns:
        A jagged awkward uint64 array of the layout of ``jets``:
        ``splitmix64(splitmix64(splitmix64(splitmix64(salt ^ run) ^ lumi) ^ event) ^ index)``.
    """
    counts = (np.asarray(ak.num(jets, axis=1)) if isinstance(jets, ak.Array) and jets.ndim > 1
              else np.asarray(jets)).astype(np.int64)
    h = splitmix64(np.uint64(salt) ^ _as_u64(run))
    h = splitmix64(h ^ _as_u64(luminosityBlock))
    h = splitmix64(h ^ _as_u64(event))
    per_jet = np.repeat(h, counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    index = (np.arange(len(per_jet), dtype=np.int64) - starts).astype(np.uint64)
    return ak.unflatten(splitmix64(per_jet ^ index) if len(per_jet) else per_jet, counts)


def gaussian_from_seeds(seeds):
    """One standard-normal number per 64-bit seed (the same seed: the same number, always).

    Two uniforms from splitmix64 of the seed in two streams (53 bits each), Box-Muller:
    ``z = sqrt(-2 ln(1 - u1)) cos(2 pi u2)``. Seeds may be numpy or (jagged) awkward; the
    output has the input's layout.
    """
    fs, how = _flat(seeds)
    s = fs.astype(np.uint64)
    scale = 2.0 ** -53
    u1 = (splitmix64(s ^ _STREAM_U1) >> np.uint64(11)).astype(np.float64) * scale
    u2 = (splitmix64(s ^ _STREAM_U2) >> np.uint64(11)).astype(np.float64) * scale
    z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    return _restore(z, how)


# ---------------------------------------------------------------- JER
def _jer_syst(direction_or_nom) -> str:
    if direction_or_nom in ("nom", 0, None):
        return "nom"
    if direction_or_nom in ("up", 1):
        return "up"
    if direction_or_nom in ("down", -1):
        return "down"
    raise ValueError(f"JER variation must be 'nom', 'up', 'down', +1 or -1, got {direction_or_nom!r}")


def jer_factor(cset, pt, eta, direction_or_nom, seeds, jets: str = "ak4", rho=None):
    """The stochastic JER smearing factor ``max(0, 1 + z * sigma_MC(eta, pt) * sqrt(max(s^2 - 1, 0)))``.

    ``s = jer_scale_factor(eta, nom|up|down)``, ``sigma_MC = jer_resolution(eta, pt, rho)``,
    ``z = gaussian_from_seeds(seeds)`` (the same z for nom, up and down: the variations move
    coherently). ``direction_or_nom``: ``"nom"``/``"up"``/``"down"`` or 0/+1/-1. ``jets``: the
    collection's tables of an era; ``rho``: per jet, the layout of ``pt`` (None: 0).
    """
    syst = _jer_syst(direction_or_nom)
    fpt, how = _flat(pt)
    feta, _ = _flat(eta)
    fseed, _ = _flat(seeds)
    if not (len(fpt) == len(feta) == len(fseed)):
        raise ValueError("pt, eta and seeds must have the same layout")
    fpt = fpt.astype(np.float64)
    feta = feta.astype(np.float64)
    frho = np.zeros_like(fpt) if rho is None else _flat(rho)[0].astype(np.float64)
    s = _evaluate(cset, "jer_scale_factor", feta, syst, jets=jets)
    sigma = _evaluate(cset, "jer_resolution", feta, fpt, frho, jets=jets)
    z = gaussian_from_seeds(fseed.astype(np.uint64))
    factor = np.maximum(1.0 + z * sigma * np.sqrt(np.maximum(s * s - 1.0, 0.0)), 0.0)
    return _restore(factor, how)


def jer_smear(cset, pt, eta, direction_or_nom, seeds, jets: str = "ak4", rho=None):
    """The smeared jet pT, ``pt * jer_factor(...)`` (same layout as ``pt``)."""
    return pt * jer_factor(cset, pt, eta, direction_or_nom, seeds, jets=jets, rho=rho)


# ---------------------------------------------------------------- event weights
def trigger_sf(cset, ht, syst: str = "nom"):
    """The H_T trigger scale factor per event (``syst``: nom, up, down)."""
    syst = _check_syst(syst)
    fht, how = _flat(ht)
    return _restore(_evaluate(cset, "trigger_ht_sf", fht.astype(np.float64), syst), how)


def pileup_weight(cset, n_true, syst: str = "nom"):
    """The pileup weight per event from ``Pileup_nTrueInt`` (``syst``: nom, up, down)."""
    syst = _check_syst(syst)
    fn, how = _flat(n_true)
    return _restore(_evaluate(cset, "pileup_weight", fn.astype(np.float64), syst), how)
