"""Shipped datasets and reference resources, readers for your own paired data, validation, QC and cell splits.

Shipped data (``data/``, checksums in ``data/MANIFEST``)::

    rna, atac = cisformer.data.load("snareseq")          # also "bmmc", "pbmc_scarlink", "snareseq_tiny"
    cres = cisformer.data.load_cre_vocabulary("human")    # 1,033,239 hg38 cCREs

Your own data::

    rna, atac = cisformer.data.read_paired("filtered_feature_bc_matrix.h5")    # 10x multiome
    validate_pair(rna, atac, "rna.h5ad", "atac.h5ad", cre_vocabulary="hg38")
    rna, atac, table = qc(rna, atac)
    train, val, test = split_cells(rna.obs, by="cell_type")
    write_dataset(rna, atac, "mine", "work/mine")        # a data folder: datasets/mine_*.h5ad + MANIFEST
    rna, atac = load("mine", data_dir="work/mine")        # as the notebooks read it (data_dir); references from data/

Conventions (the team's data contract): ``rna`` and ``atac`` are AnnData with identical ``obs_names``; ``X`` is CSR
float32 (raw counts unless ``uns["counts"]`` is False); ``obs["cell_type"]`` and ``obs["batch"]`` are categorical;
``atac.var`` has ``chrom``/``start``/``end`` (0-based half-open) and var_names ``chrom:start-end``; ``rna.var`` has
``gene_id``, ``chrom``, ``start``, ``end``, ``strand``, ``tss``; ``uns["genome"]``, ``uns["dataset"]``, ``uns["counts"]``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import paths, provenance, vocab


class InputError(ValueError):
    """Bad input data; the message names the file, the field and the fix."""


def input_error(source, field: str, problem: str, fix: str) -> InputError:
    return InputError(f"{source}: field '{field}': {problem}. Fix: {fix}")


# ------------------------------------------------------------------------------------------------ shipped files
DATASETS = {
    "snareseq": ("datasets/snareseq_rna.h5ad", "datasets/snareseq_atac.h5ad"),
    "snareseq_tiny": ("datasets/snareseq_tiny_rna.h5ad", "datasets/snareseq_tiny_atac.h5ad"),
    "bmmc": ("datasets/bmmc_rna.h5ad", "datasets/bmmc_atac.h5ad"),
    "pbmc_scarlink": ("datasets/pbmc_scarlink_rna.h5ad", "datasets/pbmc_scarlink_atac.h5ad"),
}

REFERENCES = {
    "human_cres": "reference/human_cCREs_hg38.bed.gz",
    "mouse_cres": "reference/mouse_cCREs_mm39.bed.gz",
    "genes_hg38": "reference/genes_hg38.tsv.gz",
    "genes_mm10": "reference/genes_mm10.tsv.gz",
    "tf_human": "reference/lambert2018_human_tfs.tsv.gz",
    "tf_mouse_orthologs": "reference/lambert2018_tfs_mouse_orthologs.tsv.gz",
    "remodelers": "reference/go_chromatin_remodeling_genes.tsv.gz",
    "gwas_gchromvar": "reference/gwas_blood_gchromvar_ukbb16_hg38.tsv.xz",
    "gwas_scavenge": "reference/gwas_blood_scavenge22_hg38.tsv.xz",
    "chip_peaks": "reference/chip_peaks_hg38.tsv.xz",
    "chip_sets": "reference/chip_peaks_sets.tsv.gz",
    "dnase_blood": "reference/dnase_blood_hg38.tsv.xz",
    "clock_mm10": "reference/epitrace_mouse_clock_mm10.bed.gz",
    "clock_mm285": "reference/epitrace_mm285_clock347_mm10.bed.gz",
    "jaspar_meme": "reference/JASPAR2024_CORE_vertebrates_nonredundant.meme.gz",
    "jaspar_jaspar": "reference/JASPAR2024_CORE_vertebrates_nonredundant.jaspar.gz",
    "jaspar_metadata": "reference/JASPAR2024_CORE_vertebrates_nonredundant_metadata.tsv",
    "chain_hg19_hg38": "reference/hg19ToHg38.over.chain.gz",
    "chain_hg38_hg19": "reference/hg38ToHg19.over.chain.gz",
    "fragments_tiny": "fixtures/signac_fragments_tiny.tsv.gz",
}


MANIFEST_COLUMNS = ["file", "sha256", "bytes", "source", "licence", "description"]


def _is_repo_data(root: Path) -> bool:
    return Path(root).resolve() == (paths.REPO_ROOT / "data").resolve()


def read_manifest(data_dir=None) -> pd.DataFrame:
    """``data/MANIFEST`` (or a data folder's) as a frame indexed by file (columns sha256, bytes, source, licence,
    description)."""
    path = paths.data_dir(data_dir) / "MANIFEST"
    if not path.exists():
        fix = ("restore data/ from the repository (git checkout data)" if _is_repo_data(path.parent) else
               "write the folder with `cisformer preprocess ... --name NAME --out DIR` or cisformer.data.write_dataset "
               "(they write the MANIFEST), or pass verify=False")
        raise input_error(path, "MANIFEST", "the data manifest is missing", fix)
    return pd.read_csv(path, sep="\t", keep_default_na=False).set_index("file")


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    return provenance.sha256(path)


def _file_sha(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime)


def _locate(rel: str, data_dir=None) -> Path | None:
    """The first folder of :func:`cisformer.paths.data_dirs` (``data_dir``, then the default data folder) that holds
    ``rel``; None when none does."""
    return next((root for root in paths.data_dirs(data_dir) if (root / rel).exists()), None)


def shipped_path(rel: str, data_dir=None, verify: bool = True) -> Path:
    """Path of a data file, its sha256 checked against the ``MANIFEST`` of the folder holding it (and recorded in
    the provenance log). ``rel`` is looked up in ``data_dir`` first, then in the default data folder
    (:func:`cisformer.paths.data_dirs`): a user's data folder holds only the user's data sets, and the reference
    files and shipped data sets come from the repository's ``data/``."""
    root = _locate(rel, data_dir)
    if root is None:
        path = paths.data_dir(data_dir) / rel
        raise input_error(path, "file", "shipped data file not found", f"restore it (git checkout {path}) or pass data_dir=")
    path = root / rel
    digest = _file_sha(path)
    if verify:
        manifest = read_manifest(root)
        if rel not in manifest.index:
            fix = ("add it with data/build_shipped_data.py --manifest-only" if _is_repo_data(root) else
                   "write the data set with cisformer.data.write_dataset (or `cisformer preprocess --name`), which "
                   "adds its MANIFEST lines, or pass verify=False")
            raise input_error(root / "MANIFEST", rel, "file has no MANIFEST line", fix)
        expected = manifest.loc[rel, "sha256"]
        if digest != expected:
            raise input_error(path, "sha256", f"checksum mismatch: file has {digest}, MANIFEST says {expected}",
                         "the file is corrupted or was modified; restore it with `git checkout -- data/` (or pass verify=False)")
    provenance.record_input(path, digest)
    return path


def reference_path(key: str, data_dir=None, verify: bool = True) -> Path:
    """Verified path of a shipped reference file; ``key`` in :data:`REFERENCES` or a path relative to ``data/``."""
    rel = REFERENCES.get(key, key)
    if rel not in REFERENCES.values() and _locate(rel, data_dir) is None:
        raise KeyError(f"unknown reference {key!r}; choose one of {sorted(REFERENCES)}")
    return shipped_path(rel, data_dir, verify)


def dataset_files(name: str) -> tuple[str, str]:
    """Paths (relative to a data folder) of a paired data set's RNA and ATAC files: ``datasets/<name>_rna.h5ad``
    and ``datasets/<name>_atac.h5ad``, for the shipped sets (:data:`DATASETS`) and those written by
    :func:`write_dataset` alike."""
    return DATASETS.get(name, (f"datasets/{name}_rna.h5ad", f"datasets/{name}_atac.h5ad"))


def list_datasets(data_dir=None) -> list[str]:
    """Names :func:`load` accepts with this ``data_dir``: the shipped sets and those of the data folder."""
    names = set(DATASETS)
    for root in paths.data_dirs(data_dir):
        for rna_file in (root / "datasets").glob("*_rna.h5ad"):
            name = rna_file.name[: -len("_rna.h5ad")]
            if (root / dataset_files(name)[1]).exists():
                names.add(name)
    return sorted(names)


def load(name: str, data_dir=None, verify: bool = True):
    """Load a shipped paired dataset, or one of a data folder, as ``(rna, atac)`` AnnData with identical obs_names.

    Parameters
    ----------
    name
        ``"snareseq"`` (10,309 cells, mm10), ``"snareseq_tiny"`` (100 cells, no labels), ``"bmmc"`` (500 cells, hg38,
        ``obs["split"]`` official train/test), ``"pbmc_scarlink"`` (9,460 cells, 3 genes with normalized RNA,
        ATAC = 500-bp tiles around the genes), or a data set written into ``data_dir`` by :func:`write_dataset`
        (``cisformer preprocess ... --name NAME --out DIR``): ``DIR/datasets/NAME_rna.h5ad`` and ``NAME_atac.h5ad``.
    data_dir
        Folder holding the data sets and their ``MANIFEST`` (default ``cisformer.paths.data_dir()``); files it lacks
        (the shipped sets, reference files) are taken from the default data folder.
    verify
        Check each file's sha256 against the ``MANIFEST`` of the folder holding it.
    """
    import anndata as ad

    rna_rel, atac_rel = dataset_files(name)
    if name not in DATASETS and _locate(rna_rel, data_dir) is None:
        raise KeyError(f"unknown dataset {name!r}; choose one of {list_datasets(data_dir)} (looked for {rna_rel} in "
                       f"{', '.join(str(p) for p in paths.data_dirs(data_dir))})")
    rna = ad.read_h5ad(shipped_path(rna_rel, data_dir, verify))
    atac = ad.read_h5ad(shipped_path(atac_rel, data_dir, verify))
    for adata in (rna, atac):
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
        adata.uns["counts"] = bool(adata.uns.get("counts", True))
    return rna, atac


def write_atomic(path, write) -> None:
    """``write(tmp_path)`` to a temporary name next to ``path`` (same suffix), then rename it to ``path``: an
    interrupted write leaves no partial file."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _one_line(text) -> str:
    return " ".join(str(text).split())


def write_dataset(rna, atac, name: str, data_dir, source: str = "", licence: str = "user data",
                  description: str | None = None) -> dict[str, Path]:
    """Write a paired data set into a data folder that :func:`load`, the notebooks (``data_dir``) and
    ``./run_all.sh --data DIR`` read: ``DIR/datasets/<name>_rna.h5ad`` and ``<name>_atac.h5ad`` (each written under a
    temporary name and renamed), and their lines in ``DIR/MANIFEST`` (added or replaced; same columns as
    ``data/MANIFEST``: file, sha256, bytes, source, licence, description). The folder needs nothing else: reference
    files and the shipped data sets are read from the repository's ``data/``. Sets ``uns["dataset"] = name``.

    Returns ``{"rna": path, "atac": path}``; then ``load(name, data_dir=DIR)``.
    """
    import re

    root = Path(data_dir)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)):
        raise ValueError(f"data set name {name!r}: use letters, digits, '_', '.', '-' (it names the files)")
    if _is_repo_data(root) and name in DATASETS:
        raise ValueError(f"{name!r} is a shipped data set of {root}: choose another name or another folder")
    if rna.n_obs != atac.n_obs or not (rna.obs_names == atac.obs_names).all():
        raise input_error(f"data set {name}", "obs_names", "RNA and ATAC do not hold the same cells in the same order",
                     "pair them first (cisformer.data.pair_cells)")
    rows, written = {}, {}
    for kind, adata, rel in zip(("rna", "atac"), (rna, atac), dataset_files(name)):
        adata.uns["dataset"] = name
        path = root / rel
        write_atomic(path, lambda tmp, a=adata: a.write_h5ad(tmp, compression="gzip"))
        features = "genes" if kind == "rna" else ("CREs" if "n_peaks_mapped" in adata.uns else "peaks")
        text = description or (
            f"{name} {kind.upper()}: {adata.n_obs:,} cells x {adata.n_vars:,} {features}; genome "
            f"{adata.uns.get('genome', 'not set')}; obs cell_type ({adata.obs['cell_type'].nunique() if 'cell_type' in adata.obs else 0} "
            f"types); {'raw counts' if adata.uns.get('counts', True) else 'not counts'}")
        rows[rel] = {"sha256": provenance.sha256(path), "bytes": path.stat().st_size, "source": _one_line(source or "user data"),
                     "licence": _one_line(licence), "description": _one_line(text)}
        written[kind] = path
    manifest_path = root / "MANIFEST"
    manifest = (read_manifest(root) if manifest_path.exists()
                else pd.DataFrame(columns=MANIFEST_COLUMNS).set_index("file"))
    for rel, row in rows.items():
        manifest.loc[rel, list(row)] = list(row.values())
    manifest = manifest.sort_index().reset_index(names="file")[MANIFEST_COLUMNS]
    write_atomic(manifest_path, lambda tmp: manifest.to_csv(tmp, sep="\t", index=False))
    return written


# ------------------------------------------------------------------------------------------------ reference readers
def load_cre_vocabulary(species: str = "human", data_dir=None) -> pd.DataFrame:
    """CRE vocabulary (row order = index): ``"human"``/``"hg38"`` 1,033,239 cCREs; ``"mouse"``/``"mm39"`` 262,853 (mm39)."""
    key = {"human": "human_cres", "hg38": "human_cres", "mouse": "mouse_cres", "mm39": "mouse_cres"}.get(species)
    if key is None:
        raise ValueError(f"species {species!r}: use 'human' (hg38) or 'mouse' (mm39)")
    df = pd.read_csv(reference_path(key, data_dir), sep="\t", header=None, names=["chrom", "start", "end"],
                     dtype={"chrom": str, "start": np.int64, "end": np.int64})
    df.attrs["genome"] = "hg38" if key == "human_cres" else "mm39"
    return df


def load_genes(genome: str = "hg38", data_dir=None) -> pd.DataFrame:
    """Gene table gene_name, gene_id, chrom, start, end, strand, tss (0-based; NaN / "" when unknown)."""
    key = {"hg38": "genes_hg38", "mm10": "genes_mm10"}.get(genome)
    if key is None:
        raise ValueError(f"genome {genome!r}: use 'hg38' or 'mm10'")
    df = pd.read_csv(reference_path(key, data_dir), sep="\t", keep_default_na=False, na_values={"start": [""]})
    for col in ("start", "end", "tss"):
        df[col] = pd.to_numeric(df[col]).astype(float)
        df.loc[df[col] < 0, col] = np.nan
    df["chrom"] = df["chrom"].astype(str)
    return df


def load_tf_list(species: str = "human", data_dir=None) -> list[str]:
    """Lambert et al. 2018 TFs: 1,639 human symbols, or the 1,254 with a mouse ortholog (mouse symbols)."""
    if species == "human":
        return pd.read_csv(reference_path("tf_human", data_dir), sep="\t")["HGNC symbol"].dropna().tolist()
    if species == "mouse":
        df = pd.read_csv(reference_path("tf_mouse_orthologs", data_dir), sep="\t")
        return df["MOUSE_GENE_SYM"].dropna().drop_duplicates().tolist()
    raise ValueError(f"species {species!r}: use 'human' or 'mouse'")


def load_remodelers(go_id: str = "GO:0140658", data_dir=None) -> list[str]:
    """Human chromatin-remodeler symbols from GO (org.Hs.eg.db 3.16), a substitute for a curated list.

    ``go_id``: ``GO:0140658`` ATP-dependent chromatin remodeler activity (33 genes, default), ``GO:0070603`` SWI/SNF
    complex, ``GO:0016586`` RSC complex, ``GO:0006338`` chromatin remodeling (373), ``GO:0006325`` chromatin organization.
    """
    df = pd.read_csv(reference_path("remodelers", data_dir), sep="\t")
    if go_id not in set(df.go_id):
        raise ValueError(f"go_id {go_id!r} not shipped; choose one of {sorted(set(df.go_id))}")
    return df.loc[df.go_id == go_id, "symbol"].dropna().drop_duplicates().tolist()


def load_gwas_finemapped(which: str = "both", data_dir=None) -> pd.DataFrame:
    """Fine-mapped UKBB blood-trait variants (hg38): chrom, start, end, id, pp, trait, set.

    ``which``: ``"gchromvar"`` (16 traits), ``"scavenge"`` (22 traits) or ``"both"``.
    """
    keys = {"gchromvar": ["gwas_gchromvar"], "scavenge": ["gwas_scavenge"], "both": ["gwas_gchromvar", "gwas_scavenge"]}[which]
    frames = []
    for key in keys:
        df = pd.read_csv(reference_path(key, data_dir), sep="\t")
        frames.append(pd.DataFrame({"chrom": df["chrom"].astype(str), "start": df["start0_hg38"].astype(np.int64),
                                    "end": df["end_hg38"].astype(np.int64), "id": df["id"].astype(str),
                                    "pp": df["PP"].astype(float), "trait": df["trait"].astype(str),
                                    "set": key.split("_")[1]}))
    return pd.concat(frames, ignore_index=True)


def load_chip_peaks(by: str = "tf", data_dir=None) -> dict[str, pd.DataFrame]:
    """Real TF ChIP-seq peak sets (hg38-lifted ENCODE GM12878 + JUN K562 + E2F4 LCL).

    Returns a dict ``tf -> DataFrame(chrom, start, end, summit, dataset, cell_type)`` (sets of the same TF are
    concatenated) or, with ``by="dataset"``, one entry per peak file.
    """
    peaks = pd.read_csv(reference_path("chip_peaks", data_dir), sep="\t", dtype={"chrom": str})
    sets = pd.read_csv(reference_path("chip_sets", data_dir), sep="\t").set_index("dataset")
    peaks["cell_type"] = peaks["dataset"].map(sets["cell_type"])
    key = peaks["dataset"] if by == "dataset" else peaks["dataset"].map(sets["tf"])
    cols = ["chrom", "start", "end", "summit", "dataset", "cell_type"]
    return {k: g[cols].reset_index(drop=True) for k, g in peaks.groupby(key, sort=True)}


def load_dnase_peaks(data_dir=None) -> dict[str, pd.DataFrame]:
    """Roadmap DNase-seq peaks (hg38-lifted) of five blood cell types: ``"B cells"``, ``"T cells"``,
    ``"NK cells"``, ``"CD14 monocytes"``, ``"CD34 HSPC"`` -> DataFrame(chrom, start, end)."""
    peaks = pd.read_csv(reference_path("dnase_blood", data_dir), sep="\t", dtype={"chrom": str})
    return {k: g[["chrom", "start", "end"]].reset_index(drop=True) for k, g in peaks.groupby("cell_type", sort=False)}


def load_clock_loci(which: str = "lifted", data_dir=None) -> pd.DataFrame:
    """EpiTrace mouse clock loci (mm10): ``"lifted"`` 61,503 loci or ``"mm285"`` 347 array-clock loci."""
    key = {"lifted": "clock_mm10", "mm285": "clock_mm285"}[which]
    names = ["chrom", "start", "end"] + (["probe", "slope"] if which == "mm285" else [])
    return pd.read_csv(reference_path(key, data_dir), sep="\t", header=None, names=names)


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
        adata.uns["counts"] = bool(_is_integer(adata.X))
    _annotate_genes(rna, genome)
    if not {"chrom", "start", "end"} <= set(atac.var.columns):
        try:
            coords = vocab.parse_peak_names(atac.var_names)
        except ValueError as err:
            raise input_error(source, "atac var_names", str(err),
                         f"name peaks in one of the forms {vocab.PEAK_NAME_FORMS} (0-based, half-open), or add var "
                         "columns chrom/start/end") from None
        atac.var[["chrom", "start", "end"]] = coords[["chrom", "start", "end"]].to_numpy()
        atac.var["start"] = atac.var["start"].astype(np.int64)
        atac.var["end"] = atac.var["end"].astype(np.int64)
    chroms, renamed = vocab.normalize_chroms(atac.var["chrom"], "chr")
    if renamed:
        atac.var["chrom"] = chroms
        atac.uns["chrom_note"] = f"{renamed} peak chromosome names given the 'chr' prefix (e.g. 1 -> chr1, MT -> chrM)"
    atac.var_names = vocab.peak_names(atac.var)
    return rna, atac


def _annotate_genes(rna, genome: str | None) -> None:
    """Fill rna.var gene_id/chrom/start/end/strand/tss from the shipped gene table of ``genome`` (hg38, mm10)."""
    genes = load_genes(genome) if genome in ("hg38", "mm10") else None
    hit = vocab.map_genes(rna, genes) if genes is not None else np.full(rna.n_vars, -1)
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
    """AnnData from a 10x .h5, a 10x matrix folder or an .h5ad (``backed``: opened read-only from disk, .h5ad only)."""
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
    """Raise :class:`InputError` for an empty file or an HDF5 file (.h5ad, .h5, .h5mu) that is truncated or corrupt."""
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


def use_cell_type_column(rna, atac, column: str, source="data", obs: pd.DataFrame | None = None) -> None:
    """Copy the cell types of the obs column ``column`` into ``obs["cell_type"]`` of both modalities (matched by
    cell name; "unknown" where a cell has none). The column is looked for in ``obs`` (e.g. a MuData's global obs),
    then ``rna.obs``, then ``atac.obs``; absent everywhere -> :class:`InputError` naming ``source`` and the columns
    there are."""
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


def read_rna(path, gene_column: str | None = None, recover_counts: bool = False):
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
             genome: str | None = None, recover_counts: bool = False):
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
    genome, recover_counts
        As in :func:`read_paired`.
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
            peaks = vocab.parse_peak_names(first.var_names[(types != "Gene Expression").to_numpy()])
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
    ``Gene Expression`` and ``Peaks`` features): fixtures and exchange with 10x tools."""
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


def read_fragments(path, peaks_df, barcodes=None, chunksize: int = 2_000_000):
    """Cells x peaks count matrix from a 10x ``fragments.tsv.gz`` (a fragment counts once per peak it overlaps).

    Parameters
    ----------
    path
        Fragment file: chrom, start, end, barcode, duplicate count (``#`` header lines skipped).
    peaks_df
        Peaks (chrom/start/end frame, or ``chrom:start-end`` names).
    barcodes
        Cells to keep, in this order (default: every barcode in the file, in order of appearance).

    Returns
    -------
    AnnData cells x peaks, CSR float32 counts, var chrom/start/end with names ``chrom:start-end``.
    """
    import anndata as ad

    path = Path(path)
    provenance.record_input(path)
    peaks = vocab.intervals(peaks_df).reset_index(drop=True)
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
        fi, pi = vocab.overlap_index(chunk, peaks)
        rows.append(cell[fi])
        cols.append(pi)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(cell_index), len(peaks)))
    X.sum_duplicates()
    var = pd.DataFrame({"chrom": peaks["chrom"].astype(str).to_numpy(), "start": peaks["start"].astype(np.int64).to_numpy(),
                        "end": peaks["end"].astype(np.int64).to_numpy()})
    var.index = vocab.peak_names(var)
    names = sorted(cell_index, key=cell_index.get)
    return ad.AnnData(X, obs=pd.DataFrame(index=pd.Index(names, dtype=str)), var=var)


# ------------------------------------------------------------------------------------------------ validation
def _is_integer(X) -> bool:
    data = X.data if sp.issparse(X) else np.asarray(X)
    return bool(np.all(np.isfinite(data)) and np.all(data == np.round(data)) and (data.size == 0 or data.min() >= 0))


COUNT_LAYERS = ("counts", "raw_counts", "raw")
ATAC_RULE = "ATAC values are read as open (1) where > 0 and closed (0) elsewhere: counts, binary or normalised alike (the paper's rule)"


def describe_values(X) -> dict:
    """What a matrix holds: ``n`` stored values, ``max``, ``n_nan``, ``n_inf``, ``n_negative`` and
    ``share_non_integer`` (of the finite non-zero values)."""
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


def find_counts(adata, source="rna", recover: bool = False, rtol: float = 1e-3):
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
    if _is_integer(adata.X) and describe_values(adata.X)["n"]:
        return adata, "RNA raw counts found in X"
    candidates = [(f"layers['{key}']", adata.layers[key]) for key in COUNT_LAYERS if key in adata.layers]
    if adata.raw is not None:
        candidates.append((".raw.X", None))
    for where, X in candidates:
        if where == ".raw.X":
            if not _is_integer(adata.raw.X):
                continue
            out = adata.raw.to_adata()
            out.uns.update(adata.uns)
            extra = f" ({out.n_vars} genes of .raw; X had {adata.n_vars})" if out.n_vars != adata.n_vars else ""
        else:
            if not _is_integer(X):
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
    """Raise :class:`InputError` when ATAC holds NaN, inf or negative values; else return the binarisation note."""
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
    sides, e.g. a '-1' suffix on one side only). Returns ``(rna, atac, note)``; the note counts the cells dropped.
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
    """Raise :class:`InputError` naming a few duplicated cell (obs) or feature (var) names of ``adata``."""
    for axis, names, fix in (("obs_names (barcodes)", adata.obs_names, "adata.obs_names_make_unique() or fix the barcodes"),
                             ("var_names (features)", adata.var_names,
                              "adata.var_names_make_unique() (genes: or index by Ensembl id; peaks: merge duplicates)")):
        if not names.is_unique:
            dup = names[names.duplicated()].unique()
            raise input_error(source, axis, f"{len(dup)} duplicated {kind} name(s), e.g. {list(dup[:3])}", fix)


def validate_pair(rna, atac, rna_source="rna", atac_source="atac", require_counts: bool = True, cre_vocabulary=None,
                  allow_empty_cells: bool = False) -> dict:
    """Check a paired dataset; raise :class:`InputError` naming file, field and fix at the first problem.

    Checks: identical barcodes in both modalities (same order), RNA raw counts when ``require_counts`` (the error
    says what ``X`` holds, whether ``layers["counts"]`` / ``.raw`` hold counts, and whether ``--recover-counts``
    can invert it: :func:`find_counts`), no NaN / inf / negative ATAC values (ATAC is binarised as > 0),
    parseable and unique peak names, unique gene names, no empty cells (unless ``allow_empty_cells``: QC removes
    them) or features, and, when ``cre_vocabulary`` is given (a chrom/start/end frame, or
    ``"hg38"``/``"human"``/``"mm39"``/``"mouse"``), that the peaks are on that vocabulary's genome build and
    species (:func:`check_genome`). Returns a small report dict (overlap score when computed).
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
        elif require_counts and not _is_integer(adata.X):
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
        coords = vocab.parse_peak_names(atac.var_names)
    except ValueError as err:
        raise input_error(atac_source, "var_names (peaks)", str(err),
                     f"name peaks in one of the forms {vocab.PEAK_NAME_FORMS} (0-based, half-open), or read the files "
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

    Peaks that do not lift (see :func:`cisformer.vocab.liftover`) are dropped, as are peaks that land on the same
    interval as an earlier one. Returns ``(atac_lifted, note)``; the note says how many peaks failed to lift.
    """
    if from_build not in LIFTOVER:
        raise input_error(source, "liftover", f"no shipped chain from {from_build!r}", f"use one of {sorted(LIFTOVER)}")
    key, to_build = LIFTOVER[from_build]
    coords = vocab.intervals(atac).reset_index(drop=True)
    lifted = vocab.liftover(coords, reference_path(key))
    lifted = lifted[~lifted.duplicated(["chrom", "start", "end"])]
    if lifted.empty:
        raise input_error(source, "var (peak coordinates)", f"none of {len(coords)} peaks lifts from {from_build} to {to_build}",
                     f"check that the peaks are on {from_build} and chromosomes are named 'chrN'")
    out = atac[:, lifted["orig_index"].to_numpy()].copy()
    var = pd.DataFrame({"chrom": lifted["chrom"].to_numpy(), "start": lifted["start"].to_numpy(np.int64),
                        "end": lifted["end"].to_numpy(np.int64)})
    var.index = vocab.peak_names(var)
    out.var = var
    out.uns["genome"] = to_build
    failed = len(coords) - len(lifted)
    return out, (f"lifted {len(lifted)} of {len(coords)} peaks {from_build} -> {to_build} with the shipped UCSC chain; "
                 f"{failed} ({failed / len(coords):.1%}) failed to lift (or landed on a lifted peak) and were dropped")


def _species_of(chroms) -> str | None:
    """``"human"`` when chr20-22 are present, ``"mouse"`` when >= 10 autosomes and none above 19, else None."""
    names, _ = vocab.normalize_chroms(pd.unique(np.asarray(chroms, dtype=object)))
    names = set(names)
    if names & _HUMAN_ONLY:
        return "human"
    autosomes = {int(c[3:]) for c in names if c[3:].isdigit()}
    return "mouse" if len(autosomes) >= 10 and max(autosomes) <= 19 else None


def check_genome(peaks, cre_vocabulary, source="atac", sample: int = 2_000, seed: int = 0) -> dict:
    """Are the peaks on the CRE vocabulary's genome build and species? Raise :class:`InputError` if not.

    Measures the share of peaks overlapping the vocabulary against randomly shifted peaks
    (:func:`cisformer.vocab.genome_overlap_score`), and the share of a seeded sample of ``sample`` peaks that
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

    Returns
    -------
    dict: ``build``, the overlap score (``observed``, ``null``, ``ratio``, ``matches``) and
    ``overlap_after_<from>_to_<to>`` per chain tried.
    """
    if isinstance(cre_vocabulary, str):
        cre_vocabulary = load_cre_vocabulary(cre_vocabulary)
    build = cre_vocabulary.attrs.get("genome")
    label = build or "the chosen"
    p = vocab.intervals(peaks).reset_index(drop=True)
    score = vocab.genome_overlap_score(p, cre_vocabulary)
    report = {"build": build, **score}
    field = "var (peak coordinates / genome build)"
    found = f"peaks overlap the {label} CRE vocabulary in {score['observed']:.0%} of cases vs {score['null']:.0%} for randomly shifted peaks"
    if vocab.chrom_style(p["chrom"]) != vocab.chrom_style(cre_vocabulary["chrom"]):
        raise input_error(source, field, f"{found}: chromosome names differ (peaks e.g. {p['chrom'].iloc[0]!r}, vocabulary "
                     f"e.g. {cre_vocabulary['chrom'].iloc[0]!r})",
                     "rename chromosomes (cisformer.vocab.normalize_chroms; read_paired and cisformer preprocess do it)")
    species, vocab_species = _species_of(p["chrom"]), SPECIES.get(build)
    if species and vocab_species and species != vocab_species:
        raise input_error(source, field, f"{found}: the peaks are {species} (chromosomes "
                     f"{', '.join(sorted(set(vocab.normalize_chroms(p['chrom'])[0]) & _HUMAN_ONLY)) or 'chr1-chr19 only'}) "
                     f"but the vocabulary is {vocab_species} ({build}): species mismatch",
                     f"use the {species} vocabulary (--cre-vocabulary {species}) or a model / vocabulary of your species")
    rows = np.sort(np.random.default_rng(seed).choice(len(p), min(sample, len(p)), replace=False))
    part = p.iloc[rows].reset_index(drop=True)
    as_is = vocab.overlap_share(part, cre_vocabulary)
    for from_build, (key, to_build) in LIFTOVER.items():
        if build is not None and to_build != build:
            continue
        try:
            lifted = vocab.liftover(part, reference_path(key))
        except ImportError:  # pragma: no cover - pyliftover is in the 'liftover' extra that run_all.sh installs
            report["liftover_check"] = "skipped: pip install pyliftover"
            continue
        if len(lifted) < len(part) / 2:
            continue
        after = vocab.overlap_share(lifted, cre_vocabulary)
        report[f"overlap_after_{from_build}_to_{to_build}"] = after
        if after >= as_is + 0.1 and after >= 1.3 * as_is:
            raise input_error(source, field, f"{found}; after lifting {len(part)} of them {from_build} -> {to_build}, "
                         f"{after:.0%} overlap (vs {as_is:.0%} as they are): the peaks are most likely on {from_build}",
                         f"lift them: cisformer preprocess ... --liftover {from_build} (API: "
                         f"atac, note = cisformer.data.lift_peaks(atac, '{from_build}'))")
    if not score["matches"]:
        other = {"human": "mouse", "mouse": "human"}.get(vocab_species)
        if other is not None:
            other_score = vocab.genome_overlap_score(p, load_cre_vocabulary(other))
            report[f"overlap_{other}"] = other_score["observed"]
            if other_score["matches"]:
                raise input_error(source, field, f"{found}, but {other_score['observed']:.0%} overlap the {other} vocabulary: "
                             f"the peaks are {other}, the vocabulary {vocab_species}: species mismatch",
                             f"use --cre-vocabulary {other} (API: cre_vocabulary='{other}')")
        fix = ("lift the peaks to the vocabulary's build (--liftover hg19 for hg19 peaks, or "
               "cisformer.vocab.liftover with a UCSC chain), or use the vocabulary of your genome")
        if vocab_species == "mouse":
            fix = (f"lift the peaks to {build} (e.g. mm10 peaks with UCSC's mm10ToMm39.over.chain.gz and "
                   "cisformer.vocab.liftover; no mouse chain is shipped), or keep your own peaks as the vocabulary "
                   "(omit --cre-vocabulary)")
        raise input_error(source, field, f"{found}: the peaks are not on the {label} build", fix)
    return report


# ------------------------------------------------------------------------------------------------ QC and splits
def qc_metrics(rna, atac) -> pd.DataFrame:
    """Per-cell QC: n_genes, n_counts_rna, n_peaks, n_counts_atac (also written into both obs)."""
    table = pd.DataFrame({
        "n_genes": np.asarray((rna.X > 0).sum(axis=1)).ravel(),
        "n_counts_rna": np.asarray(rna.X.sum(axis=1)).ravel(),
        "n_peaks": np.asarray((atac.X > 0).sum(axis=1)).ravel(),
        "n_counts_atac": np.asarray(atac.X.sum(axis=1)).ravel(),
    }, index=rna.obs_names)
    for adata in (rna, atac):
        for col in table:
            adata.obs[col] = table[col].to_numpy()
    return table


def qc(rna, atac, min_cells: int = 10, min_genes: int = 200, max_genes: int = 20_000, min_peaks: int = 500,
       max_peaks: int = 50_000):
    """The paper's QC: features detected in < ``min_cells`` cells out; cells with ``min_genes``-``max_genes`` genes
    and ``min_peaks``-``max_peaks`` open peaks kept (bounds inclusive; features filtered first).

    Returns ``(rna_filtered, atac_filtered, table)``: filtered copies and a per-cell table with the metrics
    (computed after feature filtering) and a ``pass_qc`` column. The metrics are also written into ``obs``.
    """
    gene_cells = np.asarray((rna.X > 0).sum(axis=0)).ravel()
    peak_cells = np.asarray((atac.X > 0).sum(axis=0)).ravel()
    rna_f, atac_f = rna[:, gene_cells >= min_cells].copy(), atac[:, peak_cells >= min_cells].copy()
    table = qc_metrics(rna_f, atac_f)
    table["pass_qc"] = table.n_genes.between(min_genes, max_genes) & table.n_peaks.between(min_peaks, max_peaks)
    for adata in (rna, atac):
        for col in table:
            adata.obs[col] = table[col].to_numpy()
    keep = table["pass_qc"].to_numpy()
    return rna_f[keep].copy(), atac_f[keep].copy(), table


QC_RULES = (  # (rule, what it removes, qc() argument, CLI option)
    ("min_cells (genes)", "genes", "min_cells", "--min-cells"),
    ("min_cells (peaks)", "peaks", "min_cells", "--min-cells"),
    ("min_genes", "cells", "min_genes", "--min-genes"),
    ("max_genes", "cells", "max_genes", "--max-genes"),
    ("min_peaks", "cells", "min_peaks", "--min-cres"),
    ("max_peaks", "cells", "max_peaks", "--max-cres"),
)


def qc_report(rna, atac, min_cells: int = 10, min_genes: int = 200, max_genes: int = 20_000, min_peaks: int = 500,
              max_peaks: int = 50_000, source="data", check: bool = True) -> pd.DataFrame:
    """What each rule of :func:`qc` removes, in the order :func:`qc` applies them, and each rule alone.

    Parameters
    ----------
    rna, atac
        Paired AnnData (same cells, same order); the thresholds are those of :func:`qc`.
    source
        Name used in messages.
    check
        Warn (``UserWarning``) when more than half of the cells are removed, naming the rule that removes the most
        and the option that relaxes it; raise :class:`InputError` (with the table) when no cell is left.

    Returns
    -------
    DataFrame, one row per rule: ``rule``, ``removes`` (cells / genes / peaks), ``threshold``, ``option`` (CLI
    option / :func:`qc` argument), ``removed`` (by this rule after the rules above it), ``removed_alone`` (by
    this rule applied alone, features filtered first as in :func:`qc`), ``left`` (after this rule). ``attrs``
    hold ``n_cells``, ``n_cells_left``.
    """
    import warnings

    keep_gene = cells_per_feature(rna).to_numpy() >= min_cells
    keep_peak = cells_per_feature(atac).to_numpy() >= min_cells
    n_genes = np.asarray((rna.X[:, keep_gene] > 0).sum(axis=1)).ravel()
    n_peaks = np.asarray((atac.X[:, keep_peak] > 0).sum(axis=1)).ravel()
    thresholds = {"min_cells": min_cells, "min_genes": min_genes, "max_genes": max_genes, "min_peaks": min_peaks,
                  "max_peaks": max_peaks}
    cell_pass = {"min_genes": n_genes >= min_genes, "max_genes": n_genes <= max_genes,
                 "min_peaks": n_peaks >= min_peaks, "max_peaks": n_peaks <= max_peaks}
    rows, alive = [], np.ones(rna.n_obs, bool)
    for rule, removes, arg, option in QC_RULES:
        if removes == "cells":
            ok = cell_pass[arg]
            removed, alone = int((alive & ~ok).sum()), int((~ok).sum())
            alive &= ok
            left = int(alive.sum())
        else:
            ok = keep_gene if removes == "genes" else keep_peak
            removed = alone = int((~ok).sum())
            left = int(ok.sum())
        rows.append({"rule": rule, "removes": removes, "threshold": thresholds[arg], "option": f"{option} / {arg}",
                     "removed": removed, "removed_alone": alone, "left": left})
    table = pd.DataFrame(rows)
    table.attrs.update(n_cells=int(rna.n_obs), n_cells_left=int(alive.sum()))
    if check:
        cells = table[table.removes == "cells"]
        worst = cells.loc[cells["removed"].idxmax()] if len(cells) else None
        if alive.sum() == 0:
            raise input_error(source, "QC thresholds", f"no cell of {rna.n_obs} passes QC:\n{table.to_string(index=False)}\n",
                         f"relax the rule that removes the most cells ({worst['rule']}: {worst['option']}), "
                         "e.g. for small or sparse data --min-genes 1 --min-cres 1 --min-cells 1")
        if rna.n_obs and alive.sum() < rna.n_obs / 2:
            warnings.warn(f"{source}: QC keeps {int(alive.sum())} of {rna.n_obs} cells; {worst['rule']} "
                          f"(threshold {worst['threshold']}) removes {worst['removed']} "
                          f"({worst['removed_alone']} alone): relax it with {worst['option']}", UserWarning, stacklevel=2)
    return table


def cells_per_feature(adata) -> pd.Series:
    """Number of cells in which each feature is detected (the paper drops features seen in < 10 cells)."""
    return pd.Series(np.asarray((adata.X > 0).sum(axis=0)).ravel(), index=adata.var_names, name="n_cells")


def tfidf_lsi(atac, n_components: int = 30, seed: int = 0, drop_first: bool = True) -> np.ndarray:
    """TF-IDF + truncated SVD (LSI) embedding of an ATAC matrix, stored in ``atac.obsm["X_lsi"]`` and returned.

    TF-IDF as in Signac: ``log1p(x / cell_total * n_cells / feature_total * 1e4)``; the first component, which
    tracks sequencing depth, is dropped by default.
    """
    from sklearn.utils.extmath import randomized_svd

    X = sp.csr_matrix(atac.X, dtype=np.float32)
    cell_total = np.asarray(X.sum(axis=1)).ravel()
    feature_total = np.asarray(X.sum(axis=0)).ravel()
    keep = feature_total > 0
    X = X[:, keep]
    tf = sp.diags(1.0 / np.maximum(cell_total, 1)) @ X
    idf = X.shape[0] / feature_total[keep]
    tfidf = (tf @ sp.diags(idf)).tocsr()
    tfidf.data = np.log1p(tfidf.data * 1e4)
    k = min(n_components + int(drop_first), min(tfidf.shape) - 1)
    u, s, _ = randomized_svd(tfidf, n_components=k, random_state=seed)
    emb = u * s
    if drop_first:
        emb = emb[:, 1:]
    atac.obsm["X_lsi"] = emb.astype(np.float32)
    return atac.obsm["X_lsi"]


def _pick_groups(sizes: pd.Series, n_total: int, low: float, high: float, rng) -> list:
    """Whole groups whose total lies in [low, high] x n_total (closest to the middle when impossible)."""
    target = (low + high) / 2 * n_total
    best, best_gap = [], np.inf
    groups = sizes[sizes > 0]
    for _ in range(200):
        order = rng.permutation(len(groups))
        chosen, total = [], 0
        for i in order:
            size = groups.iloc[i]
            if total + size <= high * n_total:
                chosen.append(groups.index[i])
                total += size
            if total >= low * n_total:
                break
        gap = abs(total - target) if total >= low * n_total else abs(total - target) + n_total
        if gap < best_gap and chosen:
            best, best_gap = chosen, gap
        if low * n_total <= total <= high * n_total:
            return chosen
    if not best:  # every group exceeds the upper bound: hold out the smallest one
        best = [groups.idxmin()]
    return best


def subsample(rna, atac, n_cells: int | None = None, n_cres: int | None = None, n_genes: int | None = None,
              seed: int = 0, genes_with_coords: bool = False, select_on=None):
    """A seeded, smaller copy of a paired dataset, as the benchmark notebooks' profiles size it.

    Parameters
    ----------
    rna, atac
        Paired AnnData (same cells in the same order), counts.
    n_cells
        Cells drawn at random without replacement (``None``: all).
    n_cres
        The most frequently open CREs kept, in their original order (``None``: all).
    n_genes
        The genes of highest variance of log-normalised expression kept, in their original order (``None``: all).
    seed
        Seeds the cell draw: the same seed and ``n_cells`` give the same cells whatever ``n_cres`` and ``n_genes``.
    genes_with_coords
        Keep only genes with genomic coordinates (``var["chrom"]`` non-empty) before choosing ``n_genes``; needed
        by methods that read the CREs around a gene.
    select_on
        obs names of the cells whose data choose the CREs and genes (pass the training and validation cells of a
        benchmark, so that nothing about the test cells decides which features are scored); ``None``: all cells.

    Returns
    -------
    (rna, atac)
        New AnnData objects.
    """
    from .metrics import true_expression

    if n_cells and rna.n_obs > n_cells:
        keep = np.sort(np.random.default_rng(seed).choice(rna.n_obs, n_cells, replace=False))
        rna, atac = rna[keep], atac[keep]
    rows = slice(None) if select_on is None else rna.obs_names.get_indexer(pd.Index(select_on).astype(str))
    if select_on is not None and (rows < 0).any():
        raise input_error("select_on", "obs_names", f"{int((rows < 0).sum())} names are not cells of the data",
                     "pass obs names of cells kept by n_cells (e.g. the training cells of a split of these cells)")
    if n_cres and atac.n_vars > n_cres:
        freq = np.asarray((atac.X[rows] > 0).mean(axis=0)).ravel()
        atac = atac[:, np.sort(np.argsort(-freq, kind="stable")[:n_cres])]
    if genes_with_coords and "chrom" in rna.var:
        rna = rna[:, rna.var["chrom"].astype(str).str.len().to_numpy() > 0]
    if n_genes and rna.n_vars > n_genes:
        variance = true_expression(rna[rows]).var(axis=0)
        rna = rna[:, np.sort(np.argsort(-variance, kind="stable")[:n_genes])]
    return rna.copy(), atac.copy()


def downsample_atac(atac, keep: float, seed: int = 0):
    """A copy of ``atac`` with each count (fragment) kept with probability ``keep`` (binomial thinning), as if
    the cells had been sequenced less deeply; entries thinned to zero are removed. ``keep=1`` returns a copy."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    X = sp.csr_matrix(atac.X, dtype=np.float32, copy=True)
    if keep < 1:
        if X.nnz and not np.allclose(X.data, np.round(X.data)):
            raise input_error("atac", "X", "non-integer values", "downsampling thins counts: pass raw counts")
        X.data = np.random.default_rng(seed).binomial(X.data.astype(np.int64), keep).astype(np.float32)
        X.eliminate_zeros()
    out = atac.copy()
    out.X = X
    return out


def label_tokens(obs: pd.DataFrame, key: str = "cell_type"):
    """An RNA-like AnnData whose only expressed "gene" in each cell is its label ``obs[key]`` (count 1): the
    oracle input that hands a model the answer (the cell type) and nothing else. A model trained on it that
    does not reach the cell-type mean's accuracy cannot learn CRE x cell-type structure at all."""
    import anndata as ad

    if key not in obs:
        raise input_error("obs", key, "column missing", f"add obs['{key}'] with the labels")
    labels = obs[key].astype(str).to_numpy()
    names = np.unique(labels)
    X = sp.csr_matrix((np.ones(len(labels), dtype=np.float32), (np.arange(len(labels)), np.searchsorted(names, labels))),
                      shape=(len(labels), len(names)))
    return ad.AnnData(X, obs=obs.copy(), var=pd.DataFrame(index=[f"label:{n}" for n in names]))


def split_cells(obs: pd.DataFrame, by: str = "random", test_fraction: float = 0.2, seed: int = 0, held_out=None,
                val_fraction: float = 0.1, column: str | None = None):
    """Split cells into (train, val, test) name arrays with no overlap.

    Parameters
    ----------
    by
        ``"random"``: cells at random (``test_fraction`` in test). ``"cell_type"``: whole cell types held out
        (``held_out`` types, or seeded types totalling ~15-20% of cells). ``"batch"``: whole batches held out
        (``held_out`` batches, or seeded batches totalling about ``test_fraction``). ``"predefined"``:
        ``obs["split"]`` ("test" -> test, the rest -> train / val).
    held_out
        Cell types or batches to place in the test set.
    val_fraction
        Fraction of the non-test cells drawn at random for validation.
    column
        obs column for ``cell_type`` / ``batch`` splits (default: the mode's name).
    """
    rng = np.random.default_rng(seed)
    names = np.asarray(obs.index.astype(str))
    n = len(names)
    if by == "random":
        perm = rng.permutation(n)
        is_test = np.zeros(n, bool)
        is_test[perm[: int(round(test_fraction * n))]] = True
    elif by in ("cell_type", "batch"):
        col = column or by
        if col not in obs:
            raise input_error("obs", col, "column missing", f"add obs['{col}'] or choose another split")
        labels = obs[col].astype(str).to_numpy()
        if held_out is None:
            sizes = pd.Series(labels).value_counts().sort_index()
            low, high = (0.15, 0.20) if by == "cell_type" else (test_fraction * 0.75, test_fraction * 1.25)
            held_out = _pick_groups(sizes, n, low, high, rng)
        held_out = [str(h) for h in np.atleast_1d(held_out)]
        unknown = set(held_out) - set(labels)
        if unknown:
            raise input_error("obs", col, f"held_out values {sorted(unknown)} not found", f"choose from {sorted(set(labels))}")
        is_test = np.isin(labels, held_out)
    elif by == "predefined":
        if "split" not in obs:
            raise input_error("obs", "split", "column missing", "add obs['split'] with 'train'/'test' or use by='random'")
        is_test = obs["split"].astype(str).to_numpy() == "test"
    else:
        raise ValueError(f"by={by!r}: use 'random', 'cell_type', 'batch' or 'predefined'")
    rest = np.flatnonzero(~is_test)
    rest = rest[rng.permutation(len(rest))]
    n_val = int(round(val_fraction * len(rest)))
    val = np.sort(rest[:n_val])
    train = np.sort(rest[n_val:])
    return names[train], names[val], names[np.flatnonzero(is_test)]
