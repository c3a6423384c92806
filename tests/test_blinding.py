"""Data in region B of the signal plane needs an explicit --unblind / unblind=True (issue 11, item 12)."""

import json
import os
import subprocess
import sys

import pytest
from coffea.util import save

from svjscout.core.exceptions import DatacardError
from svjscout.datacards import write_datacards
from svjscout.datacards.toys import realistic_toy
from svjscout.jobs.config import DatacardSpec

WP = (0.775, 0.875)


@pytest.fixture(scope="module")
def toy():
    h, ds = realistic_toy(n_mt=2, n_signal=1, n_background=1)  # with a dataset of kind "data"
    assert "data" in {m["kind"] for m in ds.values()}
    return h, ds


@pytest.fixture(scope="module")
def coffea_file(toy, tmp_path_factory):
    h, ds = toy
    p = tmp_path_factory.mktemp("in") / "histograms.coffea"
    save({"hists": {"xy_mt": h}, "datasets": ds}, str(p))
    return p


def _cli(*args, cwd):
    env = {**os.environ, "SVJSCOUT_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def _headers(card_text):
    return [line for line in card_text.splitlines() if line.startswith("#")]


def test_library_refuses_data_without_unblind(toy, tmp_path):
    h, ds = toy
    with pytest.raises(DatacardError, match="unblind=True"):
        write_datacards(h, ds, WP, tmp_path, asimov=False)
    assert not (tmp_path / "datacards").exists()  # refused before anything is written


def test_library_unblind_marks_cards_and_index(toy, tmp_path):
    h, ds = toy
    index = write_datacards(h, ds, WP, tmp_path / "u", asimov=False, unblind=True)
    assert index["unblinded"] is True
    assert json.loads((tmp_path / "u" / "datacards" / "index.json").read_text())["unblinded"] is True
    text = (tmp_path / "u" / "datacards" / index["cards"][0]).read_text()
    unbl = [line for line in _headers(text) if line.startswith("# UNBLINDED:")]
    assert len(unbl) == 1 and "region B" in unbl[0] and "data" in unbl[0]

    blind = write_datacards(h, ds, WP, tmp_path / "b")  # Asimov: blinded whatever unblind says
    assert blind["unblinded"] is False
    assert not any("UNBLINDED" in line
                   for line in _headers((tmp_path / "b" / "datacards" / blind["cards"][0]).read_text()))
    also_blind = write_datacards(h, ds, WP, tmp_path / "bu", unblind=True)
    assert also_blind["unblinded"] is False


@pytest.mark.slow
def test_cli_data_without_unblind_is_refused(coffea_file, tmp_path):
    res = _cli("datacards", str(coffea_file), "--out", str(tmp_path / "d"), "--wp", "0.775,0.875", "--data",
               cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--unblind" in res.stderr and "unblind" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "d" / "datacards").exists()


@pytest.mark.slow
def test_cli_data_with_unblind_writes_marked_cards(coffea_file, tmp_path):
    res = _cli("datacards", str(coffea_file), "--out", str(tmp_path / "d"), "--wp", "0.775,0.875", "--data",
               "--unblind", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    index = json.loads((tmp_path / "d" / "datacards" / "index.json").read_text())
    assert index["unblinded"] is True and index["asimov"] is False
    text = (tmp_path / "d" / "datacards" / index["cards"][0]).read_text()
    assert any(line.startswith("# UNBLINDED:") for line in _headers(text))


@pytest.mark.slow
def test_cli_default_is_blinded(coffea_file, tmp_path):
    res = _cli("datacards", str(coffea_file), "--out", str(tmp_path / "d"), "--wp", "0.775,0.875", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    index = json.loads((tmp_path / "d" / "datacards" / "index.json").read_text())
    assert index["unblinded"] is False
    assert "UNBLINDED" not in (tmp_path / "d" / "datacards" / index["cards"][0]).read_text()


def test_job_config_key():
    assert DatacardSpec().unblind is False
    assert DatacardSpec(asimov=False, unblind=True).unblind is True


def test_job_with_data_cards_is_refused_at_load_unless_unblind(tmp_path):
    """datacards.asimov: false fails when the job is read, before any event is processed."""
    from svjscout.core.exceptions import ConfigError
    from svjscout.jobs.config import load_job

    job = tmp_path / "job.yaml"
    job.write_text("datasets: {d: {kind: data, files: [x.root], allow_no_lumi_mask: true}}\n"
                   "datacards: {asimov: false}\n")
    with pytest.raises(ConfigError, match=r"datacards.*unblind: true"):
        load_job(job)
    assert load_job(job, {"datacards.unblind": True}).datacards.unblind
