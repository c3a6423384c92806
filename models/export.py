"""ONNX export with self-describing metadata, and the metadata check the processors rely on.

Every svjscout ONNX model carries in its ``metadata_props``:

* ``features``: JSON list of the input feature names, in input order;
* ``version``: the svjscout version that wrote it;
* ``model``: ``"lundnet"`` or ``"twin"``;
* ``training``: JSON summary of the training data and settings;
* optional ``auc``: JSON of test AUCs.

Values are strings (ONNX's rule); :func:`read_metadata` decodes the JSON ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from svjscout import __version__
from svjscout.exceptions import ModelMismatchError

JSON_KEYS = ("features", "training", "auc", "lundnet")


def write_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Add (or replace) metadata entries of the ONNX file ``path`` in place.

    Lists and dicts are stored as JSON; ``version`` defaults to the svjscout version.
    """
    import onnx

    model = onnx.load(str(path))
    entries = {"version": __version__, **metadata}
    existing = {p.key: p for p in model.metadata_props}
    for key, value in entries.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if key in existing:
            existing[key].value = text
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = key, text
    onnx.save(model, str(path))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (how models are named by content: pairs, provenance, checkpoints)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an ONNX file, JSON entries decoded."""
    import onnx

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
    svjscout.exceptions.ModelMismatchError: m.onnx: metadata key 'features' is ['b', 'a'], expected ['a', 'b']
    """
    found = metadata.get("features")
    if found is None:
        raise ModelMismatchError(f"{path}: metadata key 'features' is missing, expected {list(expected)}")
    if list(found) != list(expected):
        raise ModelMismatchError(f"{path}: metadata key 'features' is {list(found)}, expected {list(expected)}")
