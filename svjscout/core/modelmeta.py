"""The metadata contract of svjscout's ONNX models, read side (the processor opens models with it;
:mod:`svjscout.models.export` writes it).

Every svjscout ONNX model carries in its ``metadata_props``:

* ``features``: JSON list of the input feature names, in input order;
* ``version``: the svjscout version that wrote it;
* ``model``: ``"lundnet"`` or ``"twin"``;
* ``training``: JSON summary of the training data and settings;
* optional ``auc``: JSON of test AUCs; ``lundnet``: JSON of the LundNet a twin was trained on.

Values are strings (ONNX's rule); :func:`read_metadata` decodes the JSON ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from svjscout.core.exceptions import ModelMismatchError

#: Metadata entries stored as JSON.
JSON_KEYS = ("features", "training", "auc", "lundnet")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (how models are named by content: pairs, provenance, checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an ONNX file, JSON entries decoded."""
    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        out[prop.key] = json.loads(prop.value) if prop.key in JSON_KEYS else prop.value
    return out


def check_features(path: str | Path, metadata: dict[str, Any], expected: Sequence[str]) -> None:
    """Raise :class:`ModelMismatchError` unless the model's ``features`` equal ``expected``.

    >>> check_features("m.onnx", {"features": ["a", "b"]}, ["a", "b"])
    >>> check_features("m.onnx", {"features": ["b", "a"]}, ["a", "b"])
    Traceback (most recent call last):
    ...
    svjscout.core.exceptions.ModelMismatchError: m.onnx: metadata key 'features' is ['b', 'a'], expected ['a', 'b']
    """
    found = metadata.get("features")
    if found is None:
        raise ModelMismatchError(f"{path}: metadata key 'features' is missing, expected {list(expected)}")
    if list(found) != list(expected):
        raise ModelMismatchError(f"{path}: metadata key 'features' is {list(found)}, expected {list(expected)}")
