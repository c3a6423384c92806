"""Tests of the primary Lund-plane declustering (processors/lund.py).

Delta and kt are checked against fastjet's own C-A + ``exclusive_jets_lund_declusterings``;
z, m and psi against an independent brute-force C-A written here with plain loops.
"""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import vector

from svjscout.processors.lund import LUND_FEATURES, NODE_FIELDS, pad_lund, primary_lund_declusterings

vector.register_awkward()
fastjet = pytest.importorskip("fastjet")


def _random_events(n_events: int, seed: int) -> ak.Array:
    """Events of 2-3 collimated 'prongs' (hard + soft particles) plus a soft uniform spray."""
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(n_events):
        pt, eta, phi, mass = [], [], [], []
        for _ in range(2):  # two jets per event, back to back-ish
            eta0, phi0 = rng.uniform(-2.0, 2.0), rng.uniform(-math.pi, math.pi)
            for _ in range(rng.integers(1, 4)):  # prongs
                pe, pp = eta0 + rng.normal(0, 0.2), phi0 + rng.normal(0, 0.2)
                k = int(rng.integers(3, 40))
                pt += list(rng.exponential(8.0, k) + 0.3)
                eta += list(pe + rng.normal(0, 0.05, k))
                phi += list(pp + rng.normal(0, 0.05, k))
                mass += list(np.where(rng.random(k) < 0.6, 0.13957, 0.0))
        k = int(rng.integers(10, 60))
        pt += list(rng.exponential(1.0, k) + 0.1)
        eta += list(rng.uniform(-2.5, 2.5, k))
        phi += list(rng.uniform(-math.pi, math.pi, k))
        mass += [0.0] * k
        phi = list(np.mod(np.asarray(phi) + math.pi, 2 * math.pi) - math.pi)
        events.append({"pt": pt, "eta": eta, "phi": phi, "mass": mass})
    arr = ak.Array(events)
    return ak.zip({f: arr[f] for f in ("pt", "eta", "phi", "mass")}, with_name="Momentum4D")


@pytest.fixture(scope="module")
def ak8_jets() -> ak.Array:
    """Constituents (events x jets x constituents) of anti-kt R=0.8 jets with pT > 20 GeV."""
    particles = _random_events(120, seed=7)
    cs = fastjet.ClusterSequence(particles, fastjet.JetDefinition(fastjet.antikt_algorithm, 0.8))
    jets = cs.inclusive_jets(min_pt=20.0)
    idx = cs.constituent_index(min_pt=20.0)
    assert ak.sum(ak.num(jets, axis=1)) > 150
    cons = particles[ak.flatten(idx, axis=2)]
    cons = ak.unflatten(cons, ak.flatten(ak.num(idx, axis=2)), axis=1)
    return ak.zip({f: cons[f] for f in ("pt", "eta", "phi", "mass")}, with_name="Momentum4D")


def _fastjet_lund(jets: ak.Array) -> ak.Array:
    """fastjet's primary declusterings (Delta, kt) of a jets x constituents array."""
    cs = fastjet.ClusterSequence(jets, fastjet.JetDefinition(fastjet.cambridge_algorithm, 1000.0))
    return cs.exclusive_jets_lund_declusterings(1)[:, 0]


def test_delta_kt_match_fastjet(ak8_jets):
    jets = ak.flatten(ak8_jets, axis=1)
    ours = primary_lund_declusterings(jets)
    ref = _fastjet_lund(jets)
    assert len(ours) == len(jets) > 150
    np.testing.assert_array_equal(ak.to_numpy(ak.num(ours)), ak.to_numpy(ak.num(ref)))
    assert ak.sum(ak.num(ours)) > 1000
    np.testing.assert_allclose(ak.flatten(ours.delta), ak.flatten(ref.Delta), rtol=0, atol=1e-5)
    np.testing.assert_allclose(ak.flatten(ours.kt), ak.flatten(ref.kt), rtol=5e-3, atol=1e-9)


def test_event_nesting_round_trips(ak8_jets):
    nested = primary_lund_declusterings(ak8_jets)
    flat = primary_lund_declusterings(ak.flatten(ak8_jets, axis=1))
    assert ak.to_list(ak.num(nested, axis=1)) == ak.to_list(ak.num(ak8_jets, axis=1))
    assert ak.to_list(ak.flatten(nested, axis=1).ln_kt) == ak.to_list(flat.ln_kt)


# ---------------------------------------------------------------- brute-force reference
def _p4(pt, eta, phi, mass):
    px, py, pz = pt * math.cos(phi), pt * math.sin(phi), pt * math.sinh(eta)
    return [px, py, pz, math.sqrt(px * px + py * py + pz * pz + mass * mass)]


def _y_phi_pt(p):
    px, py, pz, e = p
    return 0.5 * math.log((e + pz) / (e - pz)), math.atan2(py, px), math.hypot(px, py)


def _wrap(d):
    return (d + math.pi) % (2 * math.pi) - math.pi


def _brute_force_nodes(pt, eta, phi, mass):
    """Plain O(n^3) C-A with E-scheme, then primary declustering; list of (delta, kt, z, m, psi)."""
    objs = [{"p": _p4(*c), "kids": None} for c in zip(pt, eta, phi, mass)]
    while len(objs) > 1:
        best, pair = None, None
        for i in range(len(objs)):
            for j in range(i + 1, len(objs)):
                yi, fi, _ = _y_phi_pt(objs[i]["p"])
                yj, fj, _ = _y_phi_pt(objs[j]["p"])
                d = (yi - yj) ** 2 + _wrap(fi - fj) ** 2
                if best is None or d < best:
                    best, pair = d, (i, j)
        i, j = pair
        merged = {"p": [a + b for a, b in zip(objs[i]["p"], objs[j]["p"])], "kids": (objs[i], objs[j])}
        objs = [o for k, o in enumerate(objs) if k not in pair] + [merged]
    nodes, cur = [], objs[0]
    while cur["kids"] is not None:
        a, b = cur["kids"]
        ya, fa, pta = _y_phi_pt(a["p"])
        yb, fb, ptb = _y_phi_pt(b["p"])
        if ptb > pta:
            a, b, ya, fa, pta, yb, fb, ptb = b, a, yb, fb, ptb, ya, fa, pta
        dphi = _wrap(fa - fb)
        delta = max(math.hypot(ya - yb, dphi), 1e-6)
        px, py, pz, e = cur["p"]
        m = math.sqrt(abs(e * e - px * px - py * py - pz * pz))
        psi = 0.0 if dphi == 0 else math.atan((ya - yb) / dphi)
        nodes.append((delta, ptb * delta, ptb / (pta + ptb), m, psi))
        cur = a
    return nodes


def test_z_m_psi_match_brute_force(ak8_jets):
    jets = ak.flatten(ak8_jets, axis=1)
    small = jets[(ak.num(jets) >= 3) & (ak.num(jets) <= 40)][:6]
    assert len(small) == 6
    ours = primary_lund_declusterings(small)
    for k in range(len(small)):
        jet = small[k]
        ref = np.array(_brute_force_nodes(*(ak.to_list(jet[f]) for f in ("pt", "eta", "phi", "mass"))))
        got = ours[k]
        assert len(got) == len(ref)
        np.testing.assert_allclose(ak.to_numpy(got.delta), ref[:, 0], atol=1e-9)
        np.testing.assert_allclose(ak.to_numpy(got.z), ref[:, 2], rtol=1e-9)
        np.testing.assert_allclose(ak.to_numpy(got.m), ref[:, 3], rtol=1e-7)
        np.testing.assert_allclose(ak.to_numpy(got.psi), ref[:, 4], atol=1e-9)
        np.testing.assert_allclose(ak.to_numpy(got.ln_m), np.log(ref[:, 3]), atol=1e-7)
        np.testing.assert_allclose(ak.to_numpy(got.ln_kt), np.log(ref[:, 1]), atol=1e-7)


def test_psi_zero_when_same_phi():
    jet = ak.Array([{"pt": [50.0, 10.0], "eta": [0.0, 0.3], "phi": [1.0, 1.0], "mass": [0.0, 0.0]}])
    jet = ak.zip({f: jet[f] for f in ("pt", "eta", "phi", "mass")})
    nodes = primary_lund_declusterings(jet)
    assert ak.to_list(ak.num(nodes)) == [1]
    assert nodes[0, 0].psi == 0.0
    assert nodes[0, 0].delta == pytest.approx(0.3)
    assert nodes[0, 0].z == pytest.approx(10.0 / 60.0)


def test_single_and_empty_jets_have_no_nodes():
    jets = ak.Array(
        [
            {"pt": [30.0], "eta": [0.1], "phi": [0.2], "mass": [0.0]},
            {"pt": [], "eta": [], "phi": [], "mass": []},
            {"pt": [30.0, 5.0], "eta": [0.1, 0.2], "phi": [0.2, 0.1], "mass": [0.0, 0.0]},
        ]
    )
    jets = ak.zip({f: jets[f] for f in ("pt", "eta", "phi", "mass")})
    nodes = primary_lund_declusterings(jets)
    assert ak.to_list(ak.num(nodes)) == [0, 0, 1]
    assert set(nodes.fields) == set(NODE_FIELDS)
    x, mask = pad_lund(nodes, 4)
    assert mask.sum(axis=1).tolist() == [0, 0, 1]
    assert not x[:2].any()


def test_missing_field_is_named():
    jets = ak.Array([{"pt": [1.0, 2.0], "eta": [0.0, 0.1], "phi": [0.0, 0.1]}])
    with pytest.raises(ValueError, match="'mass'"):
        primary_lund_declusterings(jets)


def test_padding_keeps_real_nodes(ak8_jets):
    nodes = primary_lund_declusterings(ak.flatten(ak8_jets, axis=1))
    n = ak.to_numpy(ak.num(nodes))
    long_len = int(n.max()) + 3
    x, mask = pad_lund(nodes, long_len)
    assert x.shape == (len(nodes), long_len, len(LUND_FEATURES)) and x.dtype == np.float32
    assert mask.dtype == np.bool_ and (mask.sum(axis=1) == n).all()
    assert not x[~mask].any()
    for i, f in enumerate(LUND_FEATURES):
        np.testing.assert_array_equal(x[mask][:, i], ak.to_numpy(ak.flatten(nodes[f])).astype(np.float32))
    # truncation keeps the first (widest-angle) declusterings unchanged
    xs, ms = pad_lund(nodes, 5)
    np.testing.assert_array_equal(xs, x[:, :5])
    np.testing.assert_array_equal(ms, mask[:, :5])
    assert (ms.sum(axis=1) == np.minimum(n, 5)).all()
    with pytest.raises(ValueError, match="max_len"):
        pad_lund(nodes, 0)
