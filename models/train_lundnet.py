"""Training of LundNet on the parquet skim: data loading, split, weights, loop, evaluation, report.

Jets: J0 and J1 of every skim event; label 1 for signal events, 0 for background events.

* Split: train / validation / test by *event* (both jets of an event in the same subset),
  :mod:`svjscout.core.splits`: a hash of (seed, dataset, run, luminosityBlock, parent), the
  same split as the twin's (its test events are inside LundNet's test events); deterministic,
  independent of file paths, file order and row order; detector copies of one generated event
  stay together.
* Weights (per subset): background jets keep their physics weight (cross section), every
  signal point gets the same total weight, then both classes are scaled to the same sum
  (half the number of jets each). Negative physics weights are set to 0 for training.
* Loss: weighted binary cross entropy on the logit, normalised by the batch sum of weights.
  Adam (learning rate halved after 2 epochs without validation improvement), early stopping
  on the validation loss (best state restored).
* Evaluation on the test subset with the exported ONNX model: weighted ROC AUC per signal
  point vs each background process and vs all backgrounds, all signal vs all backgrounds, and
  two baselines (number of primary declusterings; jet mass = exp(ln_m) of the first node).

Outputs in ``out_dir``: ``lundnet.onnx`` (+ metadata), ``lundnet_checkpoint.pt``,
``report.md``, ``report.json``, ``roc.png``, ``scores.png``, ``loss.png``.

* Cross-fit (for the twin's inputs, ``docs/training_data.md``): k models by parent fold, each
  trained without its fold, give every event an out-of-fold score (:func:`crossfit_lundnet`,
  :func:`crossfit_skim`); the deployed model stays the full one trained here.

The code lives in :mod:`svjscout.models.lundnet_training`, one concept per module (config, data,
stream, evaluation, report, train, crossfit); this module re-exports its public names.
"""

from __future__ import annotations

from svjscout.core.splits import SPLIT_NAMES, TEST, TRAIN, VAL  # noqa: F401
from svjscout.models.lundnet_training.config import TrainConfig  # noqa: F401
from svjscout.models.lundnet_training.crossfit import (  # noqa: F401
    CrossFitConfig,
    CrossFitResult,
    crossfit_lundnet,
    crossfit_skim,
    write_oof_table,
)
from svjscout.models.lundnet_training.data import SKIM_COLUMNS, SPLIT_KEY_COLUMNS, JetSet, load_skim, training_weights  # noqa: F401
from svjscout.models.lundnet_training.evaluation import (  # noqa: F401
    auc_table,
    background_groups,
    baseline_scores,
    evaluate_lundnet_onnx,
    process_of,
)
from svjscout.models.lundnet_training.train import TrainResult, train_lundnet  # noqa: F401
from svjscout.models.training.metrics import weighted_auc  # noqa: F401

__all__ = [
    "CrossFitConfig",
    "CrossFitResult",
    "SKIM_COLUMNS",
    "SPLIT_KEY_COLUMNS",
    "SPLIT_NAMES",
    "TEST",
    "TRAIN",
    "VAL",
    "JetSet",
    "TrainConfig",
    "TrainResult",
    "auc_table",
    "background_groups",
    "baseline_scores",
    "crossfit_lundnet",
    "crossfit_skim",
    "evaluate_lundnet_onnx",
    "load_skim",
    "process_of",
    "train_lundnet",
    "training_weights",
    "weighted_auc",
    "write_oof_table",
]
