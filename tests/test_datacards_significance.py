"""Modified Asimov significance and stilde rescaling (svjscout.datacards.significance)."""

import numpy as np
import pytest

from svjscout.datacards.significance import asimov_z, combined_z, mean_z, rescale_factors


def test_no_uncertainty_limit():
    s, b = 10.0, 100.0
    assert asimov_z(s, b, 0.0) == pytest.approx(np.sqrt(2 * ((s + b) * np.log(1 + s / b) - s)))
    # continuity at small sigma
    assert asimov_z(s, b, 1e-4) == pytest.approx(asimov_z(s, b, 0.0), rel=1e-6)


def test_large_background_gaussian_limit():
    s, b, sig = 50.0, 1e6, 300.0
    assert asimov_z(s, b, sig) == pytest.approx(s / np.sqrt(b + sig**2), rel=1e-3)


def test_formula_value():
    s, b, sig = 5.0, 20.0, 4.0
    t1 = (s + b) * np.log((s + b) * (b + sig**2) / (b**2 + (s + b) * sig**2))
    t2 = b**2 / sig**2 * np.log(1 + sig**2 * s / (b * (b + sig**2)))
    assert asimov_z(s, b, sig) == pytest.approx(np.sqrt(2 * (t1 - t2)), rel=1e-12)
    assert asimov_z(s, b, sig) < asimov_z(s, b, 0.0)


def test_degenerate_inputs_give_zero_without_warnings():
    z = asimov_z(np.array([0.0, 1.0, 1.0, np.nan]), np.array([1.0, 0.0, -1.0, 1.0]), 0.5)
    np.testing.assert_array_equal(z, 0.0)


def test_combination_and_mean():
    s = np.array([[3.0, 4.0], [1.0, 1.0]])
    b = np.array([100.0, 100.0])
    z = combined_z(s, b, 0.0)
    np.testing.assert_allclose(z, np.sqrt(np.sum(asimov_z(s, b, 0.0) ** 2, axis=-1)))
    assert mean_z(s, b, 0.0) == pytest.approx(z.mean())


def test_rescale_factors():
    np.testing.assert_allclose(rescale_factors([10.0, 20.0, 0.0], 0), [1.0, 0.5, 0.0])
