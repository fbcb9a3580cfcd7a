"""Readers for your own paired data (10x multiome, h5ad, MuData, Matrix Market folders, fragments) into the
team's data contract (see :mod:`cisformer.data`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..utils import provenance
from .checks import find_counts, is_integer_matrix
from .datasets import load_genes
from .errors import InputError, input_error
from .vocab import PEAK_NAME_FORMS, intervals, map_genes, normalize_chroms, overlap_index, parse_peak_names, peak_names


# ------------------------------------------------------------------------------------------------ readers for users' data
def _standardize(rna, atac, source: str, genome: str | None, recover_counts: bool = False, rna_source=None):
    """Bring a freshly read pair to the data contract (CSR float32, cell_type/batch, peak coordinates, 'chr'
    chromosome names); RNA counts are taken from where :func:`find_counts` finds them (``X`` kept otherwise, for
    :func:`validate_pair` to explain)."""
    try:
        rna, note = find_counts(rna, rna_source or source, recover=recover_counts)
        rna.uns["counts_note"] = note
    except InputError:
        if recover_counts:
            raise
    for adata in (rna, atac):
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
        for col in ("cell_type", "batch"):
            values = adata.obs[col].astype(str) if col in adata.obs else pd.Series("unknown", index=adata.obs_names)
            adata.obs[col] = pd.Categorical(values)
        adata.uns["dataset"] = adata.uns.get("dataset", Path(source).name)
        if genome is not None:
            adata.uns["genome"] = genome
        adata.uns["counts"] = bool(is_integer_matrix(adata.X))
    _annotate_genes(rna, genome)
    if not {"chrom", "start", "end"} <= set(atac.var.columns):
        try:
            coords = parse_peak_names(atac.var_names)
        except ValueError as err:
            raise input_error(source, "atac var_names", str(err),
                         f"name peaks in one of the forms {PEAK_NAME_FORMS} (0-based, half-open), or add var "
                         "columns chrom/start/end") from None
        atac.var[["chrom", "start", "end"]] = coords[["chrom", "start", "end"]].to_numpy()
        atac.var["start"] = atac.var["start"].astype(np.int64)
        atac.var["end"] = atac.var["end"].astype(np.int64)
    chroms, renamed = normalize_chroms(atac.var["chrom"], "chr")
    if renamed:
        atac.var["chrom"] = chroms
        atac.uns["chrom_note"] = f"{renamed} peak chromosome names given the 'chr' prefix (e.g. 1 -> chr1, MT -> chrM)"
    atac.var_names = peak_names(atac.var)
    return rna, atac


def _annotate_genes(rna, genome: str | None) -> None:
    """Fill rna.var gene_id/chrom/start/end/strand/tss from the shipped gene table of ``genome`` (hg38, mm10)."""
    genes = load_genes(genome) if genome in ("hg38", "mm10") else None
    hit = map_genes(rna, genes) if genes is not None else np.full(rna.n_vars, -1)
    found = hit >= 0
    for col, fill in (("gene_id", ""), ("chrom", ""), ("strand", ""), ("start", np.nan), ("end", np.nan), ("tss", np.nan)):
        values = np.full(rna.n_vars, fill, dtype=object if isinstance(fill, str) else float)
        if genes is not None:
            values[found] = genes[col].to_numpy()[hit[found]]
        if col in rna.var:  # keep what the file already says
            current = rna.var[col].to_numpy()
            known = pd.notna(current) & (current.astype(str) != "")
            values[known] = current[known]
        rna.var[col] = values if isinstance(fill, str) else values.astype(float)


def _split_modalities(adata, source: str):
    """Split one AnnData holding both modalities (10x feature_types) into (rna, atac)."""
    types = adata.var.get("feature_types", adata.var.get("feature_type"))
    if types is None:
        raise input_error(source, "feature_types", "cannot tell genes from peaks", "use a 10x multiome matrix or pass rna and atac files")
    types = types.astype(str).to_numpy()
    is_rna, is_atac = types == "Gene Expression", np.isin(types, ["Peaks", "ATAC"])
    if not is_rna.any() or not is_atac.any():
        raise input_error(source, "feature_types", f"found {sorted(set(types))}, need both 'Gene Expression' and 'Peaks'",
                     "pass the multiome (ARC) matrix, or the RNA and ATAC files separately")
    rna, atac = adata[:, is_rna].copy(), adata[:, is_atac].copy()
    if "gene_ids" in rna.var:
        rna.var["gene_id"] = rna.var["gene_ids"].astype(str)
    return rna, atac


def _read_10x_h5(path: Path):
    import anndata as ad
    import h5py

    with h5py.File(path, "r") as handle:
        if "matrix" not in handle:
            raise input_error(path, "matrix", "not a 10x feature-barcode h5 (no 'matrix' group)", "pass filtered_feature_bc_matrix.h5")
        m = handle["matrix"]
        shape = tuple(int(x) for x in m["shape"][:])  # features x cells, stored CSC
        X = sp.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=shape).T.tocsr()
        decode = lambda arr: [x.decode() if isinstance(x, bytes) else str(x) for x in arr]  # noqa: E731
        feats = m["features"]
        var = pd.DataFrame({"gene_ids": decode(feats["id"][:]), "feature_types": decode(feats["feature_type"][:])},
                           index=decode(feats["name"][:]))
        obs = pd.DataFrame(index=decode(m["barcodes"][:]))
    adata = ad.AnnData(X.astype(np.float32), obs=obs, var=var)
    adata.var_names_make_unique()
    return adata


def _read_mtx_dir(path: Path):
    import anndata as ad
    import scipy.io

    def find(stem):
        for name in (f"{stem}.gz", stem):
            if (path / name).exists():
                return path / name
        raise input_error(path, stem, "file missing from the matrix folder", "a 10x folder holds matrix.mtx(.gz), features.tsv(.gz), barcodes.tsv(.gz)")

    mtx = find("matrix.mtx") if any((path / n).exists() for n in ("matrix.mtx", "matrix.mtx.gz")) else find("counts.mtx")
    feats_file = next((p for p in (path / "features.tsv.gz", path / "features.tsv", path / "genes.tsv.gz", path / "genes.tsv")
                       if p.exists()), None)
    if feats_file is None:
        raise input_error(path, "features.tsv", "file missing from the matrix folder", "add features.tsv(.gz) (10x layout)")
    for f in (mtx, feats_file, find("barcodes.tsv")):
        provenance.record_input(f)
    X = sp.csr_matrix(scipy.io.mmread(mtx).T)
    feats = pd.read_csv(feats_file, sep="\t", header=None, dtype=str)
    barcodes = pd.read_csv(find("barcodes.tsv"), sep="\t", header=None, dtype=str)[0].to_numpy()
    if feats.shape[1] >= 3:
        var = pd.DataFrame({"gene_ids": feats[0].to_numpy(), "feature_types": feats[2].to_numpy()}, index=feats[1].to_numpy())
    else:
        var = pd.DataFrame(index=feats[feats.columns[-1]].to_numpy())
        if feats.shape[1] == 2:
            var["gene_ids"] = feats[0].to_numpy()
    adata = ad.AnnData(X.astype(np.float32), obs=pd.DataFrame(index=barcodes), var=var)
    adata.var_names_make_unique()
    return adata


def read_any(path: Path, backed: bool = False):
    """AnnData from a 10x .h5, a 10x matrix folder or an .h5ad (``backed``: opened read-only from disk, .h5ad only).

    Parameters
    ----------
    path
        ``pathlib.Path`` of the file or folder.
    backed
        Open an ``.h5ad`` read-only from disk instead of loading it.

    Returns
    -------
    AnnData as stored (10x inputs: cells x features, ``X`` CSR float32, var ``gene_ids``, ``feature_types``).
    """
    import anndata as ad

    if not path.exists():
        raise input_error(path, "file", "does not exist", "check the path")
    if path.is_dir():
        return _read_mtx_dir(path)
    if path.suffix not in (".h5ad", ".h5"):
        raise input_error(path, "file type", f"unsupported suffix {path.suffix!r}",
                     "use a 10x .h5, a 10x matrix folder, .h5ad or .h5mu")
    check_readable(path)
    provenance.record_input(path)
    try:
        return ad.read_h5ad(path, backed="r" if backed else None) if path.suffix == ".h5ad" else _read_10x_h5(path)
    except InputError:
        raise
    except Exception as err:  # anndata / h5py errors deep inside the reader
        raise input_error(path, "file", f"cannot be read ({type(err).__name__}: {str(err)[:200]})",
                     "the file is damaged or not of this type: write or copy it again") from None


def check_readable(path) -> None:
    """Raise :class:`InputError` for an empty file or an HDF5 file (.h5ad, .h5, .h5mu) that is truncated or corrupt.

    Parameters
    ----------
    path
        File to check (str or path).
    """
    import h5py

    path = Path(path)
    if path.stat().st_size == 0:
        raise input_error(path, "file", "is empty (0 bytes)", "write or copy the file again (an interrupted copy leaves this)")
    if path.suffix in (".h5ad", ".h5", ".h5mu"):
        try:
            with h5py.File(path, "r"):
                pass
        except OSError as err:
            raise input_error(path, "file", f"is not a readable HDF5 file, truncated or corrupt ({str(err)[:120]})",
                         "write or copy the file again") from None


def use_cell_type_column(rna, atac, column: str, source="data", *, obs: pd.DataFrame | None = None) -> None:
    """Copy the cell types of the obs column ``column`` into ``obs["cell_type"]`` of both modalities (matched by
    cell name; "unknown" where a cell has none). The column is looked for in ``obs`` (e.g. a MuData's global obs),
    then ``rna.obs``, then ``atac.obs``; absent everywhere -> :class:`InputError` naming ``source`` and the columns
    there are. Modifies ``rna`` and ``atac`` in place.

    Parameters
    ----------
    rna, atac
        Paired AnnData.
    column
        Name of the obs column holding the cell types.
    source
        File name used in messages.
    obs
        Extra obs frame searched first (indexed by cell name).
    """
    frames = ([("obs", obs)] if obs is not None else []) + [("rna obs", rna.obs), ("atac obs", atac.obs)]
    labels = next((frame[column] for _, frame in frames if column in frame.columns), None)
    if labels is None:
        available = "; ".join(f"{where}: {list(frame.columns)}" for where, frame in frames)
        raise input_error(source, f"obs['{column}']", f"cell-type column missing (available columns - {available})",
                     "name the column that holds the cell types with --cell-type-column COLUMN (cell_type_column=)")
    labels = labels[~labels.index.duplicated()].astype(object)
    for adata in (rna, atac):
        values = labels.reindex(adata.obs_names)
        adata.obs["cell_type"] = pd.Categorical(values.where(values.notna(), "unknown").astype(str).to_numpy())


def read_paired(rna_path, atac_path=None, genome: str | None = None, recover_counts: bool = False,
                cell_type_column: str | None = None):
    """Read a user's paired RNA + ATAC data into the data contract's ``(rna, atac)`` pair.

    RNA counts are looked for in ``X``, ``layers["counts"]`` and ``.raw`` (:func:`find_counts`; where they were
    found is in ``rna.uns["counts_note"]``); ``recover_counts=True`` also inverts log1p-normalised ``X`` exactly
    or raises. Peak chromosome names are given the ``chr`` prefix when the file has none (``uns["chrom_note"]``).

    Accepted inputs:

    - ``read_paired("filtered_feature_bc_matrix.h5")``: 10x multiome h5 holding both modalities;
    - ``read_paired("filtered_feature_bc_matrix/")``: 10x matrix folder with both feature types;
    - ``read_paired("rna.h5ad", "atac.h5ad")`` or two 10x h5 / mtx folders, one per modality;
    - ``read_paired("data.h5mu")``: MuData with modalities ``rna`` and ``atac`` (needs ``mudata``).

    ``cell_type_column`` names an obs column (of the .h5ad / .h5mu input) holding the cell types: it is copied into
    ``obs["cell_type"]`` of both modalities (:func:`use_cell_type_column`); an absent column is an error listing
    the columns there are. Default: ``obs["cell_type"]`` when present.

    Cells present in only one modality are NOT dropped silently: :func:`validate_pair` reports them. Run it next.

    Parameters
    ----------
    rna_path
        10x ``.h5``, 10x matrix folder, ``.h5ad`` or ``.h5mu`` (both modalities unless ``atac_path`` is given).
    atac_path
        ATAC file (same kinds) when the modalities are in two files.
    genome
        Build stored in ``uns["genome"]``; ``"hg38"`` / ``"mm10"`` also fill ``rna.var`` gene_id, chrom, start, end,
        strand, tss from the shipped gene table.
    recover_counts
        As above (:func:`find_counts`).
    cell_type_column
        As above.

    Returns
    -------
    (rna, atac): AnnData cells x genes and cells x peaks, ``X`` CSR float32, obs ``cell_type`` and ``batch``
    (categorical, ``"unknown"`` when absent), atac.var ``chrom``/``start``/``end`` with names ``chrom:start-end``.
    """
    rna_path = Path(rna_path)
    if rna_path.suffix == ".h5mu":
        try:
            import mudata
        except ImportError as err:
            raise ImportError("reading .h5mu needs the 'mudata' package: pip install mudata") from err
        check_readable(rna_path)
        provenance.record_input(rna_path)
        mdata = mudata.read_h5mu(rna_path)
        missing = {"rna", "atac"} - set(mdata.mod)
        if missing:
            raise input_error(rna_path, "mod", f"modalities {sorted(missing)} missing (found {sorted(mdata.mod)})",
                         "name the modalities 'rna' and 'atac'")
        rna, atac = mdata.mod["rna"].copy(), mdata.mod["atac"].copy()
        for col in ("cell_type", "batch"):
            if col in mdata.obs and col not in rna.obs:
                rna.obs[col] = mdata.obs.loc[rna.obs_names, col].to_numpy()
                atac.obs[col] = mdata.obs.loc[atac.obs_names, col].to_numpy()
        if cell_type_column is not None:
            use_cell_type_column(rna, atac, cell_type_column, str(rna_path), obs=mdata.obs)
        return _standardize(rna, atac, str(rna_path), genome, recover_counts)
    first = read_any(rna_path)
    if atac_path is None:
        rna, atac = _split_modalities(first, str(rna_path))
        source = str(rna_path)
    else:
        rna, atac = first, read_any(Path(atac_path))
        if "feature_types" in rna.var and (rna.var["feature_types"].astype(str) != "Gene Expression").any():
            rna = _split_modalities(rna, str(rna_path))[0]
        if "feature_types" in atac.var and (atac.var["feature_types"].astype(str) == "Gene Expression").any():
            atac = _split_modalities(atac, str(atac_path))[1]
        source = str(atac_path)
    if "gene_id" not in rna.var and "gene_ids" in rna.var:
        rna.var["gene_id"] = rna.var["gene_ids"].astype(str)
    if cell_type_column is not None:
        use_cell_type_column(rna, atac, cell_type_column, source if atac_path is None else f"{rna_path} / {atac_path}")
    return _standardize(rna, atac, source, genome, recover_counts, str(rna_path))


def read_rna(path, *, gene_column: str | None = None, recover_counts: bool = False):
    """Read RNA-only cells (e.g. Tabula Muris Senis kidney from CELLxGENE) for generating ATAC from them.

    Parameters
    ----------
    path
        ``.h5ad``, 10x ``.h5`` or 10x matrix folder.
    gene_column
        ``var`` column holding gene symbols, used as var_names (CELLxGENE files are indexed by Ensembl ID and keep
        the symbols in ``"feature_name"``); duplicates are made unique. None: keep var_names.
    recover_counts
        Passed to :func:`find_counts` (invert log1p-normalised ``X`` when no counts are stored).

    Returns
    -------
    AnnData with the raw counts in ``X`` (CSR float32, found by :func:`find_counts`; where in
    ``uns["counts_note"]``) and ``obs`` as in the file.
    """
    source = str(path)
    original = read_any(Path(path))
    rna, note = find_counts(original, source, recover=recover_counts)
    if gene_column is not None:
        if gene_column in rna.var:
            symbols = rna.var[gene_column]
        elif gene_column in original.var:
            symbols = original.var[gene_column].reindex(rna.var_names)
        else:
            raise input_error(source, f"var['{gene_column}']", "column missing",
                         f"name the var column with gene symbols (columns: {list(original.var.columns)}) or pass None")
        rna.var_names = symbols.astype(str).to_numpy()
        rna.var_names_make_unique()
    rna.X = sp.csr_matrix(rna.X, dtype=np.float32)
    rna.uns["counts_note"] = note
    return rna


def read_10x(h5_path, fragments=None, peaks=None, cell_types=None, cell_type_column: str = "cell_type",
             *, genome: str | None = None, recover_counts: bool = False):
    """A 10x Multiome download as the data contract's ``(rna, atac)`` pair.

    Parameters
    ----------
    h5_path
        ``filtered_feature_bc_matrix.h5`` (Cell Ranger ARC: Gene Expression and Peaks features).
    fragments
        Optional ``atac_fragments.tsv.gz``: the ATAC matrix is then the fragment counts of each cell over the peaks
        (:func:`read_fragments`), for the cells of the h5.
    peaks
        Peaks for ``fragments`` (BED file or chrom/start/end frame); default: the h5's peak features.
    cell_types
        Optional CSV / TSV of labels: first column (or a column ``barcode`` / ``cell``) the barcodes,
        ``cell_type_column`` the labels; stored as ``obs["cell_type"]`` of both modalities ("unknown" where absent).
    cell_type_column
        Label column of ``cell_types``.
    genome, recover_counts
        As in :func:`read_paired`.

    Returns
    -------
    (rna, atac): as :func:`read_paired` returns them.
    """
    h5_path = Path(h5_path)
    if fragments is None:
        rna, atac = read_paired(h5_path, genome=genome, recover_counts=recover_counts)
    else:
        first = read_any(h5_path)
        types = first.var.get("feature_types", pd.Series("Gene Expression", index=first.var_names)).astype(str)
        rna = first[:, (types == "Gene Expression").to_numpy()].copy()
        if "gene_ids" in rna.var:
            rna.var["gene_id"] = rna.var["gene_ids"].astype(str)
        if peaks is None:
            if not (types != "Gene Expression").any():
                raise input_error(h5_path, "features", "no peak features to count the fragments on", "pass --peaks BED")
            peaks = parse_peak_names(first.var_names[(types != "Gene Expression").to_numpy()])
        elif not isinstance(peaks, pd.DataFrame):
            peaks = pd.read_csv(peaks, sep="\t", header=None, usecols=[0, 1, 2], names=["chrom", "start", "end"],
                                comment="#", dtype={"chrom": str, "start": np.int64, "end": np.int64})
        atac = read_fragments(fragments, peaks, barcodes=list(rna.obs_names))
        empty = np.asarray(atac.X.sum(axis=1)).ravel() == 0
        if empty.all():
            raise input_error(fragments, "barcode (column 4)", f"no fragment of the file belongs to the {rna.n_obs} cells of "
                         f"{h5_path.name} (e.g. {list(rna.obs_names[:2])}) or overlaps a peak",
                         "pass the fragments of the same run, on the same genome build as the peaks")
        rna, atac = _standardize(rna, atac, str(fragments), genome, recover_counts, str(h5_path))
    if cell_types is not None:
        table = pd.read_csv(cell_types, sep=None, engine="python", dtype=str)
        key = next((c for c in ("barcode", "cell", "barcodes") if c in table.columns), table.columns[0])
        if cell_type_column not in table.columns:
            raise input_error(cell_types, cell_type_column, f"column missing (columns: {list(table.columns)})",
                         "name the label column with --cell-type-column")
        labels = table.set_index(key)[cell_type_column]
        labels = labels[~labels.index.duplicated()].reindex(rna.obs_names)
        if labels.isna().all():
            raise input_error(cell_types, key, f"no barcode matches the data (file e.g. {list(table[key][:2])}, data e.g. "
                         f"{list(rna.obs_names[:2])})", "use the barcodes of the matrix (with their '-1' suffix)")
        for adata in (rna, atac):
            adata.obs["cell_type"] = pd.Categorical(labels.fillna("unknown").to_numpy())
    return rna, atac


def write_10x_h5(path, rna, atac) -> None:
    """Write a paired ``(rna, atac)`` as a Cell Ranger ARC ``filtered_feature_bc_matrix.h5`` (features x cells CSC,
    ``Gene Expression`` and ``Peaks`` features): fixtures and exchange with 10x tools.

    Parameters
    ----------
    path
        Output file (overwritten).
    rna, atac
        Paired AnnData with the same cells; counts (stored as int32). Gene ids from ``rna.var["gene_id"]`` when
        present, else the gene names.
    """
    import h5py

    X = sp.hstack([sp.csr_matrix(rna.X), sp.csr_matrix(atac.X)]).T.tocsc().astype(np.int32)
    gene_ids = rna.var["gene_id"].astype(str).tolist() if "gene_id" in rna.var else list(rna.var_names)
    with h5py.File(path, "w") as h:
        m = h.create_group("matrix")
        m["data"], m["indices"], m["indptr"] = X.data, X.indices, X.indptr
        m["shape"] = np.array(X.shape, dtype=np.int32)
        m["barcodes"] = np.array(rna.obs_names, dtype="S")
        f = m.create_group("features")
        f["id"] = np.array(gene_ids + list(atac.var_names), dtype="S")
        f["name"] = np.array(list(rna.var_names) + list(atac.var_names), dtype="S")
        f["feature_type"] = np.array(["Gene Expression"] * rna.n_vars + ["Peaks"] * atac.n_vars, dtype="S")


def read_fragments(path, peaks_df, *, barcodes=None, chunksize: int = 2_000_000):
    """Cells x peaks count matrix from a 10x ``fragments.tsv.gz`` (a fragment counts once per peak it overlaps).

    Parameters
    ----------
    path
        Fragment file: chrom, start, end, barcode, duplicate count (``#`` header lines skipped).
    peaks_df
        Peaks (chrom/start/end frame, or ``chrom:start-end`` names).
    barcodes
        Cells to keep, in this order (default: every barcode in the file, in order of appearance).
    chunksize
        Fragments read at once (bounds memory).

    Returns
    -------
    AnnData cells x peaks, CSR float32 counts, var chrom/start/end with names ``chrom:start-end``.
    """
    import anndata as ad

    path = Path(path)
    provenance.record_input(path)
    peaks = intervals(peaks_df).reset_index(drop=True)
    fixed = barcodes is not None
    cell_index: dict[str, int] = {str(b): i for i, b in enumerate(barcodes)} if fixed else {}
    rows, cols = [], []
    reader = pd.read_csv(path, sep="\t", header=None, comment="#", usecols=[0, 1, 2, 3], names=["chrom", "start", "end", "barcode"],
                         dtype={"chrom": str, "start": np.int64, "end": np.int64, "barcode": str}, chunksize=chunksize)
    for chunk in reader:
        if not fixed:
            for b in pd.unique(chunk["barcode"]):
                cell_index.setdefault(b, len(cell_index))
        cell = chunk["barcode"].map(cell_index).to_numpy()
        known = ~pd.isna(cell)
        chunk, cell = chunk[known].reset_index(drop=True), cell[known].astype(np.int64)
        fi, pi = overlap_index(chunk, peaks)
        rows.append(cell[fi])
        cols.append(pi)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(cell_index), len(peaks)))
    X.sum_duplicates()
    var = pd.DataFrame({"chrom": peaks["chrom"].astype(str).to_numpy(), "start": peaks["start"].astype(np.int64).to_numpy(),
                        "end": peaks["end"].astype(np.int64).to_numpy()})
    var.index = peak_names(var)
    names = sorted(cell_index, key=cell_index.get)
    return ad.AnnData(X, obs=pd.DataFrame(index=pd.Index(names, dtype=str)), var=var)
