"""Event features against hand computations."""

import numpy as np
import pytest

from svjscout.processors.features import delta_phi, event_features, pt_balance, transverse_mass


def _jet(pt, eta, phi, mass):
    return {k: np.array([v], dtype=float) for k, v in zip(("pt", "eta", "phi", "mass"), (pt, eta, phi, mass))}


def test_mt_by_hand():
    j0, j1 = _jet(600.0, 0.3, 0.2, 50.0), _jet(400.0, -0.8, 2.9, 30.0)
    met, met_phi = np.array([250.0]), np.array([-1.0])
    # by hand with explicit 4-vectors
    p = []
    for j in (j0, j1):
        pt, eta, phi, m = (j[k][0] for k in ("pt", "eta", "phi", "mass"))
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        p.append((px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + m**2)))
    px, py, pz, e = (p[0][i] + p[1][i] for i in range(4))
    mjj2 = e**2 - px**2 - py**2 - pz**2
    et = np.sqrt(mjj2 + px**2 + py**2)
    mx, my = 250 * np.cos(-1.0), 250 * np.sin(-1.0)
    expected = np.sqrt((et + 250) ** 2 - (px + mx) ** 2 - (py + my) ** 2)
    assert transverse_mass(j0, j1, met, met_phi)[0] == pytest.approx(expected, rel=1e-12)
    f = event_features(j0, j1, met, met_phi)
    assert f["rt"][0] == pytest.approx(250 / expected)
    assert f["deta"][0] == pytest.approx(1.1)


def test_dphi_and_z_by_hand():
    j0, j1 = _jet(600.0, 0.0, 3.0, 0.0), _jet(200.0, 0.0, -3.0, 0.0)
    f = event_features(j0, j1, np.array([200.0]), np.array([0.5]))
    assert f["dphi_j0j1"][0] == pytest.approx(2 * np.pi - 6.0)
    assert f["dphi_j0met"][0] == pytest.approx(2.5)
    assert f["dphi_j1met"][0] == pytest.approx(2 * np.pi - 3.5)
    assert f["dphi_min"][0] == pytest.approx(min(2.5, 2 * np.pi - 3.5))
    assert f["z_j0j1"][0] == pytest.approx(200 / 800)
    assert f["z_j0met"][0] == pytest.approx(200 / 800)
    assert f["z_j1met"][0] == pytest.approx(0.5)


def test_delta_phi_range_and_balance_edge_cases():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-10, 10, 1000), rng.uniform(-10, 10, 1000)
    d = delta_phi(a, b)
    assert np.all((d >= 0) & (d <= np.pi))
    assert np.allclose(np.cos(d), np.cos(a - b))
    assert pt_balance(np.array([0.0]), np.array([0.0]))[0] == 0.0
