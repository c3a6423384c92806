"""The epoch loop of both trainers: steps, validation, early stopping, checkpoints and resume.

A trainer supplies what is specific to its model:

* ``steps(epoch, start)``: the minibatches of an epoch from step ``start`` on, as an iterator of
  ``(step, batch)``; built from the stream position alone (seeded per epoch and step,
  :mod:`.data`), so that a resumed run sees the batches the interrupted one would have seen;
* ``step(batch)``: one optimisation step; returns ``(record, weight)``, the epoch's training
  record is the ``weight``-weighted mean of the step records;
* ``evaluate()``: ``(figure, record)`` on validation (lower figure is better);
* ``make_record(epoch, train, figure, val)``: the history entry of an epoch.

:class:`TrainLoop` keeps the best state (model and extra modules, e.g. the MDMM multipliers),
stops after ``patience`` epochs without an improvement larger than ``min_delta``, and writes a
checkpoint every ``checkpoint_every`` steps and at every epoch end. The checkpoint holds the
model, the optimiser, the extra modules, the scheduler, the torch/numpy RNG states, the stream
position (epoch, step) and the state of ``stateful`` objects (a data stream's generator), the
partial epoch sums, the history and the early-stopping state:
``run(resume=True)`` in a fresh process continues bit for bit (tests/test_training.py).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svjscout.core.progress import make_progress, progress_enabled

log = logging.getLogger(__name__)

__all__ = ["LoopResult", "LoopSettings", "TrainLoop", "rng_state", "set_rng_state"]


@dataclass
class LoopSettings:
    """Settings of :class:`TrainLoop`.

    Attributes:
        epochs: maximum number of epochs.
        patience: epochs without improvement before stopping.
        min_delta: minimal improvement of the validation figure.
        evaluate_initial: evaluate before the first step (history entry of epoch 0, which is also
            the initial best state).
        checkpoint_path: training-state file (None: no checkpoint).
        checkpoint_every: also write it every this many steps (0: at epoch ends only).
        progress: rich progress bar; label: its text.
    """

    epochs: int
    patience: int
    min_delta: float = 0.0
    evaluate_initial: bool = False
    checkpoint_path: Path | None = None
    checkpoint_every: int = 0
    progress: bool = False
    label: str = "training"


@dataclass
class LoopResult:
    """History, best epoch and figure, epochs run, whether the run was stopped before its end
    (``stop_after``), and the wall time of this call."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_figure: float
    epochs_run: int
    interrupted: bool = False
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU, CUDA if initialised, numpy)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainLoop:
    """Epochs of ``step`` over ``steps``, with validation, early stopping and checkpoints (module doc)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: LoopSettings, *,
                 steps: Callable[[int, int], Iterator[tuple[int, Any]]], n_steps: Callable[[int], int],
                 step: Callable[[Any], tuple[Mapping[str, float], float]],
                 evaluate: Callable[[], tuple[float, Mapping[str, Any]]],
                 make_record: Callable[[int, Mapping[str, float], float, Mapping[str, Any]], dict[str, Any]],
                 extra_modules: Mapping[str, torch.nn.Module] | None = None, scheduler: Any = None,
                 stateful: Mapping[str, Any] | None = None):
        self.model, self.opt, self.s = model, optimizer, settings
        self.steps, self.n_steps, self.step = steps, n_steps, step
        self.evaluate, self.make_record = evaluate, make_record
        self.extra = dict(extra_modules or {})
        self.scheduler = scheduler
        self.stateful = dict(stateful or {})  # e.g. the data stream's generator: state_dict / load_state_dict
        self.history: list[dict[str, Any]] = []
        self.epoch, self.step_in_epoch = 1, 0
        self.sums: dict[str, float] = {}
        self.sum_w = 0.0
        self.best_figure, self.best_epoch, self.best_state = float("inf"), 0, None
        self.stale = 0
        self.done = False
        self.global_step = 0

    # ------------------------------------------------------------------ state
    def _states(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), **{k: m.state_dict() for k, m in self.extra.items()}}

    def _load_states(self, states: Mapping[str, Any]) -> None:
        self.model.load_state_dict(states["model"])
        for k, m in self.extra.items():
            m.load_state_dict(states[k])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue (module doc)."""
        return {"position": {"epoch": self.epoch, "step": self.step_in_epoch, "global_step": self.global_step},
                "sums": dict(self.sums), "sum_w": self.sum_w, "history": copy.deepcopy(self.history),
                "best": {"figure": self.best_figure, "epoch": self.best_epoch, "state": self.best_state},
                "stale": self.stale, "done": self.done, "states": self._states(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "stateful": {k: v.state_dict() for k, v in self.stateful.items()}, "rng": rng_state()}

    def load_state_dict(self, ckpt: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (model, optimiser, extras, scheduler, RNGs, position)."""
        pos = ckpt["position"]
        self.epoch, self.step_in_epoch, self.global_step = int(pos["epoch"]), int(pos["step"]), int(pos["global_step"])
        self.sums, self.sum_w = dict(ckpt["sums"]), float(ckpt["sum_w"])
        self.history = list(ckpt["history"])
        best = ckpt["best"]
        self.best_figure, self.best_epoch, self.best_state = float(best["figure"]), int(best["epoch"]), best["state"]
        self.stale, self.done = int(ckpt["stale"]), bool(ckpt["done"])
        self._load_states(ckpt["states"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        for k, v in self.stateful.items():
            v.load_state_dict(ckpt["stateful"][k])
        set_rng_state(ckpt["rng"])

    def save(self) -> Path | None:
        """Write the checkpoint atomically (if a path is set)."""
        path = self.s.checkpoint_path
        if path is None:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        return path

    # ------------------------------------------------------------------ loop
    def _improved(self, figure: float, epoch: int) -> bool:
        if figure < self.best_figure - self.s.min_delta:
            self.best_figure, self.best_epoch = figure, epoch
            self.best_state = copy.deepcopy(self._states())
            self.stale = 0
            return True
        self.stale += 1
        return False

    def run(self, resume: bool = False, stop_after: int | None = None) -> LoopResult:
        """Train until ``epochs``, early stopping, or ``stop_after`` steps of this call (then the
        checkpoint is written and ``interrupted`` set: what a killed job leaves behind). With
        ``resume`` and an existing checkpoint, continue from it. The best state is loaded at the end."""
        t0 = time.time()
        path = self.s.checkpoint_path
        if resume and path is not None and Path(path).is_file():
            self.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=False))
            log.info("%s: resumed from %s at epoch %d step %d", self.s.label, path, self.epoch, self.step_in_epoch)
        elif self.s.evaluate_initial and not self.history:
            figure, val = self.evaluate()
            self.history.append(self.make_record(0, {}, figure, val))
            self._improved(figure, 0)
            self.stale = 0
        progress = make_progress()
        if not (self.s.progress and progress_enabled()):
            progress.disable = True
        done_steps = 0
        with progress:
            task = progress.add_task(self.s.label, total=self.s.epochs)
            progress.update(task, completed=self.epoch - 1)
            while not self.done and self.epoch <= self.s.epochs:
                self.model.train()
                for i, batch in self.steps(self.epoch, self.step_in_epoch):
                    rec, w = self.step(batch)
                    for k, v in rec.items():
                        self.sums[k] = self.sums.get(k, 0.0) + float(v) * float(w)
                    self.sum_w += float(w)
                    self.step_in_epoch, self.global_step = i + 1, self.global_step + 1
                    done_steps += 1
                    if stop_after is not None and done_steps >= stop_after:
                        self.save()
                        return self._result(t0, interrupted=True)
                    if self.s.checkpoint_every and self.global_step % self.s.checkpoint_every == 0:
                        self.save()
                train = {k: v / max(self.sum_w, 1e-300) for k, v in self.sums.items()}
                figure, val = self.evaluate()
                rec = self.make_record(self.epoch, train, figure, val)
                if self.scheduler is not None:
                    self.scheduler.step(figure)
                self.history.append(rec)
                improved = self._improved(figure, self.epoch)
                log.info("%s epoch %d: validation figure %.4f%s", self.s.label, self.epoch, figure,
                         " *" if improved else "")
                progress.update(task, advance=1, description=f"{self.s.label} val {figure:.4f}")
                if self.stale >= self.s.patience:
                    log.info("%s: early stopping after epoch %d (best %d)", self.s.label, self.epoch, self.best_epoch)
                    self.done = True
                self.epoch, self.step_in_epoch, self.sums, self.sum_w = self.epoch + 1, 0, {}, 0.0
                self.save()
        self.done = True
        self.save()
        return self._result(t0)

    def _result(self, t0: float, interrupted: bool = False) -> LoopResult:
        if not interrupted and self.best_state is not None:
            self._load_states(self.best_state)
        return LoopResult(history=self.history, best_epoch=self.best_epoch, best_figure=self.best_figure,
                          epochs_run=len([h for h in self.history if h.get("epoch", 1) > 0]),
                          interrupted=interrupted, seconds=time.time() - t0)
