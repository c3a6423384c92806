"""Config faults are refused when the job is read, naming the key (issue 28, item 4, first part)."""

import pytest

from svjscout.core.exceptions import ConfigError
from svjscout.jobs.config import load_job


@pytest.mark.parametrize("key,value,words", [
    ("analysis.lumi", -5.0, "analysis.lumi must be a positive"),
    ("analysis.lumi", 0.0, "analysis.lumi must be a positive"),
    ("analysis.mt_edges", [650.0, 600.0, 1000.0], "analysis.mt_edges must be at least two finite, strictly increasing"),
    ("analysis.mt_edges", [650.0], "analysis.mt_edges must be at least two"),
    ("analysis.wp", [1.2, 0.5], "analysis.wp[0] (x0) = 1.2 is outside [0, 1]"),
    ("analysis.wp", [0.5, -0.1], "analysis.wp[1] (y0) = -0.1 is outside [0, 1]"),
    ("datasets.qcd.xsec", -1.0, "xsec must be a positive finite number"),
    ("datasets.qcd.sumw", 0.0, "sumw must be a positive finite number"),
    ("validation.inject", ["0", "bogus"], "injection 'bogus'"),
])
def test_bad_values_refused_at_load(key, value, words):
    with pytest.raises(ConfigError) as err:
        load_job(None, {key: value})
    assert words in str(err.value) and key.split(".")[0] in str(err.value)


def test_good_values_accepted():
    cfg = load_job(None, {"analysis.lumi": 59830.0, "datasets.qcd.xsec": 2.5, "analysis.wp": [1.0, 0.0],
                          "validation.inject": ["0", "0.5", "2x", "exp0"]})
    assert cfg.analysis.lumi == 59830.0 and cfg.datasets["qcd"].xsec == 2.5 and tuple(cfg.analysis.wp) == (1.0, 0.0)
