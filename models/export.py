"""ONNX export: writes the self-describing metadata of :mod:`svjscout.core.modelmeta` (the
contract the processor reads) into a model file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from svjscout import __version__
from svjscout.core.modelmeta import JSON_KEYS, check_features, file_sha256, read_metadata

__all__ = ["JSON_KEYS", "write_metadata", "read_metadata", "check_features", "file_sha256"]


def write_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Add (or replace) metadata entries of the ONNX file ``path`` in place.

    Lists and dicts are stored as JSON; ``version`` defaults to the svjscout version.
    """
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
