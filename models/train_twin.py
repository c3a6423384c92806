"""Training of the twin MLPs X, Y with BCE + DisCo + closure constraints under MDMM (docs/physics.md).

Recipe (defaults = the design, every knob in :class:`TwinTrainConfig`):

* the skim parquet files are concatenated and split by event with :mod:`svjscout.core.splits`
  (the split LundNet uses: a hash of seed, dataset, run, luminosityBlock and parent; default
  60/20/20 train/val/test, so the twin's test events are LundNet's test events; independent of
  file paths and of file and row order; copies of one generated event stay together);
* analysis selection (:func:`analysis_mask`, from a :class:`~svjscout.processors.selection.Cuts`,
  config key ``analysis_cuts``): the constraints (DisCo, closure, occupancy), the validation
  figure and every reported validation/test metric use only events that pass the analysis
  preselection; BCE uses them too (``bce_selection: analysis``) or every training event of the
  (possibly looser) skim (``bce_selection: loose``);
* within each split the physics weights are rescaled per class so that
  ``sum(signal weights) / sum(background weights) = 3/2`` and the mean weight is 1
  (optionally every signal point first gets the same total, ``balance_signal_points``);
* each epoch draws ``batches_per_epoch`` (5) minibatches of ``batch_size`` (55,000) events
  *uniformly* with replacement from the training split; the weights enter the losses
  (weighted BCE normalised by the sum of weights, weighted dCorr, weighted soft counts), so the
  expectation equals the weighted full-sample loss;
* objective ``BCE_X + BCE_Y``; constraints (on background only), each ``L_j <= eps_j`` under
  MDMM: ``dcorr_xy``, ``dcorr_x_mt``, ``dcorr_y_mt``, ``dcorr_x_deta``, ``dcorr_y_deta``
  (fast O(n log n) dCorr), ``closure_SP``, ``closure_VP`` (normalisation closure) and
  ``closure_bins_SP``, ``closure_bins_VP`` (per-M_T-bin closure folded by ``bin_reduce``);
* early stopping on the validation figure ``BCE_X + BCE_Y + sum_j max(0, L_j - eps_j)``: every
  choice is made on validation; the test split is evaluated once, after training, and reported
  as "test (untouched)".

Outputs in ``out_dir``: ``twin.onnx``, ``twin_checkpoint.pt``, ``report.md``, ``report.json``,
``history.png``, ``multipliers.png``, ``xy_plane.png``.

The code lives in :mod:`svjscout.models.twin_training`, one concept per module (config, data,
stream, losses, evaluation, report, train, tradeoff); this module re-exports its public names
(and ``_Tensors``, ``_loss_terms``, ``_check_lundnet_split``, used by tests and benchmarks).
"""

from __future__ import annotations

from svjscout.models.twin_training.config import CONSTRAINTS, TwinTrainConfig  # noqa: F401
from svjscout.models.twin_training.data import (  # noqa: F401
    SkimData,
    _Tensors,
    analysis_mask,
    compute_lundnet_scores,
    concat,
    load_skim,
    split_codes,
    training_weights,
)
from svjscout.models.twin_training.evaluation import auc_weights, baseline_scores, baseline_signs, target_check  # noqa: F401
from svjscout.models.twin_training.losses import _loss_terms, constraint_floors, effective_eps, null_scores  # noqa: F401
from svjscout.models.twin_training.tradeoff import (  # noqa: F401
    DEFAULT_TRADEOFF_SETTINGS,
    TRADEOFF_BEGIN,
    TRADEOFF_END,
    fill_tradeoff_doc,
    format_tradeoff,
    tradeoff_table,
)
from svjscout.models.twin_training.train import TwinTrainResult, _check_lundnet_split, load_checkpoint, train_twin  # noqa: F401

__all__ = [
    "CONSTRAINTS",
    "DEFAULT_TRADEOFF_SETTINGS",
    "SkimData",
    "TwinTrainConfig",
    "TwinTrainResult",
    "analysis_mask",
    "auc_weights",
    "compute_lundnet_scores",
    "constraint_floors",
    "effective_eps",
    "fill_tradeoff_doc",
    "format_tradeoff",
    "load_checkpoint",
    "load_skim",
    "null_scores",
    "split_codes",
    "tradeoff_table",
    "train_twin",
    "training_weights",
]
