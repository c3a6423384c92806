"""Reading input ROOT files safely: every read of a file in every stage goes through here.

A truncated, corrupt or foreign file must never surface as an ``OSError`` traceback from deep
inside uproot, nor be read partially into a wrong number. :func:`open_root` opens a file, checks
that it is complete (the ROOT header records where the file ends, ``fEND``; a file shorter than
that was cut, e.g. by an interrupted copy) and turns every failure while reading into one
:class:`~svjscout.core.exceptions.InputFileError` whose message names the file and what could not be
read. Callers decide whether that stops the run or, with ``executor.skip_bad_files``, becomes a
counted and listed skip (:mod:`svjscout.jobs.runner`).

>>> # with open_root("f.root", "the Runs tree") as f: sumw = f["Runs"]["genEventSumw"].array()
"""

from __future__ import annotations

import re

from svjscout.core.exceptions import SVJScoutError

# moved to svjscout.core.rootfiles (the samples layer reads files too); re-exported here
from svjscout.core.rootfiles import _short, check_complete, open_root  # noqa: E402,F401

_WORKITEM_FILE = re.compile(r"filename='([^']+)'")


def failed_file(err: BaseException) -> str | None:
    """The input file named by a coffea chunk failure (``WorkItem(..., filename='...')``), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        m = _WORKITEM_FILE.search(str(err))
        if m:
            return m.group(1)
        err = err.__cause__ or err.__context__
    return None


def domain_error(err: BaseException) -> SVJScoutError | None:
    """The svjscout error at the root of a (coffea- or dask-wrapped) exception chain, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, SVJScoutError):
            return err
        err = err.__cause__ or err.__context__
    return None


def root_message(err: BaseException) -> str:
    """One line naming the innermost error of a chain (what actually went wrong)."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        nxt = err.__cause__ or err.__context__
        if nxt is None:
            break
        err = nxt
    text = str(err)
    m = re.search(r"The error was: (.*)\.$", text, flags=re.S)
    if m:  # coffea's wrapper, as it arrives through dask (the chain is not pickled)
        text = m.group(1)
        return " ".join(text.split())[:300]
    return _short(err)
