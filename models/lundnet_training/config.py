"""LundNet's training settings: :class:`TrainConfig`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError
from svjscout.models.lundnet import SMALL


@dataclass
class TrainConfig:
    """Settings of :func:`train_lundnet`.

    Attributes:
        model: the network configuration (:data:`svjscout.models.lundnet.SMALL` by default).
        epochs: maximum number of epochs.
        batch_size: jets per optimisation step.
        lr: Adam learning rate (initial).
        patience: epochs without validation-loss improvement before stopping.
        lr_patience, lr_factor: the learning rate is multiplied by ``lr_factor`` after
            ``lr_patience`` epochs without validation-loss improvement (``lr_factor=1``: constant).
        seed: seed of the split, the initialisation and the batch order.
        device: ``auto`` (CUDA if available) | ``cpu`` | ``cuda[:n]`` (CUDA untested offline).
        threads: torch CPU threads.
        val_fraction, test_fraction: fractions of events in the validation / test subsets
            (defaults: :data:`svjscout.core.splits.DEFAULT_FRACTIONS`, shared with the twin).
        progress: show a rich progress bar (also off with ``SVJSCOUT_NO_PROGRESS=1``).
        command: the command line, recorded in the report.
        one_copy_per_parent: keep one detector copy per parent (:func:`load_skim`).
        buffer_jets: training jets held in memory at once (row groups streamed into shuffled
            buffers of this size; every jet visited once per epoch).
        checkpoint_every: also write the training state every this many steps (0: epoch ends).
        resume: continue from ``out_dir/train_state.pt`` if it exists.
        crossfit_k: after training, also cross-fit ``crossfit_k`` fold models by parent and write
            every event's out-of-fold scores to ``out_dir/lundnet_oof.parquet`` for the twin
            (:mod:`.crossfit`, ``docs/training_data.md``); 0 (default): no cross-fit, else >= 2.
            The skim is then read into memory once more.
        crossfit_epochs: epochs per fold model; ``None``: the full model's best epoch.
        signal_jet_label: ``truth`` (default): a jet of a signal event is a signal jet if a generator
            dark quark lies within ``dark_match_dr`` of its axis (the skim's ``dark_dr_j0/j1``);
            unmatched signal jets get weight 0 (out of training, validation loss and AUCs); skims
            without the match keep their event labels (counted in the report). ``event``: both jets
            of a signal event are signal (the shipped models' rule). docs/training_data.md.
        dark_match_dr: the match radius (default 0.8, the AK8 radius).
    """

    model: Any = None
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    patience: int = 5
    lr_patience: int = 2
    lr_factor: float = 0.5
    seed: int = splits.DEFAULT_SEED
    device: str = "cpu"
    threads: int = 2
    val_fraction: float = splits.DEFAULT_FRACTIONS[1]
    test_fraction: float = splits.DEFAULT_FRACTIONS[2]
    progress: bool = True
    command: str | None = None
    one_copy_per_parent: bool = True
    buffer_jets: int = 500_000
    checkpoint_every: int = 0
    resume: bool = False
    crossfit_k: int = 0
    crossfit_epochs: int | None = None
    signal_jet_label: str = "truth"
    dark_match_dr: float = 0.8

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = SMALL
        for key in ("epochs", "batch_size", "patience", "threads", "buffer_jets"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} is {getattr(self, key)}, expected >= 1")
        if self.signal_jet_label not in ("truth", "event"):
            raise ConfigError(f"train.signal_jet_label is {self.signal_jet_label!r}, expected 'truth' or 'event'")
        if not (self.dark_match_dr > 0 and self.dark_match_dr < 10):
            raise ConfigError(f"train.dark_match_dr is {self.dark_match_dr!r}, expected a radius in (0, 10)")
        if self.crossfit_k != 0 and self.crossfit_k < 2:
            raise ConfigError(f"train.crossfit_k is {self.crossfit_k}, expected 0 (off) or >= 2")
        if self.crossfit_epochs is not None and self.crossfit_epochs < 1:
            raise ConfigError(f"train.crossfit_epochs is {self.crossfit_epochs}, expected >= 1 or None")
        if not 0 < self.lr_factor <= 1:
            raise ConfigError(f"train.lr_factor is {self.lr_factor}, expected in (0, 1]")
        if not (0 < self.val_fraction and 0 < self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(
                f"train.val_fraction={self.val_fraction}, train.test_fraction={self.test_fraction}: "
                "expected both > 0 with a sum < 1"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        out["model"] = self.model.to_dict()
        return out
