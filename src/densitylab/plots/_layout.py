"""Readability checks every saved figure passes, and compact PNG output.

A figure on the report must be readable where it is shown (about 1000 px wide): not much
wider than tall, and every title inside the canvas. :func:`layout_problems` measures both on
the figure itself, from the rendered bounding boxes of its titles, before it is saved.
"""

from __future__ import annotations

import io
import textwrap
import warnings
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

MAX_ASPECT = 4.0  # width / height of the saved image
MAX_PANELS_PER_ROW = 4
TOLERANCE_PX = 1.0


def wrap_title(title: str, width_inches: float, fontsize: float = 12.0) -> str:
    """``title`` broken into lines that fit a figure ``width_inches`` wide (at about 0.55 em
    per character), so a narrow figure's title wraps instead of being clipped."""
    per_line = max(12, int(width_inches * 72 / (0.55 * fontsize)) - 2)
    return textwrap.fill(title, per_line)


def balanced_grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    """``(columns, rows)`` for ``n`` panels, at most ``max_cols`` in a row, the rows filled
    as evenly as possible: the last row is never a lone panel under fuller rows."""
    rows = -(-n // max_cols)
    return -(-n // rows), rows


def balanced_axes(axes, n: int) -> list:
    """The ``n`` panels of a ``balanced_grid`` ``(rows, cols)`` array of axes, the rows
    holding counts that differ by at most one (13 in rows of 4: 4, 3, 3, 3); the unused axes
    are hidden. Use it where ``n`` does not fill the last row."""
    rows, cols = axes.shape
    base, extra = divmod(n, rows)
    chosen = []
    for i in range(rows):
        count = base + (i < extra)
        chosen += list(axes[i, :count])
        for ax in axes[i, count:]:
            ax.set_visible(False)
    return chosen


def _titles(fig: Figure):
    """The figure's own title (suptitle) and every visible axes' titles, as text artists."""
    texts = []
    if getattr(fig, "_suptitle", None) is not None and fig._suptitle.get_text():
        texts.append(fig._suptitle)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for title in (ax.title, ax._left_title, ax._right_title):
            if title.get_text():
                texts.append(title)
    return texts


def _row_counts(fig: Figure) -> dict[tuple[int, int], int]:
    """Visible subplot panels (colorbars aside) per row of each grid."""
    rows: dict[tuple[int, int], int] = {}
    for ax in fig.axes:
        spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
        if spec is None or not ax.get_visible() or hasattr(ax, "_colorbar"):
            continue
        gridspec = spec.get_gridspec()
        key = (id(gridspec), spec.rowspan.start)
        rows[key] = rows.get(key, 0) + 1
    return rows


def _panels_per_row(fig: Figure) -> int:
    """Most visible subplot panels (colorbars aside) that share one row of a grid."""
    return max(_row_counts(fig).values(), default=0)


def _lone_panels(fig: Figure) -> bool:
    """Whether a grid has a row holding one panel while another of its rows holds two or
    more: a lone panel stranded on a row of its own (2 + 1 belongs on one row of 3)."""
    grids: dict[int, list[int]] = {}
    for (grid, _), count in _row_counts(fig).items():
        grids.setdefault(grid, []).append(count)
    return any(min(counts) == 1 and max(counts) >= 2 for counts in grids.values())


def layout_problems(fig: Figure) -> list[str]:
    """What makes ``fig`` hard to read: too wide, too many panels in a row, a lone panel on a
    row of its own, clipped titles."""
    canvas = fig.canvas
    if not hasattr(canvas, "get_renderer"):  # a figure made without pyplot: render with Agg
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays out the figure (constrained layout included) and sizes the text
    width, height = canvas.get_width_height()
    problems = []
    if width > MAX_ASPECT * height:
        problems.append(f"aspect ratio {width / height:.1f}:1 exceeds {MAX_ASPECT:g}:1")
    panels = _panels_per_row(fig)
    if panels > MAX_PANELS_PER_ROW:
        problems.append(f"{panels} panels in one row (at most {MAX_PANELS_PER_ROW})")
    if _lone_panels(fig):
        problems.append("a lone panel on a row of its own under fuller rows")
    renderer = canvas.get_renderer()
    for text in _titles(fig):
        box = text.get_window_extent(renderer)
        if (box.x0 < -TOLERANCE_PX or box.y0 < -TOLERANCE_PX
                or box.x1 > width + TOLERANCE_PX or box.y1 > height + TOLERANCE_PX):
            problems.append(f"title {text.get_text()!r} is clipped by the figure's edge")
    return problems


def save_png(fig: Figure, path: Path, dpi: int = 100, strict: bool = False) -> None:
    """Save ``fig`` as a compact PNG (a 256-colour palette where Pillow is present), after
    checking it with :func:`layout_problems`: an unreadable figure is a ``ValueError`` when
    ``strict``, else a warning. The figure is drawn once: the check's rendering (at ``dpi``)
    is the image saved."""
    fig.set_dpi(dpi)
    problems = layout_problems(fig)
    if problems:
        message = f"figure {path.name}: " + "; ".join(problems)
        if strict:
            raise ValueError(message)
        warnings.warn(message, stacklevel=3)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow ships with matplotlib
        fig.savefig(path, format="png", dpi=dpi)
        return
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
    quantised = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                               dither=Image.Dither.NONE)
    out = io.BytesIO()
    quantised.save(out, format="PNG", optimize=True)
    path.write_bytes(out.getvalue())
