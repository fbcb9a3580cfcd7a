"""EpiTrace's age of each cell from its accessibility at clock-like loci (steps 0-7 of :mod:`cisformer.tl.epitrace`),
of measured or generated ATAC.
"""

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import optimize, stats

from ...data import input_error, vocab
from ...utils.matrix import dense

NORMALIZATIONS = ("randomized", "census", "blank")


# --------------------------------------------------------------------------------------------- helpers
def column_correlations(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of X (cells x features) with y; NaN for constant columns.

    Parameters
    ----------
    X
        Dense array, cells x features.
    y
        One value per cell.

    Returns
    -------
    float array, one correlation per column of ``X``.
    """
    Xc = X - X.mean(axis=0)
    yc = y - y.mean()
    denom = np.sqrt((Xc ** 2).sum(axis=0) * (yc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ Xc) / denom


def _rank01(v: np.ndarray) -> np.ndarray:
    """Average ranks min-max scaled to [0, 1] (all equal -> 0)."""
    r = stats.rankdata(v)
    span = r.max() - r.min()
    return (r - r.min()) / span if span > 0 else np.zeros_like(r)


def coordinates(obj) -> pd.DataFrame:
    """Interval table of ``obj`` with UCSC-style chromosome names (``1`` -> ``chr1``, as the clock loci).

    Parameters
    ----------
    obj
        DataFrame with ``chrom``, ``start``, ``end``, AnnData (``var`` columns or var_names ``chrom:start-end``) or
        peak names (:func:`cisformer.data.vocab.intervals`).

    Returns
    -------
    DataFrame (a copy) with ``chrom``, ``start``, ``end`` and a 0 .. n-1 index.
    """
    df = vocab.intervals(obj).reset_index(drop=True).copy()
    df["chrom"] = vocab.normalize_chroms(df["chrom"], "chr")[0]
    return df


# --------------------------------------------------------------------------------------------- step 1
def clock_peak_mask(atac, clock_loci, source="atac") -> np.ndarray:
    """Boolean mask over ``atac``'s peaks: True where the peak overlaps >= 1 clock locus.

    Chromosome names are compared in UCSC style (``1`` and ``chr1`` match). Raises :class:`cisformer.data.InputError`
    when no peak overlaps (peaks on another build or species than the clock).

    Parameters
    ----------
    atac
        AnnData, cells x peaks, with ``var`` chrom/start/end or var_names ``chrom:start-end`` (or a peak table).
    clock_loci
        Frame with ``chrom``, ``start``, ``end`` (e.g. :func:`cisformer.data.load_clock_loci`), same build.
    source
        Name used in the error message.

    Returns
    -------
    bool array, one value per peak.
    """
    peaks, loci = coordinates(atac), coordinates(clock_loci)
    qi, _ = vocab.overlap_index(peaks, loci)
    mask = np.zeros(len(peaks), dtype=bool)
    mask[qi] = True
    if not mask.any():
        pc = ", ".join(pd.unique(peaks["chrom"])[:5].astype(str))
        lc = ", ".join(pd.unique(loci["chrom"])[:5].astype(str))
        raise input_error(source, "var (chrom/start/end)",
                     f"none of the {len(peaks)} peaks overlaps any of the {len(loci)} clock loci "
                     f"(peaks on {pc}...; loci on {lc}...)",
                     "give peaks on the clock's genome build and species (the shipped EpiTrace clock is mouse mm10: "
                     "lift other builds first, e.g. cisformer.data.lift_peaks or vocab.liftover), or pass the "
                     "clock loci of your species")
    return mask


def clock_matrix(atac, clock_loci, *, source="atac") -> ad.AnnData:
    """Cells x clock peaks: the peaks of ``atac`` that overlap >= 1 clock locus (a copy; ``var`` kept).

    Parameters
    ----------
    atac
        AnnData, cells x peaks, with ``var`` chrom/start/end or var_names ``chrom:start-end``.
    clock_loci
        Frame with ``chrom``, ``start``, ``end`` (e.g. :func:`cisformer.data.load_clock_loci`), same build.
    source
        Name used in the error message.

    Returns
    -------
    AnnData, cells x clock peaks.

    Raises
    ------
    cisformer.data.InputError
        When no peak overlaps a clock locus (wrong build or species).
    """
    return atac[:, clock_peak_mask(atac, clock_loci, source)].copy()


# --------------------------------------------------------------------------------------------- step 2
def normalize(X, method: str = "randomized") -> np.ndarray:
    """EpiTrace's normalisation of a cells x peaks count matrix (dense float64 out, same shape).

    Parameters
    ----------
    X
        cells x peaks counts (dense or sparse).
    method
        ``"randomized"`` (EpiTrace's default): each entry times its peak's (number of cells with a non-zero count
        / total count of the peak), then ``log2(x + 1)``; peaks with the same count in every open cell keep their
        values, peaks piled up in few cells are shrunk. ``"census"``: the per-cell analogue (each entry times its
        cell's number of non-zero peaks / total count), then ``log2(x + 1)``. ``"blank"``: ``log2(x + 1)``.
        All-zero peaks / cells stay zero. Zeros stay zeros, so the accessible-locus count is method-free.

    Returns
    -------
    float64 array, cells x peaks.

    Notes
    -----
    ``"randomized"`` applies the per-peak factor as EpiTrace describes the method. As we read the R source, its
    expression multiplies the transposed (cells x peaks) matrix by the per-peak vector, and R's column-major
    recycling then does not line the factor up with peaks (unless the number of cells is a multiple of the number
    of peaks); this module does not reproduce that.
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"method must be one of {NORMALIZATIONS}, got {method!r}")
    X = dense(X, np.float64)
    if np.any(X < 0):
        raise ValueError("normalize: counts must be non-negative")
    if method != "blank":
        axis = 0 if method == "randomized" else 1
        nonzero = (X > 0).sum(axis=axis)
        total = X.sum(axis=axis)
        factor = np.divide(nonzero, total, out=np.zeros(total.shape, dtype=np.float64), where=total > 0)
        X = X * (factor[None, :] if axis == 0 else factor[:, None])
    return np.log2(X + 1.0)


# --------------------------------------------------------------------------------------------- steps 3-7
def transition_matrix(Xn: np.ndarray, n_dispersed: int = 3000, *, min_open_fraction: float = 0.05):
    """Similarity transition matrix of cells (step 4 of :func:`age`).

    Among peaks open in more than ``min_open_fraction`` of the cells, the ``n_dispersed`` with the highest
    variance / mean; Pearson correlation of cells on them; diagonal, negative values and values below the mean
    correlation (of the full matrix, diagonal included) are zeroed; rows are normalised to sum 1 (rows left with
    nothing stay zero).

    Parameters
    ----------
    Xn
        Dense normalised clock-peak matrix, cells x peaks (:func:`normalize`).
    n_dispersed
        Number of most dispersed peaks the cells are correlated on.
    min_open_fraction
        Only peaks open (> 0) in more than this fraction of the cells are considered (ValueError when < 2 are).

    Returns
    -------
    (W, usable): ``W`` cells x cells over the usable cells (those with signal on the dispersed peaks), and the
    boolean mask of usable cells over all rows of ``Xn``.
    """
    open_frac = (Xn > 0).mean(axis=0)
    good = np.flatnonzero(open_frac > min_open_fraction)
    if len(good) < 2:
        raise ValueError(f"fewer than 2 clock peaks are open in > {min_open_fraction:.0%} of the cells")
    sub = Xn[:, good]
    mean = sub.mean(axis=0)
    dispersion = sub.var(axis=0, ddof=1) / mean
    order = np.argsort(-dispersion, kind="stable")[: min(n_dispersed, len(good))]
    V = sub[:, np.sort(order)]
    usable = V.sum(axis=1) > 0
    V = V[usable]
    Vc = V - V.mean(axis=1, keepdims=True)
    norm = np.sqrt((Vc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        C = (Vc @ Vc.T) / np.outer(norm, norm)
    C[~np.isfinite(C)] = 0.0
    mean_corr = C.mean()
    np.fill_diagonal(C, 0.0)
    C[C < 0] = 0.0
    C[C < mean_corr] = 0.0
    rows = C.sum(axis=1)
    W = np.divide(C, rows[:, None], out=np.zeros_like(C), where=rows[:, None] > 0)
    return W, usable


def diffuse(W: np.ndarray, v0: np.ndarray, restart: float = 0.01, tol: float = 1e-9, max_iter: int = 50_000):
    """Random walk with restart: ``v <- (1 - restart) W v + restart v0`` from ``v0`` until the mean absolute
    change is below ``tol`` (or ``max_iter`` steps). Returns ``(v, n_steps)``.

    Parameters
    ----------
    W
        Row-normalised transition matrix, cells x cells (:func:`transition_matrix`).
    v0
        Start (and restart) vector, one value per cell.
    restart, tol, max_iter
        Restart probability, tolerance on the mean absolute change, and the most steps.

    Returns
    -------
    tuple ``(v, n_steps)``: the diffused float array (one value per cell) and the number of steps taken.
    """
    v = v0.copy()
    for step in range(1, max_iter + 1):
        nxt = (1.0 - restart) * (W @ v) + restart * v0
        delta = np.abs(nxt - v).mean()
        v = nxt
        if delta < tol:
            return v, step
    return v, max_iter


def _age_once(Xn: np.ndarray, n_dispersed, n_signal_peaks, restart, tol, max_iter):
    """Steps 3-6 on normalised clock peaks of one block of cells: (diffused signal, signal, diffusion steps); NaN
    for unusable cells."""
    n = Xn.shape[0]
    accessible = (Xn > 0).sum(axis=1).astype(np.float64)                      # step 3
    W, usable = transition_matrix(Xn, n_dispersed)                            # step 4
    Xu, acc_u = Xn[usable], accessible[usable]
    corr = np.nan_to_num(column_correlations(Xu, acc_u), nan=0.0)                       # step 5
    best = np.argsort(-corr, kind="stable")[: min(n_signal_peaks, Xu.shape[1])]
    signal = Xu[:, best].mean(axis=1)
    x, _ = optimize.nnls(W, signal, maxiter=50 * W.shape[1])                  # step 6
    v, steps = diffuse(W, W @ x, restart, tol, max_iter)
    out = np.full(n, np.nan)
    smooth = np.full(n, np.nan)
    out[usable], smooth[usable] = v, signal
    return out, smooth, steps


def _age_vector(X, n_dispersed, n_signal_peaks, restart, tol, max_iter, normalization, chunk_size, rng):
    keep = np.asarray((X != 0).sum(axis=0)).ravel() > 0                       # drop all-zero peaks
    Xn = normalize(X[:, keep], normalization)
    n = Xn.shape[0]
    if chunk_size is None or chunk_size >= n:
        blocks = [np.arange(n)]
    else:                                                                     # EpiTrace's random subsamples
        perm = rng.permutation(n)
        blocks = [np.sort(b) for b in np.array_split(perm, max(1, round(n / chunk_size)))]
    score = np.full(n, np.nan)
    smooth = np.full(n, np.nan)
    steps = []
    for b in blocks:
        v, sm, st = _age_once(Xn[b], n_dispersed, n_signal_peaks, restart, tol, max_iter)
        ok = np.isfinite(v)
        v[ok] = stats.rankdata(v[ok])                                         # rank within block, as in R
        score[b], smooth[b] = v, sm
        steps.append(st)
    ok = np.isfinite(score)
    score[ok] = _rank01(score[ok])                                            # step 7
    return score, smooth, int(max(steps))


def clock_reads(atac, clock_loci, layer: str | None = None) -> np.ndarray:
    """Per cell, the reads (sum of counts) on the peaks that overlap a clock locus: what :func:`age`'s
    ``min_clock_reads`` filter compares. On binary data (e.g. called predictions) every open peak is one read.

    Parameters
    ----------
    atac
        AnnData, cells x peaks, counts in ``X`` (or ``layer``), peak coordinates in ``var`` or var_names.
    clock_loci
        Clock loci on the peaks' build (:func:`cisformer.data.load_clock_loci`).
    layer
        Take counts from ``atac.layers[layer]`` instead of ``X``.

    Returns
    -------
    float64 array, one read count per cell.
    """
    X = atac.layers[layer] if layer is not None else atac.X
    return np.asarray(X[:, np.flatnonzero(clock_peak_mask(atac, clock_loci))].sum(axis=1), dtype=np.float64).ravel()


def age(atac, clock_loci, *, min_clock_reads: float = 10, n_dispersed: int = 3000, n_signal_peaks: int = 200,
        restart: float = 0.01, tol: float = 1e-9, max_iter: int = 50_000, seed: int = 0, iterations: int = 1,
        key_added: str = "epitrace_age", normalization: str = "randomized", z_cutoff: float = 3.0,
        converge_tol: float = 1e-2, chunk_size: int | None = None, orient_with: str | None = None,
        layer: str | None = None, inplace: bool = True):
    """EpiTrace age of every cell from its accessibility at clock-like loci (EpiTrace's ``EpiTraceAge``).

    Parameters
    ----------
    atac
        AnnData, cells x peaks, counts in ``X`` (or ``layer``), peak coordinates in ``var`` or var_names.
    clock_loci
        chrom/start/end frame of clock-like loci on the peaks' build (:func:`cisformer.data.load_clock_loci`).
    min_clock_reads
        Cells with fewer reads (sum of counts, :func:`clock_reads`) on the clock peaks get no age (NaN) and take no
        part in the estimate of the others: EpiTrace's ``qualnum`` filter (``EpiTrace_prepare_object``, default
        10). 0 ages every cell. The filter is applied once, on the clock peaks, before the convergence loop.
    n_dispersed
        Peaks (open in > 5% of cells, highest variance / mean) on which cells are correlated (step 4).
    n_signal_peaks
        Peaks best correlated with the per-cell accessible-locus count, averaged into the signal (step 5).
    restart, tol, max_iter
        Diffusion ``v <- (1 - restart) W v + restart v0`` until mean |change| < ``tol`` (step 6).
    seed
        Seed of the random cell blocks when ``chunk_size`` is set (otherwise the result does not depend on it).
    iterations
        1: one pass on the clock peaks. > 1: EpiTrace's convergence loop: correlate every peak of ``atac`` with
        the current age, add the peaks whose standardised correlation (Z over peaks) exceeds ``z_cutoff`` to the
        clock peaks (the set only grows), recompute; stop after ``iterations`` passes or when the mean absolute
        change of age is below ``converge_tol``. The R package adds the peaks with Z < -``z_cutoff`` instead; with
        the orientation here (accessible clock loci -> older) the peaks that add to the accessible-locus signal are
        the positively correlated ones, so Z > ``z_cutoff`` is used.
    z_cutoff, converge_tol
        The Z above which a peak is added, and the mean absolute age change that ends the loop (``iterations`` > 1).
    key_added
        ``obs`` column of the age. Written beside it: ``{key_added}_clock_reads`` (:func:`clock_reads`),
        ``{key_added}_aged`` (True where the cell got an age), ``{key_added}_accessible_loci`` (step 3, on the
        peaks of the last pass, every cell) and ``{key_added}_signal`` (step 5, NaN where not aged);
        ``var[f"{key_added}_peak"]`` marks the peaks of the last pass (the clock peaks, plus those added by the
        convergence loop); the run's numbers go to ``uns[key_added]``, among them ``n_cells``, ``n_cells_aged``
        and ``n_cells_below_min_clock_reads`` (the cells dropped by ``min_clock_reads``; the other cells without an
        age had no signal on the dispersed peaks).
    normalization
        ``"randomized"``, ``"census"`` or ``"blank"`` (:func:`normalize`).
    chunk_size
        None: all cells in one block. Else cells are split at random (``seed``) into blocks of about this size,
        each with its own transition matrix and ranks, as EpiTrace does in parallel mode (for > ~5,000 cells:
        the dense cells x cells matrix and NNLS grow quadratically / cubically).
    orient_with
        Optional ``obs`` column of known ages (e.g. chronological age). When given and the Spearman correlation
        of the estimate with it is negative, the age is reversed (``1 - age``); ``uns[key_added]["reversed"]``
        says whether it was.
    layer
        Take counts from ``atac.layers[layer]`` instead of ``X``.
    inplace
        True: write ``obs`` and return ``atac``. False: return the age as a pandas Series (index obs_names).

    Returns
    -------
    ``atac`` (inplace) or a Series of ages in [0, 1], NaN for cells with fewer than ``min_clock_reads`` clock reads
    and for cells without signal on the dispersed peaks.

    Raises
    ------
    ValueError
        When fewer than 3 cells have ``min_clock_reads`` clock reads, or fewer than 2 clock peaks are open in
        > 5% of the kept cells.

    Notes
    -----
    R's ``EpiTrace_prepare_object`` also drops clock peaks with fewer than ``qualnum`` reads over all cells and
    repeats both filters until no peak is dropped, so there a cell's reads are counted on the remaining peaks;
    here only the cell filter is applied, on all clock peaks (step 1 drops only all-zero peaks).

    Orientation: the age is the rank of the diffused accessible-clock-locus signal, no sign flip (as the R code):
    a cell with more accessible clock loci (after smoothing over similar cells) gets a higher age. Checked on
    :func:`simulate_aged_cells`, where most age-linked clock peaks open with age, by the test
    ``test_age_recovers_planted_age`` (Spearman with the planted age > 0.8, positive: older = higher). Whether the
    shipped mouse clock loci open or close with age in real cells was not verified when they were shipped: check
    against cells of known age, or pass ``orient_with``.
    """
    X = atac.layers[layer] if layer is not None else atac.X
    mask = clock_peak_mask(atac, clock_loci)
    reads = clock_reads(atac, clock_loci, layer)
    cells = np.flatnonzero(reads >= min_clock_reads)                          # step 0
    if len(cells) < 3:
        raise ValueError(f"{len(cells)} of {atac.n_obs} cells have >= {min_clock_reads} reads on the clock peaks "
                         f"(min_clock_reads); at least 3 are needed")
    Xk = X[cells]
    rng = np.random.default_rng(seed)
    args = (n_dispersed, n_signal_peaks, restart, tol, max_iter, normalization, chunk_size)
    kept, smooth_kept, steps = _age_vector(Xk[:, np.flatnonzero(mask)], *args, rng)
    history = [int(mask.sum())]
    selected = mask.copy()
    n_iter, change = 1, float("nan")
    if iterations > 1:
        Xall = Xk.tocsc() if sp.issparse(Xk) else np.asarray(Xk)
        for _ in range(iterations - 1):
            ok = np.isfinite(kept)
            cor = age_correlations(Xall[np.flatnonzero(ok)], kept[ok], method="pearson")[0]
            cor = np.nan_to_num(cor, nan=0.0)
            sd = cor.std(ddof=1)
            z = (cor - cor.mean()) / sd if sd > 0 else np.zeros_like(cor)
            selected = selected | (z > z_cutoff)
            new, smooth_kept, steps = _age_vector(Xk[:, np.flatnonzero(selected)], *args,
                                                  np.random.default_rng(seed))
            both = np.isfinite(new) & np.isfinite(kept)
            change = float(np.abs(new[both] - kept[both]).mean()) if both.any() else float("nan")
            kept = new
            n_iter += 1
            history.append(int(selected.sum()))
            if change < converge_tol:
                break
    score = np.full(atac.n_obs, np.nan)
    smooth = np.full(atac.n_obs, np.nan)
    score[cells], smooth[cells] = kept, smooth_kept
    reversed_ = False
    if orient_with is not None:
        known = pd.to_numeric(atac.obs[orient_with], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(known) & np.isfinite(score)
        if ok.sum() > 2 and stats.spearmanr(score[ok], known[ok])[0] < 0:
            score = 1.0 - score
            reversed_ = True
    result = pd.Series(score, index=atac.obs_names, name=key_added)
    if not inplace:
        return result
    atac.obs[key_added] = result
    atac.obs[f"{key_added}_clock_reads"] = reads
    atac.obs[f"{key_added}_aged"] = np.isfinite(score)
    atac.obs[f"{key_added}_accessible_loci"] = np.asarray((X[:, np.flatnonzero(selected)] > 0).sum(axis=1)).ravel()
    atac.obs[f"{key_added}_signal"] = smooth
    atac.var[f"{key_added}_peak"] = selected
    atac.uns[key_added] = {"n_clock_peaks": int(mask.sum()), "min_clock_reads": min_clock_reads,
                           "n_cells": int(atac.n_obs), "n_cells_aged": int(np.isfinite(score).sum()),
                           "n_cells_below_min_clock_reads": int(atac.n_obs - len(cells)),
                           "peaks_per_iteration": history, "iterations": n_iter, "last_mean_change": change,
                           "diffusion_steps": steps, "normalization": normalization, "reversed": reversed_}
    return atac


def generated_age(pred, clock_loci, open_fraction: float, **kwargs) -> ad.AnnData:
    """EpiTrace age of generated ATAC, called open / closed by one rule for every method.

    EpiTrace counts the accessible clock loci of each cell; predicted probabilities are all above zero, so they are
    binarised first: in every cell the ``round(open_fraction * n_CREs)`` most probable CREs are called open
    (:func:`cisformer.metrics.binarize`, rule ``"topk"``), which depends only on how each cell ranks its CREs.
    Each open call counts as one read, so :func:`age`'s ``min_clock_reads`` filter keeps the cells with at least
    that many clock CREs called open (the same number as their accessible clock loci).

    Parameters
    ----------
    pred
        AnnData, cells x CREs, probabilities in ``X`` (:func:`cisformer.predict.rna_to_atac`, a baseline's
        ``predict_atac``), CRE coordinates in ``var`` or var_names.
    clock_loci
        Clock loci on the CREs' build (:func:`cisformer.data.load_clock_loci`).
    open_fraction
        Mean open fraction of the measured ATAC of the training cells (the same for every method).
    **kwargs
        Passed to :func:`age` (``inplace`` excluded).

    Returns
    -------
    A new AnnData: ``X`` the binary calls (CSR float32), ``obs`` / ``var`` copied from ``pred``, with :func:`age`'s
    columns written. A method that predicts the same probabilities for every cell (the floor) calls the same CREs
    open everywhere, so all its cells get the same age (or none, when fewer than ``min_clock_reads`` of them are
    clock CREs).
    """
    from ...metrics import binarize

    called = binarize(pred.X, rule="topk", open_fraction=open_fraction)
    out = ad.AnnData(sp.csr_matrix(called, dtype=np.float32), obs=pred.obs.copy(), var=pred.var.copy())
    return age(out, clock_loci, **kwargs)


def age_correlations(X, ages, method: str = "spearman", *, chunk: int = 2000):
    """Correlation of each column of ``X`` (cells x peaks) with ``ages``: ``(r, p)``, two-sided t-test p on
    n - 2 degrees of freedom (for Spearman on ranks, as :func:`scipy.stats.spearmanr`); NaN for constant peaks.

    Parameters
    ----------
    X
        Cells x peaks matrix, dense or sparse.
    ages
        One finite age per cell.
    method
        ``"spearman"`` (default) or ``"pearson"``.
    chunk
        Peaks made dense at once (bounds memory).

    Returns
    -------
    tuple ``(r, p)``: float arrays, one value per peak.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    ages = np.asarray(ages, dtype=np.float64)
    n = len(ages)
    y = stats.rankdata(ages) if method == "spearman" else ages
    r = np.full(X.shape[1], np.nan)
    for c0 in range(0, X.shape[1], chunk):
        block = dense(X[:, c0:c0 + chunk], np.float64)
        if method == "spearman":
            block = stats.rankdata(block, axis=0)
        r[c0:c0 + chunk] = column_correlations(block, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = r * np.sqrt((n - 2) / np.clip(1 - r ** 2, 1e-300, None))
    p = 2 * stats.t.sf(np.abs(t), n - 2)
    return r, p
