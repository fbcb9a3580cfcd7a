"""Gene and CRE vocabularies: interval overlap on sorted arrays, peak -> CRE mapping, gene mapping, liftover.

Intervals are 0-based half-open ``[start, end)`` (BED). Two intervals overlap when they share >= 1 bp, so
``chr1:0-100`` and ``chr1:100-200`` touch but do not overlap.

Everything works per chromosome on numpy arrays (``searchsorted``); peaks are mapped onto CREs through a sparse
peaks x CREs incidence matrix, so a cells x CREs matrix is never dense::

    cres = cisformer.data.load_cre_vocabulary("human")
    atac_cre = map_peaks_to_cres(atac, cres)        # cells x 1,033,239, CSR
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import scipy.sparse as sp

_PEAK_NAME = re.compile(r"^(?P<chrom>[^:\s]+?)[:_-](?P<start>\d+)[-_](?P<end>\d+)$")
PEAK_NAME_FORMS = "'chr1:100-200', 'chr1-100-200', 'chr1_100_200', '1:100-200' or '1-100-200'"
_BARE_CHROM = re.compile(r"^(\d{1,2}|X|Y|M|MT)$")


# ------------------------------------------------------------------------------------------------ interval helpers
def parse_peak_names(names) -> pd.DataFrame:
    """Parse peak names into a chrom/start/end frame.

    Accepted forms: ``chr1:100-200``, ``chr1-100-200``, ``chr1_100_200``, ``1:100-200``, ``1-100-200`` (the
    chromosome is kept as written; :func:`normalize_chroms` adds the ``chr`` prefix). Raises ``ValueError`` listing
    the first names that do not parse or have ``end <= start``, with examples of the accepted forms.

    Parameters
    ----------
    names
        Peak names (list, array or Index, e.g. ``atac.var_names``).

    Returns
    -------
    DataFrame indexed by the names, columns ``chrom`` (str), ``start``, ``end`` (int64, 0-based half-open).
    """
    names = pd.Index(names).astype(str)
    parts = names.str.extract(_PEAK_NAME.pattern)
    bad = parts["chrom"].isna().to_numpy()
    starts = pd.to_numeric(parts["start"], errors="coerce").to_numpy()
    ends = pd.to_numeric(parts["end"], errors="coerce").to_numpy()
    bad |= ~(ends > starts)
    if bad.any():
        examples = ", ".join(repr(n) for n in names[bad][:5])
        raise ValueError(f"{bad.sum()} of {len(names)} peak name(s) do not parse as 'chrom:start-end' with end > start: "
                         f"{examples} (accepted forms: {PEAK_NAME_FORMS}, or var columns chrom/start/end)")
    return pd.DataFrame({"chrom": parts["chrom"].to_numpy(), "start": starts.astype(np.int64),
                         "end": ends.astype(np.int64)}, index=names)


def normalize_chroms(chroms, style: str = "chr") -> tuple[np.ndarray, int]:
    """Chromosome names in UCSC style (``"chr"``: ``1`` -> ``chr1``, ``MT`` -> ``chrM``) or Ensembl style
    (``"bare"``: ``chr1`` -> ``1``, ``chrM`` -> ``MT``), as human and mouse references name them.

    Only the primary chromosomes (1-99, X, Y, M/MT) are renamed; contigs are left as written.

    Parameters
    ----------
    chroms
        Chromosome names (any sequence).
    style
        ``"chr"`` or ``"bare"``, as above.

    Returns
    -------
    (names, n_renamed): object array of the names in that style, and the number of names changed.
    """
    chroms = np.array([str(c) for c in np.asarray(chroms, dtype=object)], dtype=object)
    out = chroms.copy()
    if style == "chr":
        bare = np.array([bool(_BARE_CHROM.match(c)) for c in chroms], dtype=bool)
        out[bare] = ["chrM" if c in ("M", "MT") else "chr" + c for c in chroms[bare]]
        changed = bare
    elif style == "bare":
        prefixed = np.array([c.startswith("chr") and bool(_BARE_CHROM.match(c[3:])) for c in chroms], dtype=bool)
        out[prefixed] = ["MT" if c == "chrM" else c[3:] for c in chroms[prefixed]]
        changed = prefixed
    else:
        raise ValueError(f"style must be 'chr' or 'bare', got {style!r}")
    return out, int(changed.sum())


def chrom_style(chroms) -> str:
    """``"chr"`` when most primary chromosome names carry the ``chr`` prefix, else ``"bare"``.

    Parameters
    ----------
    chroms
        Chromosome names (any sequence; duplicates count once).

    Returns
    -------
    str: ``"chr"`` or ``"bare"`` (``"chr"`` on a tie).
    """
    chroms = pd.unique(np.asarray(chroms, dtype=object).astype(str))
    prefixed = sum(c.startswith("chr") for c in chroms)
    bare = sum(bool(_BARE_CHROM.match(c)) for c in chroms)
    return "bare" if bare > prefixed else "chr"


def peak_names(df: pd.DataFrame) -> list[str]:
    """``chrom:start-end`` names of a chrom/start/end frame.

    Parameters
    ----------
    df
        Frame with columns ``chrom``, ``start``, ``end``.

    Returns
    -------
    list of str, one name per row.
    """
    return [f"{c}:{s}-{e}" for c, s, e in zip(df["chrom"], df["start"], df["end"])]


def intervals(obj) -> pd.DataFrame:
    """chrom/start/end frame from a DataFrame, an AnnData (its ``var``, or parsed var_names) or peak names.

    Parameters
    ----------
    obj
        AnnData (var columns ``chrom``/``start``/``end``, else names ``chrom:start-end``), a DataFrame (returned
        as it is) or peak names (:func:`parse_peak_names`).

    Returns
    -------
    DataFrame with (at least) columns ``chrom``, ``start``, ``end``.
    """
    if hasattr(obj, "var") and hasattr(obj, "var_names"):
        var = obj.var
        if {"chrom", "start", "end"} <= set(var.columns):
            return var[["chrom", "start", "end"]]
        return parse_peak_names(obj.var_names)
    if isinstance(obj, pd.DataFrame):
        return obj
    return parse_peak_names(obj)


def _by_chrom(chrom: np.ndarray):
    """Yield (chrom, positions) groups without a Python loop over rows."""
    codes, uniques = pd.factorize(np.asarray(chrom, dtype=object), sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    for i, name in enumerate(uniques):
        yield name, order[bounds[i]:bounds[i + 1]]


def _expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ranges [lo_i, hi_i): (owner i, position) of every element, vectorised."""
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(lo)), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return owner, lo[owner] + offsets


def overlap_index(query_df, ref_df, *, chunk: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
    """All (query row, reference row) pairs that overlap by >= 1 bp (half-open intervals).

    Parameters
    ----------
    query_df, ref_df
        Frames with ``chrom``, ``start``, ``end`` (or AnnData / peak names, see :func:`intervals`).
    chunk
        Queries processed at once (bounds the candidate arrays).

    Returns
    -------
    (query_idx, ref_idx): int64 arrays of row positions, sorted by query then reference position.
    """
    q, r = intervals(query_df), intervals(ref_df)
    q_chrom, q_start, q_end = np.asarray(q["chrom"], dtype=object), np.asarray(q["start"], np.int64), np.asarray(q["end"], np.int64)
    r_start_all, r_end_all = np.asarray(r["start"], np.int64), np.asarray(r["end"], np.int64)
    ref_groups = dict(_by_chrom(np.asarray(r["chrom"], dtype=object)))
    out_q, out_r = [], []
    for name, q_pos in _by_chrom(q_chrom):
        r_pos = ref_groups.get(name)
        if r_pos is None or len(r_pos) == 0:
            continue
        order = np.argsort(r_start_all[r_pos], kind="stable")
        r_pos = r_pos[order]
        rs, re_ = r_start_all[r_pos], r_end_all[r_pos]
        max_width = int((re_ - rs).max())
        for c0 in range(0, len(q_pos), chunk):
            qp = q_pos[c0:c0 + chunk]
            qs, qe = q_start[qp], q_end[qp]
            # a reference overlaps iff r.start < q.end and r.end > q.start; r.start > q.start - max_width bounds r.end
            lo = np.searchsorted(rs, qs - max_width, side="right")
            hi = np.searchsorted(rs, qe, side="left")
            owner, cand = _expand_ranges(lo, hi)
            keep = re_[cand] > qs[owner]
            out_q.append(qp[owner[keep]])
            out_r.append(r_pos[cand[keep]])
    if not out_q:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    qi, ri = np.concatenate(out_q), np.concatenate(out_r)
    order = np.lexsort((ri, qi))
    return qi[order], ri[order]


def incidence_matrix(query_df, ref_df) -> sp.csr_matrix:
    """Sparse n_query x n_ref 0/1 matrix of >= 1 bp overlaps.

    Parameters
    ----------
    query_df, ref_df
        Intervals as :func:`intervals` accepts them (frame, AnnData or peak names).

    Returns
    -------
    CSR float32 matrix, entry (i, j) = 1 when query row i overlaps reference row j.
    """
    q, r = intervals(query_df), intervals(ref_df)
    qi, ri = overlap_index(q, r)
    return sp.csr_matrix((np.ones(len(qi), np.float32), (qi, ri)), shape=(len(q), len(r)))


def map_peaks_to_cres(atac, cres, *, chunk_cells: int = 500, dtype=np.float32, out=None):
    """Cells x CREs AnnData: for each cell and CRE, the number of open (count > 0) peaks overlapping the CRE.

    Straight from CSR: ``binarise(X) @ incidence`` (incidence = sparse peaks x CREs overlaps) chunked over cells,
    never dense. In memory, the chunks fill one preallocated CSR buffer (memory: the output plus one chunk); with
    ``out``, each chunk is appended to a file, so memory is one chunk whatever the number of cells.

    Parameters
    ----------
    atac
        AnnData cells x peaks (var with chrom/start/end or names ``chrom:start-end``), in memory or opened with
        ``anndata.read_h5ad(path, backed="r")`` (then read ``chunk_cells`` rows at a time).
    cres
        chrom/start/end frame of the CRE vocabulary (row order = vocabulary index).
    chunk_cells
        Cells multiplied at once (bounds temporary memory).
    dtype
        Value type of the output (``np.uint8`` halves the memory of whole-vocabulary maps of many cells).
    out
        ``None``: return the result in memory. A path: write it chunk by chunk to that ``.h5ad`` (as
        ``OUT.partial``, renamed when complete) and return it opened backed (read-only).

    Returns
    -------
    AnnData cells x CREs, ``X`` CSR, obs copied, var = CRE coordinates (index ``chrom:start-end``),
    ``uns["n_peaks_mapped"]`` = peaks overlapping >= 1 CRE.
    """
    import anndata as ad

    cres = intervals(cres)
    incidence = incidence_matrix(atac, cres)
    degree = np.diff(incidence.indptr).astype(np.int64)
    X = atac.X if atac.isbacked else sp.csr_matrix(atac.X)
    n_cells = atac.n_obs
    var = pd.DataFrame({"chrom": np.asarray(cres["chrom"]), "start": np.asarray(cres["start"], np.int64),
                        "end": np.asarray(cres["end"], np.int64)})
    var.index = peak_names(var)
    if not var.index.is_unique:
        var.index = pd.Index([f"{n}#{i}" for i, n in enumerate(var.index)])
    uns = {k: v for k, v in atac.uns.items() if k in ("genome", "dataset")}
    uns["n_peaks_mapped"] = int((degree > 0).sum())

    def binary_block(c0):
        return (sp.csr_matrix(X[c0:c0 + chunk_cells]) != 0).astype(np.float32)  # no stored zeros

    def mapped_block(c0):
        prod = (binary_block(c0) @ incidence).tocsr().astype(dtype)
        prod.sort_indices()
        return prod

    if out is not None:
        return _map_to_file(out, mapped_block, n_cells, chunk_cells, atac.obs, var, uns, dtype)
    # upper bound of the output size (exact unless two open peaks of a cell hit the same CRE)
    upper = sum(int(degree[binary_block(c0).indices].sum()) for c0 in range(0, n_cells, chunk_cells))
    data = np.empty(upper, dtype=dtype)
    indices = np.empty(upper, dtype=np.int32)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    pos = 0
    for c0 in range(0, n_cells, chunk_cells):
        prod = mapped_block(c0)
        data[pos:pos + prod.nnz] = prod.data
        indices[pos:pos + prod.nnz] = prod.indices
        indptr[c0 + 1:c0 + 1 + prod.shape[0]] = pos + prod.indptr[1:]
        pos += prod.nnz
        del prod
    result = ad.AnnData(sp.csr_matrix((data[:pos], indices[:pos], indptr), shape=(n_cells, len(cres))),
                        obs=atac.obs.copy(), var=var)
    result.uns.update(uns)
    return result


def _map_to_file(out, mapped_block, n_cells, chunk_cells, obs, var, uns, dtype):
    """The ``out`` path of :func:`map_peaks_to_cres`: each chunk of cells appended to ``OUT.partial``, renamed
    ``OUT`` when complete; returns it opened backed."""
    import os
    from pathlib import Path

    import anndata as ad

    from .h5stream import StreamedH5ad, partial_path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(out)
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    writer = StreamedH5ad.create(partial, n_cells, len(var), obs, var, uns, {"X": ("csr", np.dtype(dtype))}, {})
    try:
        for c0 in range(0, n_cells, chunk_cells):
            writer.write_block(c0, {"X": mapped_block(c0)})
        writer.finish()
    except BaseException:
        writer.close()
        raise
    os.replace(partial, out)
    return ad.read_h5ad(out, backed="r")


def overlap_share(peaks, cres) -> float:
    """Share of the intervals of ``peaks`` that overlap >= 1 interval of ``cres`` (0 for no peaks).

    Parameters
    ----------
    peaks, cres
        Intervals as :func:`intervals` accepts them (frame, AnnData or peak names).

    Returns
    -------
    float in [0, 1].
    """
    n = len(intervals(peaks))
    if n == 0:
        return 0.0
    qi, _ = overlap_index(peaks, cres)
    return len(np.unique(qi)) / n


def genome_overlap_score(peaks, cres, *, shifts=(-3_000_000, -1_500_000, 1_500_000, 3_000_000), max_peaks: int = 50_000,
                         seed: int = 0) -> dict:
    """How well peaks fit a CRE vocabulary's genome build: observed overlap vs a shifted null.

    Returns ``{"observed", "null", "ratio", "matches"}``: ``observed`` = fraction of peaks overlapping >= 1 CRE,
    ``null`` = the same after shifting every peak by each of ``shifts`` bp (mean), ``matches`` = observed >= 1.5 x
    null and observed - null >= 0.1 (matched builds give e.g. 0.96 vs 0.34; hg19 peaks on hg38 CREs about 0.3 vs 0.3).

    Parameters
    ----------
    peaks, cres
        Intervals as :func:`intervals` accepts them (frame, AnnData or peak names).
    shifts
        Shifts (bp) of the null.
    max_peaks
        Peaks scored at most (a seeded sample of this many when there are more).
    seed
        Seed of that sample.

    Returns
    -------
    dict: ``observed``, ``null``, ``ratio`` (observed / null; ``inf`` for a null of 0) float, ``matches`` bool.
    """
    p = intervals(peaks)
    if len(p) > max_peaks:
        p = p.iloc[np.sort(np.random.default_rng(seed).choice(len(p), max_peaks, replace=False))]
    n = len(p)
    if n == 0:
        return {"observed": 0.0, "null": 0.0, "ratio": 0.0, "matches": False}

    observed = overlap_share(p, cres)
    nulls = []
    for shift in shifts:
        shifted = pd.DataFrame({"chrom": np.asarray(p["chrom"]), "start": np.asarray(p["start"], np.int64) + shift,
                                "end": np.asarray(p["end"], np.int64) + shift})
        nulls.append(overlap_share(shifted, cres))
    null = float(np.mean(nulls))
    ratio = observed / null if null > 0 else (np.inf if observed > 0 else 0.0)
    return {"observed": float(observed), "null": null, "ratio": float(ratio),
            "matches": bool(observed >= 1.5 * null and observed - null >= 0.1)}


# ------------------------------------------------------------------------------------------------ genes
def _strip_version(ids) -> np.ndarray:
    return np.array([str(x).split(".")[0] if isinstance(x, str) else "" for x in ids], dtype=object)


def map_genes(rna, genes_df: pd.DataFrame) -> np.ndarray:
    """Vocabulary row of every gene of ``rna`` (-1 when absent).

    Matches by Ensembl id first (``rna.var["gene_id"]`` against ``genes_df["gene_id"]``, version suffix ignored),
    then by symbol (``rna.var_names`` against ``genes_df["gene_name"]``, exact, then case-insensitive).
    The first vocabulary row wins when a key is duplicated.

    Parameters
    ----------
    rna
        Cells x genes AnnData (var_names gene symbols; optional ``var["gene_id"]``).
    genes_df
        Gene vocabulary with ``gene_name`` and optionally ``gene_id`` (e.g. :func:`cisformer.data.load_genes`).

    Returns
    -------
    int64 array of length ``rna.n_vars``: row position in ``genes_df``, -1 when the gene is not found.
    """
    n = rna.n_vars
    result = np.full(n, -1, dtype=np.int64)
    if "gene_id" in rna.var.columns and "gene_id" in genes_df.columns:
        ids = _strip_version(rna.var["gene_id"].to_numpy())
        vocab_ids = pd.Series(np.arange(len(genes_df)), index=_strip_version(genes_df["gene_id"].to_numpy()))
        vocab_ids = vocab_ids[(vocab_ids.index != "") & ~vocab_ids.index.duplicated()]
        hit = vocab_ids.reindex(ids).to_numpy()
        ok = ~np.isnan(hit) & (ids != "")
        result[ok] = hit[ok].astype(np.int64)
    names = np.asarray(rna.var_names, dtype=object)
    for transform in (lambda a: a, lambda a: np.char.upper(a.astype(str)).astype(object)):
        todo = result < 0
        if not todo.any():
            break
        key = pd.Series(np.arange(len(genes_df)), index=transform(np.asarray(genes_df["gene_name"], dtype=object)))
        key = key[~key.index.duplicated()]
        hit = key.reindex(transform(names[todo])).to_numpy()
        ok = ~np.isnan(hit)
        idx = np.flatnonzero(todo)[ok]
        result[idx] = hit[ok].astype(np.int64)
    return result


# ------------------------------------------------------------------------------------------------ liftover
def _lift_over(chain_path: str):
    """A pyliftover ``LiftOver`` for a chain file, built once per path (reading a chain takes seconds)."""
    try:
        from pyliftover import LiftOver
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("liftover needs the optional package 'pyliftover': pip install pyliftover (or the extra: pip install -e '.[liftover]')") from err
    key = str(chain_path)
    if key not in _LIFTOVER_CACHE:
        _LIFTOVER_CACHE[key] = LiftOver(key)
    return _LIFTOVER_CACHE[key]


_LIFTOVER_CACHE: dict = {}


def liftover(df: pd.DataFrame, chain_path, *, min_ratio: float = 0.5, max_ratio: float = 2.0) -> pd.DataFrame:
    """Lift chrom/start/end intervals with a UCSC chain file (needs ``pyliftover``).

    An interval is kept when ``start`` and ``end - 1`` each map uniquely, to the same chromosome and the + strand,
    and the lifted length is within ``[min_ratio, max_ratio]`` x the original. Other columns are carried over;
    ``orig_index`` holds the input row label. ``len(df) - len(result)`` intervals failed to lift.

    Parameters
    ----------
    df
        Frame with ``chrom``, ``start``, ``end`` (0-based half-open).
    chain_path
        UCSC ``.over.chain(.gz)`` file (e.g. ``cisformer.data.reference_path("chain_hg19_hg38")``).
    min_ratio, max_ratio
        Bounds of the lifted length relative to the original length.

    Returns
    -------
    DataFrame of the lifted intervals (new index 0..n-1): ``orig_index`` first, then the columns of ``df`` with
    ``chrom``, ``start``, ``end`` (int64) on the new build.
    """
    lo = _lift_over(chain_path)
    keep, new = [], []
    for label, chrom, start, end in zip(df.index, df["chrom"], df["start"], df["end"]):
        a, b = lo.convert_coordinate(chrom, int(start)), lo.convert_coordinate(chrom, int(end) - 1)
        if not a or not b or len(a) != 1 or len(b) != 1:
            continue
        (ca, pa, sa, _), (cb, pb, sb, _) = a[0], b[0]
        length = pb + 1 - pa
        if ca != cb or sa != "+" or sb != "+" or not (min_ratio * (end - start) <= length <= max_ratio * (end - start)):
            continue
        keep.append(label)
        new.append((ca, pa, pb + 1))
    out = df.loc[keep].copy()
    out["chrom"] = [c for c, _, _ in new]
    out["start"] = np.array([s for _, s, _ in new], dtype=np.int64)
    out["end"] = np.array([e for _, _, e in new], dtype=np.int64)
    out.insert(0, "orig_index", keep)
    return out.reset_index(drop=True)


def gene_tss(var: pd.DataFrame) -> np.ndarray:
    """TSS per gene from ``rna.var``: the ``tss`` column, else ``start`` (+ strand) / ``end`` (- strand).
    NaN where unknown.

    Parameters
    ----------
    var
        Gene table (``rna.var``) with ``tss`` and / or ``start``, ``end``, ``strand``.

    Returns
    -------
    float64 array of length ``len(var)``: TSS position (bp).
    """
    tss = pd.to_numeric(var["tss"], errors="coerce") if "tss" in var else pd.Series(np.nan, index=var.index)
    if {"start", "end"} <= set(var.columns):
        start = pd.to_numeric(var["start"], errors="coerce")
        end = pd.to_numeric(var["end"], errors="coerce")
        minus = var["strand"].astype(str).eq("-") if "strand" in var else pd.Series(False, index=var.index)
        tss = tss.fillna(pd.Series(np.where(minus, end, start), index=var.index))
    return tss.to_numpy(dtype=np.float64)


def gene_cre_pairs(genes: pd.DataFrame, cres: pd.DataFrame, upstream: float, downstream: float,
                   *, anchor: str = "tss") -> pd.DataFrame:
    """CREs near each gene: all (gene_idx, cre_idx, distance) with the CRE midpoint within the window.

    ``anchor="tss"``: window ``[tss - upstream, tss + downstream]`` (strand-aware), ``distance`` = signed bp from
    the TSS. ``anchor="body"``: window around the gene body extended ``upstream`` / ``downstream``, ``distance``
    = bp from the body (0 inside it). Genes without coordinates get no pairs.

    Parameters
    ----------
    genes
        Gene table with ``chrom``, ``start``, ``end`` and optionally ``tss``, ``strand`` (e.g. ``rna.var``).
    cres
        chrom/start/end frame of the CREs (e.g. ``atac.var``).
    upstream, downstream
        Window size (bp) on each side, relative to the gene's strand.
    anchor
        ``"tss"`` or ``"body"``, as above.

    Returns
    -------
    DataFrame, one row per pair: ``gene_idx``, ``cre_idx`` (row positions in ``genes`` / ``cres``) and
    ``distance`` (bp, float).
    """
    g_chrom = genes["chrom"].astype(str).to_numpy()
    g_start = pd.to_numeric(genes["start"], errors="coerce").to_numpy(dtype=float)
    g_end = pd.to_numeric(genes["end"], errors="coerce").to_numpy(dtype=float)
    g_tss = pd.to_numeric(genes.get("tss", genes["start"]), errors="coerce").to_numpy(dtype=float)
    minus = genes.get("strand", pd.Series("+", index=genes.index)).astype(str).to_numpy() == "-"
    c_chrom = cres["chrom"].astype(str).to_numpy()
    c_mid = (cres["start"].to_numpy(dtype=float) + cres["end"].to_numpy(dtype=float)) / 2
    by_chrom = {}
    for chrom in np.unique(c_chrom):
        idx = np.flatnonzero(c_chrom == chrom)
        idx = idx[np.argsort(c_mid[idx])]
        by_chrom[chrom] = (idx, c_mid[idx])
    rows_g, rows_c, rows_d = [], [], []
    for g in range(len(genes)):
        if g_chrom[g] not in by_chrom:
            continue
        tss = g_tss[g] if np.isfinite(g_tss[g]) else (g_end[g] if minus[g] else g_start[g])
        if not np.isfinite(tss):
            continue
        up, down = (downstream, upstream) if minus[g] else (upstream, downstream)
        if anchor == "tss":
            lo, hi = tss - up, tss + down
        else:
            lo, hi = g_start[g] - up, g_end[g] + down
        idx, mids = by_chrom[g_chrom[g]]
        sel = idx[np.searchsorted(mids, lo):np.searchsorted(mids, hi, side="right")]
        if anchor == "tss":
            dist = (c_mid[sel] - tss) * (-1 if minus[g] else 1)
        else:
            dist = np.maximum(0, np.maximum(g_start[g] - c_mid[sel], c_mid[sel] - g_end[g]))
        rows_g.append(np.full(len(sel), g))
        rows_c.append(sel)
        rows_d.append(dist)
    if not rows_g:
        return pd.DataFrame({"gene_idx": [], "cre_idx": [], "distance": []}).astype(int)
    return pd.DataFrame({"gene_idx": np.concatenate(rows_g), "cre_idx": np.concatenate(rows_c),
                         "distance": np.concatenate(rows_d)})
