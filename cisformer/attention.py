"""Cross-attention of a trained Cisformer as CRE-gene links.

The model's cross-attention weights (head-averaged, the ones the model actually applied; padded keys get 0) are
read for sampled cells of each cell type, normalised per cell as in the paper, restricted to CRE-gene pairs
within +-250 kb of the gene's TSS, and averaged per cell type:

* RNA -> ATAC (queries = CREs, keys = expressed genes): log normalisation, :func:`log_normalize`.
* ATAC -> RNA (queries = genes, keys = open CREs): rank normalisation over rows and then columns, then min-max,
  :func:`rank_normalize` (the reference's scGPT-style scheme).

Denominator: a pair's cell-type score is the mean over the cells in which *that pair was co-sampled* (gene and
CRE both present among the cell's tokens). The reference implementation divides the sum by the total number of
cells of the type, which penalises rarely open CREs and rewards ubiquitous ones regardless of attention.

Memory stays bounded: only the window pairs (:func:`candidate_pairs`) are ever stored, as flat arrays, and
each cell type's result is a sparse genes x CREs AnnData - never a dense genes x 1.03M matrix.

Links are scored by within-cell-type regression by default (:func:`regression`, no model needed): on planted
links it is the best or tied-best scorer in most settings of notebook 04, where the model-based readouts are not.
The model's readouts stay beside it: in-silico deletion (:func:`deletion`, atac2rna models: what the model uses)
and attention, the paper's reading (:func:`extract`).

Typical use::

    table = cisformer.attention.links(None, rna, atac)          # within-cell-type regression (default)
    table = cisformer.attention.links(model, rna, atac, "deletion")   # in-silico deletion of a trained model
    per_type = cisformer.attention.extract(model, rna, atac, n_cells_per_type=100)   # attention, paper's reading
    table = cisformer.attention.links_table(per_type)          # tidy CRE-gene pairs x cell types
    scores = cisformer.attention.gene_scores(per_type)         # gene-wise attention per cell type
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .vocab import gene_tss

WINDOW = 250_000


# --------------------------------------------------------------------------------------------- normalisation

def log_normalize(attn: np.ndarray) -> np.ndarray:
    """Log normalisation of one cell's attention matrix (RNA -> ATAC).

    The matrix is scaled so that its mean entry is 1 (uniform attention maps to ``log(2)``) and ``log1p`` is
    applied: ``log1p(A / mean(A))``. Scale-free, so cells with different token counts are comparable.
    """
    attn = np.asarray(attn, dtype=np.float64)
    mean = attn.mean() if attn.size else 0.0
    if mean <= 0:
        return np.zeros_like(attn)
    return np.log1p(attn / mean)


def _ranks(values: np.ndarray, axis: int) -> np.ndarray:
    """0-based ranks along ``axis`` of a 2-d array (ties broken by position): one stable argsort + a scatter."""
    values = values if axis == 0 else values.T
    order = np.argsort(values, axis=0, kind="stable")
    ranks = np.empty(values.shape, dtype=np.int64)
    ranks[order, np.arange(values.shape[1])[None, :]] = np.arange(values.shape[0])[:, None]
    return ranks if axis == 0 else ranks.T


def rank_normalize(attn: np.ndarray) -> np.ndarray:
    """Rank normalisation over rows, then over columns, then min-max to [0, 1] (ATAC -> RNA).

    As the reference: ranks within each column (over rows, axis 0), then the ranks are re-ranked within each
    row (over columns, axis 1), then the whole matrix is min-max scaled. Ties are broken by position (stable).
    """
    attn = np.asarray(attn, dtype=np.float64)
    if attn.size == 0:
        return attn
    ranks = _ranks(attn, axis=0)
    small = np.int16 if attn.shape[0] < np.iinfo(np.int16).max else np.int64  # stable radix sort for int16
    ranks = _ranks(ranks.astype(small), axis=1).astype(np.float64)
    lo, hi = ranks.min(), ranks.max()
    return (ranks - lo) / (hi - lo) if hi > lo else np.zeros_like(ranks)


NORMALIZERS = {"rna2atac": log_normalize, "atac2rna": rank_normalize}


# --------------------------------------------------------------------------------------------- window pairs

def candidate_pairs(rna_var: pd.DataFrame, atac_var: pd.DataFrame, window: int = WINDOW) -> pd.DataFrame:
    """All CRE-gene pairs whose CRE midpoint lies within ``window`` bp of the gene's TSS (same chromosome).

    Uses :func:`cisformer.baselines.gene_cre_pairs` (the baselines' window rule), so attention and baselines
    score exactly the same candidates.

    Parameters
    ----------
    rna_var
        Gene table (``rna.var``): ``chrom`` and ``tss`` (or ``start``/``end``/``strand``). Genes without
        coordinates get no pairs.
    atac_var
        CRE table (``atac.var``): ``chrom``, ``start``, ``end``.

    Returns
    -------
    DataFrame with ``gene_idx``, ``cre_idx`` (row positions in the two tables), ``gene``, ``cre`` (names) and
    ``distance`` (signed bp from the TSS, strand-aware), sorted by gene then CRE. Memory is O(number of pairs).
    """
    from .baselines import gene_cre_pairs

    pairs = gene_cre_pairs(rna_var, atac_var, window, window, anchor="tss")
    pairs = pd.DataFrame({"gene_idx": pairs["gene_idx"].to_numpy(dtype=np.int64),
                          "cre_idx": pairs["cre_idx"].to_numpy(dtype=np.int64),
                          "distance": pairs["distance"].to_numpy(dtype=np.int64)})
    pairs.insert(2, "gene", np.asarray(rna_var.index)[pairs["gene_idx"]])
    pairs.insert(3, "cre", np.asarray(atac_var.index)[pairs["cre_idx"]])
    return pairs.sort_values(["gene_idx", "cre_idx"], kind="stable").reset_index(drop=True)


def window_mask(rna_var: pd.DataFrame, atac_var: pd.DataFrame, window: int = WINDOW) -> sp.csr_matrix:
    """Sparse boolean genes x CREs matrix, True where the pair is within ``window`` (see :func:`candidate_pairs`)."""
    pairs = candidate_pairs(rna_var, atac_var, window)
    data = np.ones(len(pairs), dtype=bool)
    return sp.csr_matrix((data, (pairs["gene_idx"], pairs["cre_idx"])), shape=(len(rna_var), len(atac_var)))


# --------------------------------------------------------------------------------------------- accumulation

class PairAccumulator:
    """Sums of a pair score (normalised attention, or a deletion effect) and co-sampling counts over the window
    pairs, for one cell type.

    ``pair_id`` is a sparse genes x CREs matrix holding ``1 + row`` of the pair table, so a cell's token lists
    map onto pair rows with one sparse slice.
    """

    def __init__(self, pair_id: sp.csr_matrix):
        self.pair_id = pair_id
        n_pairs = pair_id.nnz
        self.sum = np.zeros(n_pairs, dtype=np.float64)
        self.count = np.zeros(n_pairs, dtype=np.int64)
        self.n_cells = 0

    def add_cell(self, gene_tokens: np.ndarray, cre_tokens: np.ndarray, attn_gene_by_cre: np.ndarray) -> None:
        """Add one cell. ``gene_tokens`` (Lg,), ``cre_tokens`` (Lp,) are vocabulary indices of the non-padded
        tokens; ``attn_gene_by_cre`` (Lg, Lp) the normalised attention. A pair sampled several times in the
        cell (duplicated tokens) contributes its mean once; the pair's count grows by one."""
        self.n_cells += 1
        sub = self.pair_id[gene_tokens][:, cre_tokens].tocoo()
        if sub.nnz == 0:
            return
        ids = sub.data.astype(np.int64) - 1
        values = attn_gene_by_cre[sub.row, sub.col]
        uniq, inverse = np.unique(ids, return_inverse=True)
        mean = np.bincount(inverse, weights=values) / np.bincount(inverse)
        self.sum[uniq] += mean
        self.count[uniq] += 1


def _align(names_model: list[str], names_data: pd.Index, what: str) -> np.ndarray:
    """Positions of the model's vocabulary in the data (-1 where absent)."""
    lookup = pd.Index(names_data).get_indexer(pd.Index(names_model))
    if (lookup >= 0).sum() == 0:
        raise ValueError(f"none of the model's {what} names is in the data's var_names; was the model trained on "
                         f"this vocabulary? (e.g. {list(names_model[:3])} vs {list(names_data[:3])})")
    return lookup


def sample_cells(obs: pd.DataFrame, cell_type_key: str = "cell_type", n_cells_per_type: int | None = 100,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Row positions of up to ``n_cells_per_type`` random cells of each cell type (all when None)."""
    rng = np.random.default_rng(seed)
    labels = obs[cell_type_key].astype(str).to_numpy()
    chosen = {}
    for cell_type in pd.unique(labels):
        rows = np.flatnonzero(labels == cell_type)
        if n_cells_per_type is not None and len(rows) > n_cells_per_type:
            rows = np.sort(rng.choice(rows, n_cells_per_type, replace=False))
        chosen[str(cell_type)] = rows
    return chosen


def _aligned(X, lookup: np.ndarray) -> sp.csr_matrix:
    """Cells x data features -> cells x model vocabulary (zeros for vocabulary entries absent from the data)."""
    have = np.flatnonzero(lookup >= 0)
    select = sp.csr_matrix((np.ones(len(have), dtype=np.float32), (lookup[have], have)),
                           shape=(X.shape[1], len(lookup)))
    return sp.csr_matrix(sp.csr_matrix(X, dtype=np.float32) @ select)


def _token_batches(model, rna_X, atac_X, rows, query_genes, batch_size, seed):
    """Batches of the tokens the model reads for ``rows`` (cells x vocabulary matrices ``rna_X``, ``atac_X``).

    rna2atac: exactly the training draw of :class:`cisformer.sampler.PairedCells` (keys = expressed genes with
    value tokens, queries = open CREs + closed CREs). atac2rna: keys = the cell's open CREs as at prediction
    (:class:`cisformer.sampler.CellKeys`), queries = ``query_genes`` (every gene with a window CRE; queries
    never attend to each other, so reading all of them at once changes nothing).
    """
    from . import sampler

    cfg = model.config
    if cfg.direction == "rna2atac":
        dataset = sampler.PairedCells(rna_X, atac_X, rows, cfg, seed=seed)
        items = [dataset[i] for i in range(len(dataset))]
    else:
        dataset = sampler.CellKeys(atac_X, cfg, seed=seed)
        items = [dict(dataset[int(r)], gene_idx=query_genes) for r in rows]
    for start in range(0, len(items), batch_size):
        yield sampler.collate(items[start:start + batch_size])


class _Prepared:
    """The model vocabulary aligned to the data: kept genes / CREs, their coordinates and aligned matrices."""

    def __init__(self, model, rna: ad.AnnData, atac: ad.AnnData):
        gene_lookup = _align(model.gene_names, rna.var_names, "gene")  # model gene i -> rna column
        cre_lookup = _align(model.cre_names, atac.var_names, "CRE")    # model CRE j -> atac column
        self.genes_kept = np.flatnonzero(gene_lookup >= 0)
        self.cres_kept = np.flatnonzero(cre_lookup >= 0)
        self.gene_var = rna.var.iloc[gene_lookup[self.genes_kept]].copy()
        self.cre_var = atac.var.iloc[cre_lookup[self.cres_kept]].copy()
        self.rna_X, self.atac_X = _aligned(rna.X, gene_lookup), _aligned(atac.X, cre_lookup)


def _vocabulary(model, rna: ad.AnnData, atac: ad.AnnData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(gene_var, cre_var)``: the rows of ``rna.var`` / ``atac.var`` in the model's vocabulary (``model=None``:
    all of them)."""
    if model is None:
        return rna.var, atac.var
    genes, cres = _align(model.gene_names, rna.var_names, "gene"), _align(model.cre_names, atac.var_names, "CRE")
    return rna.var.iloc[genes[genes >= 0]].copy(), atac.var.iloc[cres[cres >= 0]].copy()


def _torch_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; any other device string unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@torch.no_grad()
def iter_cell_attention(model, prepared: _Prepared, rows, query_genes: np.ndarray, layer: int | str = "mean",
                        normalize: bool = True, batch_size: int = 8, seed: int = 0, device: str = "cpu"):
    """Yield ``(gene_tokens, cre_tokens, attn)`` per cell: vocabulary indices of the cell's non-padded gene and
    CRE tokens and the (normalised) head-averaged attention as a genes x CREs array, whatever the direction."""
    direction = model.config.direction
    norm = NORMALIZERS[direction] if normalize else (lambda a: np.asarray(a, dtype=np.float64))
    device = _torch_device(device)
    model = model.to(device).eval()
    for batch in _token_batches(model, prepared.rna_X, prepared.atac_X, np.asarray(rows), query_genes,
                                batch_size, seed):
        gene_tokens = [g[~p].numpy() for g, p in zip(batch["gene_idx"], batch["gene_pad"])]
        cre_tokens = [c[~p].numpy() for c, p in zip(batch["cre_idx"], batch["cre_pad"])]
        _, attn = model({k: v.to(device) for k, v in batch.items()}, return_attention=True)
        attn = torch.stack(attn).mean(0) if layer == "mean" else attn[layer]  # (B, Lq, Lk)
        attn = attn.float().cpu().numpy()
        for i, (genes, cres) in enumerate(zip(gene_tokens, cre_tokens)):
            n_g, n_c = len(genes), len(cres)
            if n_g == 0 or n_c == 0:
                yield genes, cres, np.zeros((n_g, n_c))
            elif direction == "atac2rna":  # queries genes, keys CREs
                yield genes, cres, norm(attn[i, :n_g, :n_c])
            else:                          # queries CREs, keys genes -> genes x CREs
                yield genes, cres, norm(attn[i, :n_c, :n_g]).T


def all_pairs(rna_var: pd.DataFrame, atac_var: pd.DataFrame, genes) -> pd.DataFrame:
    """Every CRE paired with each of ``genes`` (no distance window; for trans read-outs such as a TF gene's
    genome-wide CREs). Same columns as :func:`candidate_pairs` (``distance`` = -1 when on another chromosome)."""
    gene_idx = np.flatnonzero(pd.Index(rna_var.index).isin(list(genes)))
    g = np.repeat(gene_idx, len(atac_var))
    c = np.tile(np.arange(len(atac_var)), len(gene_idx))
    pairs = pd.DataFrame({"gene_idx": g.astype(np.int64), "cre_idx": c.astype(np.int64)})
    pairs["gene"] = np.asarray(rna_var.index)[g]
    pairs["cre"] = np.asarray(atac_var.index)[c]
    tss = gene_tss(rna_var)[g]
    mid = ((pd.to_numeric(atac_var["start"]) + pd.to_numeric(atac_var["end"])) // 2).to_numpy()[c]
    same = (rna_var["chrom"].astype(str).to_numpy()[g] == atac_var["chrom"].astype(str).to_numpy()[c]) & np.isfinite(tss)
    pairs["distance"] = np.where(same, mid - np.nan_to_num(tss), -1).astype(np.int64)
    return pairs


def extract(model, rna: ad.AnnData, atac: ad.AnnData, cell_type_key: str = "cell_type",
            n_cells_per_type: int | None = 100, window: int | None = WINDOW, genes=None,
            layer: int | str = "mean", normalize: bool = True, batch_size: int = 8, seed: int = 0,
            device: str = "cpu", cells: dict[str, np.ndarray] | None = None) -> dict[str, ad.AnnData]:
    """Per-cell-type CRE-gene attention of a trained model, window-masked and sparse.

    Parameters
    ----------
    model
        A trained :class:`cisformer.model.Cisformer` carrying ``gene_names`` and ``cre_names``.
    rna, atac
        Paired AnnData following the data contract (gene coordinates in ``rna.var``, CRE coordinates in
        ``atac.var``); aligned to the model's vocabulary by name.
    cell_type_key, n_cells_per_type, seed
        Which cells: up to ``n_cells_per_type`` random cells of each type (``None`` = all). ``cells`` overrides
        with explicit row positions per type.
    window
        Only pairs with the CRE midpoint within ``window`` bp of the TSS are kept. ``None``: every CRE for each
        of ``genes`` (trans read-out; memory grows with len(genes) x CREs, so pass few genes).
    genes
        Restrict to these gene names (required when ``window`` is None).
    layer
        ``"mean"`` averages the head-averaged weights over layers, an int picks one layer (``-1`` = last).
    normalize
        Per-cell normalisation of the paper (log for rna2atac, rank + min-max for atac2rna); ``False`` keeps
        raw weights.
    device
        Where the model runs: a torch device string, or ``"auto"`` (CUDA when available, else CPU).

    Returns
    -------
    dict cell type -> AnnData (genes x CREs, the model's vocabulary restricted to the data). ``X`` CSR float32
    = mean normalised attention over the cells in which the pair was co-sampled (0 outside the window or when
    never co-sampled); ``layers["n_cells"]`` = that co-sampling count; ``obs``/``var`` carry coordinates;
    ``uns`` has ``n_cells`` (cells read), ``direction``, ``window``, ``normalization``.
    """
    prep = _Prepared(model, rna, atac)
    if window is None:
        if genes is None:
            raise ValueError("window=None reads every CRE of each gene: pass the few genes wanted as genes=[...]")
        pairs = all_pairs(prep.gene_var, prep.cre_var, genes)
    else:
        pairs = candidate_pairs(prep.gene_var, prep.cre_var, window)
        if genes is not None:
            pairs = pairs[pairs["gene"].isin(list(genes))].reset_index(drop=True)
    # pair ids indexed by *model* vocabulary positions
    pair_id = sp.csr_matrix((np.arange(1, len(pairs) + 1, dtype=np.int64),
                             (prep.genes_kept[pairs["gene_idx"]], prep.cres_kept[pairs["cre_idx"]])),
                            shape=(len(model.gene_names), len(model.cre_names)))
    query_genes = np.unique(prep.genes_kept[pairs["gene_idx"]]) if len(pairs) else prep.genes_kept[:1]
    cells = cells if cells is not None else sample_cells(rna.obs, cell_type_key, n_cells_per_type, seed)
    result = {}
    for cell_type, rows in cells.items():
        acc = PairAccumulator(pair_id)
        for gene_tokens, cre_tokens, attn in iter_cell_attention(model, prep, rows, query_genes, layer, normalize,
                                                                  batch_size, seed, device):
            acc.add_cell(gene_tokens, cre_tokens, attn)
        out = _pair_anndata(_mean_scores(acc), acc.count, pairs, prep.gene_var, prep.cre_var)
        out.uns.update(cell_type=cell_type, n_cells=int(acc.n_cells), direction=model.config.direction,
                       window=-1 if window is None else int(window),
                       normalization=NORMALIZERS[model.config.direction].__name__ if normalize else "none")
        result[cell_type] = out
    return result


def gene_attention(model, rna: ad.AnnData, atac: ad.AnnData, cell_type_key: str = "cell_type",
                   n_cells_per_type: int | None = 100, layer: int | str = "mean", normalize: bool = True,
                   batch_size: int = 8, seed: int = 0, device: str = "cpu",
                   cells: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Gene-wise attention score per cell type (Fig 3a): for each cell, the mean normalised attention between
    a gene token and all of the cell's CRE tokens (genome-wide, no window); averaged over the cells in which the
    gene was sampled (the right denominator). Returns genes x cell types (NaN where a gene was never sampled).

    Needs an ``rna2atac`` model (genes are keys, attended by CRE queries). In ``atac2rna`` each gene query's
    weights sum to one (and rank normalisation makes every row's mean 0.5), so a per-gene total says nothing.
    """
    if model.config.direction != "rna2atac":
        raise ValueError("gene_attention needs an rna2atac model: atac2rna rows (one per gene) always sum to 1")
    prep = _Prepared(model, rna, atac)
    cells = cells if cells is not None else sample_cells(rna.obs, cell_type_key, n_cells_per_type, seed)
    n_vocab = len(model.gene_names)
    out = {}
    for cell_type, rows in cells.items():
        total, count = np.zeros(n_vocab), np.zeros(n_vocab)
        for gene_tokens, cre_tokens, attn in iter_cell_attention(model, prep, rows, prep.genes_kept, layer,
                                                                  normalize, batch_size, seed, device):
            if attn.size == 0:
                continue
            per_token = attn.mean(1)
            uniq, inverse = np.unique(gene_tokens, return_inverse=True)
            total[uniq] += np.bincount(inverse, weights=per_token) / np.bincount(inverse)
            count[uniq] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            out[cell_type] = np.where(count > 0, total / np.maximum(count, 1), np.nan)[prep.genes_kept]
    return pd.DataFrame(out, index=prep.gene_var.index)


def _pair_anndata(score: np.ndarray, count: np.ndarray, pairs: pd.DataFrame, gene_var: pd.DataFrame,
                  cre_var: pd.DataFrame) -> ad.AnnData:
    """Genes x CREs AnnData of one cell type: ``X`` = each pair's score, ``layers["n_cells"]`` = the cells behind
    it; pairs with a count of 0 are left out."""
    seen = count > 0
    rows, cols = pairs["gene_idx"].to_numpy()[seen], pairs["cre_idx"].to_numpy()[seen]
    shape = (len(gene_var), len(cre_var))
    out = ad.AnnData(X=sp.csr_matrix((score[seen].astype(np.float32), (rows, cols)), shape=shape),
                     obs=gene_var, var=cre_var)
    out.layers["n_cells"] = sp.csr_matrix((count[seen].astype(np.float32), (rows, cols)), shape=shape)
    return out


def _mean_scores(acc: PairAccumulator) -> np.ndarray:
    return np.where(acc.count > 0, acc.sum / np.maximum(acc.count, 1), 0.0)


# --------------------------------------------------------------------------------------------- summaries

def _entries(X, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``X[rows[i], cols[i]]`` as a 1-D float array (scipy returns a sparse matrix, not an array, when empty)."""
    if len(rows) == 0:
        return np.zeros(0)
    return np.asarray(X[rows, cols], dtype=np.float64).ravel()


def links_table(per_type: dict[str, ad.AnnData], min_cells: int = 1) -> pd.DataFrame:
    """Tidy CRE-gene pairs: one row per (cell type, gene, CRE) co-sampled in at least ``min_cells`` cells.

    Columns: ``cell_type``, ``gene``, ``cre``, ``score`` (mean normalised attention), ``n_cells``, ``rank``
    (1 = strongest pair of that cell type).
    """
    frames = []
    for cell_type, adata in per_type.items():
        n = adata.layers["n_cells"].tocoo()
        keep = n.data >= min_cells
        rows, cols = n.row[keep], n.col[keep]
        score = _entries(adata.X, rows, cols)
        frame = pd.DataFrame({"cell_type": cell_type, "gene": adata.obs_names[rows], "cre": adata.var_names[cols],
                              "score": score, "n_cells": n.data[keep].astype(np.int64)})
        frame["rank"] = frame["score"].rank(ascending=False, method="first").astype(np.int64)
        frames.append(frame)
    cols = ["cell_type", "gene", "cre", "score", "n_cells", "rank"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


SCORERS = {"regression": "within-cell-type regression", "deletion": "in-silico deletion",
           "attention": "attention (paper's normalisation)", "attention-raw": "attention (raw weights)"}
DEFAULT_SCORER = "regression"  # the best or tied-best scorer of planted links in most settings (notebook 04)


def links(model, rna: ad.AnnData, atac: ad.AnnData, scorer: str = DEFAULT_SCORER, min_cells: int = 1,
          **kwargs) -> pd.DataFrame:
    """CRE-gene links per cell type as a tidy DataFrame (:func:`links_table`, plus a ``scorer`` column).

    ``scorer``: ``"regression"`` (within-cell-type regression, :func:`regression`; the default, reads the data
    only, so ``model`` may be None), ``"deletion"`` (in-silico deletion of a trained atac2rna model,
    :func:`deletion`), ``"attention"`` (the paper's reading: rank- or log-normalised attention, :func:`extract`)
    or ``"attention-raw"`` (attention weights without normalisation). ``kwargs`` go to the reader (cell types,
    cells per type, window, seed, device).
    """
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {list(SCORERS)}, got {scorer!r}")
    if scorer == "regression":
        kwargs.pop("device", None)
        per_type = regression(rna, atac, model, **kwargs)
    elif model is None:
        raise ValueError(f"scorer {scorer!r} reads a trained model: pass one (only 'regression' needs none)")
    elif scorer == "deletion":
        per_type = deletion(model, rna, atac, **kwargs)
    else:
        per_type = extract(model, rna, atac, normalize=scorer == "attention", **kwargs)
    return links_table(per_type, min_cells=min_cells).assign(scorer=SCORERS[scorer])


def explain_empty_links(model, rna: ad.AnnData, atac: ad.AnnData, window: int | None = WINDOW,
                        cell_type_key: str = "cell_type", n_cells_per_type: int | None = 100) -> str:
    """Why :func:`links` found no CRE-gene pair, and what to change, in one paragraph (``model=None``: the data's
    own genes and CREs, as the regression scorer reads them).

    Checks in order: genes of the model with coordinates in ``rna.var`` (``chrom``, ``tss``), CREs within
    ``window`` of a TSS (reports the nearest gene-CRE distance and the chromosomes of each), and otherwise pairs
    that exist but were never co-sampled (gene and CRE both among a read cell's tokens).
    """
    genes, cres = _vocabulary(model, rna, atac)
    chrom = genes["chrom"].astype(str) if "chrom" in genes else pd.Series("", index=genes.index)
    tss = pd.to_numeric(genes["tss"] if "tss" in genes else genes.get("start", pd.Series(np.nan, index=genes.index)),
                        errors="coerce")
    located = (chrom.str.len() > 0) & (chrom != "nan") & tss.notna()
    if not located.any():
        whose = "the model's" if model is not None else "the"
        return (f"none of {whose} {len(genes)} genes in the data has coordinates (rna.var 'chrom' and 'tss' are "
                "empty). Fix: annotate the genes (cisformer preprocess --genome hg38|mm10, or "
                "cisformer.data.read_paired(..., genome=...)), or add rna.var chrom/tss yourself.")
    window_text = "any distance" if window is None else f"{window:,} bp"
    pairs = candidate_pairs(genes, cres, window if window is not None else 10**10)
    if len(pairs) == 0:
        g_chroms, c_chroms = set(chrom[located]), set(cres["chrom"].astype(str))
        shared = sorted(g_chroms & c_chroms)
        mid = (cres["start"].to_numpy(float) + cres["end"].to_numpy(float)) / 2
        nearest = min((np.abs(mid[cres["chrom"].astype(str).to_numpy() == c][:, None]
                              - tss[located & (chrom == c)].to_numpy()[None, :]).min() for c in shared), default=None)
        where = (f"the nearest CRE is {nearest:,.0f} bp from a TSS" if nearest is not None else
                 f"genes and CREs share no chromosome (genes on {sorted(g_chroms)[:5]}, CREs on {sorted(c_chroms)[:5]})")
        fix = ("use genes and CREs of the same regions (keep more of them at preprocess, e.g. a lower --min-cells, "
               "or use the whole data set)" + ("" if not shared else ", or a larger --window"))
        return (f"no CRE lies within {window_text} of the TSS of any of the {int(located.sum())} located genes: "
                f"{where}. Fix: {fix}.")
    n_types = rna.obs[cell_type_key].nunique() if cell_type_key in rna.obs else 0
    return (f"{len(pairs)} gene-CRE pairs lie within {window_text}, but none was co-sampled (gene expressed and "
            f"CRE open in the same cell, both among its tokens) in the cells read ({n_types} cell type(s), up to "
            f"{n_cells_per_type} cells each). Fix: read more cells (--cells-per-type), check that the window's genes "
            "are expressed and its CREs open in these cells, or train with larger token budgets.")


def pair_scores(per_type: dict[str, ad.AnnData], pairs: pd.DataFrame, how: str = "mean") -> pd.Series:
    """Score of given (``gene``, ``cre``) pairs, combined over cell types (``mean`` or ``max``; pairs never
    co-sampled count as 0). Used to rank the same candidate pairs as the baselines."""
    stack = []
    for adata in per_type.values():
        gi = adata.obs_names.get_indexer(pairs["gene"])
        ci = adata.var_names.get_indexer(pairs["cre"])
        ok = (gi >= 0) & (ci >= 0)
        vals = np.zeros(len(pairs))
        vals[ok] = _entries(adata.X, gi[ok], ci[ok])
        stack.append(vals)
    stack = np.vstack(stack)
    combined = stack.max(0) if how == "max" else stack.mean(0)
    return pd.Series(combined, index=pairs.index, name="attention")


def gene_scores(per_type: dict[str, ad.AnnData], how: str = "sum") -> pd.DataFrame:
    """Gene-wise attention per cell type: ``sum`` or ``mean`` over a gene's co-sampled window CREs.

    Returns genes x cell types (NaN for ``mean`` where a gene had no co-sampled CRE).
    """
    out = {}
    for cell_type, adata in per_type.items():
        total = np.asarray(adata.X.sum(1)).ravel()
        if how == "sum":
            out[cell_type] = total
        elif how == "mean":
            n_seen = np.asarray((adata.layers["n_cells"] > 0).sum(1)).ravel()
            with np.errstate(invalid="ignore", divide="ignore"):
                out[cell_type] = np.where(n_seen > 0, total / np.maximum(n_seen, 1), np.nan)
        else:
            raise ValueError(f"how must be 'sum' or 'mean', got {how!r}")
    first = next(iter(per_type.values()))
    return pd.DataFrame(out, index=first.obs_names)


def linked_cre_counts(per_type: dict[str, ad.AnnData], quantile: float = 0.9) -> pd.DataFrame:
    """Number of linked CREs per gene and cell type: pairs whose score exceeds the cell type's ``quantile``
    (90th percentile by default) of co-sampled pair scores. Returns genes x cell types (int)."""
    out = {}
    for cell_type, adata in per_type.items():
        X = adata.X.tocsr()
        cutoff = np.quantile(X.data, quantile) if X.nnz else np.inf
        out[cell_type] = np.asarray((X > cutoff).sum(1)).ravel().astype(np.int64)
    first = next(iter(per_type.values()))
    return pd.DataFrame(out, index=first.obs_names)


# --------------------------------------------------------------------------------------------- known truth

def peak_to_gene_correlation(rna: ad.AnnData, atac: ad.AnnData, pairs: pd.DataFrame, n_metacells: int = 500,
                             metacell_size: int = 50, n_comps: int = 30, seed: int = 0) -> np.ndarray:
    """ArchR-style peak-to-gene correlation for every given pair: kNN metacells in ATAC LSI space (TF-IDF ->
    truncated SVD, first component dropped), mean binarised accessibility vs mean log-normalised expression,
    Pearson across metacells.

    Private to this module because :class:`cisformer.baselines.PeakToGene` keeps only the links above its
    cutoff and not their correlations; link recovery needs a score for every candidate pair.
    """
    from sklearn.decomposition import TruncatedSVD
    from .metrics import exact_neighbors

    from .enrichment import pearson_pairs

    binary = sp.csr_matrix(atac.X, dtype=np.float32)
    binary.data[:] = 1.0
    idf = np.log1p(binary.shape[0] / (1.0 + np.asarray(binary.sum(0)).ravel()))
    tf = sp.diags(1.0 / np.maximum(np.asarray(binary.sum(1)).ravel(), 1.0)) @ binary
    tfidf = sp.csr_matrix(tf @ sp.diags(idf))
    n_comps = max(2, min(n_comps, min(tfidf.shape) - 1))
    lsi = TruncatedSVD(n_comps, random_state=seed).fit_transform(tfidf)[:, 1:]
    lsi /= np.maximum(np.linalg.norm(lsi, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    n_meta = min(n_metacells, max(10, atac.n_obs // 5))
    k = min(metacell_size, atac.n_obs)
    seeds = rng.choice(atac.n_obs, n_meta, replace=False)
    members = exact_neighbors(lsi, k).kneighbors(np.asarray(lsi[seeds], dtype=np.float64), return_distance=False)
    agg = sp.csr_matrix((np.full(members.size, 1.0 / k), (np.repeat(np.arange(n_meta), k), members.ravel())),
                        shape=(n_meta, atac.n_obs))
    counts = sp.csr_matrix(rna.X, dtype=np.float64)
    depth = np.maximum(np.asarray(counts.sum(1)).ravel(), 1.0)
    log_expr = sp.csr_matrix(sp.diags(1e4 / depth) @ counts)
    log_expr.data = np.log1p(log_expr.data)
    meta_acc = np.asarray((agg @ binary).todense())
    meta_expr = np.asarray((agg @ log_expr).todense())
    gi = rna.var_names.get_indexer(pairs["gene"])
    ci = atac.var_names.get_indexer(pairs["cre"])
    return pearson_pairs(meta_expr, meta_acc, gi, ci)


def scarlink_coefficients(rna: ad.AnnData, atac: ad.AnnData, pairs: pd.DataFrame, seed: int = 0,
                          **kwargs) -> np.ndarray:
    """SCARlink-style score of every given pair: the non-negative Poisson-regression coefficient of
    :class:`cisformer.baselines.ScarlinkStyle` (0 for pairs outside its window)."""
    from .baselines import ScarlinkStyle

    coef = ScarlinkStyle(**kwargs).fit(rna, atac, seed=seed).coefficients
    lookup = pd.Series(coef["weight"].to_numpy(), index=pd.MultiIndex.from_arrays([coef["gene"], coef["cre"]]))
    lookup = lookup[~lookup.index.duplicated()]
    return lookup.reindex(pd.MultiIndex.from_arrays([pairs["gene"], pairs["cre"]])).fillna(0.0).to_numpy()


def regression_coefficients(rna: ad.AnnData, atac: ad.AnnData, pairs: pd.DataFrame, alpha: float = 1.0,
                            groups=None) -> np.ndarray:
    """Regression score of every given pair: per gene, ridge regression (penalty ``alpha``, intercept not
    penalised) of its log-normalised expression (log1p counts per 10,000, :func:`cisformer.metrics.true_expression`)
    on the binary accessibility of all of that gene's CREs in ``pairs``; the score is the CRE's coefficient
    (signed: a CRE whose opening lowers expression ranks last). ``alpha`` is on the scale of the summed squares of
    the centred 0/1 accessibility (about the number of cells in which a CRE is open), so 1 is close to least
    squares on thousands of cells.

    ``groups``: one label per cell (e.g. ``rna.obs["cell_type"]``). Expression and accessibility are then centred
    within each group (a fixed effect per group), so only covariation *within* groups counts: what all CREs of a
    cell type's program share with the type's genes (cell identity, trans regulation) is not taken for a link.
    This is the pooled form of :func:`regression`, the default link scorer."""
    from .metrics import true_expression

    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    gi = rna.var_names.get_indexer(pairs["gene"])
    ci = atac.var_names.get_indexer(pairs["cre"])
    if (gi < 0).any() or (ci < 0).any():
        raise ValueError("pairs name genes / CREs absent from rna.var_names / atac.var_names; build them with "
                         "candidate_pairs(rna.var, atac.var)")
    if not np.array_equal(rna.obs_names, atac.obs_names):
        raise ValueError("rna and atac must hold the same cells in the same order (identical obs_names)")
    codes = np.zeros(rna.n_obs, dtype=np.int64) if groups is None else pd.factorize(np.asarray(groups))[0]
    if len(codes) != rna.n_obs or (codes < 0).any():
        raise ValueError(f"groups must give one label per cell ({rna.n_obs}), without missing values")
    member = sp.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes)))  # cells x groups
    size = np.asarray(member.sum(0)).ravel()

    def centred(m: np.ndarray) -> np.ndarray:
        return m - member @ ((member.T @ m) / size[:, None])

    binary = sp.csc_matrix(atac.X, dtype=np.float64)
    binary.data = (binary.data > 0).astype(np.float64)
    expression = true_expression(rna)  # normalised over all genes of the cell, then log1p
    scores = np.zeros(len(pairs))
    for gene in np.unique(gi):
        rows = np.flatnonzero(gi == gene)
        y = centred(expression[:, [gene]].astype(np.float64))[:, 0]
        x = centred(binary[:, ci[rows]].toarray())
        gram = x.T @ x + alpha * np.eye(len(rows))
        scores[rows] = np.linalg.lstsq(gram, x.T @ y, rcond=None)[0]
    return scores


def regression(rna: ad.AnnData, atac: ad.AnnData, model=None, cell_type_key: str = "cell_type",
               n_cells_per_type: int | None = None, window: int = WINDOW, alpha: float = 1.0, seed: int = 0,
               cells: dict[str, np.ndarray] | None = None, progress: bool = False) -> dict[str, ad.AnnData]:
    """Per-cell-type CRE-gene links by within-cell-type regression: the default link score.

    On the cells of each type, per gene, ridge regression of its log-normalised expression on the binary
    accessibility of every CRE within ``window`` of its TSS (:func:`regression_coefficients`); a pair's score is the
    CRE's coefficient, in expression units (log1p counts per 10,000 per open CRE), signed. Reading within one cell
    type leaves out what every CRE of the type's program shares with the type's genes (cell identity, trans
    regulation), which pooled regression and correlation take for links. On planted links (notebook 04,
    ``figures/links_gwas/link_recovery_simulated_mean.csv``) its pooled form is the best or tied-best scorer in
    most settings; the model-based readers (:func:`deletion`, :func:`extract`) are not.

    It reads the data, not a model: ``model``, when given, only restricts genes and CREs to its vocabulary, so that
    the pairs are those its readers score. ``layers["n_cells"]`` counts the cells of the type in which the CRE is
    open (a pair whose CRE is never open there gets no score). Cells: ``n_cells_per_type`` random cells of each
    type (``None``, the default: all), or ``cells`` (row positions per type). Output as :func:`extract`
    (``uns["normalization"] = "regression"``); ``progress`` shows a bar over cell types.
    """
    from .progress import progress as progress_bar

    gene_var, cre_var = _vocabulary(model, rna, atac)
    pairs = candidate_pairs(gene_var, cre_var, window)
    cre_cols = atac.var_names.get_indexer(pairs["cre"])
    cells = cells if cells is not None else sample_cells(rna.obs, cell_type_key, n_cells_per_type, seed)
    result = {}
    for cell_type, rows in progress_bar(cells.items(), desc="within-cell-type regression", disable=not progress):
        sub_rna, sub_atac = rna[rows], atac[rows]
        score = regression_coefficients(sub_rna, sub_atac, pairs, alpha)
        n_open = np.asarray((sp.csc_matrix(sub_atac.X)[:, cre_cols] > 0).sum(0)).ravel()
        out = _pair_anndata(score, n_open, pairs, gene_var, cre_var)
        out.uns.update(cell_type=cell_type, n_cells=int(len(rows)), window=int(window), normalization="regression")
        result[cell_type] = out
    return result


def link_recovery(pairs: pd.DataFrame, scores: dict[str, np.ndarray], truth: pd.DataFrame) -> pd.DataFrame:
    """AUROC and AUPRC (average precision) of each method's scores for the same candidate pairs against planted
    links (``truth`` with ``gene``, ``cre``). Returns one row per method plus the base rate (AUPRC of random)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    key = pd.MultiIndex.from_arrays([pairs["gene"], pairs["cre"]])
    label = key.isin(pd.MultiIndex.from_arrays([truth["gene"], truth["cre"]])).astype(int)
    if label.sum() == 0 or label.sum() == len(label):
        raise ValueError("the candidate pairs must contain both planted and non-planted links")
    rows = []
    for method, score in scores.items():
        score = np.nan_to_num(np.asarray(score, dtype=float))
        rows.append({"method": method, "auroc": roc_auc_score(label, score),
                     "auprc": average_precision_score(label, score), "n_pairs": len(label),
                     "n_true": int(label.sum()), "base_rate": float(label.mean())})
    return pd.DataFrame(rows)


def held_out_check(rna: ad.AnnData, atac: ad.AnnData, pairs: pd.DataFrame, scores: dict[str, np.ndarray],
                   fit_cells, test_cells, k: int = 3, n_random: int = 20, seed: int = 0) -> pd.DataFrame:
    """A link check that needs no external truth: do a scorer's top CREs of a gene predict its expression in cells
    the scorer never read (held-out libraries) better than other CREs of the same window?

    Per gene with more than ``k`` candidate CREs and each scorer: the ``k`` best-scored CREs (ties broken towards
    the TSS), a least-squares line of the gene's log-normalised expression (:func:`cisformer.metrics.
    true_expression`) on their binary accessibility fitted on ``fit_cells``, scored on ``test_cells`` by the
    out-of-sample R^2 against the fitted cells' mean (``1 - SSE / sum((y - mean_fit)^2)``, which can be negative).
    The same for the ``k`` CREs nearest the TSS and for ``n_random`` random ``k``-sets of the window (their mean).

    Parameters
    ----------
    pairs
        Candidate pairs (:func:`candidate_pairs`, with ``distance``); ``scores``: scorer -> one score per pair,
        computed on cells of ``fit_cells`` only.

    Returns
    -------
    One row per (gene, scorer): ``gene``, ``scorer``, ``n_window``, ``r2`` (held-out R^2 of the scorer's CREs),
    ``r2_nearest``, ``r2_random``, ``delta_random`` (= r2 - r2_random), ``delta_nearest``.
    """
    from .metrics import true_expression

    rng = np.random.default_rng(seed)
    fit_idx, test_idx = (rna.obs_names.get_indexer(pd.Index(c).astype(str)) for c in (fit_cells, test_cells))
    if (fit_idx < 0).any() or (test_idx < 0).any():
        raise ValueError("fit_cells / test_cells must be obs names of rna")
    if np.intersect1d(fit_idx, test_idx).size:
        raise ValueError("fit_cells and test_cells overlap: the check needs cells the scorers never read")
    binary = sp.csc_matrix(atac.X, dtype=np.float64)
    binary.data = (binary.data > 0).astype(np.float64)
    expression = true_expression(rna)
    gi = rna.var_names.get_indexer(pairs["gene"])
    ci = atac.var_names.get_indexer(pairs["cre"])
    distance = np.abs(pairs["distance"].to_numpy())

    def r2(gene, cres):
        x = binary[:, cres].toarray()
        design = lambda rows: np.column_stack([np.ones(len(rows)), x[rows]])  # noqa: E731
        y = expression[:, gene].astype(np.float64)
        coef = np.linalg.lstsq(design(fit_idx), y[fit_idx], rcond=None)[0]
        sst = ((y[test_idx] - y[fit_idx].mean()) ** 2).sum()
        return 1.0 - ((y[test_idx] - design(test_idx) @ coef) ** 2).sum() / sst if sst > 0 else np.nan

    rows = []
    for gene in np.unique(gi):
        window = np.flatnonzero(gi == gene)
        if len(window) <= k:
            continue
        by_distance = window[np.argsort(distance[window], kind="stable")]
        nearest = r2(gene, ci[by_distance[:k]])
        random = np.nanmean([r2(gene, ci[rng.choice(window, k, replace=False)]) for _ in range(n_random)])
        for scorer, score in scores.items():
            ranked = by_distance[np.argsort(-np.nan_to_num(np.asarray(score, dtype=float)[by_distance]), kind="stable")]
            value = r2(gene, ci[ranked[:k]])
            rows.append({"gene": rna.var_names[gene], "scorer": scorer, "n_window": len(window), "r2": value,
                         "r2_nearest": nearest, "r2_random": random, "delta_random": value - random,
                         "delta_nearest": value - nearest})
    return pd.DataFrame(rows)


def score_reproducibility(pairs: pd.DataFrame, scores_a: dict[str, np.ndarray],
                          scores_b: dict[str, np.ndarray]) -> pd.DataFrame:
    """Whether each scorer ranks a gene's window CREs the same way on two disjoint sets of cells (e.g. two halves of
    the libraries): per gene with at least 3 candidate CREs, the Spearman correlation of the pair scores from ``a``
    and from ``b`` (genes whose scores are constant in either are skipped). Returns one row per scorer:
    ``scorer``, ``n_genes``, ``spearman_mean``, ``spearman_median``."""
    from scipy.stats import spearmanr

    genes = pairs["gene"].to_numpy()
    rows = []
    for scorer in scores_a:
        a, b = np.asarray(scores_a[scorer], dtype=float), np.asarray(scores_b[scorer], dtype=float)
        rhos = []
        for gene in pd.unique(genes):
            window = np.flatnonzero(genes == gene)
            if len(window) >= 3 and np.ptp(a[window]) > 0 and np.ptp(b[window]) > 0:
                rhos.append(spearmanr(a[window], b[window])[0])
        rows.append({"scorer": scorer, "n_genes": len(rhos), "spearman_mean": float(np.mean(rhos)) if rhos else np.nan,
                     "spearman_median": float(np.median(rhos)) if rhos else np.nan})
    return pd.DataFrame(rows)


def _add_deletions(acc: PairAccumulator, model, keys_ds, rows, query: np.ndarray, device: str,
                   batch_size: int) -> None:
    """For each cell of ``rows``: the drop in every ``query`` gene's predicted expression (expected log1p over the
    bins) when one of its open CREs is removed, added to ``acc`` for the CREs that pair with a queried gene."""
    centres = model.bin_centres().to(device)
    q = torch.as_tensor(query, device=device)
    for r in rows:
        cres = keys_ds[int(r)]["cre_idx"]
        if len(cres) == 0:
            acc.add_cell(query, cres, np.zeros((len(query), 0)))
            continue
        relevant = np.flatnonzero(np.asarray(acc.pair_id[query][:, cres].sum(0)).ravel() > 0)  # CREs with a pair
        k = torch.as_tensor(cres, device=device)
        effects = np.zeros((len(query), len(cres)))
        drops = np.concatenate([[-1], relevant])
        base = None
        for start in range(0, len(drops), batch_size):
            chunk = drops[start:start + batch_size]
            pad = torch.zeros(len(chunk), len(cres), dtype=torch.bool, device=device)
            for i, d in enumerate(chunk):
                if d >= 0:
                    pad[i, d] = True
            batch = {"gene_idx": q.expand(len(chunk), -1), "gene_pad": torch.zeros(len(chunk), len(q), dtype=torch.bool,
                                                                                  device=device),
                     "cre_idx": k.expand(len(chunk), -1), "cre_pad": pad}
            expected = (model(batch).softmax(-1) @ centres).cpu().numpy()  # (chunk, genes)
            if base is None:
                base, expected, chunk = expected[0], expected[1:], chunk[1:]
            effects[:, chunk] = (base[None, :] - expected).T
        acc.add_cell(query, cres, effects)


def _check_deletion_model(model) -> None:
    if model.config.direction != "atac2rna":
        raise ValueError("in-silico deletion needs an atac2rna model (genes are predicted from open CREs); read an "
                         "rna2atac model's links with scorer='attention'")


@torch.no_grad()
def deletion_effects(model, rna: ad.AnnData, atac: ad.AnnData, pairs: pd.DataFrame, n_cells: int = 100,
                     seed: int = 0, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """In-silico CRE deletion (atac2rna models): for each candidate pair, the mean drop in the gene's predicted
    expression (expected log1p over the bins) when that one CRE is removed from the cell's open CREs, averaged
    over the sampled cells in which the CRE was open. A readout of what the model *uses*, to contrast with its
    attention weights (which can pool cell state without pointing at the causal CRE). Per cell type and as a
    links table: :func:`deletion`."""
    from . import sampler

    _check_deletion_model(model)
    prep = _Prepared(model, rna, atac)
    device = _torch_device(device)
    gene_vocab = prep.genes_kept[prep.gene_var.index.get_indexer(pairs["gene"])]
    cre_vocab = prep.cres_kept[prep.cre_var.index.get_indexer(pairs["cre"])]
    pair_id = sp.csr_matrix((np.arange(1, len(pairs) + 1), (gene_vocab, cre_vocab)),
                            shape=(len(model.gene_names), len(model.cre_names)))
    rows = np.random.default_rng(seed).choice(rna.n_obs, min(n_cells, rna.n_obs), replace=False)
    acc = PairAccumulator(pair_id)
    model = model.to(device).eval()
    _add_deletions(acc, model, sampler.CellKeys(prep.atac_X, model.config, seed=seed), rows, np.unique(gene_vocab),
                   device, batch_size)
    return _mean_scores(acc)


@torch.no_grad()
def deletion(model, rna: ad.AnnData, atac: ad.AnnData, cell_type_key: str = "cell_type",
             n_cells_per_type: int | None = 100, window: int = WINDOW, batch_size: int = 64, seed: int = 0,
             device: str = "cpu", cells: dict[str, np.ndarray] | None = None,
             progress: bool = False) -> dict[str, ad.AnnData]:
    """Per-cell-type CRE-gene links by in-silico deletion (atac2rna models): the default link score.

    For every sampled cell and every open CRE within ``window`` of a gene's TSS, the drop in the gene's
    predicted expression (expected log1p(counts per 10,000)) when that CRE alone is removed from the cell's open
    CREs; per cell type, the mean over the cells in which the CRE was open. It reads what the trained model
    *uses*; the attention weights (:func:`extract`) can pool cell state without pointing at the CRE that drives a
    gene (on planted links, deletion recovers them where attention does not: notebook 04). A score is in
    expression units, so strength and cell-type specificity show; ``layers["n_cells"]`` says how many cells each
    value rests on. Arguments and output as :func:`extract` (``uns["normalization"] = "deletion"``);
    ``progress`` shows a bar over cell types.
    """
    from . import sampler
    from .progress import progress as progress_bar

    _check_deletion_model(model)
    prep = _Prepared(model, rna, atac)
    pairs = candidate_pairs(prep.gene_var, prep.cre_var, window)
    pair_id = sp.csr_matrix((np.arange(1, len(pairs) + 1, dtype=np.int64),
                             (prep.genes_kept[pairs["gene_idx"]], prep.cres_kept[pairs["cre_idx"]])),
                            shape=(len(model.gene_names), len(model.cre_names)))
    query = np.unique(prep.genes_kept[pairs["gene_idx"]])
    device = _torch_device(device)
    model = model.to(device).eval()
    keys_ds = sampler.CellKeys(prep.atac_X, model.config, seed=seed)
    cells = cells if cells is not None else sample_cells(rna.obs, cell_type_key, n_cells_per_type, seed)
    result = {}
    for cell_type, rows in progress_bar(cells.items(), desc="in-silico deletion", disable=not progress):
        acc = PairAccumulator(pair_id)
        if len(query):
            _add_deletions(acc, model, keys_ds, rows, query, device, batch_size)
        out = _pair_anndata(_mean_scores(acc), acc.count, pairs, prep.gene_var, prep.cre_var)
        out.uns.update(cell_type=cell_type, n_cells=int(len(rows)), direction=model.config.direction,
                       window=int(window), normalization="deletion")
        result[cell_type] = out
    return result


def path_ablation(model, rna: ad.AnnData, atac: ad.AnnData) -> dict:
    """How much of the prediction the model's attention path carries, on the given cells (held-out ones): the
    direction's learning criterion with the path and without it (``model.ablate_attention``). rna2atac: mean
    per-cell AUROC gain over the base rate (the floor); atac2rna: mean gene-wise Pearson r of the predicted and
    measured log1p(counts per 10,000). Returns ``{"criterion", "with", "without", "carried"}``."""
    from . import metrics, predict

    if model.config.arch != "cisformer":
        raise ValueError("path_ablation needs an arch='cisformer' model (the paper's has no separable path)")
    values = []
    for ablate in (False, True):
        model.ablate_attention = ablate
        try:
            if model.config.direction == "rna2atac":
                pred = predict.rna_to_atac(model, rna)
                truth = np.asarray((atac[:, pred.var_names].X > 0).toarray() if sp.issparse(atac.X)
                                   else atac[:, pred.var_names].X > 0)
                floor = np.broadcast_to(model.query_prior.cpu().numpy(), truth.shape)
                values.append(np.nanmean(metrics.per_cell_auroc(pred.X, truth))
                              - np.nanmean(metrics.per_cell_auroc(floor, truth)))
            else:
                corr = metrics.genewise_correlation(predict.atac_to_rna(model, atac), rna)
                values.append(corr.loc[corr["metric"] == "pearson", "value"].mean())
        finally:
            model.ablate_attention = False
    criterion = "AUROC gain over the floor" if model.config.direction == "rna2atac" else "gene-wise Pearson"
    return {"criterion": criterion, "with": float(values[0]), "without": float(values[1]),
            "carried": float(values[0] - values[1])}


def shared_model(rna: ad.AnnData, atac: ad.AnnData, dataset: str, direction: str, profile: str = "cpu",
                 seed: int = 0, device: str = "auto", **overrides):
    """Train (or load from the shared cache) the model whose attention the figure notebooks read.

    Split: ``obs["split"]`` when present (the official split, as the benchmark notebooks use), else a seeded
    random 80/20 split; 10% of the non-test cells validate. Checkpoints live in
    ``cisformer.paths.cache_dir() / "<dataset>-<direction>-<profile>-seed<seed>"``, so every notebook (and a
    benchmark run of the same configuration) shares one trained model. Returns ``(model, history)``.
    """
    from . import data, paths, train

    by = "predefined" if "split" in rna.obs else "random"
    train_cells, val_cells, _ = data.split_cells(rna.obs, by=by, seed=seed)
    checkpoint_dir = paths.cache_dir() / f"{dataset}-{direction}-{profile}-seed{seed}"
    return train.fit(rna, atac, direction, train_cells, val_cells, profile=profile, seed=seed,
                     checkpoint_dir=checkpoint_dir, device=device, progress=False, **overrides)
