"""One figure style for every notebook, and the only way figures and tables are saved.

``savefig`` writes PNG and PDF side by side and ``save_table`` writes the CSV behind a figure; both record the
file in the provenance log so that ``figures/INDEX.md`` can trace it. The figure functions below (method bars,
marker proximity, PAGA graphs, integration metrics, chromatin-potential arrows and residual curves) return a
``Figure`` in this style, ready for ``savefig``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .utils import provenance  # noqa: E402

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
    "Attune": "#17becf",
    "MultiVI": "#393b79",
    "scGLUE": "#637939",
    "PCA-CCA": "#c7c7c7",
    "Attune head": "#17becf",
    "ridge": "#aec7e8",
    "depth only": "#525252",
    "within-cell-type regression (default)": "#08519c",
    "cisformer in-silico deletion": "#d62728",
    "cisformer attention (paper's reading)": "#ff9896",
}


def category_colors(labels) -> dict:
    """One distinct colour per category (sorted), from tab20, tab20b and tab20c in turn (60 colours; more
    categories reuse them): the same category gets the same colour in every panel of a figure.

    Parameters
    ----------
    labels
        Iterable of category labels (duplicates allowed; compared as strings).

    Returns
    -------
    dict
        ``str(label)`` -> RGB tuple, for every distinct label.
    """
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

    PDFs are written without a creation date so that re-running a notebook does not change unchanged figures. Both
    files are recorded in the provenance log (:func:`cisformer.utils.provenance.record_output`).

    Parameters
    ----------
    fig
        The figure to save.
    name
        File name without suffix.
    out_dir
        Output folder, created if missing.

    Returns
    -------
    list of Path
        ``[png_path, pdf_path]``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Producer": None, "Creator": None})
    for path in paths:
        provenance.record_output(path)
    return paths


def save_table(table: pd.DataFrame, name: str, out_dir: str | os.PathLike, *, index: bool = False) -> Path:
    """Save the table behind a figure as ``out_dir/name.csv`` (floats to 6 significant digits).

    The file is recorded in the provenance log (:func:`cisformer.utils.provenance.record_output`).

    Parameters
    ----------
    table
        The table to save.
    name
        File name without suffix.
    out_dir
        Output folder, created if missing.
    index
        Write the DataFrame's index as a column too (default ``False``).

    Returns
    -------
    Path
        The CSV's path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.csv"
    table.to_csv(path, index=index, float_format="%.6g")
    provenance.record_output(path)
    return path


# ----------------------------------------------------------------------------------------------- figures
def _figure(ax, size):
    if ax is None:
        fig, ax = plt.subplots(figsize=size)
        return fig, ax
    return ax.figure, ax


def method_bars(summary: pd.DataFrame, metrics: list[str], methods: list[str], *, group: str = "scenario",
                size: float = 3.4, hatched=(), labels: dict | None = None, titles: dict | None = None) -> plt.Figure:
    """One panel per metric of a summary table (columns ``group``, ``method``, ``metric``, ``mean``, ``sd``, as
    :func:`cisformer.metrics.summarize` writes it): one group of bars per value of ``group``, one bar per method
    (mean, sd as error bar) in the order of ``methods`` (those absent from the table are skipped).

    Parameters
    ----------
    summary
        The summary table (columns above).
    metrics
        Metrics to show, one panel each, in this order.
    methods
        Methods to show, in bar order.
    group
        Column whose values form the groups of bars on the x axis (default ``"scenario"``).
    size
        Width and height of each panel, inches (default 3.4).
    hatched
        Methods drawn hatched (references that read the test labels).
    labels
        Legend text per method (default the method's name).
    titles
        Panel title per metric (default the metric's name).

    Returns
    -------
    Figure
        The figure, one row of panels.
    """
    labels, titles = labels or {}, titles or {}
    fig, axes = plt.subplots(1, len(metrics), figsize=(size * len(metrics), size), squeeze=False)
    groups = list(dict.fromkeys(summary[group]))
    methods = [m for m in methods if m in set(summary["method"])]
    width = 0.8 / len(methods)
    for ax, metric in zip(axes[0], metrics):
        part = summary[summary["metric"] == metric].set_index([group, "method"])
        for j, method in enumerate(methods):
            ax.bar(np.arange(len(groups)) + j * width, [part["mean"].get((g, method), np.nan) for g in groups], width,
                   yerr=[part["sd"].get((g, method), 0) for g in groups], label=labels.get(method, method),
                   color=METHOD_COLORS.get(method), hatch="//" if method in hatched else None)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
        ax.set_xticklabels([g.replace(" (", "\n(") for g in groups], rotation=45, ha="right", fontsize=7)
        ax.set_title(titles.get(metric, metric))
    axes[0, -1].legend(fontsize=6, bbox_to_anchor=(1, 1))
    return fig


def proximity_bars(table: pd.DataFrame, colors: dict, title: str) -> plt.Figure:
    """Fraction of each method's cell-type-specific CREs within 250 kb of a marker TSS (bars, one group per
    ``group`` of ``table``) against that of all other CREs (black ticks).

    Parameters
    ----------
    table
        Rows of :func:`cisformer.tl.regulators.marker_proximity` with an added ``method`` column; uses ``group``,
        ``method``, ``frac_near_specific`` and ``frac_near_background``.
    colors
        Method -> colour, in the order of the bars.
    title
        Axes title.

    Returns
    -------
    Figure
        A one-panel bar chart.
    """
    groups = list(dict.fromkeys(table["group"]))
    width = 0.8 / len(colors)
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(groups) + 2), 3))
    x = np.arange(len(groups))
    for i, method in enumerate(colors):
        offset = (i - (len(colors) - 1) / 2) * width
        part = table[table.method == method].set_index("group").reindex(groups)
        ax.bar(x + offset, part["frac_near_specific"], width, color=colors[method], label=method)
        ax.scatter(x + offset, part["frac_near_background"], marker="_", color="k", s=40,
                   label="all other CREs" if i == 0 else None)
    ax.set_xticks(x, groups, rotation=90, fontsize=7)
    ax.set_ylabel("fraction within 250 kb\nof a marker TSS")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return fig


def paga_graph(adata, key: str, title: str, *, min_connectivity: float = 0.05) -> plt.Figure:
    """PAGA graph of the clusters ``adata.obs[key]`` (after ``scanpy.tl.paga``): nodes at the clusters' centroids
    on the first two PCs (``obsm["X_pca"]``), sized by cluster size, edges wider with connectivity (those above
    ``min_connectivity``).

    Parameters
    ----------
    adata
        AnnData with ``obs[key]`` (categorical), ``obsm["X_pca"]`` and ``uns["paga"]["connectivities"]``.
    key
        The ``obs`` column of the clusters PAGA ran on.
    title
        Axes title.
    min_connectivity
        Edges with PAGA connectivity at or below this are not drawn (default 0.05).

    Returns
    -------
    Figure
        A one-panel figure.
    """
    names = list(adata.obs[key].cat.categories)
    sizes = adata.obs[key].value_counts().reindex(names)
    conn = adata.uns["paga"]["connectivities"]
    centre = np.vstack([adata.obsm["X_pca"][(adata.obs[key] == s).to_numpy(), :2].mean(0) for s in names])
    fig, ax = plt.subplots(figsize=(4, 3.5))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if conn[i, j] > min_connectivity:
                ax.plot(centre[[i, j], 0], centre[[i, j], 1], color="k", lw=6 * conn[i, j], alpha=0.6, zorder=1)
    ax.scatter(centre[:, 0], centre[:, 1], s=20 + 0.5 * sizes.to_numpy(), c=range(len(names)), cmap="tab10", zorder=2)
    for i, s in enumerate(names):
        ax.annotate(s, centre[i], fontsize=7, ha="center", va="bottom")
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_title(title, fontsize=9)
    return fig


def integration_metrics(table: pd.DataFrame, *, metrics=None, dataset_col: str = "dataset",
                        method_col: str = "method", labels: dict | None = None) -> plt.Figure:
    """Bar chart of integration metrics, one panel per data set: for each metric a group of bars, one per method
    (``METHOD_COLORS``), height = mean over the rows of that method (e.g. seeds), error bar = their sd. A mean of
    exactly 0 (a min-max scaled score's lowest method) is drawn as a thick line at 0, so it does not look missing.

    Parameters
    ----------
    table
        Rows of ``metrics.integration_scores`` (optionally with ``metrics.integration_overall``'s columns) plus
        ``dataset_col`` and ``method_col``.
    metrics
        The columns to show; by default FOSCTTM (the one where lower is better, so labelled) and the six scored
        metrics, then ``overall`` when present.
    dataset_col, method_col
        Columns naming the data set (one panel each) and the method (one bar each).
    labels
        Legend label per method (default: its name), e.g. a training budget.

    Returns
    -------
    Figure
        One row of panels per data set, y axis from 0 to 1.05.
    """
    from .metrics import INTEGRATION_METRICS

    if metrics is None:
        metrics = [m for m in INTEGRATION_METRICS + ("overall",) if m in table.columns]
    datasets = list(dict.fromkeys(table[dataset_col]))
    methods = list(dict.fromkeys(table[method_col]))
    fig, axes = plt.subplots(len(datasets), 1, figsize=(1.0 + 0.9 * len(metrics), 2.4 * len(datasets)),
                             squeeze=False, sharey=True)
    width = 0.8 / max(len(methods), 1)
    fallback = category_colors(methods)
    for ax, dataset in zip(axes[:, 0], datasets):
        rows = table[table[dataset_col] == dataset]
        stats = rows.groupby(method_col, sort=False)[list(metrics)].agg(["mean", "std"])
        for j, method in enumerate(methods):
            if method not in stats.index:
                continue
            means = stats.loc[method].xs("mean", level=1).to_numpy(dtype=float)
            sds = np.nan_to_num(stats.loc[method].xs("std", level=1).to_numpy(dtype=float))
            x = np.arange(len(metrics)) + (j - (len(methods) - 1) / 2) * width
            color = METHOD_COLORS.get(method, fallback[str(method)])
            ax.bar(x, means, width, yerr=sds, color=color, label=(labels or {}).get(method, method), capsize=1.5,
                   error_kw={"linewidth": 0.6})
            zero = means == 0
            ax.hlines(np.full(zero.sum(), 0.008), x[zero] - width / 2, x[zero] + width / 2, color=color, lw=2.5)
        ax.set_xticks(np.arange(len(metrics)))
        ax.set_xticklabels([m.replace("_", " ") + (" (lower better)" if m == "foscttm" else "") for m in metrics],
                           rotation=30, ha="right")
        ax.set_title(str(dataset))
        ax.set_ylabel("score")
        ax.set_ylim(0, 1.05)
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def umap_coords(embedding, *, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """2-D UMAP coordinates [n, 2] of an embedding [n, d] for drawing (scanpy's UMAP on an exact kNN graph, so the
    picture does not depend on the thread count).

    Parameters
    ----------
    embedding
        [n, d] array-like of cell coordinates.
    n_neighbors
        Neighbours per cell in the kNN graph (default 15; at most n - 1).
    seed
        Random seed of the neighbour graph and the UMAP layout.

    Returns
    -------
    ndarray
        [n, 2] UMAP coordinates.
    """
    import scanpy as sc
    from anndata import AnnData
    from sklearn.neighbors import KNeighborsTransformer

    x = np.asarray(embedding, dtype=np.float32)
    work = AnnData(np.zeros((x.shape[0], 1), dtype=np.float32))
    work.obsm["X_rep"] = x
    transformer = KNeighborsTransformer(n_neighbors=min(n_neighbors, x.shape[0] - 1), mode="distance",
                                       algorithm="kd_tree")
    sc.pp.neighbors(work, use_rep="X_rep", transformer=transformer, random_state=seed)
    sc.tl.umap(work, random_state=seed)
    return work.obsm["X_umap"]


def potential_arrows(arrows: pd.DataFrame, *, labels=None, grid_size: int = 20, min_cells: int = 3, ax=None,
                     title: str = "chromatin potential") -> plt.Figure:
    """Cell-level chromatin potential on a 2-D embedding (``potential.cell_potential``'s arrows).

    Cells are drawn as points (coloured by ``labels`` with ``category_colors`` when given); arrows are averaged
    on a ``grid_size`` x ``grid_size`` grid as velocity grid plots do (scVelo): for each grid square with at least
    ``min_cells`` cells, one arrow from the mean start position along the mean ``dx``, ``dy``. Lengths are scaled
    by one factor so that the median arrow spans 0.8 grid squares, and arrows longer than 1.5 squares are cut to
    1.5 (direction kept): a cell's potential can point to a distant cluster, and drawn to scale such arrows
    crossed the whole plot. The unscaled arrows are the input table's.

    Parameters
    ----------
    arrows
        One row per cell with columns ``x``, ``y`` (start) and ``dx``, ``dy`` (arrow), as
        :func:`cisformer.attune.potential.cell_potential` returns.
    labels
        [cells] labels colouring the points, in the order of ``arrows`` (default: all grey, no legend).
    grid_size
        Number of grid squares along each axis (default 20).
    min_cells
        Fewest cells of a grid square that gets an arrow (default 3).
    ax
        Axes to draw into (default: a new figure).
    title
        Axes title.

    Returns
    -------
    Figure
        The figure holding the axes.
    """
    fig, ax = _figure(ax, (4.2, 3.8))
    x, y = arrows["x"].to_numpy(), arrows["y"].to_numpy()
    if labels is None:
        ax.scatter(x, y, s=3, c="#bbbbbb", linewidths=0, rasterized=True)
    else:
        labels = np.asarray(labels).astype(str)
        colors = category_colors(labels)
        for label in sorted(colors):
            mask = labels == label
            ax.scatter(x[mask], y[mask], s=3, color=colors[label], linewidths=0, label=label, rasterized=True)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=3, fontsize=7)
    edges_x = np.linspace(x.min(), x.max(), grid_size + 1)
    edges_y = np.linspace(y.min(), y.max(), grid_size + 1)
    square = (np.clip(np.searchsorted(edges_x, x, side="right") - 1, 0, grid_size - 1) * grid_size
              + np.clip(np.searchsorted(edges_y, y, side="right") - 1, 0, grid_size - 1))
    grid = (arrows.assign(square=square).groupby("square")[["x", "y", "dx", "dy"]].agg(["mean", "count"]))
    grid = grid[grid[("x", "count")] >= min_cells]
    u, v = grid[("dx", "mean")].to_numpy(), grid[("dy", "mean")].to_numpy()
    length = np.hypot(u, v)
    square_side = min([side for side in (edges_x[1] - edges_x[0], edges_y[1] - edges_y[0]) if side > 0] or [1.0])
    typical = np.median(length[length > 0]) if (length > 0).any() else 1.0
    drawn = np.minimum(length * 0.8 * square_side / typical, 1.5 * square_side)
    shrink = np.divide(drawn, length, out=np.zeros_like(length), where=length > 0)
    ax.quiver(grid[("x", "mean")], grid[("y", "mean")], u * shrink, v * shrink, angles="xy", scale_units="xy",
              scale=1, width=0.005, headwidth=4, headlength=4, color="#222222")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return fig


def residual_heatmap(curves: pd.DataFrame, *, top: int = 50, ax=None,
                     title: str = "chromatin potential along pseudotime") -> plt.Figure:
    """Heatmap of smoothed residual curves (``potential.smooth_along``): the ``top`` genes by curve sd
    (``potential.rank_by_variability``), one row each, ordered by where along pseudotime the curve peaks;
    columns = the pseudotime grid; diverging colours centred on 0 (red: chromatin ahead of expression).

    Parameters
    ----------
    curves
        Pseudotime grid points x genes, index = pseudotime (as :func:`cisformer.attune.potential.smooth_along`
        returns).
    top
        Number of genes shown (default 50); gene names are written for at most 60.
    ax
        Axes to draw into (default: a new figure).
    title
        Axes title.

    Returns
    -------
    Figure
        The figure holding the heatmap and its colour bar.
    """
    from .attune.potential import rank_by_variability

    genes = rank_by_variability(curves).index[:top]
    block = curves[genes].to_numpy().T                                     # [genes, points]
    order = np.argsort(np.argmax(block, axis=1), kind="stable")
    block, names = block[order], np.asarray(genes)[order]
    fig, ax = _figure(ax, (4.5, 0.5 + 0.12 * len(genes)))
    limit = max(float(np.abs(block).max()), 1e-12)
    image = ax.imshow(block, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest",
                      extent=(curves.index[0], curves.index[-1], len(genes), 0))
    ax.set_yticks(np.arange(len(genes)) + 0.5)
    ax.set_yticklabels(names if len(genes) <= 60 else [""] * len(genes), fontsize=6)
    ax.set_xlabel("pseudotime")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="residual (scaled predicted - measured)", shrink=0.6)
    return fig


set_style()
