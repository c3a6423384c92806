"""Corrections in the CMS JSON POG layout, selected per era (docs/corrections.md).

CMS distributes its corrections as correctionlib files in the ``jsonpog-integration`` tree
(``/cvmfs/cms.cern.ch/rsync/cms-nanoAOD/jsonpog-integration``)::

    POG/JME/<era>/jet_jerc.json.gz      AK4 JEC levels, compound L1L2L3Res, uncertainties, JER
    POG/JME/<era>/fatJet_jerc.json.gz   the same for AK8 jets
    POG/LUM/<era>/puWeights.json.gz     pileup weights

with CMS's own correction names (``<JEC tag>_<level>_<algo>``, ``<JER tag>_ScaleFactor_<algo>``,
``<JER tag>_PtResolution_<algo>``, ``<JEC tag>_Total_<algo>``, ``Collisions18_UltraLegacy_goldenJSON``)
and input names (``JetA, JetEta, JetPt, Rho``; ``systematic`` = nom/up/down; ``NumTrueInteractions,
weights`` = nominal/up/down). The H_T trigger scale factor has no central CMS file; ours lives in
``POG/HLT/<era>/trigger_sf.json.gz`` in the same style (inputs ``HT, systematic``).

:data:`ERAS` names, per era, which corrections of those files the processor uses
(:class:`EraSpec`); ``analysis.corrections`` (:class:`CorrectionsSettings`) picks the era and the
root folder (``shipped``: the files beside this module; or a jsonpog-integration checkout; or a
folder of one's own in the same layout), and :func:`load_era` returns an :class:`EraCorrections`.
Every correction is evaluated with its inputs matched by *name* (the CMS names above, plus
``run``), so CMS files whose corrections take an extra input (e.g. a ``run``-binned data JEC)
work too; a correction with an input of another name is refused, naming it.

Shipped eras: ``svjscout_sim``, our own fast simulation (its detector response is calibrated: the
JEC is the identity, written as constant 1.0 levels; JES uncertainty, JER, pileup and trigger are
the ILLUSTRATIVE numbers of :mod:`.make_payloads`, the numbers of the former
``illustrative_run2`` payload, which ``shipped:illustrative_run2`` still names), and ``2018_UL``
(the CMS names of Run-2 2018 ultra-legacy; point ``root`` at a jsonpog-integration checkout, or
use the test payload of ``tests/data/jsonpog`` with the same names and made-up values).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import correctionlib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["EraSpec", "ERAS", "EraCorrections", "CorrectionsSettings", "load_era", "SHIPPED_ROOT", "LEVELS",
           "JEC_INPUTS", "PayloadError"]


class PayloadError(ValueError):
    """A correction payload that cannot be used (missing file, correction or input)."""


#: The folder of the shipped era files (``root: shipped``).
SHIPPED_ROOT = Path(__file__).resolve().parent
#: Our simulation's era: always read from the package (CorrectionsSettings.root_path).
SHIPPED_ERA = "svjscout_sim"
#: The JEC levels of CMS's compound ``L1L2L3Res`` (MC and data; in MC the residual is 1).
LEVELS = ("L1FastJet", "L2Relative", "L3Absolute", "L2L3Residual")
#: The input names a JEC level may have (matched by name).
JEC_INPUTS = ("JetA", "JetEta", "JetPt", "Rho", "run")


@dataclass(frozen=True)
class EraSpec:
    """The CMS names of one era's corrections (the keys of ``analysis.corrections.names``).

    ``jec_mc``: JEC tag of simulation (``<tag>_L1L2L3Res_<algo>``); ``jec_data``: ``(first run,
    last run, tag)`` per run period of data (the residual included); ``jer``: JER tag
    (``<tag>_ScaleFactor_<algo>``, ``<tag>_PtResolution_<algo>``); ``ak4``/``ak8``: jet algorithm
    labels, and which file holds each; ``jer_ak8``: the algorithm whose JER tables the AK8 jets use
    (CMS's JER scale factors are measured for AK4 jets and applied to AK8 ones); ``uncertainty``:
    the JES source (``Total``, or one of CMS's split sources); ``pileup``: name in
    ``puWeights.json.gz``; ``pileup_keys``: our nom/up/down -> its keys; ``trigger``: name in
    ``trigger_sf.json.gz``.
    """

    name: str
    jec_mc: str
    jec_data: tuple[tuple[int, int, str], ...]
    jer: str
    pileup: str
    trigger: str
    ak4: str = "AK4PFchs"
    ak8: str = "AK8PFchs"
    jer_ak8: str = "AK4PFchs"
    ak4_file: str = "jet_jerc.json.gz"
    ak8_file: str = "fatJet_jerc.json.gz"
    uncertainty: str = "Total"
    compound: str = "L1L2L3Res"
    pileup_keys: dict[str, str] = field(default_factory=lambda: {"nom": "nominal", "up": "up", "down": "down"})

    def files(self) -> dict[str, str]:
        """Role -> path relative to the root (``POG/<pog>/<era>/<file>``)."""
        return {"ak4": f"POG/JME/{self.name}/{self.ak4_file}", "ak8": f"POG/JME/{self.name}/{self.ak8_file}",
                "pileup": f"POG/LUM/{self.name}/puWeights.json.gz",
                "trigger": f"POG/HLT/{self.name}/trigger_sf.json.gz"}


#: Run periods of the Run-2 UL data JEC tags ((first run, last run, period) of each tag).
RUNS_2018 = ((315252, 316997, "A"), (316998, 319312, "B"), (319313, 320393, "C"), (320394, 325273, "D"))
RUNS_2017 = ((297020, 299336, "B"), (299337, 302029, "C"), (302030, 303434, "D"), (303435, 304910, "E"),
             (304911, 306462, "F"))
RUNS_2016_PRE = ((272007, 276830, "BCD"), (276831, 278807, "EF"))
RUNS_2016_POST = ((278769, 284044, "FGH"),)

ERAS: dict[str, EraSpec] = {
    "svjscout_sim": EraSpec(
        name="svjscout_sim", jec_mc="SvjscoutSim_V1_MC", jec_data=((1, 2**31 - 1, "SvjscoutSim_V1_DATA"),),
        jer="SvjscoutSim_JRV1_MC", pileup="SvjscoutSim_Illustrative_goldenJSON",
        trigger="SvjscoutSim_DST_HT410_PFScouting_HTScaleFactor", jer_ak8="AK8PFchs"),
    "2018_UL": EraSpec(
        name="2018_UL", jec_mc="Summer19UL18_V5_MC",
        jec_data=tuple((a, b, f"Summer19UL18_Run{p}_V5_DATA") for a, b, p in RUNS_2018),
        jer="Summer19UL18_JRV2_MC", pileup="Collisions18_UltraLegacy_goldenJSON",
        trigger="Run2018_DST_HT410_PFScouting_HTScaleFactor"),
    "2017_UL": EraSpec(
        name="2017_UL", jec_mc="Summer19UL17_V5_MC",
        jec_data=tuple((a, b, f"Summer19UL17_Run{p}_V5_DATA") for a, b, p in RUNS_2017),
        jer="Summer19UL17_JRV2_MC", pileup="Collisions17_UltraLegacy_goldenJSON",
        trigger="Run2017_DST_HT410_PFScouting_HTScaleFactor"),
    "2016postVFP_UL": EraSpec(
        name="2016postVFP_UL", jec_mc="Summer19UL16_V7_MC",
        jec_data=tuple((a, b, f"Summer19UL16_Run{p}_V7_DATA") for a, b, p in RUNS_2016_POST),
        jer="Summer20UL16_JRV3_MC", pileup="Collisions16_UltraLegacy_goldenJSON",
        trigger="Run2016_DST_HT410_PFScouting_HTScaleFactor"),
    "2016preVFP_UL": EraSpec(
        name="2016preVFP_UL", jec_mc="Summer19UL16APV_V7_MC",
        jec_data=tuple((a, b, f"Summer19UL16APV_Run{p}_V7_DATA") for a, b, p in RUNS_2016_PRE),
        jer="Summer20UL16APV_JRV3_MC", pileup="Collisions16_UltraLegacy_goldenJSON",
        trigger="Run2016_DST_HT410_PFScouting_HTScaleFactor"),
}


class CorrectionsSettings(BaseModel):
    """``analysis.corrections``: the era's correction payloads and how jets and MET are corrected.

    ``era``: a key of :data:`ERAS` (``svjscout_sim``: our simulation, JEC identity; ``2018_UL``);
    ``root``: ``shipped`` or the folder holding ``POG/<pog>/<era>/...`` (a jsonpog-integration
    checkout; relative to the job file); ``names``: overrides of the era's :class:`EraSpec` fields
    (e.g. ``{jec_mc: Summer19UL18_V5_MC, ak8: AK8PFPuppi}``); ``jec``: correct the AK4 and AK8 jets
    (L1L2L3, plus the residual on data) before the selection; ``type1_met``: propagate the AK4
    correction to MET (type-1); ``max_jec_factor``: a bound on the compound JEC factor of every jet
    that lets the prefilter run with a non-identity JEC (checked on every clustered jet; null:
    the prefilter is off when the JEC is not the identity); ``by_era``: the corrections era of the
    datasets of each data-quality era (``datasets.NAME.era``, e.g. ``{"2017": 2017_UL, "2018": 2018_UL}``),
    so that one job processes several eras each with its own payloads; a dataset whose era is not
    listed (or has none) takes ``era``.

    >>> CorrectionsSettings(by_era={"2017": "2017_UL"}).for_era("2017").era
    '2017_UL'
    >>> CorrectionsSettings(by_era={"2017": "2017_UL"}).for_era("2018").era
    'svjscout_sim'
    """

    model_config = ConfigDict(extra="forbid")

    era: str = "svjscout_sim"
    root: str = "shipped"
    names: dict[str, str | list] = Field(default_factory=dict)
    jec: bool = True
    type1_met: bool = True
    max_jec_factor: float | None = None
    by_era: dict[str, str] = Field(default_factory=dict)

    @field_validator("era")
    @classmethod
    def _known_era(cls, v: str) -> str:
        if v not in ERAS:
            raise ValueError(f"analysis.corrections.era: unknown era {v!r}, expected one of {sorted(ERAS)}")
        return v

    @field_validator("by_era", mode="before")
    @classmethod
    def _known_eras(cls, v):
        v = {str(k): str(e) for k, e in dict(v or {}).items()}  # YAML may give the years as integers
        bad = {k: e for k, e in v.items() if e not in ERAS}
        if bad:
            raise ValueError(f"analysis.corrections.by_era: unknown corrections era(s) {bad}, expected values in "
                             f"{sorted(ERAS)}")
        return v

    def for_era(self, era: str | None) -> CorrectionsSettings:
        """These settings with the corrections era of a dataset of data-quality era ``era`` (``by_era``)."""
        target = self.by_era.get(str(era)) if era is not None else None
        return self if target is None or target == self.era else self.model_copy(update={"era": target})

    @field_validator("names")
    @classmethod
    def _known_names(cls, v: dict) -> dict:
        fields = set(EraSpec.__dataclass_fields__) - {"name"}
        bad = sorted(set(v) - fields)
        if bad:
            raise ValueError(f"analysis.corrections.names: unknown {bad}, expected some of {sorted(fields)}")
        return v

    @field_validator("max_jec_factor")
    @classmethod
    def _factor(cls, v: float | None) -> float | None:
        if v is not None and not (np.isfinite(v) and v >= 1.0):
            raise ValueError(f"analysis.corrections.max_jec_factor must be a finite number >= 1 (or null), got {v!r}")
        return v

    def spec(self) -> EraSpec:
        """The era's names with the configured overrides."""
        over = dict(self.names)
        if "jec_data" in over:
            over["jec_data"] = tuple((int(a), int(b), str(t)) for a, b, t in over["jec_data"])
        return replace(ERAS[self.era], **over)

    def root_path(self, base_dir: str | Path | None = None) -> Path:
        """The folder holding ``POG/<pog>/<era>/``: ``root``, except for our simulation's era
        (``svjscout_sim``), which only the package ships (a CMS jsonpog checkout has the CMS eras)."""
        if self.root == "shipped" or self.era == SHIPPED_ERA:
            return SHIPPED_ROOT
        p = Path(self.root).expanduser()
        return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def _read_json(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)


def _is_one(node) -> bool:
    """Whether a correctionlib data node is the constant 1 (a number, or bins/categories of it)."""
    if isinstance(node, (int, float)):
        return float(node) == 1.0
    if isinstance(node, dict):
        kind = node.get("nodetype")
        if kind in ("binning", "multibinning"):
            return all(_is_one(c) for c in node["content"])
        if kind == "category":
            return all(_is_one(c["value"]) for c in node["content"]) and _is_one(node.get("default", 1.0))
        if kind == "formula":
            return node.get("expression", "").strip() in ("1", "1.0")
    return False


class _Legacy:
    """One of the five former names (``jes_uncertainty``...) with its former positional inputs."""

    def __init__(self, era: EraCorrections, what: str, jets: str):
        self.era, self.what, self.jets = era, what, jets

    def evaluate(self, *args):
        order = {"jes_uncertainty": ("JetEta", "JetPt"), "jer_scale_factor": ("JetEta", "systematic"),
                 "jer_resolution": ("JetEta", "JetPt", "Rho"), "trigger_ht_sf": ("HT", "systematic"),
                 "pileup_weight": ("NumTrueInteractions", "systematic")}[self.what]
        return self.era.value(self.what, self.jets, **dict(zip(order, args)))


class EraCorrections:
    """The corrections of one era from files in the CMS JSON POG layout (lazy, per file).

    :meth:`value` evaluates the uncertainty, JER and weight corrections by input name;
    :meth:`jec_levels` gives the levels of the compound JEC (:mod:`svjscout.processors.jec`
    evaluates them); ``era["jer_scale_factor"].evaluate(eta, syst)`` keeps the positional
    interface of the former five-name payload (:data:`svjscout.processors.corrections.REQUIRED`).
    """

    def __init__(self, root: str | Path, spec: EraSpec):
        self.root, self.spec = Path(root), spec
        self._json: dict[str, dict] = {}
        self._cset: dict[str, correctionlib.CorrectionSet] = {}

    def __repr__(self) -> str:
        return f"EraCorrections({self.spec.name!r} in {self.root})"

    # -- files and corrections
    def path(self, role: str) -> Path:
        return self.root / self.spec.files()[role]

    def _load(self, role: str) -> None:
        if role in self._cset:
            return
        path = self.path(role)
        if not path.is_file():
            raise PayloadError(f"era {self.spec.name}: correction file {path} does not exist "
                               f"(analysis.corrections.root = {self.root}; docs/corrections.md)")
        data = _read_json(path)
        self._json[role] = {c["name"]: c for c in data.get("corrections", [])}
        self._json[role].update({f"compound:{c['name']}": c for c in data.get("compound_corrections") or []})
        self._cset[role] = correctionlib.CorrectionSet.from_string(json.dumps(data))

    def raw(self, role: str, name: str) -> dict:
        """The JSON of a correction (``compound:NAME`` for a compound one)."""
        self._load(role)
        found = self._json[role]
        if name not in found:
            have = ", ".join(sorted(n for n in found if not n.startswith("compound:"))[:12])
            raise PayloadError(f"{self.path(role)} has no correction {name!r} (era {self.spec.name}; "
                               f"it has: {have}...)")
        return found[name]

    def correction(self, role: str, name: str):
        """A correctionlib correction (``compound:NAME`` for a compound one), by name."""
        self.raw(role, name)
        cset = self._cset[role]
        return cset.compound[name.split(":", 1)[1]] if name.startswith("compound:") else cset[name]

    def keys(self) -> list[str]:
        """The five former names (``REQUIRED``) this era provides."""
        return ["jes_uncertainty", "jer_scale_factor", "jer_resolution", "trigger_ht_sf", "pileup_weight"]

    def __getitem__(self, name: str) -> _Legacy:
        what, _, jets = name.partition(":")
        if what not in self.keys():
            raise KeyError(name)
        return _Legacy(self, what, jets or "ak4")

    # -- names
    def names(self, what: str, jets: str = "ak4") -> tuple[str, str]:
        """(file role, correction name) of ``jes_uncertainty``, ``jer_scale_factor``,
        ``jer_resolution``, ``trigger_ht_sf`` or ``pileup_weight`` (for ``jets`` ak4 or ak8)."""
        s = self.spec
        algo = s.ak4 if jets == "ak4" else s.ak8
        if what == "jes_uncertainty":
            return jets, f"{s.jec_mc}_{s.uncertainty}_{algo}"
        if what in ("jer_scale_factor", "jer_resolution"):
            jer_algo = s.ak4 if jets == "ak4" else s.jer_ak8
            role = "ak4" if jer_algo == s.ak4 else jets
            kind = "ScaleFactor" if what == "jer_scale_factor" else "PtResolution"
            return role, f"{s.jer}_{kind}_{jer_algo}"
        if what == "trigger_ht_sf":
            return "trigger", s.trigger
        if what == "pileup_weight":
            return "pileup", s.pileup
        raise KeyError(what)

    def value(self, what: str, jets: str = "ak4", **inputs) -> np.ndarray:
        """Evaluate one correction with its inputs given by CMS name (``JetEta=``, ``JetPt=``,
        ``Rho=``, ``systematic=``, ``HT=``, ``NumTrueInteractions=``); our systematic keys
        nom/up/down are translated (pileup: :attr:`EraSpec.pileup_keys`)."""
        role, name = self.names(what, jets)
        corr = self.correction(role, name)
        if "systematic" in inputs:
            syst = inputs.pop("systematic")
            key = self.spec.pileup_keys.get(syst, syst) if what == "pileup_weight" else syst
            inputs["systematic"] = inputs["weights"] = key
        if what == "trigger_ht_sf" and "HT" not in inputs and "ht" in inputs:
            inputs["HT"] = inputs.pop("ht")
        return evaluate_by_name(corr, inputs, f"{self.path(role)}: {name}")

    # -- JEC
    def jec_tags(self, is_data: bool) -> list[tuple[int, int, str]]:
        return list(self.spec.jec_data) if is_data else [(-(2**62), 2**62, self.spec.jec_mc)]

    def jec_levels(self, jets: str, tag: str) -> list:
        """The levels (correctionlib corrections, in order) of the compound ``<tag>_L1L2L3Res_<algo>``."""
        algo = self.spec.ak4 if jets == "ak4" else self.spec.ak8
        comp = self.raw(jets, f"compound:{tag}_{self.spec.compound}_{algo}")
        return [self.correction(jets, name) for name in comp["stack"]]

    def jec_compound(self, jets: str, tag: str):
        algo = self.spec.ak4 if jets == "ak4" else self.spec.ak8
        return self.correction(jets, f"compound:{tag}_{self.spec.compound}_{algo}")

    def jec_identity(self, jets: str, is_data: bool) -> bool:
        """Whether every level of the compound JEC of these jets is the constant 1."""
        algo = self.spec.ak4 if jets == "ak4" else self.spec.ak8
        for _, _, tag in self.jec_tags(is_data):
            comp = self.raw(jets, f"compound:{tag}_{self.spec.compound}_{algo}")
            if not all(_is_one(self.raw(jets, name)["data"]) for name in comp["stack"]):
                return False
        return True

    def needs_rho(self, jets: str, is_data: bool) -> bool:
        return any("Rho" in [v.name for v in lvl.inputs] for _, _, tag in self.jec_tags(is_data)
                   for lvl in self.jec_levels(jets, tag))


def evaluate_by_name(corr, inputs: dict, where: str) -> np.ndarray:
    """``corr.evaluate`` with its inputs taken from ``inputs`` by name (arrays broadcast)."""
    args = []
    for var in corr.inputs:
        if var.name not in inputs:
            raise PayloadError(f"{where} has an input {var.name!r} that svjscout does not provide "
                               f"(provided: {sorted(inputs)}; docs/corrections.md)")
        args.append(inputs[var.name])
    n = next((len(a) for a in args if isinstance(a, np.ndarray)), None)
    if n == 0:
        return np.zeros(0)
    return np.asarray(corr.evaluate(*args), dtype=np.float64)


_CACHE: dict[tuple, EraCorrections] = {}


def load_era(settings: CorrectionsSettings | None = None, base_dir: str | Path | None = None) -> EraCorrections:
    """The :class:`EraCorrections` of ``analysis.corrections`` (cached per root and names)."""
    settings = settings or CorrectionsSettings()
    spec = settings.spec()
    root = settings.root_path(base_dir)
    key = (str(root), repr(spec))
    if key not in _CACHE:
        _CACHE[key] = EraCorrections(root, spec)
    return _CACHE[key]
