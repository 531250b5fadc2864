"""Display formulas as SVG, typeset by matplotlib's mathtext: no TeX, no fonts, no network.

Browsers without a math font do not stretch MathML brackets and determinant bars; an SVG whose
glyphs are paths looks the same everywhere. mathtext has no matrix environment, so
``\\begin{pmatrix} a & b \\\\ c & d \\end{pmatrix}`` is laid out here: cells in a grid, with
parentheses scaled to the matrix's height.

Example:
    >>> svg = formula_svg(r"\\left|\\det \\frac{\\partial z}{\\partial x}\\right|")
    >>> svg.startswith("<svg")
    True
"""

from __future__ import annotations

import io
import re

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg

from densitylab.plots._figure import Figure

_MATRIX = re.compile(r"\\begin\{pmatrix\}(.*?)\\end\{pmatrix\}", re.S)
_STYLE = {"mathtext.fontset": "cm", "svg.fonttype": "path", "svg.hashsalt": "densitylab"}


def _segments(latex: str) -> list[str | list[list[str]]]:
    """Split ``latex`` into mathtext strings and matrices (lists of rows of cells)."""
    parts: list[str | list[list[str]]] = []
    position = 0
    for match in _MATRIX.finditer(latex):
        if latex[position:match.start()].strip():
            parts.append(latex[position:match.start()])
        rows = [row.split("&") for row in match.group(1).split(r"\\") if row.strip()]
        parts.append([[cell.strip() for cell in row] for row in rows])
        position = match.end()
    if latex[position:].strip():
        parts.append(latex[position:])
    return parts


def formula_figure(latex: str, fontsize: float = 15.0) -> Figure:
    """A figure holding one display formula (its size fits the formula once saved tight)."""
    with rc_context(_STYLE):
        width_in, height_in = 14.0, 3.0
        fig = Figure(figsize=(width_in, height_in))
        canvas = FigureCanvasAgg(fig)
        renderer = canvas.get_renderer()
        to_inches = 1.0 / fig.dpi
        x, baseline = 0.1, 1.5  # inches
        axis = 0.27 * fontsize / 72  # height of the maths axis above the baseline (inches)
        gap = 0.25 * fontsize / 72

        def put(text: str, x: float, y: float, size: float = fontsize, **kw):
            # figure fractions, so that a tight bounding box moves the text with the figure
            artist = fig.text(x / width_in, y / height_in, f"${text}$", fontsize=size, **kw)
            box = artist.get_window_extent(renderer)
            return artist, box.width * to_inches, box.height * to_inches, box

        for part in _segments(latex):
            if isinstance(part, str):
                _, width, _, _ = put(part.strip(), x, baseline, va="baseline")
                x += width + 0.3 * gap
                continue
            # a matrix: measure the cells, then lay them out on a grid centred on the axis
            sizes = [[put(cell, 0, 0, va="baseline") for cell in row] for row in part]
            for row in sizes:
                for artist, *_ in row:
                    artist.remove()
            n_cols = max(len(row) for row in part)
            widths = [max(sizes[r][c][1] for r in range(len(part)) if c < len(sizes[r]))
                      for c in range(n_cols)]
            heights = [max(s[2] for s in row) for row in sizes]
            row_gap = 0.45 * fontsize / 72
            total = sum(heights) + row_gap * (len(heights) - 1)
            top = baseline + axis + total / 2
            paren = total / (fontsize / 72) * fontsize * 0.95
            _, pw, _, _ = put(r"(", x, baseline + axis, size=paren, va="center")
            x += pw + 0.3 * gap
            y = top
            for r, row in enumerate(part):
                y -= heights[r]
                cx = x
                for c, cell in enumerate(row):
                    put(cell, cx + widths[c] / 2, y + 0.25 * heights[r], va="baseline",
                        ha="center")
                    cx += widths[c] + 2 * gap
                y -= row_gap
            x += sum(widths) + 2 * gap * (n_cols - 1) + 0.3 * gap
            _, pw, _, _ = put(r")", x, baseline + axis, size=paren, va="center")
            x += pw + 0.6 * gap
    return fig


def formula_svg(latex: str, fontsize: float = 15.0) -> str:
    """``latex`` typeset as a standalone ``<svg>`` element (glyphs as paths)."""
    fig = formula_figure(re.sub(r"(?<!d)\\frac", r"\\dfrac", latex), fontsize)
    buffer = io.BytesIO()
    with rc_context(_STYLE):
        fig.savefig(buffer, format="svg", bbox_inches="tight", pad_inches=0.04,
                    transparent=True, metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    return text[text.index("<svg"):]
