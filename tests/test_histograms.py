"""Region assignment at the boundaries and histogram booking."""

import numpy as np
import pytest

from svjscout.processors.histograms import book, clip_mt, clip_scores, region_of


def test_regions_at_boundaries():
    x0, y0 = 0.775, 0.875
    x = np.array([x0, x0, np.nextafter(x0, 0), np.nextafter(x0, 0), 0.99, 0.0])
    y = np.array([y0, np.nextafter(y0, 0), y0, np.nextafter(y0, 0), 0.0, 0.99])
    assert region_of(x, y, x0, y0).tolist() == ["B", "A", "D", "C", "A", "D"]


def test_regions_agree_with_histogram_bins():
    """A score on a bin edge goes to the bin above it, as the region does: scans on edges agree."""
    h = book([650, 1000, 2000], ["d"])["xy_mt"]
    x = np.array([0.5, 0.475])
    y = np.array([0.5, 0.5])
    h.fill(dataset="d", plane="SP", x=x, y=y, mt=[700, 700])
    v = h[{"dataset": "d", "plane": "SP"}].project("x").values()
    assert v[20] == 1 and v[19] == 1  # 0.5 is the low edge of bin 20
    assert region_of(x, y, 0.5, 0.5).tolist() == ["B", "D"]


def test_clipping_keeps_entries_out_of_flow():
    assert clip_scores(np.array([1.0, -0.1])).max() < 1.0
    edges = [650.0, 1000.0, 2500.0]
    mt = clip_mt(np.array([5000.0, 700.0]), edges)
    assert mt[0] < 2500.0 and mt[1] == 700.0
    h = book(edges, ["d"])["mt_abcd"]
    h.fill(dataset="d", plane="VP", region="B", mt=mt)
    assert h.sum(flow=False).value == 2


def test_region_and_histogram_bin_agree_at_every_score_edge():
    """float32 scores at, just below and just above each edge: the region is the bin's region.

    float32(0.775) = 0.77499998 lies in the x bin below 0.775; a float32 comparison put it in A.
    """
    import hist

    axis = hist.axis.Regular(40, 0, 1)
    edges = axis.edges[1:-1]
    f32 = np.concatenate([np.float32(edges), np.nextafter(np.float32(edges), np.float32(0)),
                          np.nextafter(np.float32(edges), np.float32(1))])
    for k, e in enumerate(edges, start=1):
        x = clip_scores(f32)
        reg = region_of(x, np.full_like(x, 0.99), e, 0.5, bins=40)
        above = axis.index(x) >= k  # what the xy_mt sums over bins call "above x0"
        assert np.array_equal(np.isin(reg, ["A", "B"]), above), e
    # the case of the review: float32(0.775) is below 0.775 for both
    s = clip_scores(np.array([np.float32(0.775)]))
    assert region_of(s, np.array([0.1]), 0.775, 0.5, bins=40).tolist() == ["C"]


@pytest.mark.slow
def test_working_point_off_the_score_edges_is_refused():
    from svjscout.core.exceptions import ConfigError
    from svjscout.jobs.config import load_job

    with pytest.raises(ConfigError, match=r"analysis.wp\[0\] \(x0\) = 0.51 is not on a score bin edge"):
        load_job(None, {"analysis.wp": [0.51, 0.5]})
