"""Synthetic paired scRNA + scATAC with planted CRE -> gene links.

The generative story is fully known, so that tests can ask "is the link recoverable?" and notebooks can measure
link recovery. With the default options (the ``"easy"`` setting of :data:`LINK_SETTINGS`):

1. Genes sit on a few simulated chromosomes, ``gene_spacing`` (600 kb) apart; every CRE lies within +-250 kb of
   its home gene's TSS, so no CRE falls in two genes' windows.
2. Each CRE belongs either to one cell type's program (open mostly in that type) or, about one in seven, to a
   shared background open at a CRE-specific rate in every type.
3. A cell's accessibility is drawn per CRE: ``open ~ Bernoulli(p[cell_type, cre] * depth_cell)``.
4. Each gene is regulated by 1-4 of its home CREs (the planted links, with positive weights). Its expression rate
   is ``exp(baseline + sum_links weight * open(cell, cre))`` times the cell's library size, and counts are
   Poisson. Expression follows the *same cell's* accessibility of the linked CREs, not only the cell type.

That default is exactly the model class of a per-gene log-linear regression (SCARlink-style), which therefore
recovers it perfectly. The options break one assumption each, so that the simulation can say no to any scorer:

* ``gene_spacing`` < 2 x 250 kb: windows overlap, a CRE lies in several genes' windows; with ``shared_links``
  a link may go to a CRE of a neighbouring gene (linked to two genes, or to the neighbour only).
* ``confounders``: per causal CRE, non-causal CREs of the same window that take the causal CRE's program and
  open together with it in the same cell (``co_open``) but drive nothing.
* ``interaction``: in a fraction of the genes two links act together: ``"and"`` (the pair acts only when both are
  open, weight ``w_a + w_b``) or ``"or"`` (redundant enhancers: ``max(w_a open_a, w_b open_b)``), the two CREs
  sharing a program so that they are open in the same cell type; or ``"xor"`` (weight ``w_a + w_b`` when exactly
  one is open), both CREs primed - open independently in about half of the cells of every type - so that neither
  has an effect on its own: averaged over its partner, a CRE's open state changes nothing.
* ``celltype_specific``: a fraction of the links act only in some cell types (1 to n-1 of them); their CRE is
  made open in every type (primed chromatin), so the link, not the CRE, is cell-type-specific.
* ``atac_capture`` < 1: the assay records only that fraction of the open CREs (expression still follows the
  true state), giving the few-% open fraction per cell of real scATAC; ``rna_depth`` < 1 scales the RNA library
  sizes down (low counts).

Randomness of the options comes from a second generator, so the default output is unchanged by their existence.
The output follows the data contract of :func:`cisformer.data.load`.
"""
from __future__ import annotations

from typing import NamedTuple

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

WINDOW = 250_000  # CREs are placed within this distance of a gene's TSS
GENE_SPACING = 600_000
CRE_WIDTH = 500
INTERACTIONS = (None, "and", "or", "xor")

# Named link-recovery settings: keyword arguments of :func:`paired` on top of the sizes; LINK_SETTING_NOTES says in
# one line what each breaks. Each breaks one assumption of the easy setting (the last combines them), none is
# aimed at one scorer.
LINK_SETTINGS = {
    "easy": {},
    "shallow": dict(atac_capture=0.1, rna_depth=0.25),
    "shared windows": dict(gene_spacing=150_000, shared_links=0.4),
    "confounded": dict(confounders=2, co_open=0.9, atac_capture=0.5),
    "non-additive": dict(interaction="and", interaction_fraction=1.0),
    "non-additive (XOR)": dict(interaction="xor", interaction_fraction=1.0),
    "cell-type-specific": dict(celltype_specific=0.6),
    "trans-regulated": dict(trans_genes=0.5),
    "realistic (all of them, shallow)": dict(gene_spacing=150_000, shared_links=0.4, confounders=2, co_open=0.9,
                                             interaction="and", interaction_fraction=0.5, celltype_specific=0.3,
                                             trans_genes=0.3, atac_capture=0.1, rna_depth=0.25),
}
LINK_SETTING_NOTES = {
    "easy": "one gene per CRE window, additive log-linear effects of the measured accessibility: the model class "
            "of per-gene regression",
    "shallow": "realistic sparsity: 10% of open CREs captured (a few % open per cell) and a quarter of the RNA "
               "depth, so a cell's reads are a noisy view of the state that drives expression",
    "shared windows": "genes 150 kb apart (windows overlap, a CRE lies in ~3 genes' windows) and 40% of links go "
                      "to a neighbouring gene's CRE: correlation with a co-expressed neighbour is not a link",
    "confounded": "2 non-causal CREs per causal one, in its window and program, open together with it in 90% of "
                  "cells, at half capture: the co-opened CRE's reads are as good a proxy of the causal state",
    "non-additive": "in every gene with >= 2 links two CREs act only when both are open (AND): no CRE has an "
                    "additive effect of its own",
    "non-additive (XOR)": "in every gene with >= 2 links two primed CREs (open in about half of the cells of every "
                          "type, independently) act only when exactly one is open: no CRE has a marginal effect",
    "cell-type-specific": "60% of links act in only 1 to n-1 cell types while their CRE is open in all: pooled "
                          "over cells the effect is diluted",
    "trans-regulated": "half of the genes take their expression from their cell type (trans factors), not from "
                       "their window: their window CREs follow the cell-type programs, so they track expression "
                       "across cells and types yet cause none of it; only a scorer that sees the whole cell can "
                       "tell",
    "realistic (all of them, shallow)": "all of the above at once (half of the genes AND, 30% of links "
                                        "cell-type-specific, 30% of genes trans-regulated), shallow",
}


def _check_options(n_cells, n_genes, n_cres, n_cell_types, gene_spacing, shared_links, confounders, co_open,
                   interaction, interaction_fraction, celltype_specific, trans_genes, atac_capture, rna_depth):
    """The argument checks of :func:`paired` (each a ``ValueError`` that names the argument)."""
    if n_cres < n_genes:
        raise ValueError(f"n_cres ({n_cres}) must be >= n_genes ({n_genes}): every gene needs a nearby CRE")
    if min(n_cells, n_genes, n_cell_types) < 1:
        raise ValueError("n_cells, n_genes and n_cell_types must be positive")
    if gene_spacing <= 0:
        raise ValueError(f"gene_spacing must be positive (bp), got {gene_spacing}")
    for name, value in (("shared_links", shared_links), ("co_open", co_open),
                        ("interaction_fraction", interaction_fraction), ("celltype_specific", celltype_specific),
                        ("trans_genes", trans_genes)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    if not 0.0 < atac_capture <= 1.0:
        raise ValueError(f"atac_capture must lie in (0, 1], got {atac_capture}")
    if rna_depth <= 0:
        raise ValueError(f"rna_depth must be positive, got {rna_depth}")
    if int(confounders) != confounders or confounders < 0:
        raise ValueError(f"confounders must be a non-negative integer, got {confounders}")
    if interaction not in INTERACTIONS:
        raise ValueError(f"interaction must be one of {INTERACTIONS}, got {interaction!r}")
    if celltype_specific > 0 and n_cell_types < 2:
        raise ValueError("celltype_specific needs n_cell_types >= 2 (a link active in some types but not others)")


class _Genome(NamedTuple):
    """Where :func:`paired`'s genes and CREs lie: per gene its chromosome (index into ``chrom_names``), TSS, strand,
    start and end; per CRE its home gene, start, end, chromosome and name."""
    gene_chrom_idx: np.ndarray
    tss: np.ndarray
    strand: np.ndarray
    gene_start: np.ndarray
    gene_end: np.ndarray
    chrom_names: np.ndarray
    cre_home: np.ndarray
    cre_start: np.ndarray
    cre_end: np.ndarray
    cre_chrom_idx: np.ndarray
    cre_names: np.ndarray


def _genome_layout(rng, n_genes: int, n_cres: int, gene_spacing: int) -> _Genome:
    """Genes on up to 5 chromosomes ``gene_spacing`` apart and CREs around their TSSs, in genomic order (the first
    draws of :func:`paired` from ``rng``)."""
    n_chrom = min(5, n_genes)
    gene_chrom_idx = np.sort(rng.integers(0, n_chrom, n_genes))
    gene_chrom_idx[:n_chrom] = np.arange(n_chrom)  # every chromosome used
    gene_chrom_idx.sort()
    rank_in_chrom = np.zeros(n_genes, dtype=np.int64)
    for c in range(n_chrom):
        members = np.flatnonzero(gene_chrom_idx == c)
        rank_in_chrom[members] = np.arange(len(members))
    tss = (1_000_000 + rank_in_chrom * int(gene_spacing) + rng.integers(-50_000, 50_000, n_genes)).astype(np.int64)
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
    return _Genome(gene_chrom_idx, tss, strand, gene_start, gene_end, chrom_names, cre_home, cre_start, cre_end,
                   cre_chrom_idx, cre_names)


def _as_anndata(genome: _Genome, counts, atac_counts, cell_type, batch, n_batches, cell_type_names, links_gene,
               links_cre, links_w, cis, active, confounder_of, trans, groups):
    """:func:`paired`'s output: the two AnnData of the data contract and the table of planted links."""
    n_cells, n_genes = counts.shape
    obs_names = [f"cell_{i:05d}" for i in range(n_cells)]
    obs = pd.DataFrame({
        "cell_type": pd.Categorical(cell_type_names[cell_type], categories=cell_type_names),
        "batch": pd.Categorical([f"batch_{b}" for b in batch], categories=[f"batch_{b}" for b in range(n_batches)]),
    }, index=obs_names)
    gene_names = np.array([f"Gene{g:04d}" for g in range(n_genes)])
    rna_var = pd.DataFrame({
        "gene_id": [f"SIMG{g:07d}" for g in range(n_genes)],
        "chrom": genome.chrom_names[genome.gene_chrom_idx], "start": genome.gene_start, "end": genome.gene_end,
        "strand": genome.strand, "tss": genome.tss,
    }, index=gene_names)
    atac_var = pd.DataFrame({"chrom": genome.chrom_names[genome.cre_chrom_idx], "start": genome.cre_start,
                             "end": genome.cre_end}, index=genome.cre_names)
    uns = {"genome": "sim", "dataset": "sim", "counts": True}
    rna = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=obs.copy(), var=rna_var, uns=dict(uns))
    atac = ad.AnnData(sp.csr_matrix(atac_counts), obs=obs.copy(), var=atac_var, uns=dict(uns))
    acting_types = np.array([",".join(cell_type_names[row]) if not row.all() else "all" for row in active])
    truth = pd.DataFrame({"gene": gene_names[links_gene[cis]], "cre": genome.cre_names[links_cre[cis]],
                          "weight": links_w[cis], "cell_types": acting_types[cis]})
    truth.attrs["confounders"] = {str(genome.cre_names[f]): str(genome.cre_names[c]) for f, c in confounder_of.items()}
    truth.attrs["trans_genes"] = [str(gene_names[g]) for g in trans]
    truth.attrs["interactions"] = [{"gene": str(gene_names[links_gene[m[0]]]), "kind": kind,
                                    "cres": [str(genome.cre_names[links_cre[j]]) for j in m]} for kind, m in groups]
    return rna, atac, truth


def paired(n_cells: int = 600, n_genes: int = 200, n_cres: int = 2000, n_cell_types: int = 4, seed: int = 0,
           n_batches: int = 2, *, gene_spacing: int = GENE_SPACING, shared_links: float = 0.0,
           confounders: int = 0, co_open: float = 0.9, interaction: str | None = None,
           interaction_fraction: float = 0.5, celltype_specific: float = 0.0, trans_genes: float = 0.0,
           trans_effect: float = 1.5, atac_capture: float = 1.0,
           rna_depth: float = 1.0) -> tuple[ad.AnnData, ad.AnnData, pd.DataFrame]:
    """Simulate a paired multiome data set with cell types and planted CRE -> gene links.

    Parameters
    ----------
    n_cells, n_genes, n_cres
        Sizes. ``n_cres`` must be at least ``n_genes`` (every gene gets at least one CRE).
    n_cell_types
        Number of cell types; each has its own program of CREs (and therefore of genes).
    seed
        Seed of the NumPy generators; the same seed and options give identical output.
    n_batches
        Number of batches (libraries) with slightly different sequencing depth.
    gene_spacing
        Distance between neighbouring TSSs (bp, +-50 kb jitter). Below ``2 * WINDOW`` the genes' windows overlap.
    shared_links
        Fraction of links whose CRE is redrawn among the CREs of the gene's window that belong to another gene
        (needs overlapping windows to have any effect).
    confounders, co_open
        Per causal CRE, up to ``confounders`` non-causal CREs of the same gene's window take its accessibility
        program and copy its open/closed state in a fraction ``co_open`` of the cells (independent draws from
        the same program otherwise). They are listed in ``truth.attrs["confounders"]`` (confounder -> causal CRE).
    interaction, interaction_fraction
        ``None`` (additive), ``"and"``, ``"or"`` or ``"xor"``: in this fraction of the genes with at least two
        links, two of them act together (see module docstring). Listed in ``truth.attrs["interactions"]``.
    celltype_specific
        Fraction of the (non-interacting) links that act only in a random 1 to ``n_cell_types - 1`` cell types;
        their CRE is redrawn as open in every type. ``truth["cell_types"]`` names the active types.
    trans_genes, trans_effect
        Fraction of the genes regulated in trans: their links are removed (they have none in ``truth``) and their
        log expression rate instead gets ``trans_effect`` x the standardised mean open probability of their window's
        CREs in the cell's type - it follows the cell type, as the window does, but no CRE's state in the cell.
        Listed in ``truth.attrs["trans_genes"]``.
    atac_capture
        Fraction of the open CREs that the ATAC assay records (expression follows the true state).
    rna_depth
        Factor on the RNA library sizes.

    Returns
    -------
    rna, atac
        AnnData with raw integer counts (CSR float32), identical ``obs_names``; ``obs`` has ``cell_type`` and
        ``batch``; ``atac.var`` has ``chrom/start/end``; ``rna.var`` has ``gene_id/chrom/start/end/strand/tss``;
        ``uns["genome"] = "sim"``.
    truth
        DataFrame of planted links: ``gene``, ``cre`` (names as in ``var_names``), ``weight`` and ``cell_types``
        (comma-separated names of the types where the link acts, or ``"all"``); ``attrs["confounders"]`` and
        ``attrs["interactions"]`` (list of ``{"gene", "kind", "cres"}``) describe the options' structure.
    """
    _check_options(n_cells, n_genes, n_cres, n_cell_types, gene_spacing, shared_links, confounders, co_open,
                   interaction, interaction_fraction, celltype_specific, trans_genes, atac_capture, rna_depth)
    rng = np.random.default_rng(seed)
    extra = np.random.default_rng([seed, 1])  # the options' draws: the default output never reads this stream

    genome = _genome_layout(rng, n_genes, n_cres, gene_spacing)

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
    open_ = rng.random((n_cells, n_cres)) < prob  # (cells, CREs) bool: the true chromatin state

    # --- planted links -------------------------------------------------------------------------------------
    links_gene, links_cre, links_w = [], [], []
    for g in range(n_genes):
        candidates = np.flatnonzero(genome.cre_home == g)
        n_link = min(len(candidates), int(rng.integers(1, 5)))
        chosen = rng.choice(candidates, n_link, replace=False)
        links_gene.extend([g] * n_link)
        links_cre.extend(chosen.tolist())
        links_w.extend(rng.uniform(0.8, 1.8, n_link).tolist())
    links_gene, links_cre, links_w = map(np.asarray, (links_gene, links_cre, links_w))

    # --- options (each draws from `extra` only when switched on) --------------------------------------------
    cre_mid = genome.cre_start + CRE_WIDTH // 2

    def window_cres(g: int) -> np.ndarray:
        """CREs whose midpoint lies within the gene's +-WINDOW (as cisformer.tl.attention.candidate_pairs).

        Parameters
        ----------
        g
            Gene index; returns the CRE indices (int array).
        """
        same_chrom = genome.cre_chrom_idx == genome.gene_chrom_idx[g]
        return np.flatnonzero(same_chrom & (np.abs(cre_mid - genome.tss[g]) <= WINDOW))

    def redraw(cre: int, p_column: np.ndarray) -> None:
        """Give a CRE a new per-type open probability and redraw its true state in every cell.

        Parameters
        ----------
        cre, p_column
            CRE index and its new open probability per cell type (length ``n_cell_types``).
        """
        p_open[:, cre] = p_column
        prob[:, cre] = np.clip(p_column[cell_type] * depth, 0, 0.95)
        open_[:, cre] = extra.random(n_cells) < prob[:, cre]

    trans = np.flatnonzero(extra.random(n_genes) < trans_genes) if trans_genes > 0 else np.zeros(0, dtype=np.int64)
    cis = ~np.isin(links_gene, trans)  # links that exist (a trans gene's are removed)

    if shared_links > 0:
        for i in np.flatnonzero(extra.random(len(links_gene)) < shared_links):
            g = links_gene[i]
            near = window_cres(g)
            options = np.setdiff1d(near[genome.cre_home[near] != g], links_cre[links_gene == g])
            if len(options):
                links_cre[i] = extra.choice(options)

    groups = []  # (kind, link positions) of interacting link pairs
    if interaction is not None:
        for g in np.flatnonzero(np.bincount(links_gene, minlength=n_genes) >= 2):
            if extra.random() < interaction_fraction:
                a, b = extra.choice(np.flatnonzero(links_gene == g), 2, replace=False)
                if links_cre[a] != links_cre[b]:
                    if interaction == "xor":  # both primed, independent: neither has a marginal effect
                        redraw(links_cre[a], np.full(n_cell_types, 0.5))
                        redraw(links_cre[b], np.full(n_cell_types, 0.5))
                    else:
                        redraw(links_cre[b], p_open[:, links_cre[a]].copy())  # the partner joins a's program
                    groups.append((interaction, np.array([a, b])))
    in_group = np.zeros(len(links_gene), dtype=bool)
    for _, members in groups:
        in_group[members] = True

    active = np.ones((len(links_gene), n_cell_types), dtype=bool)  # link x cell type where it acts
    if celltype_specific > 0:
        # links of interacting pairs keep acting everywhere, and their CREs keep the program they share
        chosen = np.flatnonzero((extra.random(len(links_gene)) < celltype_specific) & ~in_group
                                & ~np.isin(links_cre, links_cre[in_group]))
        for i in chosen:
            types = extra.choice(n_cell_types, int(extra.integers(1, n_cell_types)), replace=False)
            active[i] = False
            active[i, types] = True
        for c in np.unique(links_cre[chosen]):  # primed chromatin: open in every type
            redraw(c, np.full(n_cell_types, extra.uniform(0.3, 0.7)))

    confounder_of = {}  # confounder CRE -> causal CRE
    if confounders > 0:
        taken = set(links_cre.tolist())
        for i in np.flatnonzero(cis):
            c = links_cre[i]
            if c in confounder_of.values():
                continue
            options = np.array([f for f in window_cres(links_gene[i]) if f not in taken], dtype=np.int64)
            for f in extra.choice(options, min(int(confounders), len(options)), replace=False):
                p_open[:, f] = p_open[:, c]
                prob[:, f] = prob[:, c]
                independent = extra.random(n_cells) < prob[:, c]
                open_[:, f] = np.where(extra.random(n_cells) < co_open, open_[:, c], independent)
                taken.add(f)
                confounder_of[f] = c

    # --- expression: plain links as a CRE x gene weight matrix, the others link by link -----------------------
    plain = ~in_group & active.all(1) & cis
    W = sp.csr_matrix((links_w[plain], (links_cre[plain], links_gene[plain])), shape=(n_cres, n_genes))

    baseline = rng.normal(-1.2, 0.5, n_genes)
    library = np.clip(rng.lognormal(0.0, 0.3, n_cells) * (1.0 + 0.1 * batch), 0.3, 3.0) * rna_depth
    log_rate = baseline[None, :] + np.asarray(sp.csr_matrix(open_.astype(np.float32)) @ W.toarray())
    acting = open_[:, links_cre] & active[:, cell_type].T  # (cells, links): the link's CRE is open and acting
    for i in np.flatnonzero(~plain & ~in_group & cis):
        log_rate[:, links_gene[i]] += links_w[i] * acting[:, i]
    groups = [(kind, members) for kind, members in groups if cis[members[0]]]
    for g in trans:  # expression follows the cell type's openness of the window, not the cell's own CREs
        type_level = p_open[:, window_cres(g)].mean(axis=1)
        type_level = (type_level - type_level.mean()) / (type_level.std() + 1e-9)
        log_rate[:, g] += trans_effect * type_level[cell_type]
    for kind, (a, b) in groups:
        if kind == "and":
            effect = (links_w[a] + links_w[b]) * (acting[:, a] & acting[:, b])
        elif kind == "xor":
            effect = (links_w[a] + links_w[b]) * (acting[:, a] ^ acting[:, b])
        else:
            effect = np.maximum(links_w[a] * acting[:, a], links_w[b] * acting[:, b])
        log_rate[:, links_gene[a]] += effect
    counts = rng.poisson(np.exp(log_rate) * library[:, None])

    observed = open_ if atac_capture >= 1 else open_ & (extra.random(open_.shape) < atac_capture)
    atac_counts = (observed * (1 + (rng.random(open_.shape) < 0.1))).astype(np.float32)  # some 2-count fragments

    return _as_anndata(genome, counts, atac_counts, cell_type, batch, n_batches, cell_type_names, links_gene, links_cre,
                       links_w, cis, active, confounder_of, trans, groups)


def celltype_programs(*, n_cells: int = 600, n_genes: int = 60, n_cres: int = 600, n_cell_types: int = 3,
                      markers_per_type: int = 5, cres_per_marker: int = 3, decoys: float = 0.5,
                      p_program: tuple[float, float] = (0.5, 0.9), p_other: float = 0.03,
                      atac_capture: float = 1.0, seed: int = 0):
    """Paired cells with planted cell-type regulatory programs (truth for cell-type-specific CRE ranking).

    The genome layout, cell types, batches and CRE coordinates are those of :func:`paired` (same ``seed``; one
    gene per CRE window); accessibility and expression are redrawn:

    * per cell type, ``markers_per_type`` marker genes (disjoint between types) and up to ``cres_per_marker``
      CREs of each marker's window: the type's **planted program**. A program CRE is open with probability
      ``U(*p_program)`` in its type and ``p_other`` in every other type, and each drives its marker gene
      (log-linear weight ``U(1, 2)`` on the cell's own open state), so the marker is expressed mostly in that type;
    * per type, ``decoys`` x (program size) **decoy** CREs, in windows of non-marker genes, with the same
      type-specific accessibility but driving nothing: cell-type-specific accessibility without regulation
      (a differential-accessibility ranking cannot tell them from the program; a regulatory read-out might);
    * every other CRE is open at a CRE-specific rate ``U(0.05, 0.5)`` in every type; each non-marker gene is
      driven by 1-2 of them (expression varies by cell, not by type).

    Accessibility is ``open ~ Bernoulli(p[type, cre] * depth_cell)``; the assay records a fraction
    ``atac_capture`` of the open CREs. Expression is Poisson with rate ``exp(baseline + sum_links w * open)``
    times a library size.

    Parameters
    ----------
    n_cells, n_genes, n_cres, n_cell_types
        Sizes, as in :func:`paired`; ``n_cell_types >= 2``.
    markers_per_type
        Marker genes per cell type; ``markers_per_type * n_cell_types`` at most ``n_genes // 2``.
    cres_per_marker
        Program CREs per marker gene at most (fewer when its window holds fewer).
    decoys
        Decoy CREs per type, as a multiple of the type's program size.
    p_program, p_other
        Open probability of a program / decoy CRE in its own type (uniform in this range) and in the others.
    atac_capture
        Fraction of the open CREs that the ATAC assay records, in (0, 1].
    seed
        Seed of the layout (as :func:`paired`) and of the programs.

    Returns
    -------
    rna, atac
        AnnData following the data contract (as :func:`paired`).
    truth
        DataFrame of the planted programs, one row per (cell type, CRE): ``cell_type``, ``cre``, ``gene`` (the
        marker it drives) and ``weight``. ``truth.attrs["decoys"]``: cell type -> list of decoy CRE names;
        ``truth.attrs["markers"]``: cell type -> list of marker genes.
    """
    from .vocab import gene_cre_pairs

    if n_cell_types < 2:
        raise ValueError("celltype_programs needs n_cell_types >= 2 (a program is specific to one type)")
    if markers_per_type * n_cell_types > n_genes // 2:
        raise ValueError(f"markers_per_type x n_cell_types ({markers_per_type * n_cell_types}) must be at most "
                         f"half of n_genes ({n_genes}): decoys and background need the other genes")
    if not 0.0 < atac_capture <= 1.0:
        raise ValueError(f"atac_capture must lie in (0, 1], got {atac_capture}")
    rna, atac, _ = paired(n_cells=n_cells, n_genes=n_genes, n_cres=n_cres, n_cell_types=n_cell_types, seed=seed)
    rng = np.random.default_rng([seed, 2])
    pairs = gene_cre_pairs(rna.var, atac.var, WINDOW, WINDOW, anchor="tss")
    home = np.full(n_cres, -1, dtype=np.int64)
    home[pairs["cre_idx"].to_numpy()] = pairs["gene_idx"].to_numpy()  # one gene per window at the default spacing
    n_window = np.bincount(home[home >= 0], minlength=n_genes)

    # markers: genes with the most window CREs first (so each program can hold cres_per_marker CREs)
    candidates = rng.permutation(n_genes)
    candidates = candidates[np.argsort(-np.minimum(n_window[candidates], cres_per_marker), kind="stable")]
    markers = candidates[:markers_per_type * n_cell_types].reshape(n_cell_types, markers_per_type)
    others = np.setdiff1d(np.arange(n_genes), markers.ravel())

    p_open = np.tile(rng.uniform(0.05, 0.5, n_cres), (n_cell_types, 1))
    program = np.full(n_cres, -1, dtype=np.int64)     # type whose planted program holds the CRE
    decoy_of = np.full(n_cres, -1, dtype=np.int64)    # type whose decoy the CRE is
    links = []                                       # (cre, gene, weight)
    for k in range(n_cell_types):
        for g in markers[k]:
            window = np.flatnonzero(home == g)
            for c in rng.choice(window, min(cres_per_marker, len(window)), replace=False):
                program[c] = k
                links.append((c, g, rng.uniform(1.0, 2.0)))
    free = np.flatnonzero(np.isin(home, others))
    free = rng.permutation(free)
    start = 0
    for k in range(n_cell_types):
        n_decoy = int(round(decoys * (program == k).sum()))
        decoy_of[free[start:start + n_decoy]] = k
        start += n_decoy
    for k in range(n_cell_types):
        specific = np.flatnonzero((program == k) | (decoy_of == k))
        p_open[:, specific] = p_other
        p_open[k, specific] = rng.uniform(*p_program, len(specific))
    background = np.flatnonzero((program < 0) & (decoy_of < 0))
    for g in others:
        window = np.intersect1d(np.flatnonzero(home == g), background)
        for c in rng.choice(window, min(int(rng.integers(1, 3)), len(window)), replace=False):
            links.append((c, g, rng.uniform(0.8, 1.5)))

    cell_type = rna.obs["cell_type"].cat.codes.to_numpy()
    depth = np.clip(rng.lognormal(0.0, 0.25, n_cells), 0.3, 1.8)
    open_ = rng.random((n_cells, n_cres)) < np.clip(p_open[cell_type] * depth[:, None], 0, 0.95)
    link_cre, link_gene, link_w = (np.array([x[i] for x in links]) for i in range(3))
    W = np.zeros((n_cres, n_genes))
    np.add.at(W, (link_cre.astype(np.int64), link_gene.astype(np.int64)), link_w)
    baseline = rng.normal(-1.2, 0.5, n_genes)
    library = np.clip(rng.lognormal(0.0, 0.3, n_cells), 0.3, 3.0)
    counts = rng.poisson(np.exp(baseline[None, :] + open_.astype(np.float64) @ W) * library[:, None])
    observed = open_ if atac_capture >= 1 else open_ & (rng.random(open_.shape) < atac_capture)
    atac_counts = observed * (1 + (rng.random(open_.shape) < 0.1))

    rna = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=rna.obs.copy(), var=rna.var.copy(),
                     uns=dict(rna.uns))
    atac = ad.AnnData(sp.csr_matrix(atac_counts.astype(np.float32)), obs=atac.obs.copy(), var=atac.var.copy(),
                      uns=dict(atac.uns))
    type_names = np.asarray(rna.obs["cell_type"].cat.categories)
    link_cre, link_gene = link_cre.astype(np.int64), link_gene.astype(np.int64)
    is_program = program[link_cre] >= 0
    truth = pd.DataFrame({"cell_type": type_names[program[link_cre[is_program]]],
                          "cre": atac.var_names[link_cre[is_program]],
                          "gene": rna.var_names[link_gene[is_program]], "weight": link_w[is_program]})
    truth = truth.sort_values(["cell_type", "cre"], kind="stable").reset_index(drop=True)
    truth.attrs["decoys"] = {str(type_names[k]): list(atac.var_names[decoy_of == k]) for k in range(n_cell_types)}
    truth.attrs["markers"] = {str(type_names[k]): list(rna.var_names[markers[k]]) for k in range(n_cell_types)}
    return rna, atac, truth
