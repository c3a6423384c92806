"""Input schema: where the processors find PF candidates, MET, weights and event ids in a file.

Files are read through coffea NanoEvents (:class:`SVJScoutingSchema`, a NanoAOD-style schema:
``nX`` counters and ``X_field`` branches become collections). The default names are those of
CMS's current Run-3 ScoutingNano (``ScoutingPFCandidate_*`` with ``vertexIndex``, ``ScoutingMET_*``,
``ScoutingPrimaryVertex_*``, ``ScoutingRho_fixedGridRhoFastjetAll``, ``genWeight``,
``run``/``luminosityBlock``/``event``), which our generated samples use too. Run-2 scouting
ntuples name things differently: :class:`BranchMap` is the one place that maps our names to a
file's, and it is set from the job config (``schema:`` block), never in code. Shipped layouts are
presets (:data:`PRESETS`, ``schema: {preset: run2_svj}`` plus optional overrides); their sources
are in docs/formats.md.

>>> m = BranchMap(pf_collection="PFcand", met_pt="MET_pt")
>>> m.required_branches(is_mc=False)[:3]
['nPFcand', 'PFcand_pt', 'PFcand_eta']
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from coffea.nanoevents import NanoAODSchema
from pydantic import BaseModel, ConfigDict, Field, model_validator

from svjscout.core.exceptions import ConfigError, InputFileError, MissingBranchError
from svjscout.core.rootfiles import open_root

#: The PF candidate fields the schema maps, in our (canonical) names.
PF_FIELDS = ("pt", "eta", "phi", "mass", "pdgId", "charge")

#: The PF candidate fields the processor reads (clustering, the prefilter, the variations): NanoEvents
#: loads a branch when a field is touched, so asking for these only leaves ``pdgId`` and ``charge``
#: (a third of the candidates' bytes) unread and undecompressed.
KINEMATIC_FIELDS = ("pt", "eta", "phi", "mass")

#: Branches the signal systematics read besides the schema's (processors/variations.py: the pileup
#: reweighting's ``Pileup_nTrueInt``, the parton-shower weights ``PSWeight``); optional in a file.
SYSTEMATICS_BRANCHES = ("Pileup_nTrueInt", "nPSWeight", "PSWeight")


#: The event-id branches coffea's NanoEvents requires (``NanoAODSchema.event_ids``).
EVENT_ID_BRANCHES = ("run", "luminosityBlock", "event")


class SVJScoutingSchema(NanoAODSchema):
    """NanoAOD-style schema for scouting files: collections by prefix, no cross-references.

    NanoEvents demands the event ids ``run``, ``luminosityBlock``, ``event`` ("There are missing
    event ID fields"). A file that names one differently (the Run-2 SVJ ntuples' ``lumSec``) gets
    the NanoAOD name as a second name of the same branch (:attr:`event_id_aliases`: NanoAOD name ->
    the file's names, tried in order); the file's own name stays, so :class:`BranchMap` reads it.
    The class itself knows the names of the shipped presets; :meth:`BranchMap.schema_class` adds a
    job's own mapping.
    """

    warn_missing_crossrefs = False
    all_cross_references: dict = {}
    event_id_aliases: dict[str, tuple[str, ...]] = {"luminosityBlock": ("lumSec",)}

    def __init__(self, base_form, *args, **kwargs):
        fields, contents = base_form.get("fields", []), base_form.get("contents", [])
        for nano, names in self.event_id_aliases.items():
            if nano in fields:
                continue
            for name in names:
                if name in fields:  # the same branch (form key) under both names
                    fields.append(nano)
                    contents.append(contents[fields.index(name)])
                    break
        super().__init__(base_form, *args, **kwargs)


#: Shipped input layouts: preset name -> BranchMap fields (docs/formats.md gives the sources).
#: The default (an empty preset, ``scoutingnano_run3``) is CMS's current Run-3 ScoutingNano, what the
#: generator writes; ``svjscout`` reads files of the generator's older layout (before the regeneration).
PRESETS: dict[str, dict] = {
    # files of the generator's older ``svjscout`` layout: ScoutingParticle with mass and charge,
    # charged pileup already removed (no vertexIndex), plus ``parent``
    "svjscout": {"pf_collection": "ScoutingParticle"},
    # current CMSSW ScoutingNano (PhysicsTools/NanoAOD/python/run3scouting_cff.py): the PF
    # candidates with mass and charge are ``ScoutingPFCandidate`` (CandVars); ``ScoutingParticle``
    # there has pt/eta/phi, pdgId, vertex and track variables but no mass or charge
    "scoutingnano_run3": {},
    # the older ScoutingNano: the PF candidate table (CandVars) was named ``ScoutingParticle``
    "scoutingnano_old": {"pf_collection": "ScoutingParticle"},
    # Run-2 SVJ scouting ntuples (SVJScouting_ntuplizer, read by CMS-SVJ-scouting/SVJProcessing):
    # PFCands_vertex, nPVs + PV_{x,y,z,tracksSize,chi2,ndof,isValidVtx,isGood}, rho, and the
    # DST_HT410_PFScouting decision as the uint32 ``scouting_trig`` (ScoutingNanoAOD_fromData.cc)
    "run2_svj": {"tree": "mmtree/Events", "pf_collection": "PFCands", "met_pt": "ScoutMET_pt",
                 "met_phi": "ScoutMET_phi", "luminosity_block": "lumSec", "pf_vertex": "vertex",
                 "pv_collection": "PV", "rho": "rho", "trigger_branches": {"DST_HT410_PFScouting": "scouting_trig"}},
}

#: The primary-vertex fields the good-vertex requirement reads (our names; ``isValidVtx`` optional).
PV_FIELDS = ("x", "y", "z", "ndof", "isValidVtx")

#: Trigger bits listed for the runner's branch filter besides the map's own (any ``DST_*`` bit:
#: the scouting paths of every era; processors/dataquality.py reads only the job's paths).
TRIGGER_GLOBS = ("DST_*",)


class BranchMap(BaseModel):
    """Mapping from svjscout's names to a file's tree and branch names (defaults: ScoutingNano).

    Attributes:
        tree: the events tree.
        pf_collection: prefix of the PF-candidate collection (counter ``n<prefix>``).
        pf_fields: our PF field name -> the file's field name (after the prefix).
        met_pt, met_phi, gen_weight, run, luminosity_block, event: full branch names.
        parent: the detector-resampling parent id (optional: files without it, e.g. data or
            older samples, have one copy per generated event; see :meth:`parent_keys`).
        pf_vertex: the PF field with the candidate's primary-vertex index (0: the hard-scatter
            vertex, > 0: a pileup vertex, -1: no track); None: no CHS (optional in a file).
        pv_collection, pv_fields: the primary vertices (prefix and our field -> the file's field,
            default the same name; optional in a file); rho: the event's rho branch.
        trigger_branches: HLT path (NanoAOD bit name) -> the file's branch where it differs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tree: str = "Events"
    pf_collection: str = "ScoutingPFCandidate"
    pf_fields: dict[str, str] = {f: f for f in PF_FIELDS}
    met_pt: str = "ScoutingMET_pt"
    met_phi: str = "ScoutingMET_phi"
    gen_weight: str = "genWeight"
    run: str = "run"
    luminosity_block: str = "luminosityBlock"
    event: str = "event"
    parent: str = "parent"
    pf_vertex: str | None = "vertexIndex"
    pv_collection: str = "ScoutingPrimaryVertex"
    pv_fields: dict[str, str] = {}
    rho: str = "ScoutingRho_fixedGridRhoFastjetAll"
    trigger_branches: dict[str, str] = {}
    #: the preset the map was built from (None: fields given one by one); not part of the config
    #: digest (``exclude``): a preset and the same fields spelt out are one configuration
    preset: str | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        """``preset: NAME`` fills the fields from :data:`PRESETS` under the ones given beside it."""
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        data = dict(data)
        name = data.pop("preset")
        if name not in PRESETS:
            raise ConfigError(f"schema.preset: unknown preset {name!r}; the known presets are {sorted(PRESETS)}")
        merged = {**PRESETS[name], **data}
        merged["preset"] = name
        return merged

    @classmethod
    def from_preset(cls, name: str, **overrides) -> BranchMap:
        """The map of preset ``name`` (:data:`PRESETS`) with ``overrides``.

        >>> BranchMap.from_preset("run2_svj").luminosity_block
        'lumSec'
        """
        return cls(preset=name, **overrides)

    def schema_class(self) -> type[SVJScoutingSchema]:
        """The NanoEvents schema for files in this layout: :class:`SVJScoutingSchema`, or a subclass
        that also aliases this map's event-id names (e.g. ``luminosity_block: LS``) to NanoAOD's."""
        extra = {nano: (name,) for nano, name in zip(EVENT_ID_BRANCHES, (self.run, self.luminosity_block, self.event))
                 if name != nano and name not in SVJScoutingSchema.event_id_aliases.get(nano, ())}
        if not extra:
            return SVJScoutingSchema
        return _aliased_schema(tuple(sorted(extra.items())))

    def model_post_init(self, __context) -> None:
        unknown = sorted(f for f in self.pf_fields if f not in PF_FIELDS)
        if unknown:
            raise ValueError(f"schema.pf_fields: unknown key(s) {unknown}; the known keys are {list(PF_FIELDS)} "
                             "(our names; the values are the file's field names)")
        missing = [f for f in PF_FIELDS if f not in self.pf_fields]
        if missing:
            raise ValueError(f"schema.pf_fields lacks {missing}; expected keys {list(PF_FIELDS)}")
        unknown = sorted(f for f in self.pv_fields if f not in PV_FIELDS)
        if unknown:
            raise ValueError(f"schema.pv_fields: unknown key(s) {unknown}; the known keys are {list(PV_FIELDS)}")

    def required_branches(self, is_mc: bool) -> list[str]:
        """The branches a file must have, in the file's names: those the processor reads, and the PF
        candidates' ``pdgId`` and ``charge`` (mapped, required of every input, not read by the processor)."""
        pf = [f"n{self.pf_collection}"] + [f"{self.pf_collection}_{self.pf_fields[f]}" for f in PF_FIELDS]
        other = [self.met_pt, self.met_phi, self.run, self.luminosity_block, self.event]
        return pf + other + ([self.gen_weight] if is_mc else [])

    def processor_branches(self) -> list[str]:
        """Every branch the processor may read, in the file's names (those a file lacks are skipped).

        The runner gives this list to NanoEvents (``iteritems_options={"filter_name": ...}``), which
        then builds its form from these branches only: on a ScoutingNano file with ~1,300 branches that
        is ~0.3 s less per chunk. A branch the processor reads must be listed here (an optional one left
        out would read as absent): ``tests/test_cms_like.py`` checks the list against NanoEvents' access
        log of the processor on signal (systematics on) and background files.
        """
        pf = [f"n{self.pf_collection}"] + [f"{self.pf_collection}_{self.pf_fields[f]}" for f in KINEMATIC_FIELDS]
        # data quality (processors/dataquality.py): pdgId (jet ID), the vertex index (CHS), the
        # vertices, the trigger bits; listed, not read unless their stage is on and the file has them
        dq = [f"{self.pf_collection}_{self.pf_fields['pdgId']}"]
        if self.pf_vertex:
            dq.append(f"{self.pf_collection}_{self.pf_vertex}")
        dq += [f"n{self.pv_collection}"] + [f"{self.pv_collection}_{self.pv_fields.get(f, f)}" for f in PV_FIELDS]
        dq += [self.rho] + list(self.trigger_branches.values()) + list(TRIGGER_GLOBS)  # rho: the JEC's L1
        # the skim's dark-quark match (processors/skim.py): signal files' generator record
        truth = ["nGenDarkQuark", "GenDarkQuark_eta", "GenDarkQuark_phi"]
        return pf + [self.met_pt, self.met_phi, self.run, self.luminosity_block, self.event, self.gen_weight,
                     self.parent, *SYSTEMATICS_BRANCHES, *dq, *truth]

    # -- access to NanoEvents ------------------------------------------------------------
    def pf_candidates(self, events, fields: tuple[str, ...] = PF_FIELDS) -> ak.Array:
        """PF candidates (events x candidates) with ``fields`` (default :data:`PF_FIELDS`; GeV, rad).

        Only the branches of ``fields`` are read (the processor asks for :data:`KINEMATIC_FIELDS`).
        """
        unknown = [f for f in fields if f not in PF_FIELDS]
        if unknown:
            raise ValueError(f"unknown PF field(s) {unknown}; expected some of {list(PF_FIELDS)}")
        coll = _get(events, self.pf_collection)
        return ak.zip({f: _get(coll, self.pf_fields[f], parent=self.pf_collection) for f in fields},
                      with_name=None)

    def pf_kinematics(self, events) -> ak.Array:
        """PF candidates with :data:`KINEMATIC_FIELDS` only: what the processor reads."""
        return self.pf_candidates(events, KINEMATIC_FIELDS)

    def pf_vertex_index(self, events) -> ak.Array | None:
        """The PF candidates' primary-vertex index (events x candidates), or None when the map names
        no vertex field (``pf_vertex: null``) or the file lacks it."""
        if not self.pf_vertex:
            return None
        try:
            return _get(_get(events, self.pf_collection), self.pf_vertex, parent=self.pf_collection)
        except MissingBranchError:
            return None

    def met(self, events) -> tuple[np.ndarray, np.ndarray]:
        """(MET pt in GeV, MET phi) per event as float64 numpy arrays."""
        return (ak.to_numpy(_branch(events, self.met_pt)).astype(np.float64),
                ak.to_numpy(_branch(events, self.met_phi)).astype(np.float64))

    def gen_weight_of(self, events, is_mc: bool) -> np.ndarray:
        """genWeight per event for MC, 1 for data."""
        if not is_mc:
            return np.ones(len(events), dtype=np.float64)
        return ak.to_numpy(_branch(events, self.gen_weight)).astype(np.float64)

    def event_ids(self, events) -> np.ndarray:
        """(run, luminosityBlock, event) as an (n, 3) uint64 array."""
        cols = [ak.to_numpy(_branch(events, b)).astype(np.uint64)
                for b in (self.run, self.luminosity_block, self.event)]
        return np.stack(cols, axis=1)

    def parent_ids(self, events) -> np.ndarray | None:
        """The ``parent`` branch (the generated event a detector copy belongs to) as uint64, or
        None when the file has no such branch (older files, data: every event is its own parent)."""
        try:
            arr = _branch(events, self.parent)
        except MissingBranchError:
            return None
        return ak.to_numpy(arr).astype(np.uint64)

    def parent_keys(self, events) -> np.ndarray | None:
        """One uint64 key per event for its parent, ``(run << 40) | parent``, or None without a
        ``parent`` branch. ``(run, parent)`` is unique across the files of a dataset (run = the
        generator seed), so copies of one generated event share a key and nothing else does."""
        parent = self.parent_ids(events)
        if parent is None:
            return None
        run = ak.to_numpy(_branch(events, self.run)).astype(np.uint64)
        return parent_key(run, parent, "parent", _filename(events))

    def parent_keys_or_events(self, events) -> np.ndarray:
        """:meth:`parent_keys`, or without a ``parent`` branch ``(run << 40) | event`` (every event
        its own parent)."""
        keys = self.parent_keys(events)
        if keys is not None:
            return keys
        run, _, event = self.event_ids(events).T
        return parent_key(run, event, self.event, _filename(events))


_ALIASED: dict[tuple, type[SVJScoutingSchema]] = {}


def _aliased_schema(extra: tuple) -> type[SVJScoutingSchema]:
    """A :class:`SVJScoutingSchema` subclass with more event-id aliases (one class per mapping,
    so that NanoEvents' caches see one schema per layout)."""
    if extra not in _ALIASED:
        aliases = dict(SVJScoutingSchema.event_id_aliases)
        for nano, names in extra:
            aliases[nano] = tuple(names) + aliases.get(nano, ())
        _ALIASED[extra] = type("SVJScoutingSchemaAliased", (SVJScoutingSchema,), {"event_id_aliases": aliases})
    return _ALIASED[extra]


#: Bits of a parent key (:func:`parent_key`) below the run number.
PARENT_BITS = 40


def parent_key(run, number, what: str = "parent", where: str = "the input file") -> np.ndarray:
    """``(run << 40) | number`` as uint64: one key per (run, parent) pair, collision-free for
    run < 2^24 and number < 2^40.

    Raises:
        InputFileError: a run or number out of that range (two parents could share a key).

    >>> parent_key(np.array([1, 2], np.uint32), np.array([5, 5], np.uint64)).tolist()
    [1099511627781, 2199023255557]
    """
    run = np.asarray(run).astype(np.uint64)
    number = np.asarray(number).astype(np.uint64)
    if len(run) and (run.max() >= np.uint64(1 << (64 - PARENT_BITS)) or number.max() >= np.uint64(1 << PARENT_BITS)):
        raise InputFileError(f"{where}: run up to {int(run.max())} or {what} up to {int(number.max())} does not fit "
                             f"a parent key (run < 2^{64 - PARENT_BITS}, {what} < 2^{PARENT_BITS})")
    return (run << np.uint64(PARENT_BITS)) | number


def _get(obj, name: str, parent: str | None = None):
    try:
        return obj[name]
    except (KeyError, ValueError, AttributeError, ak.errors.FieldNotFoundError) as err:
        full = f"{parent}_{name}" if parent else name
        raise MissingBranchError(f"branch {full!r} not found in {_filename(obj)}") from err


def _branch(events, name: str):
    """A branch by its full file name: ``X_y`` is field ``y`` of collection ``X`` in NanoEvents."""
    if name in events.fields:
        return events[name]
    if "_" in name:
        prefix, rest = name.split("_", 1)
        if prefix in events.fields:
            return _get(events[prefix], rest, parent=prefix)
    raise MissingBranchError(f"branch {name!r} not found in {_filename(events)}")


def optional_branch(events, name: str) -> np.ndarray | None:
    """A per-event branch (``X_y`` is field ``y`` of collection ``X``) as float64 numpy, or None if absent."""
    try:
        arr = _branch(events, name)
    except MissingBranchError:
        return None
    if arr.ndim > 1:  # a NanoAOD vector branch (nX + X), e.g. PSWeight: (events, 4)
        arr = ak.to_regular(arr, axis=1)
    return ak.to_numpy(arr).astype(np.float64)


def _filename(obj) -> str:
    try:
        return str(obj.metadata.get("filename", "the input file"))
    except Exception:  # noqa: BLE001 - metadata is optional
        return "the input file"


def check_file(path: str, branch_map: BranchMap, is_mc: bool) -> int:
    """Open ``path`` and check tree and branches; return its number of events.

    Raises:
        InputFileError: the file cannot be opened, is truncated, has no tree ``branch_map.tree``, or
            holds it as an RNTuple (uproot >= 5.4 writes ``f["Events"] = {...}`` as an RNTuple).
        MissingBranchError: a required branch is absent (names the file and the branch).
    """
    with open_root(path, f"tree {branch_map.tree!r}") as f:
        if branch_map.tree not in f:
            raise InputFileError(f"{path}: no tree {branch_map.tree!r} (found keys {sorted(f.keys())[:10]})")
        if f.classname_of(branch_map.tree) == "ROOT::RNTuple":
            raise InputFileError(f"{path}: {branch_map.tree!r} is an RNTuple; svjscout reads TTrees (write the "
                                 f"file with uproot's mktree/extend, or convert it to a TTree)")
        tree = f[branch_map.tree]
        keys = set(tree.keys())
        n = int(tree.num_entries)
    missing = [b for b in branch_map.required_branches(is_mc) if b not in keys]
    if missing:
        what = f"branch {missing[0]!r}" if len(missing) == 1 else f"branches {missing}"
        raise MissingBranchError(f"{path}: {what} not found in tree {branch_map.tree!r} "
                                 "(set them in the schema mapping)")
    return n
