"""Reading ROOT files safely, the bottom of every layer that reads input files (samples, processors, jobs).

A truncated, corrupt or foreign file must never surface as an ``OSError`` traceback from deep
inside uproot, nor be read partially into a wrong number. :func:`open_root` opens a file, checks
that it is complete (the ROOT header records where the file ends, ``fEND``; a file shorter than
that was cut, e.g. by an interrupted copy) and turns every failure while reading into one
:class:`~svjscout.core.exceptions.InputFileError` whose message names the file and what could not be
read. (Moved here from :mod:`svjscout.processors.files`, which re-exports it, so that the samples
layer can read a generated file's metadata without importing the processors.)

>>> # with open_root("f.root", "the Runs tree") as f: sumw = f["Runs"]["genEventSumw"].array()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uproot

from svjscout.core.exceptions import InputFileError, SVJScoutError


def _short(err: BaseException) -> str:
    """One line of an exception: its type and the first line of its message."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def check_complete(f, path: str) -> None:
    """Raise :class:`InputFileError` if the open uproot file ``f`` is shorter than its header says.

    The ROOT header's ``fEND`` is the offset of the end of the file as written; a copy cut short
    (a partial transfer, a full disk) has fewer bytes, and every object past the cut is unreadable.
    """
    try:
        expected = int(f.file.fEND)
        actual = f.file.source.num_bytes
    except Exception:  # noqa: BLE001 - a source that cannot tell its size is checked by reading
        return
    if actual is not None and actual < expected:
        raise InputFileError(f"{path}: truncated file ({actual} of the {expected} bytes its ROOT header "
                             f"records, {actual / expected:.0%}); copy it again")


@contextlib.contextmanager
def open_root(path: str, what: str, require_complete: bool = True) -> Iterator[uproot.ReadOnlyDirectory]:
    """Open ``path`` with uproot for reading ``what``; any failure becomes one :class:`InputFileError`.

    Args:
        path: local path or URL (``root://`` via fsspec-xrootd).
        what: what the caller reads, for the message (e.g. ``"the Runs tree"``).
        require_complete: refuse a truncated file (False only to salvage what a skipped file says
            about itself, e.g. the sum of weights it would have contributed).

    Raises:
        InputFileError: the file cannot be opened, is truncated, or ``what`` cannot be read; the
            message is one line: ``PATH: cannot read WHAT (ErrorType: detail)``.
    """
    try:
        f = uproot.open(path)
    except FileNotFoundError as err:
        raise InputFileError(f"{path}: file not found") from err
    except Exception as err:  # noqa: BLE001 - uproot raises many types for corrupt files
        raise InputFileError(f"{path}: cannot be opened as a ROOT file ({_short(err)})") from err
    with f:
        if require_complete:
            check_complete(f, path)
        try:
            yield f
        except SVJScoutError:
            raise
        except Exception as err:  # noqa: BLE001 - decompression, deserialisation, short reads
            raise InputFileError(f"{path}: cannot read {what} ({_short(err)})") from err
