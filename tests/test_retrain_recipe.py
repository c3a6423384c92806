"""models/retrain.sh (the retrain protocol of issues 29 and 30): a dry run prints every step, and
every svjscout command of it is valid against the CLI, the job files and the training configs
(the checker of tests/test_docs_recipes.py); the steps read only what earlier steps write."""

import os
import re
import shlex
import subprocess

from conftest import benchmark_module
from test_docs_recipes import REPO, check_recipe


def _dry_run(tmp_path, seeds="1 2", only=None, stdout=None) -> list[str]:
    out = tmp_path / "retrain"
    env = {**os.environ, "DRY": "1", "SEEDS": seeds, "N_BOOT": "7"}
    env.pop("STEPS", None)
    if only is not None:
        env["STEPS"] = only
    res = subprocess.run([str(REPO / "models" / "retrain.sh"), str(out)], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True)
    if stdout is not None:
        stdout.append(res.stdout)
    steps = []
    for line in res.stdout.splitlines():
        m = re.match(r"retrain: (\S+): (.*)$", line)
        if m:
            steps.append((m[1], m[2].replace(str(out), "data/retrain")))
    return steps


def test_dry_run_lists_the_protocol(tmp_path):
    steps = dict(_dry_run(tmp_path))
    want = ["skim_twin", "skim_jets", "lundnet", "lundnet_comparison", "twin_s1", "twin_analysis_s1", "twin_s2",
            "twin_analysis_s2", "heldout_shipped", "heldout_mdmm_s1", "heldout_analysis_s1", "heldout_mdmm_s2",
            "heldout_analysis_s2", "comparison"]
    assert list(steps) == want
    assert "--crossfit-k 5" in steps["lundnet"]
    assert "--lundnet-oof data/retrain/lundnet/lundnet_oof.parquet" in steps["twin_s2"]
    assert "--seed 2" in steps["twin_analysis_s2"]
    assert "--init data/retrain/twin_s2/twin.onnx" in steps["twin_analysis_s2"]
    assert "jobs/twin_train_analysis.yaml" in steps["twin_analysis_s1"] and "jobs/twin_train.yaml" in steps["twin_s1"]
    assert "analysis.twin_model=data/retrain/twin_analysis_s1/twin.onnx" in steps["heldout_analysis_s1"]
    assert "--bootstrap '7' --reference mdmm" in steps["comparison"]
    assert "mdmm@2=data/retrain/heldout_mdmm_s2" in steps["comparison"]
    # the LundNet comparison: its arguments parse with the script's own parser
    mod = benchmark_module("compare_lundnets")
    words = shlex.split(steps["lundnet_comparison"])  # bash -c python ... > OUT (the dry run prints it unquoted)
    words = words[2:words.index(">")]
    assert words[:2] == ["python", "benchmarks/compare_lundnets.py"]
    args = mod.parser().parse_args(words[2:])
    assert args.inputs == ["data/retrain/skim_jets/skim", "old=shipped:lundnet",
                           "new=data/retrain/lundnet/lundnet.onnx"]
    assert args.seed == 1 and args.bootstrap == 7


def test_steps_runs_only_the_named_steps(tmp_path):
    """STEPS="skim_jets lundnet lundnet_comparison" (LundNet's steps, which read only single files
    and can run while the QCD files are generated) runs those and no other, and says it is partial."""
    text: list[str] = []
    steps = dict(_dry_run(tmp_path, only="skim_jets lundnet lundnet_comparison", stdout=text))
    assert list(steps) == ["skim_jets", "lundnet", "lundnet_comparison"]
    assert "retrain: skim_twin not in STEPS, skipped" in text[0]
    assert "run again without STEPS" in text[0] and "retrain: done" not in text[0]
    # a step name that is a prefix of another does not select it
    assert list(dict(_dry_run(tmp_path, only="twin_s1"))) == ["twin_s1"]


def test_every_svjscout_step_is_valid(tmp_path):
    """The svjscout steps, after the sample recipe, pass the docs-recipe checker: verbs, options,
    required arguments, job files loading with their --set overrides, training configs loading,
    inputs written by earlier steps. Model overrides of the held-out runs must be written by an
    earlier step (they are checked here, then replaced by the shipped models for the job check,
    which needs existing files)."""
    lines = ["samples/training/make.sh data/train"]
    written: list[str] = []
    problems = []
    for name, cmd in _dry_run(tmp_path):
        if not cmd.startswith("svjscout"):
            continue
        words = shlex.split(cmd)
        for i, w in enumerate(words):
            if w == "--out":
                written.append(words[i + 1])
            m = re.match(r"analysis\.(lundnet|twin)_model=(data/.*)$", w)
            if m:
                if not any(m[2].startswith(d + "/") for d in written):
                    problems.append(f"{name}: {m[2]} is written by no earlier step")
                words[i] = f"analysis.{m[1]}_model=shipped:{m[1]}"
        lines.append(shlex.join(words))
    assert not problems, problems
    assert len(lines) > 10
    assert check_recipe("\n".join(lines)) == []
    # a planted fault is found: the checker does look at these commands
    bad = "\n".join(lines).replace("--crossfit-k", "--crossfit-kk", 1)
    assert any("crossfit-kk" in p for p in check_recipe(bad))
