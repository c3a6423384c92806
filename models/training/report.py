"""Reports of both trainers: ``report.json``, ``report.md`` and the figures beside them.

The text of a report is the trainer's (its tables are model specific); this module writes it:
JSON with numpy scalars and paths made plain, markdown tables, figures saved without pyplot
state (``matplotlib.figure.Figure``), and the image links of the markdown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["fmt", "json_default", "new_figure", "save_figure", "table", "write_json", "write_report"]


def json_default(obj: Any) -> Any:
    """JSON fallback: numpy scalars and arrays, paths."""
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def write_json(path: str | Path, data: Any, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(data, indent=1, sort_keys=sort_keys, default=json_default))
    return path


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number for a table: ``n/a`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Markdown table lines (cells used as given: format numbers with :func:`fmt`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def new_figure(width: float, height: float, ncols: int = 1):
    """(figure, axes) without pyplot state."""
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, ncols)
    return fig, axes


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Tight layout and save."""
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def write_report(out_dir: str | Path, lines: Sequence[str], data: Mapping[str, Any],
                 figures: Mapping[str, Path] | None = None, sort_keys: bool = False,
                 image_lines: bool = True) -> tuple[Path, Path]:
    """``report.md`` (``lines`` then, with ``image_lines``, a link per figure) and ``report.json``."""
    out = Path(out_dir)
    js = write_json(out / "report.json", data, sort_keys=sort_keys)
    md_lines = list(lines)
    if figures and image_lines:
        md_lines += ["", "## Plots", ""] + [f"![{k}]({Path(p).name})" for k, p in figures.items()]
    md = out / "report.md"
    md.write_text("\n".join(md_lines) + "\n")
    return md, js
