"""Diagrams of the mathematics: the coupling layer's inverse as a computational graph."""

from __future__ import annotations

from matplotlib import rc_context
from matplotlib.patches import FancyBboxPatch

from densitylab.plots._figure import Figure

_NODE = dict(boxstyle="round,pad=0.02,rounding_size=0.05", linewidth=1.2)


def coupling_inverse_graph() -> Figure:
    """The inverse ``x = f^{-1}(z)`` of an affine coupling as a computational graph.

    Inputs ``z_a`` and ``z_b`` on the left, outputs ``x_a`` and ``x_b`` on the right; the
    networks ``s`` and ``t`` read ``z_a`` (which equals ``x_a``), so they are only evaluated,
    never inverted.
    """
    with rc_context({"mathtext.fontset": "cm"}):
        fig = Figure(figsize=(8.4, 3.6), layout="constrained")
        ax = fig.add_subplot()
        ax.set(xlim=(0, 10), ylim=(0, 4.3))
        ax.axis("off")
        nodes = {  # name: (centre x, centre y, width, label, colour)
            "ya": (0.7, 3.5, 0.9, r"$z_a$", "#dbe9f6"),
            "yb": (0.7, 0.7, 0.9, r"$z_b$", "#dbe9f6"),
            "s": (3.3, 2.6, 1.5, r"$s(\cdot)$ net", "#fde2c8"),
            "t": (3.3, 1.7, 1.5, r"$t(\cdot)$ net", "#fde2c8"),
            "exp": (5.9, 2.6, 1.7, r"$\exp(-s(z_a))$", "#eeeeee"),
            "minus": (5.9, 0.7, 1.7, r"$z_b - t(z_a)$", "#eeeeee"),
            "times": (7.7, 0.7, 0.7, r"$\odot$", "#eeeeee"),
            "xa": (9.3, 3.5, 0.9, r"$x_a$", "#dff0d8"),
            "xb": (9.3, 0.7, 0.9, r"$x_b$", "#dff0d8"),
        }
        half = 0.28
        for x, y, width, label, colour in nodes.values():
            ax.add_patch(FancyBboxPatch((x - width / 2, y - half), width, 2 * half,
                                        facecolor=colour, edgecolor="#444444", **_NODE))
            ax.text(x, y, label, ha="center", va="center", fontsize=12)

        def side(name: str, where: str) -> tuple[float, float]:
            x, y, width = nodes[name][:3]
            return {"right": (x + width / 2, y), "left": (x - width / 2, y),
                    "top": (x, y + half), "bottom": (x, y - half)}[where]

        def arrow(a: str, a_side: str, b: str, b_side: str, text: str = "") -> None:
            start, end = side(a, a_side), side(b, b_side)
            ax.annotate("", xy=end, xytext=start,
                        arrowprops=dict(arrowstyle="-|>", color="#333333", lw=1.2,
                                        shrinkA=1, shrinkB=1))
            if text:
                ax.text((start[0] + end[0]) / 2, start[1] + 0.12, text, ha="center",
                        fontsize=9, color="#555555")

        arrow("ya", "right", "xa", "left", "copied unchanged: x_a = z_a")
        arrow("ya", "right", "s", "left")
        arrow("ya", "right", "t", "left")
        arrow("s", "right", "exp", "left")
        arrow("yb", "right", "minus", "left")
        arrow("t", "right", "minus", "top")
        arrow("minus", "right", "times", "left")
        arrow("exp", "bottom", "times", "top")
        arrow("times", "right", "xb", "left")
        ax.set_title(r"Inverse of an affine coupling: $x_a = z_a$,  "
                     r"$x_b = (z_b - t(z_a)) \odot \exp(-s(z_a))$", fontsize=11)
    return fig
