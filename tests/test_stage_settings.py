"""One settings model per statistics stage, the CLI verbs as "the job's settings plus --set", the
statistics inputs passed explicitly, and Ctrl-C in `svjscout run` (issue 28)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import click
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from coffea.util import save

from svjscout.core.constants import LUMI_UNCERTAINTY
from svjscout.datacards import write_datacards
from svjscout.datacards.parents import StatInputs
from svjscout.datacards.scan import ScanRules, default_grid
from svjscout.datacards.settings import DatacardSettings, ScanSettings, ValidationSettings
from svjscout.datacards.toys import realistic_toy
from svjscout.jobs.cli import _LazyGroup, cli
from svjscout.jobs.commands_datacards import stage_settings
from svjscout.jobs.commands_run import resume_command
from svjscout.jobs.config import JobConfig, load_job

WP = "0.775,0.875"


@pytest.fixture(scope="module")
def coffea_file(tmp_path_factory):
    h, ds = realistic_toy(n_mt=3, n_signal=2, n_background=2)
    path = tmp_path_factory.mktemp("h") / "histograms.coffea"
    save({"hists": {"xy_mt": h}, "datasets": ds}, str(path))
    return path


def test_job_blocks_are_the_stage_models_with_one_set_of_defaults():
    fields = JobConfig.model_fields
    assert fields["datacards"].annotation is DatacardSettings and fields["scan"].annotation is ScanSettings
    assert fields["validation"].annotation is ValidationSettings
    st = stage_settings(None, {})  # a verb without a run's job: the models' defaults
    assert st["datacards"] == DatacardSettings() and st["scan"] == ScanSettings()
    assert st["validation"] == ValidationSettings() and st["validation"].toys == 20
    assert DatacardSettings().lumi_unc == LUMI_UNCERTAINTY
    # the scan's default grid is the run's (scan.x_range/y_range/points)
    for a, b in zip(ScanSettings().grid(), default_grid()):
        np.testing.assert_allclose(a, b, atol=1e-12)
    # the rules: scan keys, and the cards' guard and non-closure z
    rules = ScanSettings(p_min=0.2, r_max=0.5).rules(DatacardSettings(min_neff=7, nonclosure_z=3))
    assert rules == ScanRules(p_min=0.2, r_max=0.5, min_neff=7, nonclosure_z=3)


def test_set_overrides_name_the_key():
    job = load_job()  # jobs/local.yaml
    st = stage_settings(job, {"datacards.min_neff": 5, "scan.p_min": 0.1, "validation.toys": 7})
    assert st["datacards"].min_neff == 5 and st["scan"].p_min == 0.1 and st["validation"].toys == 7
    assert st["datacards"].allow_unbacked == job.datacards.allow_unbacked  # the rest stays the job's
    with pytest.raises(click.BadParameter, match="datacards.min_neff"):
        stage_settings(None, {"datacards.min_neff": -1})
    with pytest.raises(click.BadParameter, match="datacards.no_such_key"):
        stage_settings(None, {"datacards.no_such_key": 1})
    with pytest.raises(click.BadParameter, match="'analysis.wp' is not a key"):
        stage_settings(None, {"analysis.wp": [0.5, 0.5]})
    with pytest.raises(click.UsageError, match="--unblind"):
        stage_settings(None, {"datacards.asimov": False})


def test_an_option_and_its_set_key_give_the_same_cards(coffea_file, tmp_path):
    r = CliRunner()
    idx = {}
    for name, args in (("option", ["--min-neff", "3", "--zero-bkg", "floor", "--allow-unbacked"]),
                       ("set", ["--set", "datacards.min_neff=3", "--set", "datacards.zero_bkg=floor",
                                "--set", "datacards.allow_unbacked=true"])):
        res = r.invoke(cli, ["datacards", str(coffea_file), "--out", str(tmp_path / name), "--wp", WP, *args])
        assert res.exit_code == 0, res.output
        idx[name] = json.loads((tmp_path / name / "datacards" / "index.json").read_text())
    assert idx["option"]["min_neff"] == idx["set"]["min_neff"] == 3.0
    assert idx["option"]["zero_bkg"] == idx["set"]["zero_bkg"] == "floor"
    for card in idx["option"]["cards"]:
        a = (tmp_path / "option" / "datacards" / card).read_text()
        assert a == (tmp_path / "set" / "datacards" / card).read_text()
    res = r.invoke(cli, ["datacards", str(coffea_file), "--out", str(tmp_path / "bad"), "--wp", WP,
                         "--set", "datacards.min_neff=lots"])
    assert res.exit_code == 2 and "datacards.min_neff" in res.output


def test_write_datacards_takes_the_settings_whole(tmp_path):
    h, ds = realistic_toy(n_mt=3, n_signal=1, n_background=1)
    s = DatacardSettings(min_neff=2.0, lumi_unc=1.025, allow_unbacked=True)
    a = write_datacards(StatInputs.of(h), ds, (0.775, 0.875), tmp_path / "a", s)
    b = write_datacards(h, ds, (0.775, 0.875), tmp_path / "b", min_neff=2.0, lumi_unc=1.025, allow_unbacked=True)
    assert a["lumi_unc"] == b["lumi_unc"] == 1.025 and a["min_neff"] == b["min_neff"] == 2.0
    assert [p["sha256"] for p in a["points"].values()] == [p["sha256"] for p in b["points"].values()]
    with pytest.raises(Exception, match="no_such_key"):
        write_datacards(h, ds, (0.775, 0.875), tmp_path / "c", s, no_such_key=1)


def test_resume_command_reads_back_the_same_configuration():
    overrides = {"executor.name": "iterative", "analysis.cuts.rt_min": 0.15, "datacards.allow_unbacked": True}
    line = resume_command(None, "out dir", overrides)
    assert line.endswith("--resume -o 'out dir'") and line.startswith("svjscout run --set")
    # the --set values read back (YAML) as the values given: the same configuration digest
    args = line.split("--set ")[1:]
    back = {}
    for a in args:
        key, _, value = a.split(" --resume")[0].strip().strip("'").partition("=")
        back[key] = yaml.safe_load(value)
    assert back == overrides


@pytest.mark.slow
def test_ctrl_c_prints_how_to_resume(tmp_path):
    """A real `svjscout run` interrupted (SIGINT) after its processing, when the working point is
    chosen (the choice's log line): exit 130 and the resume line with the actual output folder and
    overrides, not click's bare "Aborted!"."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "svjscout.jobs.cli", "-v", "run", "-o", str(out), "--executor",
                             "iterative"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    seen = ""
    try:
        for line in proc.stderr:  # the stages after the processing take minutes: interrupt there
            seen += line
            if "svjscout.datacards.choice" in line:
                proc.send_signal(signal.SIGINT)
                break
        _, rest = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = seen + rest
    assert "svjscout.datacards.choice" in seen, err
    assert proc.returncode == 130, err
    assert "Aborted!" not in err, err
    assert "--resume -o " + str(out) in err and "--set 'executor.name=\"iterative\"'" in err, err


def test_help_lists_every_verb_with_its_own_line_without_loading_it():
    """`svjscout --help` shows each verb's one-line help from the group's table (no module loaded);
    the table's line is the command's own first docstring line, and `--help`/`--version` import
    neither coffea, dask nor matplotlib."""
    ctx = click.Context(cli)
    assert set(_LazyGroup.COMMANDS) <= set(cli.commands) and "train" in cli.commands  # every verb, none loaded
    for group in (cli, cli.commands["train"]):
        for name, (_, _, line) in type(group).COMMANDS.items():
            cmd = group.get_command(ctx, name)
            assert cmd is not None and cmd.help.strip().splitlines()[0] == line, name
    code = ("import sys; from svjscout.jobs.cli import main; sys.argv = ['svjscout', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('coffea', 'dask', 'matplotlib', 'onnxruntime') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr
    assert "validate" in res.stdout and "datacards" in res.stdout
