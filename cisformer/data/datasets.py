"""The shipped data sets and reference resources (checksums in ``data/MANIFEST``) and data folders of your own.

    rna, atac = cisformer.data.load("snareseq")          # also "bmmc", "pbmc_scarlink", "snareseq_tiny"
    cres = cisformer.data.load_cre_vocabulary("human")    # 1,033,239 hg38 cCREs
    write_dataset(rna, atac, "mine", "work/mine")        # a data folder: datasets/mine_*.h5ad + MANIFEST
    rna, atac = load("mine", data_dir="work/mine")        # as the notebooks read it; references from data/
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..utils import paths, provenance
from ..utils.paths import write_atomic
from .errors import input_error

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
    description).

    Parameters
    ----------
    data_dir
        Folder holding the ``MANIFEST`` (default: ``CISFORMER_DATA`` or the repository's ``data/``).

    Returns
    -------
    DataFrame indexed by ``file`` (path relative to the folder).
    """
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
    """The first folder of :func:`cisformer.utils.paths.data_dirs` (``data_dir``, then the default data folder)
    that holds ``rel``; None when none does."""
    return next((root for root in paths.data_dirs(data_dir) if (root / rel).exists()), None)


def shipped_path(rel: str, data_dir=None, verify: bool = True) -> Path:
    """Path of a data file, its sha256 checked against the ``MANIFEST`` of the folder holding it (and recorded in
    the provenance log). ``rel`` is looked up in ``data_dir`` first, then in the default data folder
    (:func:`cisformer.utils.paths.data_dirs`): a user's data folder holds only the user's data sets, and the reference
    files and shipped data sets come from the repository's ``data/``.

    Parameters
    ----------
    rel
        Path relative to a data folder, e.g. ``"datasets/bmmc_rna.h5ad"``.
    data_dir
        Data folder searched first, then the default one (:func:`cisformer.utils.paths.data_dirs`).
    verify
        Check the sha256 against the ``MANIFEST`` (raise :class:`InputError` on a mismatch or a missing line).

    Returns
    -------
    Path of the file.
    """
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


def reference_path(key: str, data_dir=None, *, verify: bool = True) -> Path:
    """Verified path of a shipped reference file; ``key`` in :data:`REFERENCES` or a path relative to ``data/``.

    Parameters
    ----------
    key
        A key of :data:`REFERENCES` (e.g. ``"human_cres"``, ``"chain_hg19_hg38"``) or a relative path.
    data_dir, verify
        As in :func:`shipped_path`.

    Returns
    -------
    Path of the file (``KeyError`` for an unknown key).
    """
    rel = REFERENCES.get(key, key)
    if rel not in REFERENCES.values() and _locate(rel, data_dir) is None:
        raise KeyError(f"unknown reference {key!r}; choose one of {sorted(REFERENCES)}")
    return shipped_path(rel, data_dir, verify)


def dataset_files(name: str) -> tuple[str, str]:
    """Paths (relative to a data folder) of a paired data set's RNA and ATAC files: ``datasets/<name>_rna.h5ad``
    and ``datasets/<name>_atac.h5ad``, for the shipped sets (:data:`DATASETS`) and those written by
    :func:`write_dataset` alike.

    Parameters
    ----------
    name
        Data set name, e.g. ``"bmmc"``.

    Returns
    -------
    (rna_rel, atac_rel): the two relative paths (str); the files need not exist.
    """
    return DATASETS.get(name, (f"datasets/{name}_rna.h5ad", f"datasets/{name}_atac.h5ad"))


def list_datasets(data_dir=None) -> list[str]:
    """Names :func:`load` accepts with this ``data_dir``: the shipped sets and those of the data folder.

    Parameters
    ----------
    data_dir
        Data folder searched first, then the default one (:func:`cisformer.utils.paths.data_dirs`).

    Returns
    -------
    Sorted list of data set names (str).
    """
    names = set(DATASETS)
    for root in paths.data_dirs(data_dir):
        for rna_file in (root / "datasets").glob("*_rna.h5ad"):
            name = rna_file.name[: -len("_rna.h5ad")]
            if (root / dataset_files(name)[1]).exists():
                names.add(name)
    return sorted(names)


def load(name: str, data_dir=None, *, verify: bool = True):
    """Load a shipped paired dataset, or one of a data folder, as ``(rna, atac)`` AnnData with identical obs_names.

    Parameters
    ----------
    name
        ``"snareseq"`` (10,309 cells, mm10), ``"snareseq_tiny"`` (100 cells, no labels), ``"bmmc"`` (500 cells, hg38,
        ``obs["split"]`` official train/test), ``"pbmc_scarlink"`` (9,460 cells, 3 genes with normalized RNA,
        ATAC = 500-bp tiles around the genes), or a data set written into ``data_dir`` by :func:`write_dataset`
        (``cisformer preprocess ... --name NAME --out DIR``): ``DIR/datasets/NAME_rna.h5ad`` and ``NAME_atac.h5ad``.
    data_dir
        Folder holding the data sets and their ``MANIFEST`` (default ``cisformer.utils.paths.data_dir()``); files
        it lacks (the shipped sets, reference files) are taken from the default data folder.
    verify
        Check each file's sha256 against the ``MANIFEST`` of the folder holding it.

    Returns
    -------
    (rna, atac): AnnData cells x genes and cells x peaks (or CREs), ``X`` CSR float32, identical obs_names,
    ``uns["counts"]`` whether ``X`` holds raw counts.
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


def _one_line(text) -> str:
    return " ".join(str(text).split())


def write_dataset(rna, atac, name: str, data_dir, *, source: str = "", licence: str = "user data",
                  description: str | None = None) -> dict[str, Path]:
    """Write a paired data set into a data folder that :func:`load`, the notebooks (``data_dir``) and
    ``./run_all.sh --data DIR`` read: ``DIR/datasets/<name>_rna.h5ad`` and ``<name>_atac.h5ad`` (each written under a
    temporary name and renamed), and their lines in ``DIR/MANIFEST`` (added or replaced; same columns as
    ``data/MANIFEST``: file, sha256, bytes, source, licence, description). The folder needs nothing else: reference
    files and the shipped data sets are read from the repository's ``data/``. Sets ``uns["dataset"] = name``.

    Parameters
    ----------
    rna, atac
        Paired AnnData with the same cells in the same order (:func:`cisformer.data.pair_cells`).
    name
        Data set name (letters, digits, ``_``, ``.``, ``-``); not a shipped set's name in the repository's ``data/``.
    data_dir
        Folder to write into (created if needed).
    source, licence
        MANIFEST columns (defaults ``"user data"``).
    description
        MANIFEST description of both files; default: cells x features, genome, cell types, counts or not.

    Returns
    -------
    dict ``{"rna": Path, "atac": Path}`` of the written files; then ``load(name, data_dir=DIR)``.
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
def load_cre_vocabulary(species: str = "human", *, data_dir=None) -> pd.DataFrame:
    """CRE vocabulary (row order = index): ``"human"``/``"hg38"`` 1,033,239 cCREs; ``"mouse"``/``"mm39"`` 262,853
    (mm39).

    Parameters
    ----------
    species
        ``"human"``, ``"hg38"``, ``"mouse"`` or ``"mm39"``.
    data_dir
        Data folder searched first, then the default one (:func:`cisformer.utils.paths.data_dirs`).

    Returns
    -------
    DataFrame ``chrom`` (str), ``start``, ``end`` (int64, 0-based half-open); ``attrs["genome"]`` the build.
    """
    key = {"human": "human_cres", "hg38": "human_cres", "mouse": "mouse_cres", "mm39": "mouse_cres"}.get(species)
    if key is None:
        raise ValueError(f"species {species!r}: use 'human' (hg38) or 'mouse' (mm39)")
    df = pd.read_csv(reference_path(key, data_dir), sep="\t", header=None, names=["chrom", "start", "end"],
                     dtype={"chrom": str, "start": np.int64, "end": np.int64})
    df.attrs["genome"] = "hg38" if key == "human_cres" else "mm39"
    return df


def load_genes(genome: str = "hg38", *, data_dir=None) -> pd.DataFrame:
    """Gene table gene_name, gene_id, chrom, start, end, strand, tss (0-based; NaN / "" when unknown).

    Parameters
    ----------
    genome
        ``"hg38"`` or ``"mm10"``.
    data_dir
        Data folder searched first, then the default one (:func:`cisformer.utils.paths.data_dirs`).

    Returns
    -------
    DataFrame, one row per gene; ``start``, ``end``, ``tss`` float (bp).
    """
    key = {"hg38": "genes_hg38", "mm10": "genes_mm10"}.get(genome)
    if key is None:
        raise ValueError(f"genome {genome!r}: use 'hg38' or 'mm10'")
    df = pd.read_csv(reference_path(key, data_dir), sep="\t", keep_default_na=False, na_values={"start": [""]})
    for col in ("start", "end", "tss"):
        df[col] = pd.to_numeric(df[col]).astype(float)
        df.loc[df[col] < 0, col] = np.nan
    df["chrom"] = df["chrom"].astype(str)
    return df


def load_tf_list(species: str = "human", *, data_dir=None) -> list[str]:
    """Lambert et al. 2018 TFs: 1,639 human symbols, or the 1,254 with a mouse ortholog (mouse symbols).

    Parameters
    ----------
    species
        ``"human"`` or ``"mouse"``.
    data_dir
        Data folder searched first, then the default one (:func:`cisformer.utils.paths.data_dirs`).

    Returns
    -------
    list of gene symbols (str).
    """
    if species == "human":
        return pd.read_csv(reference_path("tf_human", data_dir), sep="\t")["HGNC symbol"].dropna().tolist()
    if species == "mouse":
        df = pd.read_csv(reference_path("tf_mouse_orthologs", data_dir), sep="\t")
        return df["MOUSE_GENE_SYM"].dropna().drop_duplicates().tolist()
    raise ValueError(f"species {species!r}: use 'human' or 'mouse'")


def load_remodelers(go_id: str = "GO:0140658", *, data_dir=None) -> list[str]:
    """Human chromatin-remodeler symbols from GO (org.Hs.eg.db 3.16), a substitute for a curated list.

    ``go_id``: ``GO:0140658`` ATP-dependent chromatin remodeler activity (33 genes, default), ``GO:0070603`` SWI/SNF
    complex, ``GO:0016586`` RSC complex, ``GO:0006338`` chromatin remodeling (373), ``GO:0006325`` chromatin organization.

    Parameters
    ----------
    go_id
        GO term, one of those above.
    data_dir
        Data folder searched first, then the default one (:func:`cisformer.utils.paths.data_dirs`).

    Returns
    -------
    list of unique gene symbols (str).
    """
    df = pd.read_csv(reference_path("remodelers", data_dir), sep="\t")
    if go_id not in set(df.go_id):
        raise ValueError(f"go_id {go_id!r} not shipped; choose one of {sorted(set(df.go_id))}")
    return df.loc[df.go_id == go_id, "symbol"].dropna().drop_duplicates().tolist()


def load_gwas_finemapped(which: str = "both", *, data_dir=None) -> pd.DataFrame:
    """Fine-mapped UKBB blood-trait variants (hg38): chrom, start, end, id, pp, trait, set.

    Parameters
    ----------
    which
        ``"gchromvar"`` (16 traits), ``"scavenge"`` (22 traits) or ``"both"``.
    data_dir
        Data folder searched first, then the default one (:func:`cisformer.utils.paths.data_dirs`).

    Returns
    -------
    DataFrame, one row per variant and trait: ``chrom``, ``start``, ``end`` (0-based), ``id``, ``pp`` (posterior
    probability), ``trait``, ``set`` (``"gchromvar"`` / ``"scavenge"``).
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


def load_chip_peaks(*, by: str = "tf", data_dir=None) -> dict[str, pd.DataFrame]:
    """Real TF ChIP-seq peak sets (hg38-lifted ENCODE GM12878 + JUN K562 + E2F4 LCL).

    Parameters
    ----------
    by
        ``"tf"``: one entry per TF; ``"dataset"``: one entry per peak file.
    data_dir
        Data folder searched first, then the default one (:func:`cisformer.utils.paths.data_dirs`).

    Returns
    -------
    dict ``tf -> DataFrame(chrom, start, end, summit, dataset, cell_type)`` (sets of the same TF are
    concatenated) or, with ``by="dataset"``, one entry per peak file.
    """
    peaks = pd.read_csv(reference_path("chip_peaks", data_dir), sep="\t", dtype={"chrom": str})
    sets = pd.read_csv(reference_path("chip_sets", data_dir), sep="\t").set_index("dataset")
    peaks["cell_type"] = peaks["dataset"].map(sets["cell_type"])
    key = peaks["dataset"] if by == "dataset" else peaks["dataset"].map(sets["tf"])
    cols = ["chrom", "start", "end", "summit", "dataset", "cell_type"]
    return {k: g[cols].reset_index(drop=True) for k, g in peaks.groupby(key, sort=True)}


def load_dnase_peaks(*, data_dir=None) -> dict[str, pd.DataFrame]:
    """Roadmap DNase-seq peaks (hg38-lifted) of five blood cell types: ``"B cells"``, ``"T cells"``,
    ``"NK cells"``, ``"CD14 monocytes"``, ``"CD34 HSPC"`` -> DataFrame(chrom, start, end).

    Parameters
    ----------
    data_dir
        Data folder searched first, then the default one (:func:`cisformer.utils.paths.data_dirs`).

    Returns
    -------
    dict cell type -> DataFrame ``chrom``, ``start``, ``end``.
    """
    peaks = pd.read_csv(reference_path("dnase_blood", data_dir), sep="\t", dtype={"chrom": str})
    return {k: g[["chrom", "start", "end"]].reset_index(drop=True) for k, g in peaks.groupby("cell_type", sort=False)}


def load_clock_loci(which: str = "lifted", *, data_dir=None) -> pd.DataFrame:
    """EpiTrace mouse clock loci (mm10): ``"lifted"`` 61,503 loci or ``"mm285"`` 347 array-clock loci.

    Parameters
    ----------
    which
        ``"lifted"`` or ``"mm285"``.
    data_dir
        Data folder searched first, then the default one (:func:`cisformer.utils.paths.data_dirs`).

    Returns
    -------
    DataFrame ``chrom``, ``start``, ``end`` (with ``"mm285"`` also ``probe``, ``slope``).
    """
    key = {"lifted": "clock_mm10", "mm285": "clock_mm285"}[which]
    names = ["chrom", "start", "end"] + (["probe", "slope"] if which == "mm285" else [])
    return pd.read_csv(reference_path(key, data_dir), sep="\t", header=None, names=names)
