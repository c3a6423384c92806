"""The ``svjscout`` command line. It holds no logic: it parses, loads configs, calls the library.

Verbs: ``generate`` (samples), ``process`` (histograms or skim), ``train lundnet|twin``,
``scan``, ``datacards``, ``limits``, ``validate``, ``run`` (the whole chain). Each verb lives in a
command module (``commands_run``, ``commands_datacards``, ``commands_train_*``) that imports what
it needs at its top; the group loads a module only when one of its verbs is named, so
``svjscout --help`` and ``svjscout --version`` import neither coffea, dask nor matplotlib.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import MutableMapping

import click

from svjscout import __version__
from svjscout.core.exceptions import SVJScoutError, UnbackedError

CREDITS = ("Jets are clustered with FastJet (M. Cacciari, G.P. Salam, G. Soyez, Eur. Phys. J. C72 (2012) 1896, "
           "hep-ph/0512210) through the scikit-hep fastjet package; its banner is switched off.")


class _LazyCommands(MutableMapping):
    """A group's ``commands``: the names of its table at once, each command imported when it is
    first looked up (``group.commands[name]``), so that whatever walks the click tree sees every
    verb and loads only those it uses."""

    def __init__(self, group: _LazyGroup):
        self._group, self._loaded = group, {}

    def __getitem__(self, name):
        if name not in self._loaded:
            if name not in self._group.COMMANDS:
                raise KeyError(name)
            self._loaded[name] = self._group.load(name)
        return self._loaded[name]

    def __setitem__(self, name, cmd):
        self._loaded[name] = cmd

    def __delitem__(self, name):
        del self._loaded[name]

    def __contains__(self, name):
        return name in self._loaded or name in self._group.COMMANDS

    def __iter__(self):
        return iter(sorted(set(self._loaded) | set(self._group.COMMANDS)))

    def __len__(self):
        return len(set(self._loaded) | set(self._group.COMMANDS))

    def loaded(self, name) -> bool:
        return name in self._loaded


class _LazyGroup(click.Group):
    """A group whose commands are imported from their modules when named. ``COMMANDS``: name ->
    (module, attribute, the one-line help ``--help`` shows without importing the module;
    tests/test_stage_settings.py checks that it is the command's own)."""

    COMMANDS = {
        "generate": ("svjscout.jobs.commands_run", "generate",
                     "Generate PROCESS with Pythia 8 + the fast detector response into a scouting-format ROOT file."),
        "process": ("svjscout.jobs.commands_run", "process",
                    "Run the processor of JOB (YAML) -> histograms.coffea, histograms.root, cutflow.json (or a skim)."),
        "run": ("svjscout.jobs.commands_run", "run",
                "The main job end to end (default JOB: the embedded sample, jobs/local.yaml)."),
        "scan": ("svjscout.jobs.commands_datacards", "scan_cmd",
                 "Scan the ABCD working point (x0, y0) on HISTOGRAMS (histograms.coffea)."),
        "datacards": ("svjscout.jobs.commands_datacards", "datacards_cmd",
                      "Write Combine datacards (one per signal point) from HISTOGRAMS (histograms.coffea)."),
        "limits": ("svjscout.jobs.commands_datacards", "limits_cmd",
                   "Expected (and observed) 95% CL limits on r for every card under CARDS."),
        "validate": ("svjscout.jobs.commands_datacards", "validate_cmd",
                     "Fit validation of the cards of OUTDIR (a `svjscout run` output folder)."),
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        given, self.commands = self.commands, _LazyCommands(self)
        self.commands.update(given)

    def load(self, name: str) -> click.Command:
        module, attr, _ = self.COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        """The verbs and their one-line help, without importing the modules not yet loaded."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if self.commands.loaded(name):
                rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, click.utils.make_default_short_help(self.COMMANDS[name][2], limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class _Root(_LazyGroup):
    """The ``svjscout`` group: logging is set up from ``-v`` before the verb's module is imported
    (click resolves the verb before it runs the group's callback), so that dask, imported with
    the module, reads the logging level asked for."""

    def invoke(self, ctx):
        setup_logging(ctx.params.get("verbose", 0))
        return super().invoke(ctx)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="svjscout", message=f"%(prog)s, version %(version)s\n{CREDITS}")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, also from dask; -vv debug).")
def cli(verbose: int) -> None:
    """svjscout: semi-visible-jet search on HLT-scouting data, from ROOT files to Combine datacards."""


def setup_logging(verbose: int) -> None:
    """Log level from ``-v`` (warnings; -v info; -vv debug), dask's included (:func:`quiet_dask`)."""
    quiet_dask(verbose)
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # layout notes of the plotting library and the nanny's shutdown chatter are not the user's business
        for name in ("mplhep", "distributed.nanny"):
            logging.getLogger(name).setLevel(logging.ERROR)


def quiet_dask(verbose: int) -> None:
    """Keep dask.distributed at WARNING (its INFO lines hide our warnings) unless ``-v``.

    The environment variable reaches the worker processes, which configure their own logging.
    """
    level = "info" if verbose else "warning"
    os.environ["DASK_LOGGING__DISTRIBUTED"] = level
    logging.getLogger("distributed").setLevel(level.upper())


class _TrainGroup(_LazyGroup):
    """``svjscout train``: its commands import torch (the optional 'train' extra), so they are
    imported when named, not when ``svjscout`` starts; without torch they say what to install."""

    COMMANDS = {
        "lundnet": ("svjscout.jobs.commands_train_lundnet", "lundnet_cmd",
                    "Train LundNet on SKIM parquet files (or folders of them) written by the processors."),
        "twin": ("svjscout.jobs.commands_train_twin", "twin_cmd",
                 "Train the twin MLPs X, Y on SKIM parquet file(s) (BCE + DisCo/closure constraints under MDMM;"),
    }

    def load(self, name: str) -> click.Command:
        try:
            return super().load(name)
        except ModuleNotFoundError as err:  # torch (or another part of the train extra) not installed
            if err.name is None or err.name.split(".")[0] == "svjscout":
                raise
            missing = err.name

            @click.command(name=name, help=f"(unavailable: needs the 'train' extra, {missing} is not installed)")
            def unavailable():
                raise click.ClickException(f"svjscout train {name} needs the 'train' extra ({missing} is not "
                                           "installed): pip install 'svjscout[train]'")

            return unavailable


@cli.group(cls=_TrainGroup)
def train() -> None:
    """Train the models (torch, needs the 'train' extra) and export them to ONNX."""


def main() -> None:
    """Entry point: domain errors become one clear line and exit code 2; a working point the MC
    does not back (no cards written, :mod:`svjscout.datacards.guard`) exit code 3."""
    try:
        cli(standalone_mode=True)
    except UnbackedError as err:  # exit 3: the run worked, the MC does not back its numbers
        click.echo(f"svjscout: not backed: {err}", err=True)
        sys.exit(3)
    except SVJScoutError as err:
        click.echo(f"svjscout: error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
