"""Card integrity: each card's SHA-256 against the one ``index.json`` recorded when it was written.

The card writer records ``index["points"][POINT]["sha256"]`` (hex digest of the card file's bytes)
and, with the pyhf format, ``index["points"][POINT]["workspace"]["sha256"]`` (the HistFactory
workspace written beside the card). ``svjscout limits`` and ``svjscout validate`` call
:func:`check_cards` first: a card, or a workspace, edited by hand after it was written is refused
(its limits would be reported as the run's, or the workspace would no longer be the card's model)
unless the caller accepts edited cards explicitly. Cards of an index written before the field
existed are accepted with one warning.

Example:
    >>> # check_cards("out/datacards/index.json")               # raises on an edited card
    >>> # check_cards("out", accept_edited=True)                 # warns instead
"""

from __future__ import annotations

import hashlib
import logging
import os

from svjscout.core.exceptions import DatacardError

from .limits import read_index

log = logging.getLogger(__name__)


def card_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _index_of_card(card: str) -> str | None:
    """``index.json`` of the folder holding a card's point folder (``DIR/datacards/POINT/card``), if any."""
    cand = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(card))), "index.json")
    return cand if os.path.isfile(cand) else None


def _workspace_changes(card: str, entry: dict | None) -> list[str]:
    """The workspace beside a card (pyhf format) against its recorded SHA-256: ``[]`` or one description.

    ``entry["path"]`` is relative to the index's folder, two levels above the card (``POINT/datacard.txt``)."""
    if not entry or not entry.get("sha256"):
        return []
    ws = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(card))), entry["path"])
    if not os.path.isfile(ws):
        return [f"{ws} (listed in index.json, missing)"]
    got = card_sha256(ws)
    if got.lower() == str(entry["sha256"]).lower():
        return []
    return [f"{ws} (SHA-256 {got[:12]}..., index.json records {str(entry['sha256'])[:12]}...)"]


def check_cards(cards: str | os.PathLike, accept_edited: bool = False) -> dict[str, str]:
    """Compare every card listed in an index (and its pyhf workspace, if written) with its recorded SHA-256.

    Args:
        cards: ``DIR``, ``DIR/datacards``, ``index.json`` or one card file (then only that card is
            checked, against the index of its ``datacards`` folder when there is one).
        accept_edited: warn instead of raising for cards whose digest differs.

    Returns:
        ``{point: status}`` with status ``"ok"``, ``"edited"`` (only with ``accept_edited``),
        ``"unrecorded"`` (the index has no digest) or ``"no index"``.

    Raises:
        DatacardError: a card whose SHA-256 differs from the index (names the card and both
            digests, and says how to accept it), unless ``accept_edited``.
    """
    path = os.fspath(cards)
    only = None
    if os.path.isfile(path) and not path.endswith(".json"):
        index_path = _index_of_card(path)
        point = os.path.basename(os.path.dirname(os.path.abspath(path)))
        if index_path is None:
            log.warning("%s: no index.json beside its folder, so its integrity (SHA-256) cannot be checked", path)
            return {point: "no index"}
        only = os.path.abspath(path)
        path = index_path
    index, listed = read_index(path)
    status, edited, unrecorded = {}, [], []
    for point, card in listed.items():
        if only is not None and os.path.abspath(card) != only:
            continue
        want = (index["points"].get(point) or {}).get("sha256")
        if not want:
            status[point] = "unrecorded"
            unrecorded.append(point)
            continue
        changed = [f"{card} (SHA-256 {got[:12]}..., index.json records {str(want)[:12]}...)"
                   for got in [card_sha256(card)] if got.lower() != str(want).lower()]
        changed += _workspace_changes(card, (index["points"].get(point) or {}).get("workspace"))
        status[point] = "edited" if changed else "ok"
        edited.extend(changed)
    if only is not None and not status:
        log.warning("%s: not listed in %s, so its integrity (SHA-256) cannot be checked", only, path)
        return {os.path.basename(os.path.dirname(only)): "no index"}
    if unrecorded:
        log.warning("index.json records no SHA-256 for %d card(s) (%s): written before card digests existed, "
                    "accepted unchecked", len(unrecorded), ", ".join(unrecorded))
    if edited:
        msg = (f"{len(edited)} file(s) differ from what was written (edited after index.json was made): "
               + "; ".join(edited))
        if not accept_edited:
            raise DatacardError(msg + ". Rewrite them with `svjscout datacards`/`svjscout run`, or pass "
                                "--accept-edited-cards to use the edited cards on purpose")
        log.warning("%s; used anyway (--accept-edited-cards)", msg)
    return status
