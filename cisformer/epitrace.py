"""EpiTrace cell age from scATAC at clock-like loci, in Python (Xiao et al., Nat Biotechnol 2024).

A re-implementation of EpiTrace's ``EpiTrace_prepare_object`` cell filter, ``EpiTraceAge`` /
``EpiTraceAge_Convergence`` and ``AssociationOfPeaksToAge``, written from reading the R source (``R/EpiTrace.R`` of
MagpiePKU/EpiTrace at commit 5a9dd1a, GPL-3.0-or-later; the shipped mouse clock loci come from the same commit, see
their line in ``data/MANIFEST``); no R code is copied::

    clock = cisformer.data.load_clock_loci("lifted")           # mm10, 61,503 loci
    epitrace.age(atac, clock)                                    # obs["epitrace_age"] in [0, 1]
    cres = epitrace.age_associated_cres(atac)                    # per-peak correlation with age, p, BH q
    clusters = epitrace.trajectory_clusters(atac, cres.index[cres["q"] < 0.05])
    generated = epitrace.generated_age(pred, clock, open_fraction)   # predicted probabilities, top-k calls
    epitrace.age_agreement(atac.obs["epitrace_age"], known_age, groups=atac.obs["cell_type"])
    epitrace.split_half_ceiling(atac, clock)                     # how well measured age agrees with itself
    epitrace.partial_spearman(age_a, age_b, library_size)        # agreement beyond a shared depth effect

Steps of :func:`age` (defaults as in the R package):

0. cells with fewer than ``min_clock_reads`` (10) reads on the clock peaks get no age (R's ``qualnum``);
1. keep the peaks overlapping >= 1 clock locus (:func:`clock_matrix`), drop all-zero peaks;
2. normalise (:func:`normalize`, ``"randomized"`` by default);
3. per cell, count the accessible clock peaks (the raw age signal);
4. among peaks open in > 5% of cells take the ``n_dispersed`` most dispersed (variance / mean), correlate cells
   on them, zero the diagonal, negative and below-mean correlations, row-normalise: the transition matrix ``W``;
5. the ``n_signal_peaks`` peaks best correlated with the per-cell counts; their per-cell mean is the signal ``s``;
6. non-negative least squares ``s ~ W x``; ``v0 = W x``; diffuse ``v <- (1 - restart) W v + restart v0`` until
   the mean absolute change is below ``tol``;
7. age = rank of ``v``, min-max scaled to [0, 1].

The simulator :func:`simulate_aged_cells` plants an age signal at clock peaks (the truth used by the tests).
Intervals are 0-based half-open; a peak overlaps a locus when they share >= 1 bp (:func:`cisformer.vocab.overlap_index`).
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import optimize, stats

from . import vocab
from .matrix import dense
from .data import input_error
from .enrichment import bh_qvalues

NORMALIZATIONS = ("randomized", "census", "blank")


# --------------------------------------------------------------------------------------------- helpers
def _col_corr(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of X (cells x features) with y; NaN for constant columns."""
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


def _coords(obj) -> pd.DataFrame:
    df = vocab.intervals(obj).reset_index(drop=True).copy()
    df["chrom"] = vocab.normalize_chroms(df["chrom"], "chr")[0]
    return df


# --------------------------------------------------------------------------------------------- step 1
def clock_peak_mask(atac, clock_loci, source="atac") -> np.ndarray:
    """Boolean mask over ``atac``'s peaks: True where the peak overlaps >= 1 clock locus.

    Chromosome names are compared in UCSC style (``1`` and ``chr1`` match). Raises :class:`cisformer.data.InputError`
    when no peak overlaps (peaks on another build or species than the clock).
    """
    peaks, loci = _coords(atac), _coords(clock_loci)
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


def clock_matrix(atac, clock_loci, source="atac") -> ad.AnnData:
    """Cells x clock peaks: the peaks of ``atac`` that overlap >= 1 clock locus (a copy; ``var`` kept).

    Parameters
    ----------
    atac
        AnnData, cells x peaks, with ``var`` chrom/start/end or var_names ``chrom:start-end``.
    clock_loci
        Frame with ``chrom``, ``start``, ``end`` (e.g. :func:`cisformer.data.load_clock_loci`), same build.
    source
        Name used in the error message.

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
def transition_matrix(Xn: np.ndarray, n_dispersed: int = 3000, min_open_fraction: float = 0.05):
    """Similarity transition matrix of cells (step 4 of :func:`age`).

    Among peaks open in more than ``min_open_fraction`` of the cells, the ``n_dispersed`` with the highest
    variance / mean; Pearson correlation of cells on them; diagonal, negative values and values below the mean
    correlation (of the full matrix, diagonal included) are zeroed; rows are normalised to sum 1 (rows left with
    nothing stay zero).

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
    change is below ``tol`` (or ``max_iter`` steps). Returns ``(v, n_steps)``."""
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
    corr = np.nan_to_num(_col_corr(Xu, acc_u), nan=0.0)                       # step 5
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
    ``min_clock_reads`` filter compares. On binary data (e.g. called predictions) every open peak is one read."""
    X = atac.layers[layer] if layer is not None else atac.X
    return np.asarray(X[:, np.flatnonzero(clock_peak_mask(atac, clock_loci))].sum(axis=1), dtype=np.float64).ravel()


def age(atac, clock_loci, min_clock_reads: float = 10, n_dispersed: int = 3000, n_signal_peaks: int = 200,
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
    from .metrics import binarize

    called = binarize(pred.X, rule="topk", open_fraction=open_fraction)
    out = ad.AnnData(sp.csr_matrix(called, dtype=np.float32), obs=pred.obs.copy(), var=pred.var.copy())
    return age(out, clock_loci, **kwargs)


# --------------------------------------------------------------------------------------------- age-associated CREs
def age_correlations(X, ages, method: str = "spearman", chunk: int = 2000):
    """Correlation of each column of ``X`` (cells x peaks) with ``ages``: ``(r, p)``, two-sided t-test p on
    n - 2 degrees of freedom (for Spearman on ranks, as :func:`scipy.stats.spearmanr`); NaN for constant peaks."""
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
        r[c0:c0 + chunk] = _col_corr(block, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = r * np.sqrt((n - 2) / np.clip(1 - r ** 2, 1e-300, None))
    p = 2 * stats.t.sf(np.abs(t), n - 2)
    return r, p


def age_associated_cres(atac, age_key: str = "epitrace_age", method: str = "spearman",
                        layer: str | None = None) -> pd.DataFrame:
    """Per-peak association of accessibility with age (EpiTrace's ``AssociationOfPeaksToAge``, with tests).

    Parameters
    ----------
    atac
        AnnData with ``obs[age_key]`` (cells with NaN age are left out).
    age_key
        ``obs`` column of the age (EpiTrace age from :func:`age`, or a known age).
    method
        ``"spearman"`` (default) or ``"pearson"`` correlation of each peak's accessibility with age.
    layer
        Counts from ``atac.layers[layer]`` instead of ``X``.

    Returns
    -------
    DataFrame indexed by var_names, sorted by p: ``correlation``, ``z`` (correlation standardised over peaks, as
    EpiTrace's scaled correlation), ``p`` (two-sided), ``q`` (Benjamini-Hochberg over the tested peaks),
    ``direction`` (``"up"``: opens with age, ``"down"``).
    """
    X = atac.layers[layer] if layer is not None else atac.X
    ages = pd.to_numeric(atac.obs[age_key], errors="coerce").to_numpy(dtype=float)
    ok = np.flatnonzero(np.isfinite(ages))
    if len(ok) < 4:
        raise ValueError(f"age_associated_cres: fewer than 4 cells with a finite obs['{age_key}']")
    if sp.issparse(X):
        X = X.tocsr()[ok].tocsc()
    else:
        X = np.asarray(X)[ok]
    r, p = age_correlations(X, ages[ok], method)
    z = (r - np.nanmean(r)) / np.nanstd(r, ddof=1)
    out = pd.DataFrame({"correlation": r, "z": z, "p": p, "q": bh_qvalues(p),
                        "direction": np.where(r > 0, "up", "down")}, index=atac.var_names)
    return out.sort_values("p", kind="stable")


def trajectory_clusters(atac, cres, age_key: str = "epitrace_age", n_bins: int = 10, k: int = 4, seed: int = 0,
                        layer: str | None = None) -> pd.DataFrame:
    """k-means clusters of the accessibility trajectories of ``cres`` along age.

    Cells are cut into ``n_bins`` age quantile bins; per CRE the mean accessibility (counts divided by the cell's
    total over all peaks, times the median total) per bin is z-scored across bins (flat trajectories become 0);
    :class:`sklearn.cluster.KMeans` (``k``, ``random_state=seed``, 10 starts) clusters the scaled trajectories.
    Clusters are numbered by their mean trajectory's trend: 0 falls most with age, ``k - 1`` rises most.

    Parameters
    ----------
    cres
        Peak names (var_names), a boolean mask, or a frame indexed by peak names (e.g. rows of
        :func:`age_associated_cres`).

    Returns
    -------
    DataFrame indexed by CRE: ``bin_0`` ... ``bin_{n-1}`` (scaled trajectory, youngest first), ``cluster``,
    ``trend`` (Spearman of the CRE's trajectory with the bin index).
    """
    from sklearn.cluster import KMeans

    if isinstance(cres, pd.DataFrame):
        cres = cres.index
    cres = np.asarray(cres)
    names = atac.var_names[cres] if cres.dtype == bool else pd.Index(cres.astype(str))
    missing = names.difference(atac.var_names)
    if len(missing):
        raise KeyError(f"trajectory_clusters: {len(missing)} CRE(s) not in atac.var_names, e.g. {list(missing[:3])}")
    if len(names) < k:
        raise ValueError(f"trajectory_clusters: {len(names)} CREs for k={k} clusters")
    X = atac.layers[layer] if layer is not None else atac.X
    ages = pd.to_numeric(atac.obs[age_key], errors="coerce").to_numpy(dtype=float)
    ok = np.flatnonzero(np.isfinite(ages))
    totals = np.asarray(X.sum(axis=1)).ravel()[ok]
    scale = np.divide(np.median(totals), totals, out=np.zeros_like(totals, dtype=float), where=totals > 0)
    cols = atac.var_names.get_indexer(names)
    sub = dense(X[ok][:, cols], np.float64) * scale[:, None]
    bins = pd.qcut(stats.rankdata(ages[ok]), n_bins, labels=False, duplicates="drop")
    n_b = int(bins.max()) + 1
    traj = np.vstack([sub[bins == b].mean(axis=0) for b in range(n_b)]).T            # CREs x bins
    sd = traj.std(axis=1, keepdims=True)
    scaled = np.divide(traj - traj.mean(axis=1, keepdims=True), sd, out=np.zeros_like(traj), where=sd > 0)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(scaled)
    idx = np.arange(n_b)
    trend = np.array([stats.spearmanr(idx, row)[0] if row.std() > 0 else 0.0 for row in scaled])
    centre_trend = np.array([scaled[labels == c].mean(axis=0) @ (idx - idx.mean()) for c in range(k)])
    relabel = np.empty(k, dtype=int)
    relabel[np.argsort(centre_trend, kind="stable")] = np.arange(k)
    out = pd.DataFrame(scaled, index=names, columns=[f"bin_{b}" for b in range(n_b)])
    out["cluster"] = relabel[labels]
    out["trend"] = trend
    return out


# --------------------------------------------------------------------------------------------- comparing ages
def parse_ages(values) -> np.ndarray:
    """Numeric ages from numbers or from labels that start with one (Tabula Muris Senis ``"3m"``, ``"24 months"``).

    The unit is kept as written (``"3m"`` -> 3.0); values without a leading number become NaN.
    """
    raw = pd.Series(np.asarray(values, dtype=object))
    numeric = pd.to_numeric(raw, errors="coerce")
    leading = pd.to_numeric(raw.astype(str).str.extract(r"^\s*([-+]?\d*\.?\d+)", expand=False), errors="coerce")
    return numeric.fillna(leading).to_numpy(dtype=float)


def age_groups(ages, max_groups: int = 6) -> pd.Series:
    """Groups of chronological age for plots: the distinct ages when there are at most ``max_groups`` (the six ages
    of Tabula Muris Senis), else ``max_groups`` quantile bins labelled ``"low-high"`` (3 significant digits).
    Categorical, ordered from young to old; NaN stays NaN."""
    ages = pd.Series(np.asarray(ages, dtype=float))
    if ages.nunique() <= max_groups:
        return pd.Series(pd.Categorical(ages, categories=np.sort(ages.dropna().unique()), ordered=True))
    edges = np.unique(np.nanquantile(ages, np.linspace(0, 1, max_groups + 1)))
    labels = [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(edges[:-1], edges[1:])]
    return pd.cut(ages, edges, labels=labels, include_lowest=True)


def age_agreement(estimated, reference, groups=None, min_cells: int = 10) -> pd.DataFrame:
    """Spearman correlation of estimated ages with reference ages, over all cells and within each group.

    Parameters
    ----------
    estimated, reference
        One value per cell (e.g. EpiTrace age and planted or chronological age); cells where either is NaN are
        left out.
    groups
        Optional label per cell (e.g. cell type): one row per group after the row over all cells.
    min_cells
        Rows with fewer cells (or fewer than 3), or where either age is constant, get NaN correlation and p.

    Returns
    -------
    DataFrame: ``group`` (``"all"`` first, then the groups sorted), ``n_cells``, ``spearman``, ``p``.
    """
    estimated = np.asarray(estimated, dtype=float)
    reference = np.asarray(reference, dtype=float)

    def one(mask):
        ok = mask & np.isfinite(estimated) & np.isfinite(reference)
        n = int(ok.sum())
        if n < max(min_cells, 3) or np.ptp(estimated[ok]) == 0 or np.ptp(reference[ok]) == 0:
            return n, np.nan, np.nan
        rho, p = stats.spearmanr(estimated[ok], reference[ok])
        return n, float(rho), float(p)

    rows = [("all", *one(np.ones(len(estimated), dtype=bool)))]
    if groups is not None:
        labels = np.asarray(groups).astype(str)
        rows += [(g, *one(labels == g)) for g in np.unique(labels)]
    return pd.DataFrame(rows, columns=["group", "n_cells", "spearman", "p"])


def partial_spearman(x, y, covariate) -> float:
    """Spearman correlation of ``x`` and ``y`` beyond what both share with ``covariate``.

    All three are ranked; the rank of ``covariate`` (with an intercept) is regressed out of the ranks of ``x`` and
    of ``y`` by least squares, and the residuals are correlated (Pearson). A monotone transform of the covariate
    (e.g. log of a library size) leaves the result unchanged.

    Parameters
    ----------
    x, y, covariate
        One value per cell; cells where any of the three is NaN are left out.

    Returns
    -------
    The partial Spearman correlation; NaN with fewer than 4 complete cells or when ``x`` or ``y`` is constant or
    fully determined by the covariate's rank.
    """
    x, y, covariate = (np.asarray(v, dtype=float) for v in (x, y, covariate))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(covariate)
    n = int(ok.sum())
    if n < 4:
        return float("nan")
    design = np.column_stack([np.ones(n), stats.rankdata(covariate[ok])])

    def residual(v):
        r = stats.rankdata(v[ok])
        return r - design @ np.linalg.lstsq(design, r, rcond=None)[0]

    rx, ry = residual(x), residual(y)
    if min(np.ptp(rx), np.ptp(ry)) < 1e-9 * n:
        return float("nan")
    return float(rx @ ry / np.sqrt((rx @ rx) * (ry @ ry)))


def accessible_clock_loci(atac, clock_loci, layer: str | None = None) -> np.ndarray:
    """Per cell, the number of accessible peaks that overlap a clock locus (step 3 of :func:`age`, before any
    peak is dropped): how much clock signal a cell's library holds."""
    X = atac.layers[layer] if layer is not None else atac.X
    return np.asarray((X[:, np.flatnonzero(clock_peak_mask(atac, clock_loci))] > 0).sum(axis=1)).ravel()


def age_by_depth(atac, clock_loci, keeps, reference: str = "age", seed: int = 0, **kwargs) -> pd.DataFrame:
    """How well EpiTrace age recovers a known age as the cells' libraries get shallower.

    For each fraction in ``keeps`` the counts are thinned binomially (:func:`cisformer.data.downsample_atac`, as
    if sequenced less deeply), then EpiTrace age (:func:`age`, ``**kwargs``) is compared with ``obs[reference]``.

    Returns
    -------
    DataFrame, one row per fraction: ``keep``, ``accessible_clock_loci`` (mean per cell,
    :func:`accessible_clock_loci`), ``n_cells`` (cells given an age), ``spearman``, ``p`` (:func:`age_agreement`)
    and ``note``: empty, or why no age could be estimated (too few clock peaks open in enough cells).
    """
    from .data import downsample_atac

    rows = []
    for keep in keeps:
        thin = downsample_atac(atac, keep, seed)
        row = {"keep": keep, "accessible_clock_loci": float(accessible_clock_loci(thin, clock_loci).mean())}
        try:
            estimate = age(thin, clock_loci, inplace=False, **kwargs)
        except ValueError as err:
            rows.append({**row, "n_cells": 0, "spearman": np.nan, "p": np.nan, "note": str(err)})
            continue
        agreement = age_agreement(estimate, thin.obs[reference]).iloc[0]
        rows.append({**row, "n_cells": int(agreement["n_cells"]), "spearman": agreement["spearman"],
                     "p": agreement["p"], "note": ""})
    return pd.DataFrame(rows)


def spearman_brown(r: float) -> float:
    """Spearman-Brown: the agreement of two full-length measurements from that ``r`` of two halves, ``2 r / (1 + r)``
    (NaN for r <= -1 or NaN). Average ``r`` over random splits before extrapolating (:func:`split_half_ceiling`)."""
    return 2 * r / (1 + r) if r > -1 else float("nan")


def split_half_ceiling(atac, clock_loci, seed: int = 0, n_repeats: int = 10, min_clock_reads: float = 10,
                       **kwargs) -> pd.DataFrame:
    """Noise ceiling of per-cell EpiTrace-age agreement: how well the age of measured ATAC agrees with itself.

    The cells with at least ``min_clock_reads`` reads on the clock peaks (those :func:`age` ages) are kept. In each
    repeat every read of every cell goes to half A or half B at random (binomial thinning with p = 0.5:
    ``A ~ Binomial(count, 0.5)``, ``B = count - A``; on binary data each open entry goes to one half). Each half is
    aged with :func:`age` at ``min_clock_reads / 2`` (the same filter at half the depth) and the two ages are
    correlated (Spearman) over the cells aged in both. Two halves are two independent libraries of half the depth,
    so the Spearman-Brown formula ``2 r / (1 + r)`` estimates the agreement of two libraries at full depth: the most
    a generated age can be expected to agree with the measured age, per cell, at this sequencing depth.

    Parameters
    ----------
    atac
        AnnData, cells x peaks, integer counts (or binary calls) in ``X``, peak coordinates in ``var``.
    clock_loci
        Clock loci on the peaks' build (:func:`cisformer.data.load_clock_loci`).
    seed
        Seed of the random halves (the repeats draw in turn from one generator).
    n_repeats
        Random splits, one row each.
    min_clock_reads
        :func:`age`'s filter at full depth.
    **kwargs
        Passed to :func:`age` (not ``min_clock_reads``, ``inplace``, ``layer``, ``key_added``).

    Returns
    -------
    One row per repeat: ``repeat``, ``n_cells_split`` (cells with >= ``min_clock_reads`` clock reads),
    ``n_cells`` (aged in both halves), ``accessible_clock_loci_half`` (mean accessible clock peaks per cell and half,
    over those cells), ``spearman_half``, ``ceiling_full_depth`` (:func:`spearman_brown` of ``spearman_half``; over
    repeats, take ``spearman_brown`` of the mean ``spearman_half`` rather than the mean of this column),
    ``spearman_half_depth_adjusted`` / ``ceiling_full_depth_adjusted`` (the same with the cells' full library size,
    all peaks, partialled out: :func:`partial_spearman`), and ``note``: empty, or why a half could not be aged.

    Raises
    ------
    cisformer.data.InputError
        When ``X`` holds non-integer values.

    Notes
    -----
    Spearman-Brown assumes the age's noise halves when the reads double. EpiTrace is not that linear at low depth
    (the read filter, and peaks open in > 5% of cells: fewer pass at half depth, and cells without reads on them get
    no age), so there the estimate can fall well below the agreement of two real libraries: 1,000
    :func:`simulate_aged_cells` cells thinned to about 17 accessible clock peaks per cell gave 0.23, where two
    independent libraries of that depth (the halves of the cells thinned to twice the depth) agreed 0.55. Read it as
    an estimate, and look at its spread over repeats.
    """
    X = sp.csr_matrix(atac.X, dtype=np.float64)
    if X.nnz and not np.allclose(X.data, np.round(X.data)):
        raise input_error("atac", "X", "non-integer values", "split halves share reads: pass raw counts or binary calls")
    cells = np.flatnonzero(clock_reads(atac, clock_loci) >= min_clock_reads)
    X = X[cells]
    depth = np.asarray(X.sum(axis=1)).ravel()
    rng = np.random.default_rng(seed)
    rows = []
    for repeat in range(n_repeats):
        half_a = X.copy()
        half_a.data = rng.binomial(X.data.astype(np.int64), 0.5).astype(np.float64)
        halves = [half_a, X - half_a]
        row = {"repeat": repeat, "n_cells_split": len(cells)}
        try:
            results = [age(ad.AnnData(h, obs=atac.obs.iloc[cells][[]], var=atac.var), clock_loci,
                           min_clock_reads=min_clock_reads / 2, **kwargs).obs for h in halves]
        except ValueError as err:
            rows.append({**row, "n_cells": 0, "note": str(err)})
            continue
        a, b = (r["epitrace_age"].to_numpy() for r in results)
        both = np.isfinite(a) & np.isfinite(b)
        r_half = age_agreement(a, b, min_cells=3).loc[0, "spearman"]
        r_adjusted = partial_spearman(a, b, depth)
        rows.append({**row, "n_cells": int(both.sum()),
                     "accessible_clock_loci_half": float(np.mean([r.loc[both, "epitrace_age_accessible_loci"].mean()
                                                                  for r in results])),
                     "spearman_half": r_half, "ceiling_full_depth": spearman_brown(r_half),
                     "spearman_half_depth_adjusted": r_adjusted,
                     "ceiling_full_depth_adjusted": spearman_brown(r_adjusted), "note": ""})
    columns = ["repeat", "n_cells_split", "n_cells", "accessible_clock_loci_half", "spearman_half",
               "ceiling_full_depth", "spearman_half_depth_adjusted", "ceiling_full_depth_adjusted", "note"]
    return pd.DataFrame(rows, columns=columns)


def compare_ages(ages: pd.DataFrame, reference: str, groups, min_cells: int = 10, depth=None) -> pd.DataFrame:
    """Agreement of every column of ``ages`` with its ``reference`` column, per cell and per group mean.

    Parameters
    ----------
    ages
        Cells x methods (e.g. EpiTrace age on measured ATAC and on each method's generated ATAC).
    reference
        Column the others are compared with.
    groups
        Label per cell (cell type) for the group means.
    min_cells
        Groups with fewer cells holding both ages are left out of the group means.
    depth
        Optional library size per cell (e.g. of the measured ATAC the reference age comes from): adds
        ``spearman_cells_depth_adjusted``, the per-cell agreement with the rank of ``depth`` (the same as of its
        log) partialled out of both ages (:func:`partial_spearman`), NaN where ``spearman_cells`` is.

    Returns
    -------
    One row per other column: ``method``, ``n_cells`` (both ages finite), ``n_distinct`` (distinct finite ages;
    1 means the method's age carries no per-cell information), ``spearman_cells`` / ``p_cells`` (over cells,
    :func:`age_agreement`), ``spearman_cells_depth_adjusted`` (with ``depth``), ``n_groups``,
    ``spearman_group_means`` / ``p_group_means`` (Spearman of the per-group mean ages; NaN below 3 groups).
    """
    labels = np.asarray(groups).astype(str)
    ref = ages[reference].to_numpy(dtype=float)
    rows = []
    for method in ages.columns.drop(reference):
        a = ages[method].to_numpy(dtype=float)
        ok = np.isfinite(a) & np.isfinite(ref)
        both = pd.DataFrame({"age": a[ok], "reference": ref[ok], "group": labels[ok]})
        sizes = both["group"].value_counts()
        means = both[both["group"].isin(sizes.index[sizes >= min_cells])].groupby("group")[["age", "reference"]].mean()
        cells = age_agreement(a, ref, min_cells=min_cells).iloc[0]
        group = age_agreement(means["age"], means["reference"], min_cells=3).iloc[0]
        row = {"method": method, "n_cells": int(cells["n_cells"]),
               "n_distinct": int(pd.unique(a[np.isfinite(a)]).size), "spearman_cells": cells["spearman"],
               "p_cells": cells["p"]}
        if depth is not None:
            row["spearman_cells_depth_adjusted"] = (partial_spearman(a, ref, depth) if np.isfinite(cells["spearman"])
                                                    else np.nan)
        rows.append({**row, "n_groups": len(means), "spearman_group_means": group["spearman"],
                     "p_group_means": group["p"]})
    return pd.DataFrame(rows)


def age_cre_list(table: pd.DataFrame, n_top: int | None) -> pd.Index:
    """The ``n_top`` CREs with the smallest p of an :func:`age_associated_cres` table, among those tested (finite
    p); a fixed-size list, comparable between methods whatever their power. ``n_top=None``: every tested CRE."""
    finite = table[np.isfinite(table["p"].to_numpy(dtype=float))]
    return finite.sort_values("p", kind="stable").index[:n_top]


def cre_list_overlap(tables: dict, reference: str, n_top: int, q_cutoff: float = 0.05) -> pd.DataFrame:
    """Overlap of each method's age-associated CRE list with the reference's (e.g. measured ATAC's).

    A method's list is :func:`age_cre_list` (its ``n_top`` CREs with the smallest p among those it could test).
    Overlap is counted among the CREs tested in both tables.

    Parameters
    ----------
    tables
        Method -> :func:`age_associated_cres` table (index CRE names; ``p``, ``q``, ``direction``).
    reference
        Key of the table the others are compared with.
    n_top
        List size.
    q_cutoff
        Reported: how many CREs of each table pass BH q < ``q_cutoff``.

    Returns
    -------
    One row per method other than ``reference``: ``method``, ``n_tested``, ``n_significant`` (q < ``q_cutoff``),
    ``n_common`` (CREs tested in both), ``n_listed`` / ``n_listed_reference`` (list sizes within them),
    ``n_shared``, ``jaccard``, ``jaccard_random`` (Jaccard of random lists of the same sizes, from the expected
    overlap ``a b / N``), ``p_overlap`` (one-sided hypergeometric: this many shared or more),
    ``same_direction`` (fraction of the shared CREs that open with age in both or close in both).
    """
    ref = tables[reference]
    ref_tested, ref_listed = age_cre_list(ref, None), age_cre_list(ref, n_top)
    rows = []
    for method, table in tables.items():
        if method == reference:
            continue
        tested_here, listed = age_cre_list(table, None), age_cre_list(table, n_top)
        common = ref_tested.intersection(tested_here)
        a, b = ref_listed.intersection(common), listed.intersection(common)
        shared = a.intersection(b)
        n = len(common)
        expected = len(a) * len(b) / n if n else np.nan
        union = len(a) + len(b) - len(shared)
        rows.append({
            "method": method, "n_tested": len(tested_here), "n_significant": int((table["q"] < q_cutoff).sum()),
            "n_common": n, "n_listed": len(b), "n_listed_reference": len(a), "n_shared": len(shared),
            "jaccard": len(shared) / union if union else np.nan,
            "jaccard_random": expected / (len(a) + len(b) - expected) if n and len(a) + len(b) > expected else np.nan,
            "p_overlap": float(stats.hypergeom.sf(len(shared) - 1, n, len(a), len(b))) if n else np.nan,
            "same_direction": float((table.loc[shared, "direction"] == ref.loc[shared, "direction"]).mean())
            if len(shared) else np.nan})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- simulation
def simulate_aged_cells(n_cells: int = 600, n_cell_types: int = 3, n_clock_peaks: int = 400,
                        n_other_peaks: int = 800, age_linked_fraction: float = 0.6, rising_fraction: float = 0.8,
                        age_effect: float = 2.5, depth_sd: float = 0.3, unlisted_age_peaks: int = 0,
                        clock_loci: pd.DataFrame | None = None, seed: int = 0) -> tuple[ad.AnnData, pd.DataFrame]:
    """Simulated scATAC with a planted age signal at clock peaks (the truth for :func:`age`).

    Each cell has a cell type and an age ``~ Uniform[0, 1]`` (``obs["age"]``). Each peak has a cell-type baseline
    open rate (non-clock peaks follow cell-type programs: high in one type, low elsewhere; clock peaks have
    milder type differences). A fraction ``age_linked_fraction`` of the clock peaks is age-linked: on the logit
    scale its rate moves by ``age_effect * sign * (age - 0.5)``, ``sign = +1`` (opens with age) for a fraction
    ``rising_fraction`` of them, -1 for the rest. A per-cell depth factor (log-normal, sd ``depth_sd``)
    multiplies every rate; counts are Poisson of the rate (mostly 0/1, as scATAC). ``unlisted_age_peaks`` of the
    non-clock peaks also open with age (age-linked peaks missing from the clock, for the convergence loop).

    Parameters
    ----------
    clock_loci
        None: synthetic loci, one 2-bp locus in the middle of each clock peak on chromosomes ``chr1``-``chr3``.
        A frame of real loci (e.g. the shipped mm10 clock): clock peaks are 500 bp centred on a random sample of
        them and non-clock peaks sit 20 kb further (any that happens to overlap a locus is counted as clock).

    Returns
    -------
    (atac, clock_loci): ``atac`` follows the data contract (CSR float32 counts, ``var`` chrom/start/end,
    ``obs`` cell_type / age, ``uns["genome"]``) with truth in ``var``: ``clock`` (overlaps a locus),
    ``age_sign`` (+1 / -1 planted, 0 none), ``planned_clock`` (placed on a locus); the loci used.
    """
    rng = np.random.default_rng(seed)
    n_peaks = n_clock_peaks + n_other_peaks
    cell_type = rng.integers(n_cell_types, size=n_cells)
    ages = rng.uniform(0, 1, size=n_cells)
    depth = np.exp(rng.normal(0, depth_sd, size=n_cells))

    # peak coordinates and loci
    if clock_loci is None:
        centres = (np.arange(n_peaks) + 1) * 5_000
        chrom = np.array([f"chr{1 + i % 3}" for i in range(n_peaks)], dtype=object)
        start = centres - 250
        peaks = pd.DataFrame({"chrom": chrom, "start": start, "end": start + 500})
        loci = pd.DataFrame({"chrom": chrom[:n_clock_peaks], "start": centres[:n_clock_peaks],
                             "end": centres[:n_clock_peaks] + 2})
    else:
        loci_all = _coords(clock_loci)
        pick = np.sort(rng.choice(len(loci_all), size=n_clock_peaks, replace=False))
        loci = loci_all.iloc[pick].reset_index(drop=True)
        rest = np.setdiff1d(np.arange(len(loci_all)), pick)
        other = loci_all.iloc[np.sort(rng.choice(rest, size=n_other_peaks, replace=len(rest) < n_other_peaks))]
        centres = np.concatenate([loci["start"].to_numpy(), other["start"].to_numpy() + 20_000])
        chrom = np.concatenate([loci["chrom"].to_numpy(), other["chrom"].to_numpy()]).astype(object)
        peaks = pd.DataFrame({"chrom": chrom, "start": centres - 250, "end": centres + 250})
        loci = loci_all
    is_clock_planned = np.arange(n_peaks) < n_clock_peaks

    # rates: logit baseline per (type, peak)
    logit = np.empty((n_cell_types, n_peaks))
    base_clock = rng.normal(-2.0, 0.5, size=n_clock_peaks)
    logit[:, :n_clock_peaks] = base_clock + rng.normal(0, 0.4, size=(n_cell_types, n_clock_peaks))
    home = rng.integers(n_cell_types, size=n_other_peaks)
    logit[:, n_clock_peaks:] = -3.0
    logit[home, n_clock_peaks + np.arange(n_other_peaks)] = -0.5
    sign = np.zeros(n_peaks, dtype=int)
    linked = np.flatnonzero(rng.uniform(size=n_clock_peaks) < age_linked_fraction)
    sign[linked] = np.where(rng.uniform(size=len(linked)) < rising_fraction, 1, -1)
    sign[n_clock_peaks:n_clock_peaks + unlisted_age_peaks] = 1
    eta = logit[cell_type] + age_effect * sign[None, :] * (ages[:, None] - 0.5)
    rate = depth[:, None] / (1 + np.exp(-eta))
    counts = rng.poisson(rate).astype(np.float32)

    qi, _ = vocab.overlap_index(peaks, loci)
    clock = np.zeros(n_peaks, dtype=bool)
    clock[qi] = True
    var = peaks.copy()
    var["clock"] = clock
    var["age_sign"] = sign
    var["planned_clock"] = is_clock_planned
    var.index = vocab.peak_names(peaks)
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{t}" for t in cell_type]), "age": ages,
                        "depth": depth, "batch": pd.Categorical(["b0"] * n_cells)},
                       index=[f"cell{i}" for i in range(n_cells)])
    atac = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var)
    atac.uns["genome"] = "mm10" if clock_loci is not None else "synthetic"
    atac.uns["counts"] = True
    return atac, loci.reset_index(drop=True)
