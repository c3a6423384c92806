"""Models: LundNet (jet tagger) and the twin MLPs X, Y (event tagger), trained in torch, served as ONNX.

Modules: ``lundnet`` / ``train_lundnet`` (jet tagger; its training in ``lundnet_training``),
``twin`` / ``train_twin`` (event tagger; its training in ``twin_training``), ``training`` (the
training layer both share), ``splits`` (the event split), ``disco`` (fast O(n log n) and
reference distance correlation), ``closure`` (soft ABCD closure), ``mdmm`` (constraints),
``export`` (ONNX export and self-describing metadata). The trained ONNX files shipped with the
package live beside this file; :func:`shipped_model` finds them.
"""

from __future__ import annotations

from pathlib import Path

#: Folder of the ONNX models shipped with the package.
SHIPPED_DIR = Path(__file__).resolve().parent


def shipped_model(name: str) -> Path:
    """Path of a shipped ONNX model, e.g. ``shipped_model("lundnet")`` -> ``.../lundnet.onnx``."""
    return SHIPPED_DIR / f"{name}.onnx"
