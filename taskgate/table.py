"""Plain aligned text tables."""

from __future__ import annotations

from collections.abc import Sequence

GAP = "  "


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[bool]
) -> str:
    """``headers`` over ``rows``, each column as wide as its widest cell; numeric columns
    (and their headers) align right so the digits line up."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return GAP.join(padded).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])
