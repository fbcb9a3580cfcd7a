"""Synthetic paired scRNA + scATAC with planted CRE -> gene links.

The generative story is deliberately simple and fully known, so that tests can ask "is the link recoverable?"
and notebooks can measure link recovery:

1. Genes sit on a few simulated chromosomes, about 600 kb apart; every CRE lies within +-250 kb of a gene's TSS.
2. Each CRE belongs either to one cell type's program (open mostly in that type) or, one in seven, to a shared
   background open at a CRE-specific rate in every type.
3. A cell's accessibility is drawn per CRE: ``open ~ Bernoulli(p[cell_type, cre] * depth_cell)``.
4. Each gene is regulated by 1-4 of its nearby CREs (the planted links, with weights). Its expression rate is
   ``exp(baseline + sum_links weight * open(cell, cre))`` times the cell's library size, and counts are Poisson.
   Expression therefore follows the *same cell's* accessibility of the linked CREs, not only the cell type,
   so a model can learn (and attention can recover) the links.

The output follows the data contract of :func:`cisformer.data.load`.
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

WINDOW = 250_000  # CREs are placed within this distance of a gene's TSS
GENE_SPACING = 600_000
CRE_WIDTH = 500


def paired(n_cells: int = 600, n_genes: int = 200, n_cres: int = 2000, n_cell_types: int = 4, seed: int = 0,
           n_batches: int = 2) -> tuple[ad.AnnData, ad.AnnData, pd.DataFrame]:
    """Simulate a paired multiome data set with cell types and planted CRE -> gene links.

    Parameters
    ----------
    n_cells, n_genes, n_cres
        Sizes. ``n_cres`` must be at least ``n_genes`` (every gene gets at least one CRE).
    n_cell_types
        Number of cell types; each has its own program of CREs (and therefore of genes).
    seed
        Seed of the NumPy generator; the same seed gives identical output.
    n_batches
        Number of batches (libraries) with slightly different sequencing depth.

    Returns
    -------
    rna, atac
        AnnData with raw integer counts (CSR float32), identical ``obs_names``; ``obs`` has ``cell_type`` and
        ``batch``; ``atac.var`` has ``chrom/start/end``; ``rna.var`` has ``gene_id/chrom/start/end/strand/tss``;
        ``uns["genome"] = "sim"``.
    truth
        DataFrame of planted links with columns ``gene``, ``cre`` (names as in ``var_names``) and ``weight``.
    """
    if n_cres < n_genes:
        raise ValueError(f"n_cres ({n_cres}) must be >= n_genes ({n_genes}): every gene needs a nearby CRE")
    if min(n_cells, n_genes, n_cell_types) < 1:
        raise ValueError("n_cells, n_genes and n_cell_types must be positive")
    rng = np.random.default_rng(seed)

    # --- genome layout: genes on 5 chromosomes, CREs around their TSS --------------------------------------
    n_chrom = min(5, n_genes)
    gene_chrom_idx = np.sort(rng.integers(0, n_chrom, n_genes))
    gene_chrom_idx[:n_chrom] = np.arange(n_chrom)  # every chromosome used
    gene_chrom_idx.sort()
    rank_in_chrom = np.zeros(n_genes, dtype=np.int64)
    for c in range(n_chrom):
        members = np.flatnonzero(gene_chrom_idx == c)
        rank_in_chrom[members] = np.arange(len(members))
    tss = (1_000_000 + rank_in_chrom * GENE_SPACING + rng.integers(-50_000, 50_000, n_genes)).astype(np.int64)
    strand = rng.choice(np.array(["+", "-"]), n_genes)
    gene_len = rng.integers(5_000, 60_000, n_genes)
    gene_start = np.where(strand == "+", tss, tss - gene_len)
    gene_end = np.where(strand == "+", tss + gene_len, tss)
    chrom_names = np.array([f"chr{c + 1}" for c in range(n_chrom)])

    # each CRE is assigned to a home gene (at least one per gene) and placed within +-WINDOW of its TSS
    cre_home = np.concatenate([np.arange(n_genes), rng.integers(0, n_genes, n_cres - n_genes)])
    offset = rng.integers(-WINDOW + CRE_WIDTH, WINDOW - CRE_WIDTH, n_cres)
    offset[:n_genes] = rng.integers(-2_000, 2_000, n_genes)  # one promoter-proximal CRE per gene
    cre_start = tss[cre_home] + offset - CRE_WIDTH // 2
    cre_chrom_idx = gene_chrom_idx[cre_home]
    order = np.lexsort((cre_start, cre_chrom_idx))  # genomic order, as real peak tables are sorted
    cre_home, cre_start, cre_chrom_idx = cre_home[order], cre_start[order], cre_chrom_idx[order]
    cre_end = cre_start + CRE_WIDTH
    cre_names = np.array([f"{chrom_names[c]}:{s}-{e}" for c, s, e in zip(cre_chrom_idx, cre_start, cre_end)])
    # break exact duplicates (two CREs at the same spot) by shifting
    _, first = np.unique(cre_names, return_index=True)
    if len(first) < n_cres:
        dup = np.setdiff1d(np.arange(n_cres), first)
        cre_start[dup] += CRE_WIDTH + 7 * np.arange(1, len(dup) + 1)
        cre_end = cre_start + CRE_WIDTH
        cre_names = np.array([f"{chrom_names[c]}:{s}-{e}" for c, s, e in zip(cre_chrom_idx, cre_start, cre_end)])

    # --- cell-type accessibility programs ------------------------------------------------------------------
    cell_type_names = np.array([f"type_{k}" for k in range(n_cell_types)])
    program = np.where(rng.random(n_cres) < 0.15, -1, rng.integers(0, n_cell_types, n_cres))  # -1 = shared
    p_open = np.full((n_cell_types, n_cres), 0.01)
    p_open[:, program == -1] = rng.uniform(0.2, 0.6, (program == -1).sum())[None, :]
    for k in range(n_cell_types):
        p_open[k, program == k] = rng.uniform(0.6, 0.95, (program == k).sum())

    cell_type = rng.integers(0, n_cell_types, n_cells)
    batch = rng.integers(0, n_batches, n_cells)
    depth = np.clip(rng.lognormal(0.0, 0.25, n_cells) * (1.0 + 0.15 * batch), 0.3, 1.8)
    prob = np.clip(p_open[cell_type] * depth[:, None], 0, 0.95)
    open_ = rng.random((n_cells, n_cres)) < prob  # (cells, CREs) bool

    # --- planted links and expression ----------------------------------------------------------------------
    links_gene, links_cre, links_w = [], [], []
    for g in range(n_genes):
        candidates = np.flatnonzero(cre_home == g)
        n_link = min(len(candidates), int(rng.integers(1, 5)))
        chosen = rng.choice(candidates, n_link, replace=False)
        links_gene.extend([g] * n_link)
        links_cre.extend(chosen.tolist())
        links_w.extend(rng.uniform(0.8, 1.8, n_link).tolist())
    links_gene, links_cre, links_w = map(np.asarray, (links_gene, links_cre, links_w))
    W = sp.csr_matrix((links_w, (links_cre, links_gene)), shape=(n_cres, n_genes))  # CRE x gene weights

    baseline = rng.normal(-1.2, 0.5, n_genes)
    library = np.clip(rng.lognormal(0.0, 0.3, n_cells) * (1.0 + 0.1 * batch), 0.3, 3.0)
    log_rate = baseline[None, :] + np.asarray(sp.csr_matrix(open_.astype(np.float32)) @ W.toarray())
    counts = rng.poisson(np.exp(log_rate) * library[:, None])

    atac_counts = (open_ * (1 + (rng.random(open_.shape) < 0.1))).astype(np.float32)  # some 2-count fragments

    # --- AnnData following the data contract ---------------------------------------------------------------
    obs_names = [f"cell_{i:05d}" for i in range(n_cells)]
    obs = pd.DataFrame({
        "cell_type": pd.Categorical(cell_type_names[cell_type], categories=cell_type_names),
        "batch": pd.Categorical([f"batch_{b}" for b in batch], categories=[f"batch_{b}" for b in range(n_batches)]),
    }, index=obs_names)
    gene_names = np.array([f"Gene{g:04d}" for g in range(n_genes)])
    rna_var = pd.DataFrame({
        "gene_id": [f"SIMG{g:07d}" for g in range(n_genes)],
        "chrom": chrom_names[gene_chrom_idx], "start": gene_start, "end": gene_end,
        "strand": strand, "tss": tss,
    }, index=gene_names)
    atac_var = pd.DataFrame({"chrom": chrom_names[cre_chrom_idx], "start": cre_start, "end": cre_end},
                            index=cre_names)
    uns = {"genome": "sim", "dataset": "sim", "counts": True}
    rna = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=obs.copy(), var=rna_var, uns=dict(uns))
    atac = ad.AnnData(sp.csr_matrix(atac_counts), obs=obs.copy(), var=atac_var, uns=dict(uns))
    truth = pd.DataFrame({"gene": gene_names[links_gene], "cre": cre_names[links_cre], "weight": links_w})
    return rna, atac, truth
