"""The paper's full datasets (not shipped: too large). List them, or download them when you have internet.

    python data/fetch_full_datasets.py --list                 # what exists, where, how big, checksum if known
    python data/fetch_full_datasets.py pbmc10k snareseq --dest ~/cisformer_full

Downloads need internet (this is never run in tests or CI except ``--list``); offline it stops with a clear
message. Where a file's checksum is known it is verified after download; ``sha256: None`` means no published
checksum was available when this list was written (the script prints the sum it computed so you can record it).
URLs marked ``page`` are landing pages to open in a browser (access forms, many files, or URL not stable).
Load a downloaded pair with ``cisformer.data.read_paired(...)`` and check it with ``cisformer.data.validate_pair``.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.error
import urllib.request
from pathlib import Path

TENX = "https://cf.10xgenomics.com/samples/cell-arc/2.0.0"
GEO = "https://ftp.ncbi.nlm.nih.gov/geo/series"

# name -> description, paper use, list of (url, sha256 or None, kind "file"|"page")
DATASETS = {
    "pbmc10k": ("10x Multiome PBMC granulocyte-sorted 10k (hg38)", "Fig 2 RNA<->ATAC, Fig 3 attention/links/ChIP/GWAS", [
        (f"{TENX}/pbmc_granulocyte_sorted_10k/pbmc_granulocyte_sorted_10k_filtered_feature_bc_matrix.h5", None, "file"),
        (f"{TENX}/pbmc_granulocyte_sorted_10k/pbmc_granulocyte_sorted_10k_atac_fragments.tsv.gz", None, "file"),
    ]),
    "brain3k": ("10x Multiome frozen human healthy brain 3k (hg38)", "Fig 2 benchmark", [
        (f"{TENX}/human_brain_3k/human_brain_3k_filtered_feature_bc_matrix.h5", None, "file"),
        (f"{TENX}/human_brain_3k/human_brain_3k_atac_fragments.tsv.gz", None, "file"),
    ]),
    "kidney10x": ("10x Multiome human kidney (cancer nuclei, hg38)", "Fig 2 benchmark", [
        ("https://www.10xgenomics.com/datasets?query=kidney&refinementList%5Bproduct.name%5D%5B0%5D=Epi%20Multiome%20ATAC%20%2B%20Gene%20Expression",
         None, "page"),
    ]),
    "bmmc": ("NeurIPS 2021 BMMC multiome, GEO GSE194122 (hg38, 69,249 cells)", "Fig 2 (cross-donor/site scenarios)", [
        (f"{GEO}/GSE194nnn/GSE194122/suppl/GSE194122_openproblems_neurips2021_multiome_BMMC_processed.h5ad.gz", None, "file"),
    ]),
    "shareseq": ("SHARE-seq mouse skin / brain / lung, GEO GSE140203 (mm10)", "Fig 2 benchmark", [
        (f"{GEO}/GSE140nnn/GSE140203/suppl/", None, "page"),
    ]),
    "snareseq": ("SNARE-seq adult mouse cortex, GEO GSE126074 (mm10)", "Fig 2, Fig 4 (shipped subset: data/datasets/snareseq_*)", [
        (f"{GEO}/GSE126nnn/GSE126074/suppl/GSE126074_AdBrainCortex_SNAREseq_cDNA.counts.mtx.gz", None, "file"),
        (f"{GEO}/GSE126nnn/GSE126074/suppl/GSE126074_AdBrainCortex_SNAREseq_cDNA.barcodes.tsv.gz", None, "file"),
        (f"{GEO}/GSE126nnn/GSE126074/suppl/GSE126074_AdBrainCortex_SNAREseq_cDNA.genes.tsv.gz", None, "file"),
        (f"{GEO}/GSE126nnn/GSE126074/suppl/GSE126074_AdBrainCortex_SNAREseq_chromatin.counts.mtx.gz", None, "file"),
        (f"{GEO}/GSE126nnn/GSE126074/suppl/GSE126074_AdBrainCortex_SNAREseq_chromatin.barcodes.tsv.gz", None, "file"),
        (f"{GEO}/GSE126nnn/GSE126074/suppl/GSE126074_AdBrainCortex_SNAREseq_chromatin.peaks.tsv.gz", None, "file"),
    ]),
    "tms_kidney": ("Tabula Muris Senis kidney, droplet scRNA-seq, ages 1-30 months (CELLxGENE .h5ad: counts in .raw, "
                   "Ensembl IDs with symbols in var['feature_name'], obs['age'] e.g. '3m', obs['cell_type']; the file "
                   "the paper's authors used; CELLxGENE files are versioned: if it has moved, take the kidney 10x "
                   "dataset from the collection page, or the figshare 'processed files' "
                   "tabula-muris-senis-droplet-processed-official-annotations-Kidney.h5ad)",
                   "Fig 5 / S5 kidney aging: notebook 07 with -p aging_rna FILE -p age_key age "
                   "(and a kidney model: mouse_kidney10x)", [
        ("https://datasets.cellxgene.cziscience.com/e896f2b3-e22b-42c0-81e8-9dd1b6e80d64.h5ad", None, "file"),
        ("https://cellxgene.cziscience.com/collections/0b9d8a04-bb9d-44da-aa27-705bb65b54eb", None, "page"),
        ("https://figshare.com/articles/dataset/Processed_files_to_use_with_scanpy_/8273102", None, "page"),
    ]),
    "mouse_kidney10x": ("10x Multiome mouse kidney nuclei (cell-arc 2.0.2, mm10; RNA + peaks in one h5)",
                        "Fig 5: paired data of the paper's RNA->ATAC kidney model; `cisformer preprocess --data FILE "
                        "--genome mm10 --name mouse_kidney --out DIR`, then notebook 07 with -p dataset mouse_kidney "
                        "-p data_dir DIR", [
        ("https://cf.10xgenomics.com/samples/cell-arc/2.0.2/M_Kidney_Chromium_Nuc_Isolation_vs_SaltyEZ_vs_ComplexTissueDP/"
         "M_Kidney_Chromium_Nuc_Isolation_vs_SaltyEZ_vs_ComplexTissueDP_filtered_feature_bc_matrix.h5", None, "file"),
    ]),
    "htan_pancancer": ("HTAN pan-cancer single-cell multiome", "Fig 4 (controlled / registration)", [
        ("https://data.humantumoratlas.org/", None, "page"),
    ]),
    "ukbb94": ("Finucane-lab UKBB 94-trait fine-mapping (hg19)", "Fig 3 GWAS PIP enrichment", [
        ("https://www.finucanelab.org/data", None, "page"),
    ]),
    "screen_ccres": ("ENCODE SCREEN V3 cCREs (hg38, mm10)", "mouse mm10 vocabulary, cCRE classes", [
        ("https://downloads.wenglab.org/V3/GRCh38-cCREs.bed", None, "file"),
        ("https://downloads.wenglab.org/V3/mm10-cCREs.bed", None, "file"),
    ]),
    "remap2022": ("ReMap 2022 non-redundant TF peaks (hg38)", "Fig 3b-c ChIP enrichment", [
        ("https://remap.univ-amu.fr/storage/remap2022/hg38/MACS2/remap2022_nr_macs2_hg38_v1_0.bed.gz", None, "file"),
    ]),
    "genomes": ("UCSC genome sequences hg38 / mm10", "motif scanning, GC backgrounds", [
        ("https://hgdownload.soe.ucsc.edu/goldenPath/hg38/bigZips/hg38.fa.gz", None, "file"),
        ("https://hgdownload.soe.ucsc.edu/goldenPath/mm10/bigZips/mm10.fa.gz", None, "file"),
    ]),
}


def print_list() -> None:
    for name, (what, use, files) in DATASETS.items():
        print(f"{name}: {what}\n  used for: {use}")
        for url, digest, kind in files:
            print(f"  [{kind}] {url}\n         sha256: {digest}")


def download(name: str, dest: Path, timeout: float = 30.0) -> None:
    what, _, files = DATASETS[name]
    target = dest / name
    target.mkdir(parents=True, exist_ok=True)
    for url, digest, kind in files:
        if kind == "page":
            print(f"{name}: open {url} in a browser (no direct download)")
            continue
        out = target / url.rstrip("/").rsplit("/", 1)[-1]
        print(f"{name}: {url} -> {out}")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(out, "wb") as fh:
                sha = hashlib.sha256()
                for block in iter(lambda: resp.read(1 << 20), b""):
                    fh.write(block)
                    sha.update(block)
        except (urllib.error.URLError, OSError) as err:
            sys.exit(f"cannot download {url}: {err}\nThis script needs internet access; run it on a machine that has it "
                     f"and copy {target} here (offline, use the shipped subsets: cisformer.data.load(...)).")
        if digest and sha.hexdigest() != digest:
            sys.exit(f"checksum mismatch for {out}: got {sha.hexdigest()}, expected {digest}; delete it and retry")
        print(f"  sha256 {sha.hexdigest()}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"datasets to download: {', '.join(DATASETS)}")
    parser.add_argument("--list", action="store_true", help="print the datasets, URLs and checksums, then exit")
    parser.add_argument("--dest", default="full_datasets", help="download folder (default ./full_datasets)")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        print_list()
        return
    unknown = [n for n in args.names if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
    for name in args.names:
        download(name, Path(args.dest))


if __name__ == "__main__":
    main()
