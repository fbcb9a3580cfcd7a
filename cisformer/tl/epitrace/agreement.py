"""Comparing ages: agreement with a reference overall and per group, partial Spearman beyond depth, age by depth,
the split-half noise ceiling of measured ATAC, and the overlap of age-associated CRE lists.
"""

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ...data import input_error
from .clock import age, clock_peak_mask, clock_reads


# --------------------------------------------------------------------------------------------- comparing ages
def parse_ages(values) -> np.ndarray:
    """Numeric ages from numbers or from labels that start with one (Tabula Muris Senis ``"3m"``, ``"24 months"``).

    The unit is kept as written (``"3m"`` -> 3.0); values without a leading number become NaN.

    Parameters
    ----------
    values
        Numbers or strings, one per cell (e.g. ``adata.obs["age"]``).

    Returns
    -------
    float array, one age per value.
    """
    raw = pd.Series(np.asarray(values, dtype=object))
    numeric = pd.to_numeric(raw, errors="coerce")
    leading = pd.to_numeric(raw.astype(str).str.extract(r"^\s*([-+]?\d*\.?\d+)", expand=False), errors="coerce")
    return numeric.fillna(leading).to_numpy(dtype=float)


def age_groups(ages, *, max_groups: int = 6) -> pd.Series:
    """Groups of chronological age for plots: the distinct ages when there are at most ``max_groups`` (the six ages
    of Tabula Muris Senis), else ``max_groups`` quantile bins labelled ``"low-high"`` (3 significant digits).

    Parameters
    ----------
    ages
        Numeric age per cell (NaN allowed; :func:`parse_ages` reads labels).
    max_groups
        Most groups (fewer quantile bins where quantile edges tie).

    Returns
    -------
    pandas Series (index 0 .. n-1), one group per cell: categorical, ordered from young to old; NaN stays NaN.
    """
    ages = pd.Series(np.asarray(ages, dtype=float))
    if ages.nunique() <= max_groups:
        return pd.Series(pd.Categorical(ages, categories=np.sort(ages.dropna().unique()), ordered=True))
    edges = np.unique(np.nanquantile(ages, np.linspace(0, 1, max_groups + 1)))
    labels = [f"{lo:.3g}-{hi:.3g}" for lo, hi in zip(edges[:-1], edges[1:])]
    return pd.cut(ages, edges, labels=labels, include_lowest=True)


def age_agreement(estimated, reference, *, groups=None, min_cells: int = 10) -> pd.DataFrame:
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


def accessible_clock_loci(atac, clock_loci, *, layer: str | None = None) -> np.ndarray:
    """Per cell, the number of accessible peaks that overlap a clock locus (step 3 of :func:`age`, before any
    peak is dropped): how much clock signal a cell's library holds.

    Parameters
    ----------
    atac, clock_loci, layer
        As in :func:`clock_reads`.

    Returns
    -------
    int array, one count per cell.
    """
    X = atac.layers[layer] if layer is not None else atac.X
    return np.asarray((X[:, np.flatnonzero(clock_peak_mask(atac, clock_loci))] > 0).sum(axis=1)).ravel()


def age_by_depth(atac, clock_loci, keeps, *, reference: str = "age", seed: int = 0, **kwargs) -> pd.DataFrame:
    """How well EpiTrace age recovers a known age as the cells' libraries get shallower.

    For each fraction in ``keeps`` the counts are thinned binomially (:func:`cisformer.data.downsample_atac`, as
    if sequenced less deeply), then EpiTrace age (:func:`age`, ``**kwargs``) is compared with ``obs[reference]``.

    Parameters
    ----------
    atac
        AnnData, cells x peaks, raw integer counts in ``X``, peak coordinates in ``var``, known ages in ``obs``.
    clock_loci
        Clock loci on the peaks' build (:func:`cisformer.data.load_clock_loci`).
    keeps
        Fractions of the counts kept, each in (0, 1] (1: a copy of the full data).
    reference
        ``obs`` column of the known (numeric) age.
    seed
        Seed of the thinning (the same for every fraction).
    **kwargs
        Passed to :func:`age` (not ``inplace``).

    Returns
    -------
    DataFrame, one row per fraction: ``keep``, ``accessible_clock_loci`` (mean per cell,
    :func:`accessible_clock_loci`), ``n_cells`` (cells given an age), ``spearman``, ``p`` (:func:`age_agreement`)
    and ``note``: empty, or why no age could be estimated (too few clock peaks open in enough cells).
    """
    from ...data import downsample_atac

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
    (NaN for r <= -1 or NaN). Average ``r`` over random splits before extrapolating (:func:`split_half_ceiling`).

    Parameters
    ----------
    r
        Correlation of the two halves.

    Returns
    -------
    float, the estimated correlation of two full-length measurements.
    """
    return 2 * r / (1 + r) if r > -1 else float("nan")


def split_half_ceiling(atac, clock_loci, *, seed: int = 0, n_repeats: int = 10, min_clock_reads: float = 10,
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


def compare_ages(ages: pd.DataFrame, reference: str, groups, min_cells: int = 10, *, depth=None) -> pd.DataFrame:
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
    p); a fixed-size list, comparable between methods whatever their power. ``n_top=None``: every tested CRE.

    Parameters
    ----------
    table
        :func:`age_associated_cres` table (index CRE names, column ``p``).
    n_top
        List size, or ``None``.

    Returns
    -------
    pandas Index of CRE names, smallest p first.
    """
    finite = table[np.isfinite(table["p"].to_numpy(dtype=float))]
    return finite.sort_values("p", kind="stable").index[:n_top]


def cre_list_overlap(tables: dict, reference: str, n_top: int, *, q_cutoff: float = 0.05) -> pd.DataFrame:
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
