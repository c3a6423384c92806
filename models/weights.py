"""The one policy of both trainers for negative event weights: refuse them, naming where they are.

Negative generator weights (NLO samples) break two things silently: a class-weighted BCE with
weights clipped to 0 trains on another distribution than the one the analysis fills, and the
weighted distance correlation (:mod:`.disco`) of mixed-sign weights can have a non-positive
covariance term, where it returns 0 with no gradient: the decorrelation constraint then looks met
while nothing is decorrelated. Our Pythia samples have positive weights only; a sample with
negative ones needs an estimator for them (tested against a reference) before it can be trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from svjscout.core.exceptions import InputFileError


def require_nonnegative(weight, where: str | Sequence[str], dataset=None) -> np.ndarray:
    """``weight`` as float64 if no entry is negative (or NaN), else :class:`InputFileError`.

    Args:
        weight: per-event (or per-jet) physics weights.
        where: the skim file(s) the weights come from, for the message.
        dataset: optional per-entry dataset names, to name the datasets with negative weights.
    """
    w = np.asarray(weight, dtype=np.float64)
    bad = ~(w >= 0)
    if bad.any():
        names = sorted({str(d) for d in np.asarray(dataset)[bad]}) if dataset is not None else []
        files = [where] if isinstance(where, str) else list(where)
        raise InputFileError(
            f"{int(bad.sum())} of {len(w)} training weights are negative or NaN"
            + (f" (datasets {names})" if names else "") + f" in {files}: the trainers refuse them "
            "(models/weights.py says why); drop those events or train on a sample with positive weights")
    return w
