"""Wells and plate formats: ``'B07'`` <-> (row, column), and the smallest standard plate holding a set of wells."""

from __future__ import annotations

import re

__all__ = ["well_name", "split_well", "row_number", "PLATE_FORMATS", "plate_format_of", "describe_format"]

#: Plate formats: wells -> (rows, columns).
PLATE_FORMATS: dict[int, tuple[int, int]] = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}


def well_name(row: int | str, col: int) -> str:
    """Well name with a zero-padded column: ``well_name(1, 3) == well_name('A', 3) == 'A03'``."""
    letter = row if isinstance(row, str) else chr(ord("A") + int(row) - 1)
    return f"{letter.upper()}{int(col):02d}"


def split_well(well: str) -> tuple[str, int]:
    """``'B07' -> ('B', 7)``; raises ValueError on a malformed well name."""
    m = re.fullmatch(r"([A-Za-z]{1,2})(\d{1,2})", well.strip())
    if not m:
        raise ValueError(f"not a well name: {well!r} (expected a row letter and a column number, e.g. 'B07')")
    return m.group(1).upper(), int(m.group(2))


def row_number(letters: str) -> int:
    """'A' -> 1, 'P' -> 16, 'AA' -> 27, 'AF' -> 32."""
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - ord("A") + 1
    return n


def plate_format_of(wells) -> int:
    """The smallest standard plate format (96, 384, 1536) holding every well of ``wells``.

    Raises
    ------
    ValueError
        If a well lies outside even a 1536-well plate.
    """
    need_r = need_c = 1
    for w in wells:
        r, c = split_well(w)
        need_r, need_c = max(need_r, row_number(r)), max(need_c, c)
    for n, (rows, cols) in PLATE_FORMATS.items():
        if need_r <= rows and need_c <= cols:
            return n
    raise ValueError(f"wells up to row {need_r} and column {need_c} fit no plate format {list(PLATE_FORMATS)}")


def describe_format(n: int) -> str:
    """``'a 384-well plate (rows A-P, columns 1-24)'``."""
    rows, cols = PLATE_FORMATS[n]
    last = chr(ord("A") + rows - 1) if rows <= 26 else "A" + chr(ord("A") + rows - 27)
    return f"a {n}-well plate (rows A-{last}, columns 1-{cols})"
