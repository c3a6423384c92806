"""Lossless rejection before clustering: necessary conditions implied by the preselection.

On H_T-triggered scouting data almost every event fails the preselection, and most of them can
be recognised from the scouting MET and the scalar sum of the PF candidates' pT alone, without
clustering a single jet. :func:`prefilter` returns one boolean mask; an event it rejects cannot
pass ``clean``, ``trigger``, ``two_ak8``, ``mt`` and ``rt`` together (the proofs below), so
every event that passes all cuts passes it. All bounds are derived from :class:`Cuts`, never
hard-coded, and they hold for any values of the cuts (a bound that a setting makes vacuous,
e.g. ``rt_min < 0``, is dropped).

Notation: the candidates are exactly those the processor clusters, the PF candidates left after
its cleaning (finite pt, eta, phi, mass and pt > 0); ``S`` is the scalar sum of their pT; MET is
the scouting MET branch, the value M_T and R_T are computed from.

**Bound 1: MET > rt_min * max(mt_min, 0)** (if ``rt_min >= 0``). Proof: the processor computes
R_T = MET / M_T for M_T > 0 and R_T = 0 otherwise. If R_T > rt_min >= 0 then R_T != 0, so
M_T > 0 and MET > rt_min * M_T; with M_T > mt_min and M_T > 0, M_T >= max(mt_min, 0), and
rt_min >= 0 gives rt_min * M_T >= rt_min * max(mt_min, 0). Hence MET > rt_min * max(mt_min, 0)
(0.24 x 650 = 156 GeV by default). Floating point: the comparison fl(MET / M_T) > rt_min
implies MET / M_T > rt_min exactly, since rounding is monotone and rt_min is a double, so the
proof holds for the computed values; the product rt_min * max(mt_min, 0) is rounded and then
stepped one ulp down (``np.nextafter``), which puts it at or below the exact product. An event
with a NaN MET fails the comparison; it fails ``clean`` as well.

**Bound 2: S > ht_min** (the trigger). H_T is the scalar sum of the pT of some AK4 jets (pT >
ak4_pt_min, |eta| < ak4_abs_eta_max). Every jet's four-momentum is the sum of its constituents'
(E-scheme recombination, FastJet's default), so by the triangle inequality its pT = |sum of the
constituents' transverse momentum vectors| <= the sum of their pT; the jets of one clustering
are disjoint sets of candidates. Hence H_T <= S, and H_T > ht_min implies S > ht_min. If
ht_min >= 0, passing also needs at least one jet above ak4_pt_min, so S > ak4_pt_min too (the
clustering's own ptmin, ``ak4_pt_min``, is the same threshold; it adds nothing else).

**Bound 3: S >= 2 * ak8_pt_min** (two AK8 jets). J0 and J1 are two distinct AK8 jets, each with
pT >= ak8_pt_min (the clustering's ptmin, then the cut): as above, pT(J0) + pT(J1) <= S.

Why S is the sum over *all* candidates and not over an |eta| window (e.g. |eta| < ak4_abs_eta_max
+ R): a jet's direction does not bound its constituents'. FastJet measures distances in rapidity,
not pseudorapidity (they differ for massive candidates), and an anti-kT jet is not guaranteed to
hold its constituents within R of its final axis: each merging is between pseudojets less than R
apart, but the axis moves as the jet grows, and soft jets near a hard one take irregular shapes.
The window bound holds for nearly every jet and could not be proved; the full sum can, and it
costs little here, because on H_T-triggered data the rejection comes from Bound 1 (most events
have far too little MET) while Bounds 2 and 3 reject the few events with little visible pT.

Rounding in Bounds 2 and 3: S is summed in float64 from the float32 pT. The jets are clustered
from px = pT cos(phi), py = pT sin(phi) computed in float32 (relative error below 2.4e-7 each)
and summed in float64, so a computed jet pT exceeds the exact sum of its constituents' pT by at
most about 5e-7 of that sum; the comparisons are made on S * (1 + 1e-5), 20 times that.

Not bounded (no cheap proof): dphi_min and deta need the jet directions, and an upper bound on
M_T from the candidates needs their energies (M_T <= E(J0 + J1) + MET), which grow with |eta|
and are large in every triggered event.

**Corrected jets** (``analysis.corrections``, processors/jec.py; not with our simulation's identity
JEC). With every jet's correction factor at most F (``analysis.corrections.max_jec_factor``,
checked on every clustered jet: a larger factor stops the run), each corrected jet pT is at most
F times its raw pT, so H_T <= F S and pT(J0) + pT(J1) <= F S: Bounds 2 and 3 hold on F S. Bound 1
concerns MET alone and holds unchanged on the raw MET; with type-1 MET the cuts use MET_T1 =
MET_raw - sum (pT_corr - pT_L1), which is bounded only through the jets' pT sum, so Bound 1 is
dropped. Without a declared F the prefilter passes every event when the JEC is not the identity
(nothing is proven). The clustering then keeps jets down to CLUSTER_MARGIN (0.6) x the thresholds
(processors/variations.py) and cuts on the corrected pT: exact for factors up to 1 / 0.6; the
count ``jec_above_margin`` says how many jets had a larger one.

With the prefilter, events it rejects are not clustered at all; the cutflow's ``prefilter`` row
(the first after ``all``) counts the events it keeps, and every later row is cumulative as before.
Because the prefilter is implied by the later cuts, the last rows (from ``rt`` on) are exactly
what the cuts alone select.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from svjscout.processors.selection import Cuts

#: What the cutflow's ``prefilter`` row is (summary.md, cutflow.json).
ROW_NOTE = ("prefilter: implied by the later cuts (trigger, two_ak8, mt, rt): MET > rt_min x mt_min and the "
            "scalar pT sum of the PF candidates > max(ht_min, 2 x ak8_pt_min) (processors/prefilter.py); it "
            "rejects no event that passes all cuts, and with analysis.prefilter the events it rejects are not "
            "clustered. Rows are cumulative, so the rows from rt on are what the cuts alone select.")

#: Relative safety margin on S against rounding (see the module docstring).
SUM_MARGIN = 1e-5


def met_bound(cuts: Cuts) -> float | None:
    """The MET threshold implied by ``mt`` and ``rt`` (Bound 1), or ``None`` when none is implied.

    >>> met_bound(Cuts())  # one step below fl(0.24 x 650) = 156.0
    155.99999999999997
    """
    if not cuts.rt_min >= 0:
        return None
    return float(np.nextafter(cuts.rt_min * max(cuts.mt_min, 0.0), -np.inf))


_met_bound = met_bound


def visible_bound(cuts: Cuts) -> tuple[float, bool]:
    """(threshold, strict) on S implied by ``trigger`` and ``two_ak8`` (Bounds 2 and 3).

    The event can pass only if ``S > threshold`` (strict) or ``S >= threshold`` (not strict).

    >>> visible_bound(Cuts())
    (410.0, True)
    >>> visible_bound(Cuts(ht_min=250.0))
    (300.0, False)
    """
    ht = max(cuts.ht_min, cuts.ak4_pt_min) if cuts.ht_min >= 0 else cuts.ht_min
    two = 2.0 * cuts.ak8_pt_min
    if ht >= two:
        return float(ht), True
    return float(two), False


def clean_candidates(pf: ak.Array) -> tuple[ak.Array, int]:
    """The candidates the processor clusters: finite ``pt, eta, phi, mass`` and ``pt > 0``; and how
    many were dropped.

    The same candidates, in the same order, as masking the jagged array (``pf[np.isfinite(pf.pt) &
    ... & (pf.pt > 0)]``), computed on the flat buffers: 4-7x faster on a chunk (issue 33: on
    H_T-triggered data this cleaning of every event's candidates cost ~10 % of the processor).

    Args:
        pf: events x candidates with fields ``pt, eta, phi, mass`` (other fields are dropped).

    Returns:
        (events x candidates records ``pt, eta, phi, mass``, number of candidates dropped).
    """
    counts = ak.to_numpy(ak.num(pf.pt, axis=1)).astype(np.int64)
    cols = {k: ak.to_numpy(ak.flatten(pf[k], axis=1)) for k in ("pt", "eta", "phi", "mass")}
    good = np.isfinite(cols["pt"]) & np.isfinite(cols["eta"]) & np.isfinite(cols["phi"]) & np.isfinite(cols["mass"])
    good &= cols["pt"] > 0
    dropped = int(len(good) - np.count_nonzero(good))
    return jagged_from_flat(counts, cols, good if dropped else None), dropped


def jagged_from_flat(counts: np.ndarray, cols: dict[str, np.ndarray], keep: np.ndarray | None = None) -> ak.Array:
    """Events x candidates records from flat columns (``counts`` per event), keeping the flat rows
    where ``keep`` is True (None: all), in their order: the jagged mask computed on the buffers."""
    if keep is not None:
        event = np.repeat(np.arange(len(counts)), counts)
        counts = np.bincount(event[keep], minlength=len(counts)).astype(np.int64)
        cols = {k: v[keep] for k, v in cols.items()}
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    rec = ak.contents.RecordArray([ak.contents.NumpyArray(np.ascontiguousarray(v)) for v in cols.values()], list(cols))
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), rec))


def scalar_pt_sum(pf: ak.Array) -> np.ndarray:
    """S: the scalar sum of the candidates' pT per event, in float64 (GeV)."""
    return ak.to_numpy(ak.sum(ak.values_astype(pf.pt, np.float64), axis=1)).astype(np.float64)


def prefilter(met_pt: np.ndarray, pt_sum: np.ndarray, cuts: Cuts, max_factor: float = 1.0,
              met_bound: bool = True) -> np.ndarray:
    """Events that may pass the preselection (False: proven to fail it; see the module docstring).

    Args:
        met_pt: the scouting MET per event (GeV), as read (NaN fails).
        pt_sum: S, the scalar pT sum of the cleaned PF candidates per event (GeV).
        cuts: the configured cuts; every threshold comes from them.
        max_factor: an upper bound F >= 1 on the jet energy correction factor of every jet
            (corrected jets, section "Corrected jets"): Bounds 2 and 3 on F x S.
        met_bound: whether Bound 1 applies (False when the MET of the cuts is not ``met_pt``,
            e.g. type-1 MET from corrected jets).
    """
    if not (np.isfinite(max_factor) and max_factor >= 1.0):
        raise ValueError(f"prefilter: max_factor must be a finite number >= 1, got {max_factor!r}")
    met_pt = np.asarray(met_pt, dtype=np.float64)
    keep = np.ones(len(met_pt), dtype=bool)
    m = _met_bound(cuts) if met_bound else None
    if m is not None:
        keep &= met_pt > m
    thr, strict = visible_bound(cuts)
    s = np.asarray(pt_sum, dtype=np.float64) * (1.0 + SUM_MARGIN) * max_factor
    keep &= (s > thr) if strict else (s >= thr)
    return keep
