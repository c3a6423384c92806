"""Output layouts of the generator: which names a generated file uses and what it carries.

``svjscout`` (the default until the regeneration of issues 30/31; the shipped samples before it):
unchanged for the same seed: PF candidates ``ScoutingParticle_{pt,eta,phi,mass,pdgId,charge}`` (the older
ScoutingNano's name), charged pileup removed in the detector (``DetectorParams.chs``), a MET
without charged pileup; no vertices, rho or trigger bits.

``scoutingnano_run3`` (the default; CMSSW's current Run-3 ScoutingNano, PhysicsTools/NanoAOD/python/
run3scouting_cff.py; the processor's schema preset of the same name reads it): PF candidates
``ScoutingPFCandidate_{pt,eta,phi,mass,pdgId,charge,vertexIndex}`` (float32 kinematics, int32
ids), *all* of them: the charged pileup candidates are written with their ``vertexIndex`` and
CHS is the reader's job (the detector's ``chs`` is off unless set explicitly); ``ScoutingMET``
is the HLT PF MET over all candidates (charged pileup included, as the HLT computes it);
``ScoutingPrimaryVertex_{x,y,z,xError,yError,zError,tracksSize,chi2,ndof,isValidVtx}``
(:mod:`svjscout.samples.vertices`); ``ScoutingRho_fixedGridRhoFastjetAll``
(:mod:`svjscout.samples.energy_density`); the trigger bit ``DST_HT410_PFScouting``
(:mod:`svjscout.samples.trigger`); the dark quarks ``GenDarkQuark_*`` (:mod:`svjscout.samples.truth`).

Both keep our own branches: ``parent``, ``genWeight``, ``Pileup_*``, ``PSWeight``, ``GenMET_*``,
``GenDark_*``, and the ``Runs`` tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak


@dataclass(frozen=True)
class Layout:
    """``pf``: the PF-candidate collection's name; ``reco``: writes the vertices, the vertex
    association, rho, the trigger bits and the dark-quark truth, with CHS left to the reader."""

    pf: str
    reco: bool


LAYOUTS: dict[str, Layout] = {
    "svjscout": Layout(pf="ScoutingParticle", reco=False),
    "scoutingnano_run3": Layout(pf="ScoutingPFCandidate", reco=True),
}

#: The PF candidates' fields as written (vertexIndex only where ``reco``), in order.
PF_WRITTEN = ("pt", "eta", "phi", "mass", "pdgId", "charge")


def pf_collection_of(fields) -> str:
    """The PF-candidate collection of a generated file, from its branch names: ``ScoutingPFCandidate``
    (``scoutingnano_run3``) or ``ScoutingParticle`` (``svjscout``)."""
    fields = set(fields)
    for layout in LAYOUTS.values():
        if f"n{layout.pf}" in fields or f"{layout.pf}_pt" in fields:
            return layout.pf
    raise KeyError(f"no PF-candidate collection of a known layout ({sorted(v.pf for v in LAYOUTS.values())}) "
                   "among the branches")


def chs_mask(arrays, collection: str):
    """Per candidate, True where CHS keeps it (``vertexIndex`` <= 0; every candidate of a file without
    the association, whose charged pileup the generator already removed)."""
    vertex = f"{collection}_vertexIndex"
    return arrays[vertex] <= 0 if vertex in arrays.fields else ak.ones_like(arrays[f"{collection}_pt"], dtype=bool)
