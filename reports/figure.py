"""Matplotlib plumbing shared by the report plots: Agg backend, one-axes figures, PNG bytes, legends."""

from __future__ import annotations

import io

MAX_SERIES = 12  # lines per axes; more are left out (the tables keep every number)


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def axes(width: float, height: float, ncols: int = 1):
    """A new ``(figure, axes)`` of ``width`` x ``height`` inches; ``ncols > 1``: a row of axes."""
    if ncols == 1:
        return pyplot().subplots(figsize=(width, height))
    return pyplot().subplots(1, ncols, figsize=(width, height))


def png(fig) -> bytes:
    """The figure as PNG bytes (90 dpi, tight layout); closes it."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def legend(ax, n: int) -> None:
    """In the axes for a few series (``n``), to the right of them for many."""
    if not n:
        return
    if n <= 5:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
