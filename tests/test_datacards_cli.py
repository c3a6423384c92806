"""Click commands of the datacards step (jobs/commands_datacards.py)."""

import json

import click
import pytest
from click.testing import CliRunner
from coffea.util import save

from svjscout.datacards.toys import realistic_toy
from svjscout.jobs.commands_datacards import datacards_cmd, limits_cmd, scan_cmd


@pytest.fixture(scope="module")
def coffea_file(tmp_path_factory):
    h, ds = realistic_toy(n_mt=2, n_signal=2, n_background=2)
    p = tmp_path_factory.mktemp("in") / "histograms.coffea"
    save({"xy_mt": h, "mt_abcd": None, "cutflow": {}, "datasets": ds}, str(p))
    return p


def test_runner_layout_is_accepted(tmp_path):
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1)
    p = tmp_path / "histograms.coffea"
    save({"hists": {"xy_mt": h, "mt_abcd": None}, "cutflow": {}, "datasets": ds}, str(p))
    res = CliRunner().invoke(_group(), ["datacards", str(p), "--out", str(tmp_path), "--wp", "0.5,0.5"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "datacards" / "index.json").is_file()


def _group():
    return click.Group(commands=[scan_cmd, datacards_cmd, limits_cmd])


def test_help_texts():
    r = CliRunner()
    for name, words in (("scan", "--grid"), ("datacards", "--asimov / --data"), ("limits", "--from-combine")):
        res = r.invoke(_group(), [name, "--help"])
        assert res.exit_code == 0 and words in res.output


def test_datacards_then_limits(coffea_file, tmp_path):
    r = CliRunner()
    res = r.invoke(_group(), ["datacards", str(coffea_file), "--out", str(tmp_path), "--wp", "0.775,0.875"])
    assert res.exit_code == 0, res.output
    index = json.loads((tmp_path / "datacards" / "index.json").read_text())
    assert index["wp"] == {"x0": 0.775, "y0": 0.875} and len(index["cards"]) == 2
    res = r.invoke(_group(), ["limits", str(tmp_path), "--no-plots"])
    assert res.exit_code == 0, res.output
    lim = json.loads((tmp_path / "limits.json").read_text())
    assert sorted(lim) == sorted(index["points"])


def test_scan_and_usage_errors(coffea_file, tmp_path):
    r = CliRunner()
    res = r.invoke(_group(), ["scan", str(coffea_file), "--out", str(tmp_path), "--grid", "0.6,0.8,3", "--no-plots"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "scan.csv").is_file() and "best working point" in res.output
    assert not list(tmp_path.glob("*.png"))
    res = r.invoke(_group(), ["datacards", str(coffea_file), "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--wp" in res.output
