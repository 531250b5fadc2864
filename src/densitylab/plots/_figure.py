"""The figure class every densitylab plot returns: a matplotlib ``Figure`` that shows itself.

densitylab never imports ``pyplot`` and never selects a backend, so importing it leaves the
user's matplotlib setup alone. A figure made without pyplot has no display hook in Jupyter,
though; this subclass adds one (``_repr_png_``), so a returned figure renders inline as the
last expression of a cell. Where IPython's inline backend registers its own formatter for
matplotlib figures, that formatter is used instead; either way the output is a PNG.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure as _MatplotlibFigure


class Figure(_MatplotlibFigure):
    """A ``matplotlib.figure.Figure`` with a PNG representation for Jupyter and IPython."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        return buffer.getvalue()
