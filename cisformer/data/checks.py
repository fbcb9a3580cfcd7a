"""Checks of paired input data. Every failure is an :class:`InputError` naming the file, the field and the fix:
counts that are not integers, ATAC values, barcodes that do not pair, duplicated names, the wrong genome build
(and lifting peaks to the right one).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .datasets import load_cre_vocabulary, reference_path
from .errors import input_error
from .vocab import (PEAK_NAME_FORMS, chrom_style, genome_overlap_score, intervals, liftover, normalize_chroms,
                    overlap_share, parse_peak_names, peak_names)


# ------------------------------------------------------------------------------------------------ validation
def is_integer_matrix(X) -> bool:
    """Whether a matrix holds raw counts: every stored value finite, non-negative and integral.

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix (of a sparse one, only the stored values are tested).

    Returns
    -------
    bool; ``True`` also for a matrix without stored values.
    """
    data = X.data if sp.issparse(X) else np.asarray(X)
    return bool(np.all(np.isfinite(data)) and np.all(data == np.round(data)) and (data.size == 0 or data.min() >= 0))


COUNT_LAYERS = ("counts", "raw_counts", "raw")
ATAC_RULE = "ATAC values are read as open (1) where > 0 and closed (0) elsewhere: counts, binary or normalised alike (the paper's rule)"


def describe_values(X) -> dict:
    """What a matrix holds: ``n`` stored values, ``max``, ``n_nan``, ``n_inf``, ``n_negative`` and
    ``share_non_integer`` (of the finite non-zero values).

    Parameters
    ----------
    X
        Dense array or scipy sparse matrix (of a sparse one, the stored values).

    Returns
    -------
    dict with the keys above: ``n``, ``n_nan``, ``n_inf``, ``n_negative`` int; ``max`` float (of the finite values,
    NaN when there are none); ``share_non_integer`` float in [0, 1].
    """
    data = np.asarray(X.data if sp.issparse(X) else X, dtype=np.float64).ravel()
    finite = data[np.isfinite(data)]
    nonzero = finite[finite != 0]
    return {"n": int(data.size), "max": float(finite.max()) if finite.size else float("nan"),
            "n_nan": int(np.isnan(data).sum()), "n_inf": int(np.isinf(data).sum()), "n_negative": int((finite < 0).sum()),
            "share_non_integer": float((nonzero != np.round(nonzero)).mean()) if nonzero.size else 0.0}


def _values_text(stats: dict) -> str:
    return (f"max {stats['max']:.4g}, {stats['share_non_integer']:.1%} of the non-zero values are not integers, "
            f"{stats['n_negative']} negative, {stats['n_nan']} NaN, {stats['n_inf']} inf")


def recover_counts(X, rtol: float = 1e-3):
    """Invert size-normalised (optionally log1p-transformed) values back to integer counts, exactly or not at all.

    Per cell: ``expm1`` (for log1p values; plain values are tried second), then divide by the cell's smallest
    non-zero value, which is taken as a count of 1. Accepted only when every value of every cell is then an
    integer within ``rtol`` (relative); scaled, regressed, batch-corrected or otherwise transformed values fail.
    A cell whose smallest count is not 1 cannot be told from one with counts divided by that number: scRNA-seq
    cells almost always have genes seen once.

    Parameters
    ----------
    X
        Cells x genes matrix, dense or sparse (e.g. ``adata.X`` after ``normalize_total`` / ``log1p``).
    rtol
        Relative tolerance of the integrality test.

    Returns
    -------
    (counts, how, worst): ``counts`` CSR float32 (``None`` when no transform is exact), ``how`` ``"log1p"`` or
    ``"normalised"`` (the transform that inverted, or ``None``), ``worst`` the share of non-integral values of the
    best attempt.
    """
    X = sp.csr_matrix(X, dtype=np.float64)
    stats = describe_values(X)
    if X.nnz == 0 or stats["n_nan"] or stats["n_inf"] or stats["n_negative"]:
        return None, None, 1.0
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    best = 1.0
    for how, transform in (("log1p", np.expm1), ("normalised", lambda v: v)):
        values = transform(X.data)
        smallest = np.full(X.shape[0], np.inf)
        positive = values > 0
        np.minimum.at(smallest, rows[positive], values[positive])
        scaled = np.where(positive, values / smallest[rows], 0.0)
        off = np.abs(scaled - np.round(scaled)) > rtol * np.maximum(scaled, 1.0)
        best = min(best, float(off.mean()))
        if not off.any():
            counts = sp.csr_matrix((np.round(scaled).astype(np.float32), X.indices.copy(), X.indptr.copy()), shape=X.shape)
            counts.eliminate_zeros()
            return counts, how, 0.0
    return None, None, best


def find_counts(adata, source="rna", *, recover: bool = False, rtol: float = 1e-3):
    """The RNA raw counts of ``adata``, wherever scverse users keep them, or a clear error.

    Looks in ``X``, then ``layers["counts"]`` (also ``"raw_counts"``, ``"raw"``), then ``.raw``; with ``recover``
    it then tries to invert log1p / size-normalised ``X`` exactly (:func:`recover_counts`). Never floors or rounds
    values that are not counts.

    Parameters
    ----------
    adata
        Cells x genes AnnData.
    source
        File name used in messages.
    recover
        Try :func:`recover_counts` on ``X`` when no counts are stored (CLI ``--recover-counts``).
    rtol
        Relative tolerance of the recovery's integrality test.

    Returns
    -------
    (adata, note): an AnnData with the counts in ``X`` (CSR float32; ``adata`` itself when ``X`` already holds
    them, else a new object with ``uns["counts_source"]``) and one sentence saying where the counts were found.

    Raises
    ------
    InputError
        No counts anywhere: states what ``X`` holds (max, share of non-integers, negatives, NaN) and the fix.
    """
    if is_integer_matrix(adata.X) and describe_values(adata.X)["n"]:
        return adata, "RNA raw counts found in X"
    candidates = [(f"layers['{key}']", adata.layers[key]) for key in COUNT_LAYERS if key in adata.layers]
    if adata.raw is not None:
        candidates.append((".raw.X", None))
    for where, X in candidates:
        if where == ".raw.X":
            if not is_integer_matrix(adata.raw.X):
                continue
            out = adata.raw.to_adata()
            out.uns.update(adata.uns)
            extra = f" ({out.n_vars} genes of .raw; X had {adata.n_vars})" if out.n_vars != adata.n_vars else ""
        else:
            if not is_integer_matrix(X):
                continue
            out = adata.copy()
            out.X = X
            extra = ""
        out.X = sp.csr_matrix(out.X, dtype=np.float32)
        out.uns["counts"] = True
        out.uns["counts_source"] = where
        return out, f"RNA raw counts found in {where}{extra} (X held other values)"
    stats = describe_values(adata.X)
    counts, how, worst = recover_counts(adata.X, rtol) if stats["n"] else (None, None, 1.0)
    if counts is not None and recover:
        out = adata.copy()
        out.X = counts
        out.uns["counts"] = True
        out.uns["counts_source"] = f"recovered from {how} X"
        return out, (f"RNA counts recovered exactly from {how}-normalised X (per cell: "
                     f"{'expm1, ' if how == 'log1p' else ''}divided by the smallest non-zero value; every value "
                     f"integral within {rtol:g})")
    looked = ", ".join(["X"] + [w for w, _ in candidates]) + ("" if candidates else "; there is no layers['counts'] or .raw")
    if counts is not None:
        fix = (f"the values are {how}-normalised counts that invert exactly: cisformer preprocess --recover-counts (CLI) or "
               "recover_counts=True (API), or store the raw counts in layers['counts']")
    elif stats["n_nan"] or stats["n_inf"] or stats["n_negative"]:
        fix = ("pass the raw counts (layers['counts'] or .raw of your object, or the Cell Ranger matrix); NaN, inf "
               "or negative values (scaled / regressed data) cannot be turned back into counts")
    else:
        fix = ("pass the raw counts (layers['counts'] or .raw of your object, or the Cell Ranger matrix); "
               f"--recover-counts / recover_counts=True was tried and cannot invert these values ({worst:.1%} "
               "non-integral after expm1 and division by each cell's smallest value)")
    raise input_error(source, "X", f"RNA values are not raw counts ({_values_text(stats)}; looked in {looked})", fix)


def check_atac_values(atac, source="atac") -> str:
    """Raise :class:`InputError` when ATAC holds NaN, inf or negative values; else return the binarisation note.

    Parameters
    ----------
    atac
        Cells x peaks (or CREs) AnnData.
    source
        File name used in messages.

    Returns
    -------
    str: :data:`ATAC_RULE`, the sentence saying how ATAC values are read (open where > 0).
    """
    stats = describe_values(atac.X)
    if stats["n_nan"] or stats["n_inf"] or stats["n_negative"]:
        raise input_error(source, "X", f"ATAC matrix has {stats['n_nan']} NaN, {stats['n_inf']} inf and "
                     f"{stats['n_negative']} negative value(s)",
                     "pass counts or binary accessibility (values > 0 mean open), not centred or scaled values; "
                     "replace missing values by 0")
    return ATAC_RULE


def pair_cells(rna, atac, rna_source="rna", atac_source="atac"):
    """Keep the cells present in both modalities, in RNA order.

    Raises :class:`InputError` for duplicated barcodes or when the modalities share no cell (with examples of both
    sides, e.g. a '-1' suffix on one side only).

    Parameters
    ----------
    rna, atac
        AnnData of the two modalities, matched by ``obs_names`` (barcodes).
    rna_source, atac_source
        File names used in messages.

    Returns
    -------
    (rna, atac, note): the two AnnData with the same cells in the same order (copies when cells were dropped or
    reordered, else the inputs) and a sentence counting the cells kept and dropped.
    """
    for adata, source, kind in ((rna, rna_source, "RNA"), (atac, atac_source, "ATAC")):
        check_unique_names(adata, source, kind)
    common = rna.obs_names.intersection(atac.obs_names, sort=False)
    if len(common) == 0:
        raise input_error(f"{rna_source} / {atac_source}", "obs_names (barcodes)",
                     f"RNA and ATAC share no cell name (RNA e.g. {list(rna.obs_names[:2])}, ATAC e.g. "
                     f"{list(atac.obs_names[:2])})", "pass the two modalities of the same cells; make the barcodes "
                     "match (e.g. strip or add a suffix such as '-1' or a sample prefix)")
    only_r, only_a = rna.n_obs - len(common), atac.n_obs - len(common)
    if only_r or only_a:
        rna, atac = rna[common].copy(), atac[common].copy()
    elif not rna.obs_names.equals(atac.obs_names):
        atac = atac[rna.obs_names].copy()
    return rna, atac, f"{len(common)} cells in both modalities ({only_r} only in RNA and {only_a} only in ATAC dropped)"


def check_unique_names(adata, source="data", kind="RNA") -> None:
    """Raise :class:`InputError` naming a few duplicated cell (obs) or feature (var) names of ``adata``.

    Parameters
    ----------
    adata
        AnnData to check.
    source
        File name used in messages.
    kind
        Modality named in messages (``"RNA"``, ``"ATAC"``).
    """
    for axis, names, fix in (("obs_names (barcodes)", adata.obs_names, "adata.obs_names_make_unique() or fix the barcodes"),
                             ("var_names (features)", adata.var_names,
                              "adata.var_names_make_unique() (genes: or index by Ensembl id; peaks: merge duplicates)")):
        if not names.is_unique:
            dup = names[names.duplicated()].unique()
            raise input_error(source, axis, f"{len(dup)} duplicated {kind} name(s), e.g. {list(dup[:3])}", fix)


def validate_pair(rna, atac, rna_source="rna", atac_source="atac", *, require_counts: bool = True, cre_vocabulary=None,
                  allow_empty_cells: bool = False) -> dict:
    """Check a paired dataset; raise :class:`InputError` naming file, field and fix at the first problem.

    Checks: identical barcodes in both modalities (same order), RNA raw counts when ``require_counts`` (the error
    says what ``X`` holds, whether ``layers["counts"]`` / ``.raw`` hold counts, and whether ``--recover-counts``
    can invert it: :func:`find_counts`), no NaN / inf / negative ATAC values (ATAC is binarised as > 0),
    parseable and unique peak names, unique gene names, no empty cells (unless ``allow_empty_cells``: QC removes
    them) or features, and, when ``cre_vocabulary`` is given (a chrom/start/end frame, or
    ``"hg38"``/``"human"``/``"mm39"``/``"mouse"``), that the peaks are on that vocabulary's genome build and
    species (:func:`check_genome`).

    Parameters
    ----------
    rna, atac
        Paired AnnData: cells x genes, cells x peaks (peak names ``chrom:start-end``).
    rna_source, atac_source
        File names used in messages.
    require_counts
        Require raw RNA counts in ``X``.
    cre_vocabulary
        ``None`` (no genome check), a vocabulary name or a chrom/start/end frame, as above.
    allow_empty_cells
        Accept cells without counts (e.g. before :func:`cisformer.data.qc`).

    Returns
    -------
    dict: ``atac_values`` (how ATAC values are read) and, with ``cre_vocabulary``, ``genome_overlap`` (the report
    of :func:`check_genome`).
    """
    report = {}
    r_names, a_names = pd.Index(rna.obs_names), pd.Index(atac.obs_names)
    if not r_names.equals(a_names):
        only_r, only_a = r_names.difference(a_names), a_names.difference(r_names)
        if len(only_r) or len(only_a):
            example = (list(only_r[:3]) or list(only_a[:3]))
            raise input_error(f"{rna_source} / {atac_source}", "obs_names (barcodes)",
                         f"barcodes differ between modalities: {len(only_r)} only in RNA, {len(only_a)} only in ATAC "
                         f"(e.g. {example})", "keep the shared cells: rna, atac, note = cisformer.data.pair_cells(rna, "
                         "atac) (check barcode suffixes such as '-1')")
        raise input_error(f"{rna_source} / {atac_source}", "obs_names (barcodes)", "same barcodes in a different order",
                     "reorder: atac = atac[rna.obs_names]")
    for adata, source, kind in ((rna, rna_source, "RNA"), (atac, atac_source, "ATAC")):
        if not adata.obs_names.is_unique:
            raise input_error(source, "obs_names (barcodes)", f"{kind} barcodes are duplicated", "adata.obs_names_make_unique()")
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise input_error(source, "X", f"{kind} matrix is empty ({adata.n_obs} cells x {adata.n_vars} features)", "check the file")
        if kind == "ATAC":
            report["atac_values"] = check_atac_values(adata, source)
        elif require_counts and not is_integer_matrix(adata.X):
            found, note = find_counts(adata, source)  # raises, saying what X holds and the fix
            raise input_error(source, "X", f"RNA values in X are not raw counts, but {note.split(' found in ')[1]}",
                         "use them: rna, note = cisformer.data.find_counts(rna) (read_paired and cisformer preprocess "
                         "do it)")
        per_cell = np.asarray(adata.X.sum(axis=1)).ravel()
        if (per_cell == 0).any() and not allow_empty_cells:
            raise input_error(source, "X (cells)", f"{int((per_cell == 0).sum())} cell(s) have no {kind} counts "
                         f"(e.g. {list(adata.obs_names[per_cell == 0][:3])})", "filter them: cisformer.data.qc(rna, atac)")
        per_feature = np.asarray((adata.X != 0).sum(axis=0)).ravel()
        if (per_feature == 0).all():
            raise input_error(source, "X (features)", f"every {kind} feature is empty", "check the file")
    if not rna.var_names.is_unique:
        dup = rna.var_names[rna.var_names.duplicated()].unique()
        raise input_error(rna_source, "var_names (genes)", f"{len(dup)} duplicated gene name(s), e.g. {list(dup[:3])}",
                     "rna.var_names_make_unique() or index genes by Ensembl id")
    try:
        coords = parse_peak_names(atac.var_names)
    except ValueError as err:
        raise input_error(atac_source, "var_names (peaks)", str(err),
                     f"name peaks in one of the forms {PEAK_NAME_FORMS} (0-based, half-open), or read the files "
                     "with cisformer.data.read_paired, which also reads var columns chrom/start/end") from None
    if not atac.var_names.is_unique or coords.duplicated().any():
        dup = atac.var_names[coords.duplicated().to_numpy()].unique()
        raise input_error(atac_source, "var_names (peaks)", f"{len(dup)} duplicated peak(s), e.g. {list(dup[:3])}",
                     "merge duplicated peaks (sum their counts) or drop them")
    if cre_vocabulary is not None:
        report["genome_overlap"] = check_genome(coords, cre_vocabulary, atac_source)
    return report


# ------------------------------------------------------------------------------------------------ genome build and species
LIFTOVER = {"hg19": ("chain_hg19_hg38", "hg38"), "hg38": ("chain_hg38_hg19", "hg19")}  # from build: (chain, to build)
SPECIES = {"hg38": "human", "hg19": "human", "mm39": "mouse", "mm10": "mouse"}
_HUMAN_ONLY = {"chr20", "chr21", "chr22"}


def lift_peaks(atac, from_build: str, source="atac"):
    """Lift the peaks of ``atac`` with the shipped UCSC chain (``"hg19"`` -> hg38 or ``"hg38"`` -> hg19).

    Peaks that do not lift (see :func:`cisformer.data.vocab.liftover`) are dropped, as are peaks that land on the same
    interval as an earlier one.

    Parameters
    ----------
    atac
        Cells x peaks AnnData (var chrom/start/end or peak names ``chrom:start-end``).
    from_build
        Build of the peaks: ``"hg19"`` or ``"hg38"``.
    source
        File name used in messages.

    Returns
    -------
    (atac_lifted, note): a copy holding the lifted peaks (var chrom/start/end, names ``chrom:start-end``,
    ``uns["genome"]`` the target build) and a sentence saying how many peaks failed to lift.
    """
    if from_build not in LIFTOVER:
        raise input_error(source, "liftover", f"no shipped chain from {from_build!r}", f"use one of {sorted(LIFTOVER)}")
    key, to_build = LIFTOVER[from_build]
    coords = intervals(atac).reset_index(drop=True)
    lifted = liftover(coords, reference_path(key))
    lifted = lifted[~lifted.duplicated(["chrom", "start", "end"])]
    if lifted.empty:
        raise input_error(source, "var (peak coordinates)", f"none of {len(coords)} peaks lifts from {from_build} to {to_build}",
                     f"check that the peaks are on {from_build} and chromosomes are named 'chrN'")
    out = atac[:, lifted["orig_index"].to_numpy()].copy()
    var = pd.DataFrame({"chrom": lifted["chrom"].to_numpy(), "start": lifted["start"].to_numpy(np.int64),
                        "end": lifted["end"].to_numpy(np.int64)})
    var.index = peak_names(var)
    out.var = var
    out.uns["genome"] = to_build
    failed = len(coords) - len(lifted)
    return out, (f"lifted {len(lifted)} of {len(coords)} peaks {from_build} -> {to_build} with the shipped UCSC chain; "
                 f"{failed} ({failed / len(coords):.1%}) failed to lift (or landed on a lifted peak) and were dropped")


def _species_of(chroms) -> str | None:
    """``"human"`` when chr20-22 are present, ``"mouse"`` when >= 10 autosomes and none above 19, else None."""
    names, _ = normalize_chroms(pd.unique(np.asarray(chroms, dtype=object)))
    names = set(names)
    if names & _HUMAN_ONLY:
        return "human"
    autosomes = {int(c[3:]) for c in names if c[3:].isdigit()}
    return "mouse" if len(autosomes) >= 10 and max(autosomes) <= 19 else None


def check_genome(peaks, cre_vocabulary, source="atac", *, sample: int = 2_000, seed: int = 0) -> dict:
    """Are the peaks on the CRE vocabulary's genome build and species? Raise :class:`InputError` if not.

    Measures the share of peaks overlapping the vocabulary against randomly shifted peaks
    (:func:`cisformer.data.vocab.genome_overlap_score`), and the share of a seeded sample of ``sample`` peaks that
    overlap after lifting them with each shipped chain towards the vocabulary's build (hg19 -> hg38, hg38 -> hg19;
    both for a vocabulary of unknown build). Errors: another build fits clearly better (names it and
    ``--liftover BUILD`` / :func:`lift_peaks`); human peaks on the mouse vocabulary or the reverse (chromosome
    names, or a fit to the other species' vocabulary); chromosome names in another style (``1`` vs ``chr1``);
    no fit at all.

    Parameters
    ----------
    peaks
        AnnData of peaks, chrom/start/end frame or peak names.
    cre_vocabulary
        ``"human"``/``"hg38"``, ``"mouse"``/``"mm39"``, or a chrom/start/end frame (``attrs["genome"]`` its build).
    source
        File name used in messages.
    sample
        Number of peaks lifted for the build test.
    seed
        Seed of the peak sample.

    Returns
    -------
    dict: ``build``, the overlap score (``observed``, ``null``, ``ratio``, ``matches``) and
    ``overlap_after_<from>_to_<to>`` per chain tried.
    """
    if isinstance(cre_vocabulary, str):
        cre_vocabulary = load_cre_vocabulary(cre_vocabulary)
    build = cre_vocabulary.attrs.get("genome")
    label = build or "the chosen"
    p = intervals(peaks).reset_index(drop=True)
    score = genome_overlap_score(p, cre_vocabulary)
    report = {"build": build, **score}
    field = "var (peak coordinates / genome build)"
    found = f"peaks overlap the {label} CRE vocabulary in {score['observed']:.0%} of cases vs {score['null']:.0%} for randomly shifted peaks"
    if chrom_style(p["chrom"]) != chrom_style(cre_vocabulary["chrom"]):
        raise input_error(source, field, f"{found}: chromosome names differ (peaks e.g. {p['chrom'].iloc[0]!r}, vocabulary "
                     f"e.g. {cre_vocabulary['chrom'].iloc[0]!r})",
                     "rename chromosomes (cisformer.data.vocab.normalize_chroms; read_paired and cisformer "
                     "preprocess do it)")
    species, vocab_species = _species_of(p["chrom"]), SPECIES.get(build)
    if species and vocab_species and species != vocab_species:
        raise input_error(source, field, f"{found}: the peaks are {species} (chromosomes "
                     f"{', '.join(sorted(set(normalize_chroms(p['chrom'])[0]) & _HUMAN_ONLY)) or 'chr1-chr19 only'}) "
                     f"but the vocabulary is {vocab_species} ({build}): species mismatch",
                     f"use the {species} vocabulary (--cre-vocabulary {species}) or a model / vocabulary of your species")
    rows = np.sort(np.random.default_rng(seed).choice(len(p), min(sample, len(p)), replace=False))
    part = p.iloc[rows].reset_index(drop=True)
    as_is = overlap_share(part, cre_vocabulary)
    for from_build, (key, to_build) in LIFTOVER.items():
        if build is not None and to_build != build:
            continue
        try:
            lifted = liftover(part, reference_path(key))
        except ImportError:  # pragma: no cover - pyliftover is in the 'liftover' extra that run_all.sh installs
            report["liftover_check"] = "skipped: pip install pyliftover"
            continue
        if len(lifted) < len(part) / 2:
            continue
        after = overlap_share(lifted, cre_vocabulary)
        report[f"overlap_after_{from_build}_to_{to_build}"] = after
        if after >= as_is + 0.1 and after >= 1.3 * as_is:
            raise input_error(source, field, f"{found}; after lifting {len(part)} of them {from_build} -> {to_build}, "
                         f"{after:.0%} overlap (vs {as_is:.0%} as they are): the peaks are most likely on {from_build}",
                         f"lift them: cisformer preprocess ... --liftover {from_build} (API: "
                         f"atac, note = cisformer.data.lift_peaks(atac, '{from_build}'))")
    if not score["matches"]:
        other = {"human": "mouse", "mouse": "human"}.get(vocab_species)
        if other is not None:
            other_score = genome_overlap_score(p, load_cre_vocabulary(other))
            report[f"overlap_{other}"] = other_score["observed"]
            if other_score["matches"]:
                raise input_error(source, field, f"{found}, but {other_score['observed']:.0%} overlap the {other} vocabulary: "
                             f"the peaks are {other}, the vocabulary {vocab_species}: species mismatch",
                             f"use --cre-vocabulary {other} (API: cre_vocabulary='{other}')")
        fix = ("lift the peaks to the vocabulary's build (--liftover hg19 for hg19 peaks, or "
               "cisformer.data.vocab.liftover with a UCSC chain), or use the vocabulary of your genome")
        if vocab_species == "mouse":
            fix = (f"lift the peaks to {build} (e.g. mm10 peaks with UCSC's mm10ToMm39.over.chain.gz and "
                   "cisformer.data.vocab.liftover; no mouse chain is shipped), or keep your own peaks as the "
                   "vocabulary (omit --cre-vocabulary)")
        raise input_error(source, field, f"{found}: the peaks are not on the {label} build", fix)
    return report
