"""Number formats shared by everything that writes numbers for another program to read."""

from __future__ import annotations


def card_number(v: float) -> str:
    """A number as a Combine datacard writes it: ``0``; 8 significant digits; exponent form
    below 1e-4 (so that a tiny yield is not written as 0).

    >>> card_number(0), card_number(1.016), card_number(123456.789), card_number(2.5e-7)
    ('0', '1.016', '123456.79', '2.50000000e-07')
    """
    if v == 0:
        return "0"
    return f"{v:.8g}" if abs(v) >= 1e-4 else f"{v:.8e}"
