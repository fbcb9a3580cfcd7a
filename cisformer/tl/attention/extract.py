"""Reading a trained model's cross-attention: normalisation per cell (paper), the +-250 kb window pairs,
accumulation per cell type over the cells in which a pair was co-sampled, and the shared model the notebooks read.
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ...data.vocab import gene_tss

WINDOW = 250_000


# --------------------------------------------------------------------------------------------- normalisation

def log_normalize(attn: np.ndarray) -> np.ndarray:
    """Log normalisation of one cell's attention matrix (RNA -> ATAC).

    The matrix is scaled so that its mean entry is 1 (uniform attention maps to ``log(2)``) and ``log1p`` is
    applied: ``log1p(A / mean(A))``. Scale-free, so cells with different token counts are comparable.

    Parameters
    ----------
    attn
        Attention weights of one cell, any shape (e.g. genes x CREs), non-negative.

    Returns
    -------
    float64 array of the same shape; all zeros when the mean weight is not positive (or ``attn`` is empty).
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

    Parameters
    ----------
    attn
        Attention weights of one cell, 2-d (e.g. genes x CREs).

    Returns
    -------
    float64 array of the same shape, values in [0, 1] (all zeros when every rank is equal; empty input as is).
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

    Uses :func:`cisformer.data.vocab.gene_cre_pairs` (the baselines' window rule), so attention and baselines
    score exactly the same candidates.

    Parameters
    ----------
    rna_var
        Gene table (``rna.var``): ``chrom`` and ``tss`` (or ``start``/``end``/``strand``). Genes without
        coordinates get no pairs.
    atac_var
        CRE table (``atac.var``): ``chrom``, ``start``, ``end``.
    window
        Largest distance (bp) from the TSS to the CRE midpoint, on either side (default 250,000).

    Returns
    -------
    DataFrame with ``gene_idx``, ``cre_idx`` (row positions in the two tables), ``gene``, ``cre`` (names) and
    ``distance`` (signed bp from the TSS, strand-aware), sorted by gene then CRE. Memory is O(number of pairs).
    """
    from ...data.vocab import gene_cre_pairs

    pairs = gene_cre_pairs(rna_var, atac_var, window, window, anchor="tss")
    pairs = pd.DataFrame({"gene_idx": pairs["gene_idx"].to_numpy(dtype=np.int64),
                          "cre_idx": pairs["cre_idx"].to_numpy(dtype=np.int64),
                          "distance": pairs["distance"].to_numpy(dtype=np.int64)})
    pairs.insert(2, "gene", np.asarray(rna_var.index)[pairs["gene_idx"]])
    pairs.insert(3, "cre", np.asarray(atac_var.index)[pairs["cre_idx"]])
    return pairs.sort_values(["gene_idx", "cre_idx"], kind="stable").reset_index(drop=True)


def window_mask(rna_var: pd.DataFrame, atac_var: pd.DataFrame, *, window: int = WINDOW) -> sp.csr_matrix:
    """Sparse boolean genes x CREs matrix, True where the pair is within ``window`` (see :func:`candidate_pairs`).

    Parameters
    ----------
    rna_var, atac_var, window
        Gene table, CRE table and window (bp), as in :func:`candidate_pairs`.

    Returns
    -------
    scipy.sparse.csr_matrix of bool, ``len(rna_var)`` x ``len(atac_var)``.
    """
    pairs = candidate_pairs(rna_var, atac_var, window)
    data = np.ones(len(pairs), dtype=bool)
    return sp.csr_matrix((data, (pairs["gene_idx"], pairs["cre_idx"])), shape=(len(rna_var), len(atac_var)))


# --------------------------------------------------------------------------------------------- accumulation

class PairAccumulator:
    """Sums of a pair score (normalised attention, or a deletion effect) and co-sampling counts over the window
    pairs, for one cell type.

    ``pair_id`` is a sparse genes x CREs matrix holding ``1 + row`` of the pair table, so a cell's token lists
    map onto pair rows with one sparse slice.

    Parameters
    ----------
    pair_id
        CSR matrix, model genes x model CREs: ``1 + row`` of the pair table at each pair, 0 elsewhere.

    Attributes
    ----------
    sum, count
        Per pair (``pair_id.nnz`` of them): summed score, and the number of cells in which it was co-sampled.
    n_cells
        Number of cells added.
    """

    def __init__(self, pair_id: sp.csr_matrix):
        self.pair_id = pair_id
        n_pairs = pair_id.nnz
        self.sum = np.zeros(n_pairs, dtype=np.float64)
        self.count = np.zeros(n_pairs, dtype=np.int64)
        self.n_cells = 0

    def add_cell(self, gene_tokens: np.ndarray, cre_tokens: np.ndarray, attn_gene_by_cre: np.ndarray) -> None:
        """Add one cell.

        A pair sampled several times in the cell (duplicated tokens) contributes its mean once; the pair's count
        grows by one.

        Parameters
        ----------
        gene_tokens, cre_tokens
            int arrays (Lg,) and (Lp,): vocabulary indices of the cell's non-padded gene and CRE tokens.
        attn_gene_by_cre
            float array (Lg, Lp): the normalised attention (or other pair score) of every gene x CRE token.
        """
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
    """Row positions of up to ``n_cells_per_type`` random cells of each cell type (all when None).

    Parameters
    ----------
    obs
        Cell table (``adata.obs``).
    cell_type_key
        Column of ``obs`` holding the cell types (compared as strings).
    n_cells_per_type
        Most cells drawn per type, without replacement; ``None``: every cell.
    seed
        Seed of the draw.

    Returns
    -------
    dict cell type -> sorted int array of row positions in ``obs`` (types in order of first appearance).
    """
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
    from ... import sampler

    cfg = model.config
    if cfg.direction == "rna2atac":
        dataset = sampler.PairedCells(rna_X, atac_X, rows, cfg, seed=seed)
        items = [dataset[i] for i in range(len(dataset))]
    else:
        dataset = sampler.CellKeys(atac_X, cfg, seed=seed)
        items = [dict(dataset[int(r)], gene_idx=query_genes) for r in rows]
    for start in range(0, len(items), batch_size):
        yield sampler.collate(items[start:start + batch_size])


class Prepared:
    """The model vocabulary aligned to the data: kept genes / CREs, their coordinates and aligned matrices.

    Parameters
    ----------
    model
        A trained :class:`cisformer.model.Cisformer` carrying ``gene_names`` and ``cre_names``.
    rna, atac
        Paired AnnData, matched to the model's vocabulary by ``var_names`` (ValueError when no name matches).

    Attributes
    ----------
    genes_kept, cres_kept
        Positions in the model's vocabulary of the genes / CREs present in the data.
    gene_var, cre_var
        The rows of ``rna.var`` / ``atac.var`` for those genes / CREs, in vocabulary order (copies).
    rna_X, atac_X
        CSR float32, cells x the whole model vocabulary (zero columns where the data lacks the entry).
    """

    def __init__(self, model, rna: ad.AnnData, atac: ad.AnnData):
        gene_lookup = _align(model.gene_names, rna.var_names, "gene")  # model gene i -> rna column
        cre_lookup = _align(model.cre_names, atac.var_names, "CRE")    # model CRE j -> atac column
        self.genes_kept = np.flatnonzero(gene_lookup >= 0)
        self.cres_kept = np.flatnonzero(cre_lookup >= 0)
        self.gene_var = rna.var.iloc[gene_lookup[self.genes_kept]].copy()
        self.cre_var = atac.var.iloc[cre_lookup[self.cres_kept]].copy()
        self.rna_X, self.atac_X = _aligned(rna.X, gene_lookup), _aligned(atac.X, cre_lookup)


def model_vocabulary(model, rna: ad.AnnData, atac: ad.AnnData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(gene_var, cre_var)``: the rows of ``rna.var`` / ``atac.var`` in the model's vocabulary (``model=None``:
    all of them).

    Parameters
    ----------
    model
        A trained model carrying ``gene_names`` and ``cre_names``, or ``None``.
    rna, atac
        Paired AnnData.

    Returns
    -------
    tuple of two DataFrames: the genes' and CREs' ``var`` rows, in vocabulary order (copies; ``rna.var`` and
    ``atac.var`` themselves when ``model`` is None).
    """
    if model is None:
        return rna.var, atac.var
    genes, cres = _align(model.gene_names, rna.var_names, "gene"), _align(model.cre_names, atac.var_names, "CRE")
    return rna.var.iloc[genes[genes >= 0]].copy(), atac.var.iloc[cres[cres >= 0]].copy()


def torch_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; any other device string unchanged.

    Parameters
    ----------
    device
        ``"auto"`` or a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Returns
    -------
    str, the device to use.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@torch.no_grad()
def iter_cell_attention(model, prepared: Prepared, rows, query_genes: np.ndarray, layer: int | str = "mean",
                        normalize: bool = True, batch_size: int = 8, seed: int = 0, device: str = "cpu"):
    """Yield ``(gene_tokens, cre_tokens, attn)`` per cell: vocabulary indices of the cell's non-padded gene and
    CRE tokens and the (normalised) head-averaged attention as a genes x CREs array, whatever the direction.

    Parameters
    ----------
    model
        A trained :class:`cisformer.model.Cisformer`; moved to ``device`` and set to eval mode.
    prepared
        :class:`Prepared` of ``model`` and the data.
    rows
        Row positions of the cells to read.
    query_genes
        atac2rna: vocabulary indices of the gene queries of every cell; ignored by rna2atac (genes are keys).
    layer
        ``"mean"`` averages the head-averaged weights over layers, an int picks one layer (``-1`` = last).
    normalize
        Apply the direction's per-cell normalisation (:func:`log_normalize` / :func:`rank_normalize`).
    batch_size
        Cells per forward pass.
    seed
        Seed of the token sampling.
    device
        A torch device string or ``"auto"`` (:func:`torch_device`).

    Yields
    ------
    tuple ``(gene_tokens, cre_tokens, attn)`` per cell of ``rows``, in order: int arrays (Lg,) and (Lp,), float64
    array (Lg, Lp) (zeros when the cell has no gene or no CRE token).
    """
    direction = model.config.direction
    norm = NORMALIZERS[direction] if normalize else (lambda a: np.asarray(a, dtype=np.float64))
    device = torch_device(device)
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
    genome-wide CREs).

    Parameters
    ----------
    rna_var
        Gene table (``rna.var``): ``chrom`` and TSS coordinates (:func:`cisformer.data.vocab.gene_tss`).
    atac_var
        CRE table (``atac.var``): ``chrom``, ``start``, ``end``.
    genes
        Gene names (index labels of ``rna_var``); names not in it are ignored.

    Returns
    -------
    DataFrame, one row per (gene, CRE), genes in ``rna_var`` order: the columns of :func:`candidate_pairs`
    (``distance`` = CRE midpoint minus TSS, bp, not strand-aware; -1 when on another chromosome or TSS unknown).
    """
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


def extract(model, rna: ad.AnnData, atac: ad.AnnData, *, cell_type_key: str = "cell_type",
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
    cell_type_key, n_cells_per_type, seed, cells
        Which cells: up to ``n_cells_per_type`` random cells of each type (``None`` = all). ``cells`` overrides
        with explicit row positions per type. ``seed`` also seeds the token sampling.
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
    batch_size
        Cells per forward pass.
    device
        Where the model runs: a torch device string, or ``"auto"`` (CUDA when available, else CPU).

    Returns
    -------
    dict cell type -> AnnData (genes x CREs, the model's vocabulary restricted to the data). ``X`` CSR float32
    = mean normalised attention over the cells in which the pair was co-sampled (0 outside the window or when
    never co-sampled); ``layers["n_cells"]`` = that co-sampling count; ``obs``/``var`` carry coordinates;
    ``uns`` has ``n_cells`` (cells read), ``direction``, ``window``, ``normalization``.
    """
    prep = Prepared(model, rna, atac)
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
        out = pair_anndata(mean_scores(acc), acc.count, pairs, prep.gene_var, prep.cre_var)
        out.uns.update(cell_type=cell_type, n_cells=int(acc.n_cells), direction=model.config.direction,
                       window=-1 if window is None else int(window),
                       normalization=NORMALIZERS[model.config.direction].__name__ if normalize else "none")
        result[cell_type] = out
    return result


def gene_attention(model, rna: ad.AnnData, atac: ad.AnnData, *, cell_type_key: str = "cell_type",
                   n_cells_per_type: int | None = 100, layer: int | str = "mean", normalize: bool = True,
                   batch_size: int = 8, seed: int = 0, device: str = "cpu",
                   cells: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Gene-wise attention score per cell type (Fig 3a): for each cell, the mean normalised attention between
    a gene token and all of the cell's CRE tokens (genome-wide, no window); averaged over the cells in which the
    gene was sampled (the right denominator).

    Needs an ``rna2atac`` model (genes are keys, attended by CRE queries). In ``atac2rna`` each gene query's
    weights sum to one (and rank normalisation makes every row's mean 0.5), so a per-gene total says nothing.

    Parameters
    ----------
    model
        A trained ``rna2atac`` :class:`cisformer.model.Cisformer` (ValueError for ``atac2rna``).
    rna, atac
        Paired AnnData, aligned to the model's vocabulary by name.
    cell_type_key, n_cells_per_type, seed, cells
        Which cells are read, as in :func:`extract`.
    layer, normalize, batch_size, device
        How attention is read, as in :func:`extract`.

    Returns
    -------
    DataFrame genes (of the vocabulary present in ``rna``) x cell types; NaN where a gene was never sampled.
    """
    if model.config.direction != "rna2atac":
        raise ValueError("gene_attention needs an rna2atac model: atac2rna rows (one per gene) always sum to 1")
    prep = Prepared(model, rna, atac)
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


def pair_anndata(score: np.ndarray, count: np.ndarray, pairs: pd.DataFrame, gene_var: pd.DataFrame,
                  cre_var: pd.DataFrame) -> ad.AnnData:
    """Genes x CREs AnnData of one cell type: ``X`` = each pair's score, ``layers["n_cells"]`` = the cells behind
    it; pairs with a count of 0 are left out.

    Parameters
    ----------
    score, count
        One value per row of ``pairs``: the pair's score and the number of cells behind it.
    pairs
        Pair table with ``gene_idx``, ``cre_idx`` (row positions in ``gene_var`` / ``cre_var``), e.g.
        :func:`candidate_pairs`.
    gene_var, cre_var
        ``obs`` (genes) and ``var`` (CREs) of the result.

    Returns
    -------
    AnnData genes x CREs: ``X`` and ``layers["n_cells"]`` CSR float32.
    """
    seen = count > 0
    rows, cols = pairs["gene_idx"].to_numpy()[seen], pairs["cre_idx"].to_numpy()[seen]
    shape = (len(gene_var), len(cre_var))
    out = ad.AnnData(X=sp.csr_matrix((score[seen].astype(np.float32), (rows, cols)), shape=shape),
                     obs=gene_var, var=cre_var)
    out.layers["n_cells"] = sp.csr_matrix((count[seen].astype(np.float32), (rows, cols)), shape=shape)
    return out


def mean_scores(acc: PairAccumulator) -> np.ndarray:
    """Mean score of every pair of an accumulator: ``sum / count``, 0 for pairs never co-sampled.

    Parameters
    ----------
    acc
        A filled :class:`PairAccumulator`.

    Returns
    -------
    float64 array, one value per pair (row of the pair table).
    """
    return np.where(acc.count > 0, acc.sum / np.maximum(acc.count, 1), 0.0)


def shared_model(rna: ad.AnnData, atac: ad.AnnData, dataset: str, direction: str, profile: str = "cpu",
                 seed: int = 0, device: str = "auto", **overrides):
    """Train (or load from the shared cache) the model whose attention the figure notebooks read.

    Split: ``obs["split"]`` when present (the official split, as the benchmark notebooks use), else a seeded
    random 80/20 split; 10% of the non-test cells validate. Checkpoints live in
    ``cisformer.utils.paths.cache_dir() / "<dataset>-<direction>-<profile>-seed<seed>"``, so every notebook (and a
    benchmark run of the same configuration) shares one trained model.

    Parameters
    ----------
    rna, atac
        Paired AnnData (raw counts) of the data set.
    dataset
        Name of the data set (part of the checkpoint folder's name).
    direction
        ``"rna2atac"`` or ``"atac2rna"``.
    profile
        ``"quick"``, ``"cpu"`` or ``"paper"`` sizes (:func:`cisformer.train.fit`).
    seed
        Seed of the split and of training.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    **overrides
        Passed to :func:`cisformer.train.fit` (e.g. ``epochs=5``, config fields); not part of the folder's name.

    Returns
    -------
    tuple ``(model, history)``: the trained :class:`cisformer.model.Cisformer` and the per-epoch history
    DataFrame of :func:`cisformer.train.fit`.
    """
    from ... import data, train
    from ...utils import paths

    by = "predefined" if "split" in rna.obs else "random"
    train_cells, val_cells, _ = data.split_cells(rna.obs, by=by, seed=seed)
    checkpoint_dir = paths.cache_dir() / f"{dataset}-{direction}-{profile}-seed{seed}"
    return train.fit(rna, atac, direction, train_cells, val_cells, profile=profile, seed=seed,
                     checkpoint_dir=checkpoint_dir, device=device, progress=False, **overrides)
