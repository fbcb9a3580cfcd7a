"""The matched null: random CRE sets with the accessibility x width (and GC) composition of the tested set, so
that the bias of attention-ranked CREs towards frequently open ones is not rewarded.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------------- matched null


def matching_covariates(atac, cres=None, *, cells=None, genome_fasta=None) -> pd.DataFrame:
    """The CRE properties a matched null holds fixed: accessibility and width, and G+C content when the genome
    sequence is given.

    Parameters
    ----------
    atac
        AnnData, cells x CREs, the ATAC matrix the model read; ``var`` carries ``start`` and ``end``.
    cres
        CRE names (``atac.var_names``) of the candidate universe, in the order of the tested positions
        (default: all CREs).
    cells
        Row positions (or a boolean mask) of the cells over which accessibility is measured (default: all).
    genome_fasta
        Path of the genome FASTA of the CREs' build (:func:`cisformer.tl.motifs.cre_sequences`; ``atac.var`` then
        needs ``chrom`` too): adds the ``gc`` column, for motif enrichment (:func:`motif_enrichment`), where
        GC-rich CREs (promoters) would otherwise be enriched for GC-rich motifs.

    Returns
    -------
    DataFrame indexed by CRE: ``accessibility`` (fraction of the cells with a count > 0) and ``width``
    (``end - start``, bp); with ``genome_fasta``, ``gc`` (G+C fraction of the A/C/G/T bases,
    :func:`cisformer.tl.motifs.gc_content`).
    """
    for field in ("start", "end"):
        if field not in atac.var:
            raise ValueError(f"matching_covariates: atac.var lacks '{field}'; give every CRE its coordinates "
                             f"(chrom/start/end, e.g. parsed from 'chr1:100-600' names)")
    names = atac.var_names if cres is None else pd.Index(cres)
    cols = atac.var_names.get_indexer(names)
    if (cols < 0).any():
        raise ValueError(f"matching_covariates: {int((cols < 0).sum())} of the cres are not in atac.var_names "
                         f"(e.g. {list(names[cols < 0][:3])})")
    X = atac.X if cells is None else atac.X[np.asarray(cells)]
    if X.shape[0] == 0:
        raise ValueError("matching_covariates: no cell selected; pass cells with at least one row")
    n_open = np.asarray((X[:, cols] > 0).sum(axis=0)).ravel()
    var = atac.var.iloc[cols]
    width = (pd.to_numeric(var["end"]) - pd.to_numeric(var["start"])).to_numpy(dtype=float)
    covariates = pd.DataFrame({"accessibility": n_open / X.shape[0], "width": width}, index=names)
    if genome_fasta is not None:
        from ..motifs import cre_sequences, gc_content

        covariates["gc"] = gc_content(cre_sequences(var, genome_fasta))
    return covariates


def _quantile_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    """0..k-1 quantile bin of each value (k <= n_bins: tied quantile edges are merged)."""
    if n_bins <= 1 or np.ptp(values) == 0:
        return np.zeros(len(values), dtype=np.int64)
    codes = pd.qcut(values, n_bins, labels=False, duplicates="drop")
    return np.unique(np.asarray(codes), return_inverse=True)[1].astype(np.int64)


def _merge_small_bins(codes: np.ndarray, min_size: int) -> np.ndarray:
    """Merge ordered bins with their upper neighbours until each holds >= ``min_size`` members (a short last
    group joins the one before it)."""
    sizes = np.bincount(codes)
    group, merged, filled = np.zeros(len(sizes), dtype=np.int64), 0, 0
    for b, size in enumerate(sizes):
        group[b] = merged
        filled += size
        if filled >= min_size:
            merged, filled = merged + 1, 0
    if 0 < filled < min_size and merged > 0:  # leftover tail: join the previous group
        group[group == merged] = merged - 1
    return np.unique(group[codes], return_inverse=True)[1].astype(np.int64)


def _split_bins(labels: np.ndarray, values: np.ndarray, n_bins: int, min_bin_size: int) -> np.ndarray:
    """Split each bin of ``labels`` (0..k-1) into quantile bins of ``values`` (:func:`_quantile_bins`, small ones
    merged by :func:`_merge_small_bins`); the new labels are numbered in order of old label, then of value."""
    out = np.zeros(len(labels), dtype=np.int64)
    next_label = 0
    for label in range(labels.max() + 1 if len(labels) else 0):
        members = np.flatnonzero(labels == label)
        sub = _merge_small_bins(_quantile_bins(values[members], n_bins), min_bin_size)
        out[members] = next_label + sub
        next_label += sub.max() + 1
    return out


def matching_bins(accessibility, width, *, n_accessibility_bins: int = 20, n_width_bins: int = 3,
                  min_bin_size: int = 20, gc=None, n_gc_bins: int = 3) -> np.ndarray:
    """Bin label of every candidate CRE for a matched null: accessibility quantile bins, each split into width
    quantile bins (and each of those into G+C quantile bins when ``gc`` is given).

    Quantiles are taken over the candidates given (the universe). Tied quantile edges are merged; then, in
    order of accessibility (and of width within an accessibility bin, of GC within a width bin), bins smaller
    than ``min_bin_size`` CREs are merged with their neighbours, so that every bin offers a choice of CREs to
    draw from.

    Matching is only as fine as the bins: within a bin a top set can still sit at the open end. On the
    synthetic case of the tests (variant load proportional to accessibility, top set = the most open CREs),
    the residual pooled enrichment was 1.06 with 10 accessibility bins and 1.02 with 20 (the default).

    Parameters
    ----------
    accessibility, width
        One value per candidate CRE (:func:`matching_covariates`).
    n_accessibility_bins, n_width_bins
        Number of quantile bins of each (fewer where quantile edges tie).
    min_bin_size
        Smallest number of CREs in a bin after merging.
    gc, n_gc_bins
        G+C fraction per candidate CRE (``matching_covariates(..., genome_fasta=)["gc"]``) and its number of
        quantile bins within each accessibility x width bin; ``None``: no GC matching (the labels are then
        those of accessibility x width alone).

    Returns
    -------
    int array, one label per CRE (0 .. n_bins-1). All-zero labels would be the unmatched (uniform) null.
    """
    covariates = {"accessibility": accessibility, "width": width} | ({} if gc is None else {"gc": gc})
    covariates = {name: np.asarray(values, dtype=float) for name, values in covariates.items()}
    accessibility = covariates["accessibility"]
    if any(v.shape != accessibility.shape for v in covariates.values()) or accessibility.ndim != 1:
        raise ValueError(f"matching_bins: {', '.join(covariates)} must be 1-d arrays of the same length (one "
                         "value per candidate CRE)")
    for name, values in covariates.items():
        if not np.isfinite(values).all():
            raise ValueError(f"matching_bins: {name} must be finite for every candidate CRE"
                             + (" (NaN GC: CREs without A/C/G/T sequence; leave them out of the universe)"
                                if name == "gc" else ""))
    labels = _merge_small_bins(_quantile_bins(accessibility, n_accessibility_bins), min_bin_size)
    labels = _split_bins(labels, covariates["width"], n_width_bins, min_bin_size)
    if gc is not None:
        labels = _split_bins(labels, covariates["gc"], n_gc_bins, min_bin_size)
    return labels


def bin_composition(members, bins) -> pd.Series:
    """Number of ``members`` (positions into ``bins``) in each bin label (bins without a member omitted).

    Parameters
    ----------
    members
        Positions into ``bins`` (e.g. the tested CREs in the candidate universe).
    bins
        Bin label per candidate CRE (:func:`matching_bins`).

    Returns
    -------
    Series named ``"n"``: member count per bin label (labels sorted).
    """
    labels, counts = np.unique(np.asarray(bins)[np.asarray(members, dtype=np.int64)], return_counts=True)
    return pd.Series(counts, index=labels, name="n")


def matched_random_sets(top, bins, n_random: int = 1000, seed: int = 0, *, max_cells: int = 4_000_000) -> np.ndarray:
    """Random CRE sets with the bin composition of ``top`` (the matched null).

    For every bin holding c members of ``top``, each random set takes c CREs of that bin, uniformly without
    replacement (so a random set may share CREs with ``top``; where ``top`` fills a bin, the null equals it
    there - see :func:`null_overlap`). With ``bins`` from :func:`matching_bins`, a random set has the same
    accessibility x width composition as ``top``; with all-zero ``bins`` it is a uniform random subset.

    Parameters
    ----------
    top
        Distinct positions (0 .. len(bins)-1) of the tested CREs in the candidate universe.
    bins
        Bin label per candidate CRE (:func:`matching_bins`).
    n_random, seed
        Number of random sets; seed of the generator (same seed, same sets).
    max_cells
        Memory bound: random keys are drawn in blocks of at most this many numbers.

    Returns
    -------
    int64 array (n_random, len(top)) of positions in the universe.
    """
    bins = np.asarray(bins)
    top = np.asarray(top, dtype=np.int64)
    if len(top) and (top.min() < 0 or top.max() >= len(bins)):
        raise ValueError(f"matched_random_sets: top positions must lie in 0..{len(bins) - 1} (the universe)")
    if len(np.unique(top)) != len(top):
        raise ValueError("matched_random_sets: top holds repeated positions; pass each CRE once")
    rng = np.random.default_rng(seed)
    out = np.empty((n_random, len(top)), dtype=np.int64)
    col = 0
    for label, count in bin_composition(top, bins).items():
        pool = np.flatnonzero(bins == label)
        block = max(1, max_cells // len(pool))
        for start in range(0, n_random, block):
            rows = slice(start, min(n_random, start + block))
            keys = rng.random((rows.stop - rows.start, len(pool)))
            picked = np.argpartition(keys, count - 1, axis=1)[:, :count] if count < len(pool) else \
                np.broadcast_to(np.arange(len(pool)), keys.shape)
            out[rows, col:col + count] = pool[picked]
        col += count
    return out


def null_overlap(top, bins) -> float:
    """Expected fraction of a matched random set that lies in ``top`` itself (sum over bins of c^2 / n, over k).
    Near 1 the null is the tested set again and no test can reject: the set is explained by its accessibility
    and width alone.

    Parameters
    ----------
    top, bins
        Positions of the tested CREs and bin labels of the universe, as in :func:`matched_random_sets`.

    Returns
    -------
    float in (0, 1]; NaN when ``top`` is empty.
    """
    top = np.asarray(top, dtype=np.int64)
    if not len(top):
        return float("nan")
    composition = bin_composition(top, bins)
    sizes = pd.Series(np.bincount(np.asarray(bins)), name="n").loc[composition.index]
    return float((composition ** 2 / sizes).sum() / len(top))
