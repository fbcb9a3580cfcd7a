"""CREs against region sets: a TF gene's top CREs vs the TF's ChIP-seq peaks (Fig 3b-c), and LOLA-style region-set,
motif and TF enrichment of CRE sets against the universe or a matched background (one-sided Fisher, BH q).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .background import matched_random_sets, null_overlap
from .statistics import bh_qvalues, empirical_p, one_sided_ttest, overlap_index

# --------------------------------------------------------------------------------------------- ChIP


def bound_cres(cres: pd.DataFrame, peaks: pd.DataFrame) -> np.ndarray:
    """Boolean per CRE: overlaps at least one peak.

    Parameters
    ----------
    cres, peaks
        Interval tables with ``chrom``, ``start``, ``end`` (0-based half-open).

    Returns
    -------
    bool array, one value per row of ``cres``.
    """
    qi, _ = overlap_index(cres, peaks)
    bound = np.zeros(len(cres), dtype=bool)
    bound[qi] = True
    return bound


def top_cres(scores, n_top: int) -> np.ndarray:
    """Positions of the ``n_top`` highest ``scores`` (ties in input order), the top set :func:`chip_enrichment`
    tests.

    Parameters
    ----------
    scores
        One score per candidate CRE (NaN ranks last).
    n_top
        Size of the top set (at most the number of CREs).

    Returns
    -------
    int array of positions into ``scores``, best first.
    """
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")[: int(min(n_top, len(scores)))]


def chip_enrichment(scores, bound, n_top: int, bins, n_random: int = 1000, seed: int = 0) -> dict:
    """Overlap of the ``n_top`` highest-scoring CREs with ChIP peaks vs matched random CRE sets.

    Parameters
    ----------
    scores
        One score per candidate CRE (e.g. attention toward the TF gene).
    bound
        Boolean per candidate CRE: overlaps a peak (:func:`bound_cres`).
    n_top
        Size of the tested set (:func:`top_cres`).
    bins
        :func:`matching_bins` label per candidate CRE (all zeros: unmatched null). ``scores``, ``bound`` and
        ``bins`` are per candidate CRE, same order.
    n_random, seed
        Number of matched random sets and their seed.

    Returns
    -------
    dict: ``n_top``, ``n_bound_top``, ``frac_top``, ``frac_random`` (mean over the random sets of
    :func:`matched_random_sets`), ``fold``, ``p_empirical`` (one-sided, +1 corrected) and ``null_overlap``.
    """
    scores, bound, bins = np.asarray(scores, dtype=float), np.asarray(bound, dtype=bool), np.asarray(bins)
    if not (len(scores) == len(bound) == len(bins)):
        raise ValueError(f"chip_enrichment: scores ({len(scores)}), bound ({len(bound)}) and bins ({len(bins)}) "
                         "must have one entry per candidate CRE")
    top = top_cres(scores, n_top)
    n_top = len(top)
    observed = bound[top].mean() if n_top else np.nan
    null = bound[matched_random_sets(top, bins, n_random, seed)].mean(1) if n_top else np.zeros(0)
    frac_random = float(null.mean()) if len(null) else np.nan
    return {"n_top": n_top, "n_bound_top": int(bound[top].sum()), "frac_top": float(observed),
            "frac_random": frac_random, "fold": float(observed / frac_random) if frac_random else np.nan,
            "p_empirical": empirical_p(observed, null), "null_overlap": null_overlap(top, bins)}


def bound_vs_unbound(scores, bound) -> dict:
    """Attention of CREs overlapping the TF's peaks vs the others: means and one-sided Welch t-test.

    Parameters
    ----------
    scores
        One attention score per CRE.
    bound
        Boolean per CRE: overlaps the TF's peaks (:func:`bound_cres`).

    Returns
    -------
    dict: ``n_bound``, ``n_unbound``, ``mean_bound``, ``mean_unbound``, ``t`` and ``p`` (bound > unbound).
    """
    scores, bound = np.asarray(scores, dtype=float), np.asarray(bound, dtype=bool)
    t, p = one_sided_ttest(scores[bound], scores[~bound])
    return {"n_bound": int(bound.sum()), "n_unbound": int((~bound).sum()),
            "mean_bound": float(np.nanmean(scores[bound])) if bound.any() else np.nan,
            "mean_unbound": float(np.nanmean(scores[~bound])) if (~bound).any() else np.nan, "t": t, "p": p}

# --------------------------------------------------------------------------------------------- region sets, motifs


_TABLE_COLUMNS = ["cre_set", "region_set", "n_set", "n_set_overlap", "n_background", "n_background_overlap",
                  "frac_set", "frac_background", "odds_ratio", "pvalue", "qvalue"]


def _check_coordinates(caller: str, background: pd.DataFrame) -> None:
    for field in ("chrom", "start", "end"):
        if field not in background:
            raise ValueError(f"{caller}: background lacks '{field}' (pass atac.var with coordinates)")


def _set_backgrounds(caller: str, cre_sets: dict, background: pd.DataFrame, bins, n_matched: int,
                     seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each CRE set's members and background as boolean masks over the ``background`` rows: the rest of the
    universe (``bins`` None), or the union of ``n_matched`` :func:`matched_random_sets` draws minus the set."""
    names = pd.Index(background.index)
    if not names.is_unique:
        raise ValueError(f"{caller}: background CRE names must be unique")
    if bins is not None and len(bins) != len(names):
        raise ValueError(f"{caller}: bins ({len(bins)}) must give one label per background CRE ({len(names)})")
    masks = {}
    for name, cres in cre_sets.items():
        pos = names.get_indexer(pd.Index(list(cres)).unique())
        if (pos < 0).any():
            raise ValueError(f"{caller}: {int((pos < 0).sum())} CREs of set {name!r} are not in the background")
        in_set = np.zeros(len(names), dtype=bool)
        in_set[pos] = True
        if bins is None:
            rest = ~in_set
        else:
            rest = np.zeros(len(names), dtype=bool)
            if len(pos):
                rest[np.unique(matched_random_sets(pos, bins, n_matched, seed))] = True
            rest &= ~in_set
        masks[name] = (in_set, rest)
    return masks


def _fisher_table(masks: dict, annotation: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """The shared core of :func:`region_set_enrichment` and :func:`motif_enrichment`: for each CRE set (``masks``
    of :func:`_set_backgrounds`) and annotation (column of the boolean background CREs x annotations matrix,
    named by ``labels``), the 2 x 2 table, one-sided Fisher p-value (hypergeometric upper tail), sample odds
    ratio, and Benjamini-Hochberg q over all rows."""
    annotation = np.asarray(annotation, dtype=bool)          # background CREs x annotations
    frames = []
    for name, (in_set, rest) in masks.items():
        a = annotation[in_set].sum(0).astype(np.int64)          # set CREs with the annotation
        c = annotation[rest].sum(0).astype(np.int64)            # background CREs with it
        b, d = int(in_set.sum()) - a, int(rest.sum()) - c
        n_total = a + b + c + d
        with np.errstate(invalid="ignore", divide="ignore"):
            p = stats.hypergeom.sf(a - 1, n_total, a + c, a + b)
            p = np.where((a + b > 0) & (n_total > 0), np.clip(p, 0.0, 1.0), np.nan)
            odds = np.where(b * c > 0, (a * d) / (b * c), np.where(a * d > 0, np.inf, np.nan))
            frac_set = np.where(a + b > 0, a / (a + b), np.nan)
            frac_background = np.where(c + d > 0, c / (c + d), np.nan)
        frames.append(pd.DataFrame({"cre_set": name, "region_set": labels, "n_set": a + b, "n_set_overlap": a,
                                    "n_background": c + d, "n_background_overlap": c, "frac_set": frac_set,
                                    "frac_background": frac_background, "odds_ratio": odds, "pvalue": p}))
    if frames and len(labels):
        table = pd.concat(frames, ignore_index=True)
    else:
        table = pd.DataFrame(columns=_TABLE_COLUMNS[:-1])
    table["qvalue"] = bh_qvalues(table["pvalue"]) if len(table) else np.zeros(0)
    return table


def region_set_enrichment(cre_sets: dict, region_sets: dict, background: pd.DataFrame, bins=None,
                          n_matched: int = 10, seed: int = 0) -> pd.DataFrame:
    """LOLA-style enrichment of CRE sets in region sets (ChIP-seq peaks, DNase peaks, ...): one-sided Fisher test.

    For each CRE set and region set, the 2 x 2 table counts the set's CREs and the background CREs that overlap
    (>= 1 bp, :func:`bound_cres`) at least one region; the p-value is the one-sided Fisher exact test of more
    overlap in the set than in the background (hypergeometric upper tail), q-values are Benjamini-Hochberg over
    all set x region-set tests (:func:`bh_qvalues`). :func:`motif_enrichment` is the same test with motif
    occurrences in place of overlaps; :func:`tf_enrichment` runs both.

    Parameters
    ----------
    cre_sets
        Name -> CRE names (index labels of ``background``), e.g. each cell type's specific CREs
        (:func:`cisformer.tl.regulators.celltype_cres`, ``specific`` rows).
    region_sets
        Name -> DataFrame with ``chrom``, ``start``, ``end`` (0-based half-open), e.g.
        :func:`cisformer.data.load_chip_peaks` (``by="tf"`` or ``by="dataset"``).
    background
        The candidate universe: DataFrame indexed by CRE name with ``chrom``, ``start``, ``end`` (e.g.
        ``atac.var``); every set must lie in it.
    bins
        ``None`` (default): the background is the whole universe, set included (as LOLA's universe). Otherwise a
        bin label per background CRE (:func:`matching_bins` of :func:`matching_covariates`, same order): each
        set's background is the union of ``n_matched`` :func:`matched_random_sets` draws with the set's
        accessibility x width composition, minus the set itself (a background matched on accessibility).
    n_matched, seed
        Number of matched random sets pooled into a matched background, and their seed.

    Returns
    -------
    One row per (CRE set, region set): ``cre_set``, ``region_set``, ``n_set``, ``n_set_overlap``,
    ``n_background`` (background CREs outside the set), ``n_background_overlap``, ``frac_set``,
    ``frac_background``, ``odds_ratio`` (sample odds ratio of the 2 x 2 table; inf when the set-absent cells are
    empty), ``pvalue``, ``qvalue``.
    """
    _check_coordinates("region_set_enrichment", background)
    masks = _set_backgrounds("region_set_enrichment", cre_sets, background, bins, n_matched, seed)
    cres = background[["chrom", "start", "end"]]
    overlaps = np.zeros((len(background), len(region_sets)), dtype=bool)
    for k, regions in enumerate(region_sets.values()):
        overlaps[:, k] = bound_cres(cres, regions)
    return _fisher_table(masks, overlaps, list(region_sets))


def motif_enrichment(cre_sets: dict, background: pd.DataFrame, genome_fasta, motifs=None, pvalue: float = 1e-4,
                     bins=None, n_matched: int = 10, seed: int = 0) -> pd.DataFrame:
    """Enrichment of CRE sets in TF motif occurrences: the one-sided Fisher test of :func:`region_set_enrichment`,
    a CRE being annotated when it holds at least one hit of the motif on either strand
    (:func:`cisformer.tl.motifs.scan`).

    The hits are called at ``pvalue`` per position and strand against the strand-symmetric base composition of
    the whole background (:func:`cisformer.tl.motifs.base_composition`); only the CREs of the sets and of their
    backgrounds are scanned. A GC-rich set (promoters, CpG islands) holds more GC-rich motif hits by composition
    alone: match the background on GC too, with ``bins`` from
    ``matching_bins(cov["accessibility"], cov["width"], gc=cov["gc"])`` where
    ``cov = matching_covariates(atac, genome_fasta=genome_fasta)``.

    Parameters
    ----------
    cre_sets
        Name -> CRE names (index labels of ``background``).
    background
        The candidate universe: DataFrame indexed by CRE name with ``chrom``, ``start``, ``end`` (e.g.
        ``atac.var``).
    genome_fasta
        Path of the genome FASTA of the CREs' build (:func:`cisformer.tl.motifs.cre_sequences`).
    motifs
        :class:`cisformer.tl.motifs.Motif` objects or the dict of :func:`cisformer.tl.motifs.read_jaspar` (default: the
        shipped JASPAR 2024 CORE vertebrates, 879 motifs; ``read_jaspar(names=[...])`` selects TFs).
    pvalue
        Per-position p-value of a motif hit (:func:`cisformer.tl.motifs.score_threshold`).
    bins, n_matched, seed
        The background of each set, as in :func:`region_set_enrichment`.

    Returns
    -------
    The columns of :func:`region_set_enrichment`, ``region_set`` naming the motif (``"MA0080.7 Spi1"``) and the
    ``*_overlap`` counts being CREs with >= 1 hit; one row per (CRE set, motif).
    """
    from .. import motifs as motif_scan

    _check_coordinates("motif_enrichment", background)
    masks = _set_backgrounds("motif_enrichment", cre_sets, background, bins, n_matched, seed)
    motifs = motif_scan.read_jaspar() if motifs is None else motifs
    motifs = list(motifs.values()) if isinstance(motifs, dict) else list(motifs)
    sequences = motif_scan.cre_sequences(background, genome_fasta)
    composition = motif_scan.base_composition(sequences)
    needed = np.zeros(len(background), dtype=bool)
    for in_set, rest in masks.values():
        needed |= in_set | rest
    hits = np.zeros((len(background), len(motifs)), dtype=bool)
    rows = np.flatnonzero(needed)
    hits[rows] = motif_scan.scan([sequences[i] for i in rows], motifs, pvalue, background=composition)
    return _fisher_table(masks, hits, [m.label for m in motifs])


def tf_enrichment(cre_sets: dict, background: pd.DataFrame, *, region_sets: dict | None = None, genome_fasta=None,
                  motifs=None, pvalue: float = 1e-4, bins=None, n_matched: int = 10, seed: int = 0) -> pd.DataFrame:
    """TF enrichment of CRE sets from whichever evidence is given: overlap with region sets (ChIP-seq peaks,
    :func:`region_set_enrichment`) and / or motif occurrences in the genome sequence (:func:`motif_enrichment`),
    against the same backgrounds (same ``bins``, ``n_matched``, ``seed``).

    Parameters
    ----------
    cre_sets, background, bins, n_matched, seed
        As in :func:`region_set_enrichment`.
    region_sets
        Name -> regions, as in :func:`region_set_enrichment`; ``None``: no region-set test.
    genome_fasta, motifs, pvalue
        As in :func:`motif_enrichment`; ``genome_fasta=None``: no motif test (``motifs`` must then be None). At
        least one of ``region_sets`` and ``genome_fasta`` is needed.

    Returns
    -------
    The rows of both tables with a first column ``annotation`` (``"region set"`` or ``"motif"``); ``qvalue`` is
    Benjamini-Hochberg over all rows (one family of tests).
    """
    if region_sets is None and genome_fasta is None:
        raise ValueError("tf_enrichment: give region_sets (e.g. cisformer.data.load_chip_peaks) and / or "
                         "genome_fasta (motif enrichment)")
    if motifs is not None and genome_fasta is None:
        raise ValueError("tf_enrichment: motifs need the genome sequence; pass genome_fasta")
    tables = []
    if region_sets is not None:
        table = region_set_enrichment(cre_sets, region_sets, background, bins, n_matched, seed)
        tables.append(table.assign(annotation="region set"))
    if genome_fasta is not None:
        table = motif_enrichment(cre_sets, background, genome_fasta, motifs, pvalue, bins, n_matched, seed)
        tables.append(table.assign(annotation="motif"))
    table = pd.concat(tables, ignore_index=True)[["annotation"] + _TABLE_COLUMNS]
    table["qvalue"] = bh_qvalues(table["pvalue"]) if len(table) else np.zeros(0)
    return table
