"""Output layouts of the generator: which names a generated file uses and what it carries.

``svjscout`` (the default until the regeneration, issue 30/31): today's files, unchanged for
the same seed: PF candidates ``ScoutingParticle_{pt,eta,phi,mass,pdgId,charge}`` (the older
ScoutingNano's name), charged pileup removed in the detector (``DetectorParams.chs``), a MET
without charged pileup; no vertices, rho or trigger bits.

``scoutingnano_run3`` (CMSSW's current Run-3 ScoutingNano, PhysicsTools/NanoAOD/python/
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
