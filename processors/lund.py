"""Primary Lund plane of jets: Cambridge-Aachen reclustering and declustering along the harder branch.

The constituents of every jet are reclustered with the Cambridge-Aachen algorithm with a radius
large enough to merge all of them (rapidity-azimuth distance, E-scheme recombination, exactly
like ``fastjet.JetDefinition(fastjet.cambridge_algorithm, 1000.0)``), then the clustering is
undone from the top, following the harder (higher pT) branch. Each declustering
``j -> (a, b)`` with ``pT_a >= pT_b`` is one node of the primary Lund plane (docs/physics.md):

* ``delta = max(DeltaR(a, b), 1e-6)`` in (rapidity y, azimuth phi);
* ``kt = pT_b * delta`` (GeV);
* ``z = pT_b / (pT_a + pT_b)``;
* ``m = sqrt(|m_j^2|)`` with ``j = a + b`` (GeV);
* ``psi = atan((y_a - y_b) / (phi_a - phi_b))``, ``psi = 0`` when ``phi_a == phi_b``.
  ``phi_a - phi_b`` is wrapped into ``[-pi, pi)`` (the reference implementation takes the
  raw difference of fastjet's ``[0, 2 pi)`` azimuths, which only differs for pairs that
  straddle ``phi = 0``, where its value is an artefact of the convention).

The node features of LundNet are :data:`LUND_FEATURES` (logs floored at ``1e-12`` so that no
node is ever ``-inf``). Nodes are ordered as declustered: the first node has the largest
angle.

The clustering is a numba kernel over all jets at once (no Python loop over jets), with the
O(n^2) nearest-neighbour bookkeeping of FastJet's ``N2Plain`` strategy.
"""

from __future__ import annotations

import logging

import awkward as ak
import numba
import numpy as np

from svjscout.core.features import LUND_FEATURES

log = logging.getLogger(__name__)


#: All per-node fields (LUND_FEATURES, the node features of LundNet-5, first) returned by
#: :func:`primary_lund_declusterings`.
NODE_FIELDS = LUND_FEATURES + ("delta", "kt", "z", "m")

_REQUIRED_FIELDS = ("pt", "eta", "phi", "mass")
_DELTA_FLOOR = 1e-6
_LOG_FLOOR = 1e-12
_TWO_PI = 2.0 * np.pi


@numba.njit(cache=True, inline="always")
def _dphi(a: float, b: float) -> float:
    """a - b wrapped into [-pi, pi)."""
    d = a - b
    while d >= np.pi:
        d -= _TWO_PI
    while d < -np.pi:
        d += _TWO_PI
    return d


@numba.njit(cache=True, inline="always")
def _rap_phi(px: float, py: float, pz: float, e: float):
    """Rapidity and azimuth (in [0, 2 pi)) of a four-momentum, fastjet conventions."""
    pt2 = px * px + py * py
    phi = 0.0
    if pt2 > 0.0:
        phi = np.arctan2(py, px)
        if phi < 0.0:
            phi += _TWO_PI
    # fastjet: effective m2 >= 0 with E >= |pz|; rapidity capped for zero-pT objects
    if e == abs(pz) and pt2 == 0.0:
        big = 1e5
        rap = big + abs(pz)
        if pz < 0.0:
            rap = -rap
        return rap, phi
    m2 = max(e * e - px * px - py * py - pz * pz, 0.0)
    e_plus_pz = e + abs(pz)
    rap = 0.5 * np.log((pt2 + m2) / (e_plus_pz * e_plus_pz))
    if pz > 0.0:
        rap = -rap
    return rap, phi


@numba.njit(cache=True)
def _cluster_and_decluster(pt, eta, phi, mass, offsets, out):
    """C-A cluster every jet and write its primary declusterings.

    Args:
        pt, eta, phi, mass: float64 (n_constituents,), all jets concatenated.
        offsets: int64 (n_jets + 1,), constituent offsets of the jets.
        out: float64 (n_constituents, 9) output buffer (a jet of n constituents has at most
            n - 1 nodes); columns in :data:`NODE_FIELDS` order.

    Returns:
        int64 (n_jets,) number of nodes of each jet; nodes are written contiguously in ``out``.
    """
    n_jets = offsets.shape[0] - 1
    counts = np.zeros(n_jets, dtype=np.int64)
    max_n = 1
    for j in range(n_jets):
        max_n = max(max_n, offsets[j + 1] - offsets[j])
    size = 2 * max_n
    # pseudojet store: originals first, then one merged object per step
    jpx = np.empty(size)
    jpy = np.empty(size)
    jpz = np.empty(size)
    je = np.empty(size)
    jy = np.empty(size)
    jphi = np.empty(size)
    jpt = np.empty(size)
    par1 = np.empty(size, dtype=np.int64)
    par2 = np.empty(size, dtype=np.int64)
    # active slots
    act = np.empty(max_n, dtype=np.int64)
    nn = np.empty(max_n, dtype=np.int64)
    nnd = np.empty(max_n)
    redo = np.empty(max_n, dtype=np.bool_)
    w = 0
    for j in range(n_jets):
        start = offsets[j]
        n = offsets[j + 1] - start
        if n < 2:
            continue
        for i in range(n):
            k = start + i
            c = np.cos(phi[k])
            s = np.sin(phi[k])
            p = pt[k]
            px = p * c
            py = p * s
            pz = p * np.sinh(eta[k])
            e = np.sqrt(px * px + py * py + pz * pz + mass[k] * mass[k])
            jpx[i] = px
            jpy[i] = py
            jpz[i] = pz
            je[i] = e
            r, f = _rap_phi(px, py, pz, e)
            jy[i] = r
            jphi[i] = f
            jpt[i] = np.sqrt(px * px + py * py)
            par1[i] = -1
            par2[i] = -1
            act[i] = i
        # initial nearest neighbours
        for a in range(n):
            nnd[a] = np.inf
            nn[a] = a
        for a in range(n):
            ia = act[a]
            for b in range(a + 1, n):
                ib = act[b]
                dy = jy[ia] - jy[ib]
                dp = _dphi(jphi[ia], jphi[ib])
                d = dy * dy + dp * dp
                if d < nnd[a]:
                    nnd[a] = d
                    nn[a] = b
                if d < nnd[b]:
                    nnd[b] = d
                    nn[b] = a
        m = n
        nxt = n
        while m > 1:
            ka = 0
            dmin = nnd[0]
            for a in range(1, m):
                if nnd[a] < dmin:
                    dmin = nnd[a]
                    ka = a
            kb = nn[ka]
            lo = min(ka, kb)
            hi = max(ka, kb)
            i1 = act[lo]
            i2 = act[hi]
            # E-scheme merge into a new pseudojet
            px = jpx[i1] + jpx[i2]
            py = jpy[i1] + jpy[i2]
            pz = jpz[i1] + jpz[i2]
            e = je[i1] + je[i2]
            jpx[nxt] = px
            jpy[nxt] = py
            jpz[nxt] = pz
            je[nxt] = e
            r, f = _rap_phi(px, py, pz, e)
            jy[nxt] = r
            jphi[nxt] = f
            jpt[nxt] = np.sqrt(px * px + py * py)
            par1[nxt] = i1
            par2[nxt] = i2
            last = m - 1
            act[lo] = nxt
            nxt += 1
            # move the last slot into the freed slot ``hi``
            if hi != last:
                act[hi] = act[last]
                nn[hi] = nn[last]
                nnd[hi] = nnd[last]
            m -= 1
            for a in range(m):
                t = nn[a]
                redo[a] = False
                if t == lo or t == hi:
                    redo[a] = True
                elif t == last:
                    nn[a] = hi
            redo[lo] = True
            # distances to the new object update every neighbour list
            inew = act[lo]
            nnd[lo] = np.inf
            nn[lo] = lo
            for a in range(m):
                if a == lo:
                    continue
                ia = act[a]
                dy = jy[ia] - jy[inew]
                dp = _dphi(jphi[ia], jphi[inew])
                d = dy * dy + dp * dp
                if d < nnd[lo]:
                    nnd[lo] = d
                    nn[lo] = a
                if (not redo[a]) and d < nnd[a]:
                    nnd[a] = d
                    nn[a] = lo
            for a in range(m):
                if a == lo or not redo[a]:
                    continue
                ia = act[a]
                best = np.inf
                bi = a
                for b in range(m):
                    if b == a:
                        continue
                    ib = act[b]
                    dy = jy[ia] - jy[ib]
                    dp = _dphi(jphi[ia], jphi[ib])
                    d = dy * dy + dp * dp
                    if d < best:
                        best = d
                        bi = b
                nnd[a] = best
                nn[a] = bi
        # primary declustering from the root, following the harder branch
        cur = act[0]
        c = 0
        while par1[cur] >= 0:
            ia = par1[cur]
            ib = par2[cur]
            if jpt[ib] > jpt[ia]:
                ia, ib = ib, ia
            dy = jy[ia] - jy[ib]
            dp = _dphi(jphi[ia], jphi[ib])
            delta = max(np.sqrt(dy * dy + dp * dp), _DELTA_FLOOR)
            kt = jpt[ib] * delta
            ptsum = jpt[ia] + jpt[ib]
            z = jpt[ib] / ptsum if ptsum > 0.0 else 0.0
            m2 = je[cur] ** 2 - jpx[cur] ** 2 - jpy[cur] ** 2 - jpz[cur] ** 2
            mj = np.sqrt(abs(m2))
            psi = 0.0
            if dp != 0.0:
                psi = np.arctan(dy / dp)
            out[w, 0] = np.log(max(kt, _LOG_FLOOR))
            out[w, 1] = np.log(delta)
            out[w, 2] = np.log(max(z, _LOG_FLOOR))
            out[w, 3] = np.log(max(mj, _LOG_FLOOR))
            out[w, 4] = psi
            out[w, 5] = delta
            out[w, 6] = kt
            out[w, 7] = z
            out[w, 8] = mj
            w += 1
            c += 1
            cur = ia
        counts[j] = c
    return counts


def _jets_lund(constituents: ak.Array) -> ak.Array:
    """Declusterings of a jets x constituents array (one list level)."""
    counts = ak.to_numpy(ak.num(constituents, axis=1)).astype(np.int64)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = ak.flatten(constituents, axis=1)
    cols = [np.ascontiguousarray(ak.to_numpy(flat[f]), dtype=np.float64) for f in _REQUIRED_FIELDS]
    out = np.zeros((max(int(offsets[-1]), 1), len(NODE_FIELDS)), dtype=np.float64)
    node_counts = _cluster_and_decluster(*cols, offsets, out)
    n_nodes = int(node_counts.sum())
    table = out[:n_nodes]
    records = ak.zip({name: table[:, i] for i, name in enumerate(NODE_FIELDS)}, depth_limit=1)
    return ak.unflatten(records, node_counts)


def primary_lund_declusterings(constituents: ak.Array) -> ak.Array:
    """Primary Lund-plane declusterings of every jet.

    Args:
        constituents: jagged records with fields ``pt`` (GeV), ``eta``, ``phi`` (rad) and
            ``mass`` (GeV), either jets x constituents (``var * {pt, ...}``) or
            events x jets x constituents (``var * var * {pt, ...}``); records of lists are
            accepted too. Other fields (and vector behaviours) are ignored.

    Returns:
        Jagged array with the same outer structure as the input (jets, or events x jets) and,
        per jet, a variable-length list of nodes (records
        with the fields of :data:`NODE_FIELDS`: ``ln_kt, ln_delta, ln_z, ln_m, psi, delta, kt,
        z, m``; float64; kt and m in GeV), first declustering (largest angle) first. A jet of
        n >= 1 constituents has n_primary <= n - 1 nodes; a jet of one constituent has none.

    Raises:
        ValueError: a required field is missing, or the nesting depth is not 2 or 3.
    """
    constituents = ak.Array(constituents)
    for field in _REQUIRED_FIELDS:
        if field not in constituents.fields:
            raise ValueError(
                f"constituents: field {field!r} is missing, found {constituents.fields}, "
                f"expected {list(_REQUIRED_FIELDS)}"
            )
    # lists of records (or records of lists): keep only the four fields, as lists of records
    constituents = ak.zip({f: constituents[f] for f in _REQUIRED_FIELDS})
    depth = constituents.ndim
    if depth == 2:
        return _jets_lund(constituents)
    if depth == 3:
        jets_per_event = ak.num(constituents, axis=1)
        nodes = _jets_lund(ak.flatten(constituents, axis=1))
        return ak.unflatten(nodes, jets_per_event)
    raise ValueError(
        f"constituents: list depth is {depth}, expected 2 (jets x constituents) "
        "or 3 (events x jets x constituents)"
    )


def pad_lund(
    nodes: ak.Array, max_len: int, features: tuple[str, ...] = LUND_FEATURES
) -> tuple[np.ndarray, np.ndarray]:
    """Pad (or truncate) the node lists to a fixed length for LundNet.

    Args:
        nodes: jets x nodes, as returned by :func:`primary_lund_declusterings` for a jets x
            constituents input (flatten an events x jets input first).
        max_len: number of nodes kept per jet: the first ``max_len`` declusterings (largest
            angles). Must be >= 1.
        features: node fields to stack, in order (default :data:`LUND_FEATURES`).

    Returns:
        ``(x, mask)``: ``x`` float32 (n_jets, max_len, len(features)) with zeros in padded
        slots; ``mask`` bool (n_jets, max_len), True on real nodes.

    Raises:
        ValueError: ``max_len < 1``, a feature field is missing, or ``nodes`` is not jets x nodes.
    """
    if max_len < 1:
        raise ValueError(f"pad_lund: max_len is {max_len}, expected >= 1")
    nodes = ak.Array(nodes)
    if nodes.ndim != 2:
        raise ValueError(f"pad_lund: nodes list depth is {nodes.ndim}, expected 2 (jets x nodes)")
    missing = [f for f in features if f not in nodes.fields]
    if missing:
        raise ValueError(f"pad_lund: node fields {missing} are missing, found {nodes.fields}")
    n_jets = len(nodes)
    counts = np.minimum(ak.to_numpy(ak.num(nodes, axis=1)), max_len)
    x = np.zeros((n_jets, max_len, len(features)), dtype=np.float32)
    mask = np.arange(max_len)[None, :] < counts[:, None]
    truncated = nodes[:, :max_len]
    for i, f in enumerate(features):
        x[mask, i] = ak.to_numpy(ak.flatten(truncated[f], axis=1)).astype(np.float32)
    return x, mask
