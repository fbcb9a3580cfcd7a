"""One figure style for every notebook, and the only way figures and tables are saved.

``savefig`` writes PNG and PDF side by side and ``save_table`` writes the CSV behind a figure; both record the
file in the provenance log so that ``figures/INDEX.md`` can trace it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from . import provenance  # noqa: E402

# embedding fonts in PDFs logs one INFO line per glyph subset when a library has set the root logger to INFO
logging.getLogger("fontTools").setLevel(logging.WARNING)

METHOD_COLORS = {
    "cisformer": "#d62728",
    "cisformer (paper architecture)": "#ff9896",
    "cisformer without attention path": "#c49c94",
    "cisformer (oracle: cell type as input)": "#dbdb8d",
    "scButterfly": "#1f77b4",
    "BABEL-style": "#2ca02c",
    "kNN": "#9467bd",
    "floor": "#7f7f7f",
    "cell-type mean": "#bcbd22",
    "ArchR gene score": "#ff7f0e",
    "peak-to-gene": "#8c564b",
    "SCARlink-style": "#e377c2",
    "measured": "#000000",
}


def category_colors(labels) -> dict:
    """One distinct colour per category (sorted), from tab20, tab20b and tab20c in turn (60 colours; more
    categories reuse them): the same category gets the same colour in every panel of a figure."""
    colors = [c for name in ("tab20", "tab20b", "tab20c") for c in plt.get_cmap(name).colors]
    categories = sorted({str(label) for label in labels})
    return {c: colors[i % len(colors)] for i, c in enumerate(categories)}


def set_style() -> None:
    """Apply the compendium's matplotlib style (called on import of this module)."""
    plt.rcParams.update({
        "figure.dpi": 110,
        "savefig.dpi": 200,
        "savefig.bbox": "tight",
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "pdf.fonttype": 42,
    })


def savefig(fig: plt.Figure, name: str, out_dir: str | os.PathLike) -> list[Path]:
    """Save ``fig`` as ``out_dir/name.png`` and ``out_dir/name.pdf``; return both paths.

    PDFs are written without a creation date so that re-running a notebook does not change unchanged figures.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Producer": None, "Creator": None})
    for path in paths:
        provenance.record_output(path)
    return paths


def save_table(table: pd.DataFrame, name: str, out_dir: str | os.PathLike, index: bool = False) -> Path:
    """Save the table behind a figure as ``out_dir/name.csv`` (floats to 6 significant digits)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.csv"
    table.to_csv(path, index=index, float_format="%.6g")
    provenance.record_output(path)
    return path


set_style()
