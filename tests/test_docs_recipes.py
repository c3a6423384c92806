"""The retraining recipe of README.md reproduces the shipped models, and every command of it is valid.

A dry run: nothing is executed. The recipe is the first ```bash block after "## Retraining the
models" in README.md; it must be identical (continuations joined, comments stripped) to the block
under "## How they were made" in models/MODELS.md, the commands that made the shipped models.
Each command is then checked against the code:

* ``svjscout ...``: the verb (and sub-verb) exists in the click tree of ``svjscout.jobs.cli``, every
  option is declared by the command it is given to (``-v`` belongs to the top-level group), the
  required options and arguments are there, job files and ``--config`` files exist in the
  repository and load (``load_job`` with the ``--set`` overrides, ``TwinTrainConfig.from_yaml``),
  every ``--set KEY`` names a field of :class:`svjscout.jobs.config.JobConfig` (by its YAML name,
  i.e. the alias where there is one: ``schema``, not ``schema_map``);
* shell scripts exist and are executable;
* ``pip install -e ".[extras]"``: every extra is declared in pyproject.toml;
* ``cp``: sources exist, or, under ``data/``, lie in a folder an earlier step wrote (``--out DIR``,
  ``-o FILE``, a script's ``data/`` argument); the destination folder exists.

Paths under ``data/`` are outputs of earlier steps: they need not exist, but they must come from
an earlier step of the same recipe (inputs of ``svjscout`` commands and of ``cp``, and the files
each job reads). The checker is plain functions returning a list of problems; the last tests
plant faults in a copy of the recipe and check that it reports them.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
import types
import typing
from pathlib import Path

import click
import pytest
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[1]
README_HEADING = "## Retraining the models"
MODELS_HEADING = "## How they were made"
OUTPUT_ROOT = "data/"

# --------------------------------------------------------------------------------------------
# Extracting and normalising the recipe
# --------------------------------------------------------------------------------------------


def first_bash_block(text: str, heading: str) -> str:
    """The first ```bash block after the line starting with ``heading``, within its section."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    except StopIteration:
        raise AssertionError(f"no heading starting with {heading!r}") from None
    body, inside = [], False
    for line in lines[start + 1:]:
        if not inside:
            if line.startswith("## "):
                break
            if line.strip() == "```bash":
                inside = True
            continue
        if line.strip() == "```":
            return "\n".join(body) + "\n"
        body.append(line)
    raise AssertionError(f"no complete ```bash block in the section {heading!r}")


def strip_comment(line: str) -> str:
    """The line without its shell comment (a ``#`` starting a word, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def logical_lines(block: str) -> list[str]:
    """Commands of a bash block: comments stripped, backslash continuations joined, blanks dropped."""
    out, pending = [], ""
    for raw in block.splitlines():
        line = strip_comment(raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            out.append(line)
    if pending.strip():
        out.append(pending.strip())
    return out


def commands(block: str) -> list[list[str]]:
    """Each command as its shell words (``&&``, ``||`` and ``;`` separate commands)."""
    out = []
    for line in logical_lines(block):
        current: list[str] = []
        for word in shlex.split(line):
            if word in ("&&", "||", ";"):
                if current:
                    out.append(current)
                current = []
            else:
                current.append(word)
        if current:
            out.append(current)
    return out


def recipe_difference(a: str, b: str) -> list[str]:
    """Problems if the two bash blocks do not run the same commands (empty list: identical)."""
    ca, cb = commands(a), commands(b)
    problems = []
    for i in range(max(len(ca), len(cb))):
        x = shlex.join(ca[i]) if i < len(ca) else "<missing>"
        y = shlex.join(cb[i]) if i < len(cb) else "<missing>"
        if x != y:
            problems.append(f"command {i + 1}: {x!r} != {y!r}")
    return problems


# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------


def _under(path: str, folder: str) -> bool:
    path, folder = os.path.normpath(path), os.path.normpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def _is_output_path(path: str) -> bool:
    return _under(path, OUTPUT_ROOT)


def _produced(path: str, outputs: list[str]) -> bool:
    """Whether ``path`` (may contain ``*``) lies in (or is) something an earlier step wrote."""
    static = path.split("*", 1)[0]
    if "*" in path:
        static = static.rsplit("/", 1)[0] if "/" in static else static
    return any(_under(static, out) for out in outputs)


def _find_option(cmd: click.Command, word: str) -> click.Parameter | None:
    for param in cmd.params:
        if isinstance(param, click.Option) and word in (*param.opts, *param.secondary_opts):
            return param
    return None


def _takes_value(param: click.Option) -> bool:
    return not (param.is_flag or param.count)


def _parse_options(cmd: click.Command, words: list[str], where: str, problems: list[str],
                   stop_at_positional: bool) -> tuple[dict[str, list[str]], list[str], int]:
    """Options (by parameter name, their values) and positionals of ``cmd`` in ``words``.

    With ``stop_at_positional`` (a group) parsing stops at the first positional word (the verb).
    Returns (options, positionals, number of words consumed).
    """
    options: dict[str, list[str]] = {}
    positionals: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            positionals += words[i + 1:]
            return options, positionals, len(words)
        if word.startswith("-") and word != "-":
            name, eq, inline = word.partition("=")
            param = _find_option(cmd, name)
            if param is None and not name.startswith("--") and len(name) > 2 and not eq:
                # a cluster of short flags, e.g. -vv
                flags = [_find_option(cmd, "-" + ch) for ch in name[1:]]
                if all(p is not None and not _takes_value(p) for p in flags):
                    for p in flags:
                        options.setdefault(p.name, []).append("")
                    i += 1
                    continue
            if param is None:
                declared = sorted(o for p in cmd.params if isinstance(p, click.Option)
                                  for o in (*p.opts, *p.secondary_opts))
                problems.append(f"{where}: no such option {name!r} (declared: {declared})")
                i += 1
                continue
            if _takes_value(param):
                if eq:
                    value = inline
                elif i + 1 < len(words):
                    value = words[i + 1]
                    i += 1
                else:
                    problems.append(f"{where}: option {name!r} needs a value")
                    value = ""
            else:
                if eq:
                    problems.append(f"{where}: flag {name!r} takes no value")
                value = ""
            options.setdefault(param.name, []).append(value)
            i += 1
            continue
        if stop_at_positional:
            return options, positionals, i
        positionals.append(word)
        i += 1
    return options, positionals, i


def _unwrap(annotation):
    """The model or mapping type inside Optional/Union annotations (else the annotation)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        for a in args:
            if (isinstance(a, type) and issubclass(a, BaseModel)) or typing.get_origin(a) is dict or a is dict:
                return a
        return args[0] if len(args) == 1 else annotation
    return annotation


def config_key_problem(model: type[BaseModel], dotted: str) -> str | None:
    """None if ``dotted`` (e.g. ``analysis.cuts.mt_min``) names a field of ``model``, else why not.

    A key is a field's YAML name: its alias where it has one (``schema`` for ``schema_map``), the
    field name otherwise (or also, if the model populates by name). Free mappings
    (``dict[str, X]``) accept any key and continue in X; untyped mappings accept anything below.
    """
    current = model
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth + 1])
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            names = {}
            for name, field in current.model_fields.items():
                names[field.alias or name] = field
                if field.alias is None or current.model_config.get("populate_by_name") \
                        or current.model_config.get("validate_by_name"):
                    names[name] = field
            if part not in names:
                return f"{here!r}: {current.__name__} has no field {part!r} (fields: {sorted(names)})"
            current = names[part].annotation
        elif typing.get_origin(current) is dict:
            args = typing.get_args(current)
            current = args[1] if len(args) == 2 else typing.Any
        elif current is dict or current is typing.Any:
            return None
        else:
            return f"{here!r}: {'.'.join(parts[:depth])!r} is a value ({current}), not a mapping"
    return None


def _leaf_command(words: list[str], problems: list[str], where: str):
    """Walk the click tree along ``svjscout [group options] VERB [SUBVERB] ...``."""
    from svjscout.jobs.cli import cli

    cmd, path, i = cli, ["svjscout"], 1
    while isinstance(cmd, click.Group):
        _, _, used = _parse_options(cmd, words[i:], f"{where}: {' '.join(path)}", problems,
                                    stop_at_positional=True)
        i += used
        if i >= len(words):
            problems.append(f"{where}: {' '.join(path)} needs a verb (one of {sorted(cmd.commands)})")
            return None, path, []
        verb = words[i]
        if verb not in cmd.commands:
            problems.append(f"{where}: {' '.join(path)} has no verb {verb!r} (verbs: {sorted(cmd.commands)})")
            return None, path, []
        cmd, path, i = cmd.commands[verb], path + [verb], i + 1
    return cmd, path, words[i:]


def _check_repo_file(path: str, what: str, where: str, problems: list[str]) -> bool:
    if not (REPO / path).is_file():
        problems.append(f"{where}: {what} {path!r} does not exist in the repository")
        return False
    return True


def _check_svjscout(words, where, outputs, problems) -> list[str]:
    """Check one svjscout command; returns the paths it writes."""
    cmd, path, rest = _leaf_command(words, problems, where)
    if cmd is None:
        return []
    name = " ".join(path)
    options, positionals, _ = _parse_options(cmd, rest, f"{where}: {name}", problems, stop_at_positional=False)

    # required options and the number of arguments
    for param in cmd.params:
        if isinstance(param, click.Option) and param.required and param.name not in options:
            problems.append(f"{where}: {name} misses the required option {param.opts[-1]}")
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    needed = sum((1 if p.nargs == -1 else p.nargs) for p in arguments if p.required)
    if len(positionals) < needed:
        problems.append(f"{where}: {name} needs {needed} argument(s), got {positionals}")
    if all(p.nargs != -1 for p in arguments) and len(positionals) > sum(p.nargs for p in arguments):
        problems.append(f"{where}: {name} takes {sum(p.nargs for p in arguments)} argument(s), got {positionals}")

    # inputs: repo files exist, data/ paths come from earlier steps
    inputs = list(positionals) + [v for k in ("config_path", "lundnet") for v in options.get(k, [])]
    for value in inputs:
        if _is_output_path(value):
            if not _produced(value, outputs):
                problems.append(f"{where}: {name} reads {value!r}, which no earlier step writes")
        elif value.endswith((".yaml", ".yml", ".onnx", ".parquet", ".root")) or "/" in value:
            _check_repo_file(value, "input", where, problems)

    # --set KEY=VALUE: a field of the job configuration
    overrides = {}
    for item in options.get("settings", []):
        key, eq, value = item.partition("=")
        if not eq:
            problems.append(f"{where}: --set {item!r} is not KEY=VALUE")
            continue
        why = config_key_problem(_job_config_model(), key.strip())
        if why:
            problems.append(f"{where}: --set {why}")
        else:
            import yaml

            overrides[key.strip()] = yaml.safe_load(value)

    # the job file loads with the overrides, and reads only files an earlier step wrote
    if path[-1] in ("process", "run") and positionals and (REPO / positionals[0]).is_file():
        _check_job(positionals[0], overrides, where, outputs, problems)
    # the twin training config loads
    for cfg in options.get("config_path", []):
        if (REPO / cfg).is_file():
            try:
                from svjscout.models.train_twin import TwinTrainConfig
            except ImportError:  # no torch: the file's existence is all we can check
                continue
            try:
                TwinTrainConfig.from_yaml(str(REPO / cfg))
            except Exception as err:  # noqa: BLE001 - report whatever the loader raises
                problems.append(f"{where}: --config {cfg!r} does not load: {err}")

    written = options.get("out", []) + options.get("out_dir", [])
    return written


def _job_config_model():
    from svjscout.jobs.config import JobConfig

    return JobConfig


def _check_job(job: str, overrides: dict, where: str, outputs: list[str], problems: list[str]) -> None:
    from svjscout.core.exceptions import ConfigError
    from svjscout.jobs.config import load_job

    try:
        cfg = load_job(REPO / job, overrides)
    except ConfigError as err:
        problems.append(f"{where}: {job} with {overrides} does not load: {err}")
        return
    for dataset, spec in cfg.datasets.items():
        for f in spec.files:
            resolved = cfg.resolve(f)
            if "://" in resolved or f.startswith(("embedded:", "shipped:")):
                continue
            try:
                rel = os.path.relpath(resolved, REPO)
            except ValueError:
                rel = resolved
            if _is_output_path(rel):
                if not _produced(rel, outputs):
                    problems.append(f"{where}: {job} dataset {dataset} reads {rel!r}, which no earlier step writes")
            elif not Path(resolved).exists() and "*" not in resolved:
                problems.append(f"{where}: {job} dataset {dataset} reads {rel!r}, which does not exist")


def _check_pip(words, where, problems) -> None:
    if words[1:2] != ["install"]:
        problems.append(f"{where}: only 'pip install' is expected, got {shlex.join(words)!r}")
        return
    extras_declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get(
        "optional-dependencies", {})
    for word in words[2:]:
        m = re.fullmatch(r"\.\[([^\]]*)\]", word)
        if m:
            for extra in filter(None, (e.strip() for e in m.group(1).split(","))):
                if extra not in extras_declared:
                    problems.append(f"{where}: pip extra {extra!r} is not declared in pyproject.toml "
                                    f"({sorted(extras_declared)})")


def _check_cp(words, where, outputs, problems) -> None:
    args = [w for w in words[1:] if not w.startswith("-")]
    if len(args) < 2:
        problems.append(f"{where}: cp needs a source and a destination, got {args}")
        return
    *sources, dest = args
    for src in sources:
        if _is_output_path(src):
            if not _produced(src, outputs):
                problems.append(f"{where}: cp source {src!r} is written by no earlier step")
        elif not (REPO / src).exists():
            problems.append(f"{where}: cp source {src!r} does not exist in the repository")
    folder = dest if (len(sources) > 1 or dest.endswith("/")) else os.path.dirname(dest) or "."
    if _is_output_path(folder):
        if not _produced(folder, outputs):
            problems.append(f"{where}: cp destination {dest!r} is in no folder an earlier step writes")
    elif not (REPO / folder).is_dir():
        problems.append(f"{where}: cp destination folder {folder!r} does not exist in the repository")


def check_recipe(block: str) -> list[str]:
    """Every problem of the bash block's commands, checked against the repository and the CLI."""
    problems: list[str] = []
    outputs: list[str] = []
    for n, words in enumerate(commands(block), 1):
        where = f"command {n} ({shlex.join(words)[:60]})"
        exe = words[0]
        if exe == "svjscout":
            outputs += _check_svjscout(words, where, outputs, problems)
        elif exe == "pip" or words[:3] == ["python", "-m", "pip"]:
            _check_pip(words if exe == "pip" else words[2:], where, problems)
        elif exe == "cp":
            _check_cp(words, where, outputs, problems)
        elif exe.endswith(".sh") or "/" in exe:
            script = REPO / exe
            if not script.is_file():
                problems.append(f"{where}: script {exe!r} does not exist in the repository")
            elif not os.access(script, os.X_OK):
                problems.append(f"{where}: script {exe!r} is not executable")
            # a script's data/ arguments are where it writes (make.sh OUTDIR)
            outputs += [w for w in words[1:] if _is_output_path(w)]
        else:
            problems.append(f"{where}: unknown command {exe!r} (the checker knows svjscout, pip, cp, scripts)")
    return problems


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def readme_recipe() -> str:
    return first_bash_block((REPO / "README.md").read_text(), README_HEADING)


@pytest.fixture(scope="module")
def models_recipe() -> str:
    return first_bash_block((REPO / "models" / "MODELS.md").read_text(), MODELS_HEADING)


def test_readme_recipe_is_the_one_that_made_the_shipped_models(readme_recipe, models_recipe):
    assert recipe_difference(readme_recipe, models_recipe) == []
    words = [w for c in commands(readme_recipe) for w in c]
    assert "jobs/train_lundnet.yaml" in words and "--threads" in words  # the steps the old README lacked
    # the shipped pair's settings (issue 29 changed jobs/twin_train.yaml for the next training)
    assert "jobs/twin_train_shipped.yaml" in words and "jobs/twin_train.yaml" not in words


@pytest.mark.parametrize("which", ["readme", "models"])
def test_every_command_of_the_recipe_is_valid(which, readme_recipe, models_recipe):
    block = readme_recipe if which == "readme" else models_recipe
    assert len(commands(block)) >= 6
    assert check_recipe(block) == []


#: The recipe README.md had before it was aligned with models/MODELS.md (no LundNet jet skim, no
#: --threads 1): it does not make the shipped models.
OLD_README_RECIPE = """\
samples/training/make.sh data/train                               # Pythia 8 training sample (~100 CPU-min)
svjscout process jobs/train.yaml --skim --out data/skim           # parquet skim (R_T > 0.15 for statistics)
svjscout train lundnet data/skim/skim/*/*.parquet --out data/lundnet
svjscout train twin data/skim/skim/*/*.parquet --lundnet data/lundnet/lundnet.onnx \\
    --config jobs/twin_train.yaml --out data/twin                 # settings for a small sample
cp data/lundnet/lundnet.onnx data/twin/twin.onnx models/         # ship them
"""


def test_identity_check_rejects_the_old_readme_recipe(models_recipe):
    assert recipe_difference(OLD_README_RECIPE, models_recipe)


def test_normalisation_joins_continuations_and_strips_comments():
    block = 'svjscout a \\\n    --b "x # y" # note\n# only a comment\n\ncp s d\n'
    assert commands(block) == [["svjscout", "a", "--b", "x # y"], ["cp", "s", "d"]]
    assert recipe_difference("cp s d   # one\n", "cp  s \\\n d\n") == []


def test_config_key_resolution():
    from svjscout.jobs.config import JobConfig

    for good in ("analysis.cuts.mt_min", "analysis.wp", "schema.tree", "executor.condor.cores",
                 "datasets.qcd.xsec", "scan.points"):
        assert config_key_problem(JobConfig, good) is None, good
    for bad in ("analysis.cuts.mt_mni", "schema_map.tree", "analysis.wp.x", "executor.nope"):
        assert config_key_problem(JobConfig, bad), bad


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("--threads 2", "--thread 2", "no such option '--thread'"),
        ("jobs/train_lundnet.yaml", "jobs/train_lundnet_missing.yaml",
         "'jobs/train_lundnet_missing.yaml' does not exist"),
        ("--device cpu --out data/twin", "--devise cpu --out data/twin", "no such option '--devise'"),
        ("svjscout -v train lundnet", "svjscout -v train lundnett", "no verb 'lundnett'"),
        ("--config jobs/twin_train_shipped.yaml", "--config jobs/twin_train_shiped.yaml",
         "'jobs/twin_train_shiped.yaml' does not exist"),
        ("--out data/lundnet ", "--out data/lundnet_v2 ", "'data/lundnet/lundnet.onnx', which no earlier step"),
        ("data/skim_jets/skim", "data/skim_jet/skim", "'data/skim_jet/skim', which no earlier step writes"),
        ("samples/training/make.sh", "samples/training/mk.sh", "script 'samples/training/mk.sh' does not exist"),
        ("models/\n", "model/\n", "destination folder 'model/' does not exist"),
        ('".[train,generate,test]"', '".[train,gen,test]"', "pip extra 'gen'"),
        ("--skim --out data/skim ", "--skim --outdir data/skim ", "no such option '--outdir'"),
        ("svjscout -v train twin", "svjscout -x train twin", "no such option '-x'"),
    ],
)
def test_checker_catches_a_planted_fault(models_recipe, old, new, expected):
    assert old in models_recipe, f"the recipe changed: update the planted fault {old!r}"
    faulty = models_recipe.replace(old, new, 1)
    problems = check_recipe(faulty)
    assert any(expected in p for p in problems), problems


def test_checker_catches_a_script_that_is_not_executable(tmp_path, monkeypatch):
    script = tmp_path / "samples" / "make.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    assert any("is not executable" in p for p in check_recipe("samples/make.sh data/x\n"))
