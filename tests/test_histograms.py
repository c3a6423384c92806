"""Region assignment at the boundaries and histogram booking."""

import numpy as np

from svjscout.processors.histograms import book, clip_mt, clip_scores, region_of


def test_regions_at_boundaries():
    x0, y0 = 0.775, 0.875
    x = np.array([x0, x0, np.nextafter(x0, 0), np.nextafter(x0, 0), 0.99, 0.0])
    y = np.array([y0, np.nextafter(y0, 0), y0, np.nextafter(y0, 0), 0.0, 0.99])
    assert region_of(x, y, x0, y0).tolist() == ["B", "A", "D", "C", "A", "D"]


def test_regions_agree_with_histogram_bins():
    """A score on a bin edge goes to the bin above it, as the region does: scans on edges agree."""
    h = book([650, 1000, 2000], ["d"])["xy_mt"]
    x = np.array([0.5, 0.475]); y = np.array([0.5, 0.5])
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
