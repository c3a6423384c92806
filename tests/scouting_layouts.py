"""Small ROOT files in CMS's scouting layouts, written with uproot from a generated file.

Each layout holds the same events as the source (an embedded sample file, in the generator's
default ``scoutingnano_run3`` layout: all PF candidates with their ``vertexIndex``, vertices, rho,
the trigger bit), renamed and typed as CMS writes them (docs/formats.md gives the sources): the
collection counter ``n<Collection>`` and
``<Collection>_<field>`` branches, float32 kinematics, int32 ids, uint32 run/lumi. What uproot
cannot write is noted where it differs (the Run-2 ntuplizer's ``std::vector`` branches and
``/i`` counters become uproot's counted arrays with int32 counters: the same names and values).
The ``parent`` branch (our detector resampling) and the generator-truth extras are left out: real
files have none of them (``keep_parent`` keeps ``parent``, as our generator would write it). The
``svjscout`` layout (the generator's older one) has no vertex association: its candidates are the
source's after CHS (``vertexIndex`` > 0 dropped), and it has no vertices, rho or trigger bits.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import uproot

#: the vertex fields written: Run-3 ScoutingPrimaryVertex (run3scouting_cff.py), the Run-2 ntuplizer's PV
RUN3_PV = ("x", "y", "z", "xError", "yError", "zError", "tracksSize", "chi2", "ndof", "isValidVtx")
RUN2_PV = ("x", "y", "z", "tracksSize", "chi2", "ndof", "isValidVtx")
#: source branches carried into the layouts' own names
SOURCE_RHO, SOURCE_PV = "ScoutingRho_fixedGridRhoFastjetAll", "ScoutingPrimaryVertex"
SOURCE_TRIGGER = "DST_HT410_PFScouting"

#: layout name (a schema preset) -> how it is written
LAYOUTS: dict[str, dict] = {
    "svjscout": {"tree": "Events", "pf": "ScoutingParticle", "pf_extra": {},
                 "met": ("ScoutingMET_pt", "ScoutingMET_phi", np.float32),
                 "ids": {"run": ("run", np.uint32), "luminosityBlock": ("luminosityBlock", np.uint32),
                         "event": ("event", np.uint64)},
                 "other": {}, "pv": None, "trigger": None},
    # run3scouting_cff.py: ScoutingPFCandidate = CandVars (pt, eta, phi, mass, pdgId, charge) + vertexIndex...;
    # ScoutingParticle = P3Vars + pdgId, vertex, track variables (no mass, no charge); ScoutingRho
    "scoutingnano_run3": {"tree": "Events", "pf": "ScoutingPFCandidate", "pf_extra": {"vertexIndex": np.int32},
                          "met": ("ScoutingMET_pt", "ScoutingMET_phi", np.float32),
                          "ids": {"run": ("run", np.uint32), "luminosityBlock": ("luminosityBlock", np.uint32),
                                  "event": ("event", np.uint64)},
                          "other": {"ScoutingRho_fixedGridRhoFastjetAll": np.float32},
                          "pv": ("ScoutingPrimaryVertex", RUN3_PV), "trigger": ("DST_HT410_PFScouting", np.bool_),
                          "second": "ScoutingParticle"},
    # the older ScoutingNano: the CandVars table was named ScoutingParticle
    "scoutingnano_old": {"tree": "Events", "pf": "ScoutingParticle", "pf_extra": {"vertexIndex": np.int32},
                         "met": ("ScoutingMET_pt", "ScoutingMET_phi", np.float32),
                         "ids": {"run": ("run", np.uint32), "luminosityBlock": ("luminosityBlock", np.uint32),
                                 "event": ("event", np.uint64)},
                         "other": {}, "pv": ("ScoutingPrimaryVertex", RUN3_PV),
                         "trigger": ("DST_HT410_PFScouting", np.bool_)},
    # SVJScouting_ntuplizer (ScoutingNanoAOD*.cc), tree mmtree/Events as SVJProcessing reads it:
    # lumSec/i, run/i, event/i, nPFCands/i, PFCands_{pt,eta,phi,mass} float, _{pdgId,charge,vertex} int,
    # ScoutMET_pt/phi double, rho double
    "run2_svj": {"tree": "mmtree/Events", "pf": "PFCands", "pf_extra": {"vertex": np.int32},
                 "met": ("ScoutMET_pt", "ScoutMET_phi", np.float64),
                 "ids": {"run": ("run", np.uint32), "luminosityBlock": ("lumSec", np.uint32),
                         "event": ("event", np.uint32)},
                 "other": {"rho": np.float64}, "pv": ("PV", RUN2_PV), "trigger": ("scouting_trig", np.uint32)},
}

PF_FIELDS = ("pt", "eta", "phi", "mass", "pdgId", "charge")


def write_layout(src: str, dst, layout: str, spec: dict | None = None, keep_parent: bool = False) -> str:
    """Write the events of ``src`` (a generated file, either layout) to ``dst`` in ``layout`` (:data:`LAYOUTS`, or
    ``spec`` in its format); the ``Runs`` tree and ``svjscout_meta`` (normalisation) are copied.
    ``keep_parent``: keep our ``parent`` branch too (simulation written in a CMS layout by our
    generator: the detector copies of one generated event stay correlated in the variances)."""
    spec = spec or LAYOUTS[layout]
    with uproot.open(src) as f:
        ev = f["Events"].arrays(library="ak")
        runs = f["Runs"].arrays(library="ak")
        meta = str(f["svjscout_meta"])
    n = len(ev)
    cols: dict = {}
    for ours, (name, dtype) in spec["ids"].items():
        vals = ak.to_numpy(ev[ours])
        assert vals.max() <= np.iinfo(dtype).max, (ours, layout)
        cols[name] = vals.astype(dtype)
    cols["genWeight"] = ak.to_numpy(ev["genWeight"]).astype(np.float32)
    if keep_parent:
        cols["parent"] = ak.to_numpy(ev["parent"]).astype(np.uint64)
    pt_name, phi_name, met_dtype = spec["met"]
    cols[pt_name] = ak.to_numpy(ev["ScoutingMET_pt"]).astype(met_dtype)
    cols[phi_name] = ak.to_numpy(ev["ScoutingMET_phi"]).astype(met_dtype)
    for name, dtype in spec["other"].items():  # rho: the source's (a constant where it has none)
        cols[name] = (ak.to_numpy(ev[SOURCE_RHO]) if SOURCE_RHO in ev.fields else np.full(n, 20.0)).astype(dtype)
    src_pf = next(c for c in ("ScoutingPFCandidate", "ScoutingParticle") if f"n{c}" in ev.fields)
    pf = {f: ev[f"{src_pf}_{f}"] for f in PF_FIELDS}
    pf = {f: ak.values_astype(v, np.float32 if f in ("pt", "eta", "phi", "mass") else np.int32) for f, v in pf.items()}
    # the vertex association: the source's; a source without it has CHS done (charged: 0, neutral: -1)
    vidx = (ev[f"{src_pf}_vertexIndex"] if f"{src_pf}_vertexIndex" in ev.fields
            else ak.where(pf["charge"] != 0, 0, -1))
    if spec["pf_extra"]:
        for name, dtype in spec["pf_extra"].items():
            pf[name] = ak.values_astype(vidx, dtype)
    else:  # a layout without the association: CHS done in the file
        pf = {f: v[vidx <= 0] for f, v in pf.items()}
    cols[spec["pf"]] = ak.zip(pf)
    if "second" in spec:  # the current ScoutingParticle: kinematics without mass/charge, pdgId, vertex
        cols[spec["second"]] = ak.zip({"pt": pf["pt"], "eta": pf["eta"], "phi": pf["phi"], "pdgId": pf["pdgId"],
                                       "vertex": ak.values_astype(vidx, np.int32)})
    if spec.get("pv") and f"n{SOURCE_PV}" in ev.fields:
        name, fields = spec["pv"]
        cols[name] = ak.zip({f: ev[f"{SOURCE_PV}_{f}"] for f in fields})
    if spec.get("trigger") and SOURCE_TRIGGER in ev.fields:
        name, dtype = spec["trigger"]
        cols[name] = ak.to_numpy(ev[SOURCE_TRIGGER]).astype(dtype)
    with uproot.recreate(dst) as g:
        types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in cols.items()}
        g.mktree(spec["tree"], types).extend(cols)
        run_cols = {k: (runs[k] if runs[k].ndim > 1 else ak.to_numpy(runs[k])) for k in runs.fields}
        run_cols = {k: v for k, v in run_cols.items() if not (k.startswith("n") and k[1:] in run_cols)}
        g.mktree("Runs", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype)
                          for k, v in run_cols.items()}).extend(run_cols)
        g["svjscout_meta"] = meta
    return str(dst)
