"""Primary vertices and the vertex association of the PF candidates' tracks (Run-3 ScoutingNano).

Every generated event has one vertex per interaction: the hard scatter (vertex number 0 of the
event) and one per overlaid pileup event (1 ... ``Pileup_nPU``). Their true positions are drawn
from the CMS beam spot (Gaussian, sigma_z = ``beamspot_sigma_z`` = 3.5 cm, sigma_x = sigma_y =
``beamspot_sigma_xy`` = 10 um; these and the parameters below are
:class:`~svjscout.samples.detector.DetectorParams` fields, ``--detector KEY=VALUE``). A vertex
is *reconstructed* if it has at least
``vertex_min_tracks`` = 2 tracks (the charged PF candidates with a track: |eta| < 2.5,
pT > 0.5 GeV, :mod:`svjscout.samples.detector`). Reconstructed vertices closer in z than
``vertex_merge_dz`` = 0.01 cm (0.1 mm, about the z resolution of a few-track vertex) are merged
(chains of close vertices into one): the merged vertex keeps the position of its member with the
largest sum pT^2 and carries all their tracks. The vertices of an event are ordered as CMS orders
them, by sum pT^2 of their tracks, descending (the hard scatter first in practice).

Written per reconstructed vertex (``ScoutingPrimaryVertex_*``, cm): the position smeared by the
resolution sigma_z = ``vertex_res_z`` / sqrt(n_tracks) (0.02 cm / sqrt(n): 140 um for 2 tracks,
20 um for 100) and sigma_x,y = half that; the errors ``xError``, ``yError``, ``zError``;
``tracksSize`` = n; ``ndof`` = 2 n - 3 (the adaptive fitter's 2 sum(w) - 3 with all track
weights 1); ``chi2`` drawn from a chi^2 distribution with ``ndof`` degrees of freedom;
``isValidVtx`` True. An event without a reconstructed vertex gets one invalid vertex at the beam
spot (``isValidVtx`` False, no tracks), as CMS's vertex producers write.

Each track's ``vertexIndex`` is the position of the vertex it came from among the event's
written vertices: 0 for the hard scatter in practice, the surviving vertex's index for the
tracks of a merged vertex (so CHS on the index is as imperfect as in CMS), -1 for tracks of a
vertex that was not reconstructed; candidates without a track (neutrals, charged particles out of
the tracker) get -1. CMS's HLT associates a candidate with the vertex within 100 um of its
track's reference point (``HLTScoutingPFProducer``); here the association is the truth up to
merging and reconstruction, an idealisation of that matching (no track dz resolution).
Units: cm for positions, GeV for momenta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svjscout.samples.detector import DetectorParams


@dataclass
class Vertices:
    """Reconstructed vertices of a batch of events, flat and ordered by (event, sum pT^2 desc).

    ``columns``: x, y, z, xError, yError, zError (float32, cm), tracksSize, ndof (int32), chi2
    (float32), isValidVtx (bool), ``counts`` vertices per event, ``track_index`` the vertexIndex of
    every input track (int32, -1 if its vertex was not reconstructed), ``merged`` the number of
    true vertices merged into another reconstructed one per event (truth, for the tests), and
    ``true_index``: the vertexIndex of every true vertex (flat, ``first[event] + number``).
    """

    columns: dict[str, np.ndarray]
    counts: np.ndarray
    track_index: np.ndarray
    merged: np.ndarray
    true_index: np.ndarray
    first: np.ndarray

    def index_of(self, event: np.ndarray, number: np.ndarray) -> np.ndarray:
        """vertexIndex (int32) of the true vertex ``number`` of ``event``; -1 where ``number`` < 0."""
        number = np.asarray(number, dtype=np.int64)
        gid = self.first[np.asarray(event, dtype=np.int64)] + np.maximum(number, 0)
        return np.where(number >= 0, self.true_index[gid], -1).astype(np.int32)


def true_positions(n_pu: np.ndarray, rng: np.random.Generator,
                   params: DetectorParams = DetectorParams()) -> dict[str, np.ndarray]:
    """True (x, y, z) in cm of every interaction: events x (1 + n_pu) vertices, flat in event order."""
    n = int(np.sum(n_pu + 1))
    xy = rng.normal(0.0, params.beamspot_sigma_xy, (2, n))
    z = rng.normal(0.0, params.beamspot_sigma_z, n)
    return {"x": xy[0], "y": xy[1], "z": z}


def reconstruct(n_pu: np.ndarray, track_event: np.ndarray, track_vertex: np.ndarray, track_pt: np.ndarray,
                truth: dict[str, np.ndarray], rng: np.random.Generator,
                params: DetectorParams = DetectorParams()) -> Vertices:
    """Reconstruct, merge and order the vertices of many events; associate their tracks.

    Args:
        n_pu: pileup interactions per event (events have 1 + n_pu true vertices).
        track_event, track_vertex, track_pt: per track (charged PF candidate with a track): its
            event, the number of its true vertex in the event (0 = hard scatter, 1 ... n_pu) and
            its pT in GeV.
        truth: :func:`true_positions` of the same events.
        rng: draws the resolution smearing and the chi^2.
        params: the detector, whose ``beamspot_*`` and ``vertex_*`` parameters are used.
    """
    p = params
    n_pu = np.asarray(n_pu, dtype=np.int64)
    n_events = len(n_pu)
    per_event = n_pu + 1
    first = np.concatenate([[0], np.cumsum(per_event)[:-1]]).astype(np.int64)
    n_true = int(per_event.sum())
    v_event = np.repeat(np.arange(n_events), per_event)
    gid = first[track_event] + track_vertex  # global true-vertex id of each track
    ntrk = np.bincount(gid, minlength=n_true)
    sumpt2 = np.bincount(gid, np.square(track_pt), minlength=n_true)
    reco = ntrk >= p.vertex_min_tracks

    # merge chains of reconstructed vertices closer than vertex_merge_dz in z (per event)
    cand = np.flatnonzero(reco)
    order = cand[np.lexsort((truth["z"][cand], v_event[cand]))]
    new_group = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        same_event = v_event[order[1:]] == v_event[order[:-1]]
        close = np.diff(truth["z"][order]) < p.vertex_merge_dz
        new_group[1:] = ~(same_event & close)
    group_of_sorted = np.cumsum(new_group) - 1
    n_groups = int(group_of_sorted[-1]) + 1 if len(order) else 0
    group = np.full(n_true, -1, dtype=np.int64)
    group[order] = group_of_sorted
    g_ntrk = np.bincount(group_of_sorted, ntrk[order], n_groups).astype(np.int64)
    g_sumpt2 = np.bincount(group_of_sorted, sumpt2[order], n_groups)
    g_event = np.zeros(n_groups, dtype=np.int64)
    g_event[group_of_sorted] = v_event[order]
    # surviving member: the largest sum pT^2 of the group (its position is the vertex's)
    by_sumpt2 = np.lexsort((sumpt2[order], group_of_sorted))
    last = np.r_[group_of_sorted[by_sumpt2][1:] != group_of_sorted[by_sumpt2][:-1], True][:len(order)]
    survivor = np.empty(n_groups, dtype=np.int64)
    survivor[group_of_sorted[by_sumpt2][last]] = order[by_sumpt2][last]
    merged = np.bincount(g_event, np.bincount(group_of_sorted, minlength=n_groups) - 1, n_events).astype(np.int64)

    # order the groups of an event by sum pT^2, descending; index within the event
    g_order = np.lexsort((-g_sumpt2, g_event))
    g_counts = np.bincount(g_event, minlength=n_events)
    g_first = np.concatenate([[0], np.cumsum(g_counts)[:-1]])
    index_in_event = np.empty(n_groups, dtype=np.int64)
    index_in_event[g_order] = np.arange(n_groups) - g_first[g_event[g_order]]
    vertex_index = np.full(n_true, -1, dtype=np.int64)
    vertex_index[group >= 0] = index_in_event[group[group >= 0]]
    track_index = vertex_index[gid].astype(np.int32)

    # the written vertices (event order, then sum pT^2 descending), plus a fake one per empty event
    s = survivor[g_order]
    n = g_ntrk[g_order]
    sigma_z = p.vertex_res_z / np.sqrt(np.maximum(n, 1))
    sigma_xy = 0.5 * sigma_z
    ndof = 2 * n - 3
    cols = {
        "x": truth["x"][s] + sigma_xy * rng.standard_normal(len(s)),
        "y": truth["y"][s] + sigma_xy * rng.standard_normal(len(s)),
        "z": truth["z"][s] + sigma_z * rng.standard_normal(len(s)),
        "xError": sigma_xy, "yError": sigma_xy, "zError": sigma_z,
        "tracksSize": n, "chi2": rng.chisquare(np.maximum(ndof, 1)), "ndof": ndof,
        "isValidVtx": np.ones(len(s), dtype=bool),
    }
    empty = np.flatnonzero(g_counts == 0)
    if len(empty):  # CMS: the beam spot as an invalid vertex when none is reconstructed
        fake = {"x": 0.0, "y": 0.0, "z": 0.0, "xError": p.beamspot_sigma_xy, "yError": p.beamspot_sigma_xy,
                "zError": p.beamspot_sigma_z, "tracksSize": 0, "chi2": 0.0, "ndof": 0, "isValidVtx": False}
        pos = np.searchsorted(g_event[g_order], empty)  # insert before the next event's vertices
        cols = {k: np.insert(np.asarray(v), pos, fake[k]) for k, v in cols.items()}
        g_counts = g_counts.copy()
        g_counts[empty] = 1
    types = {"tracksSize": np.int32, "ndof": np.int32, "isValidVtx": bool}
    cols = {k: np.asarray(v).astype(types.get(k, np.float32)) for k, v in cols.items()}
    return Vertices(columns=cols, counts=g_counts.astype(np.int64), track_index=track_index, merged=merged,
                    true_index=vertex_index.astype(np.int32), first=first)
