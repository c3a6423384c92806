"""`svjscout scan/datacards/limits` on a file that is not a coffea output: one clear line, exit 2
(issue 11, item 11)."""

import os
import subprocess
import sys

import lz4.frame
import pytest
from coffea.util import save
from conftest import embedded_file

from svjscout.datacards.toys import realistic_toy


def _cli(*args, cwd):
    env = {**os.environ, "SVJSCOUT_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def _bad_inputs(d):
    text = d / "notcoffea.txt"
    text.write_text("this is a text file, not histograms\n")
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1)
    good = d / "histograms.coffea"
    save({"hists": {"xy_mt": h}, "datasets": ds}, str(good))
    data = good.read_bytes()
    truncated = d / "truncated.coffea"
    truncated.write_bytes(data[: len(data) // 2])
    nopickle = d / "nopickle.coffea"  # a valid LZ4 frame that holds no pickle
    nopickle.write_bytes(lz4.frame.compress(b"plain bytes, not a pickle"))
    notdict = d / "list.coffea"
    save([1, 2, 3], str(notdict))
    return {"text": text, "root": embedded_file("ttbar.root"), "truncated": truncated, "nopickle": nopickle,
            "notdict": notdict}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return _bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "root", "truncated", "nopickle", "notdict"])
def test_scan_rejects_non_coffea_file(inputs, kind, tmp_path):
    path = str(inputs[kind])
    res = _cli("scan", path, "--out", str(tmp_path / "d"), "--no-plots", "--grid", "0.6,0.8,3", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith("svjscout: error: ") and path in line
    assert "not a coffea output" in line and "svjscout process" in line


@pytest.mark.slow
def test_datacards_and_limits_reject_truncated_file(inputs, tmp_path):
    path = str(inputs["truncated"])
    res = _cli("datacards", path, "--out", str(tmp_path / "d"), "--wp", "0.5,0.5", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and path in res.stderr


def test_good_file_still_loads(tmp_path):
    from svjscout.jobs.commands_datacards import _load

    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1)
    save({"hists": {"xy_mt": h}, "datasets": ds}, str(tmp_path / "h.coffea"))
    inputs, datasets = _load(str(tmp_path / "h.coffea"))
    assert datasets == ds and inputs.xy_mt.axes.name == h.axes.name and inputs.parents is None
