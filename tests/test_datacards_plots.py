"""Limit plots (svjscout.datacards.plots)."""

import os

import pytest

from svjscout.datacards import plot_limits
from svjscout.datacards.plots import point_coordinates, point_name


def _lim(x, obs=None):
    return {"exp-2": 0.5 * x, "exp-1": 0.7 * x, "exp0": x, "exp+1": 1.4 * x, "exp+2": 1.9 * x, "obs": obs}


def test_plot_limits_files(tmp_path):
    limits = {"svj_mz1500_rinv0.3": _lim(0.1, 0.12), "svj_mz2000_rinv0.3": _lim(0.2),
              "svj_mz2000_rinv0.5": _lim(0.3), "weird": _lim(1.0)}
    paths = plot_limits(limits, None, tmp_path)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(f"{n}.{e}" for n in ("limit_brazil_rinv0.3", "limit_brazil_rinv0.5", "limit_map_exp0")
                           for e in ("pdf", "png"))
    assert all(os.path.getsize(p) > 1000 for p in paths)


def test_point_names_and_coordinates():
    meta = {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3}
    assert point_name("SVJ_2000", meta) == "svj_mz2000_rinv0.3"
    assert point_coordinates("svj_mz2000_rinv0.3", {"SVJ_2000": meta}) == (2000.0, 0.3)
    assert point_coordinates("svj_mz3500_rinv0.7") == (3500.0, 0.7)
    with pytest.raises(ValueError, match="nothing"):
        point_coordinates("nothing")
