"""Token sampling ("feature duplication and selection") for both directions, straight from CSR matrices.

Per cell and per repeat (the paper repeats every cell ``multiple`` times per epoch with fresh draws):

rna2atac
    keys    = up to ``gene_len`` expressed genes, value = min(floor(count), ``max_value``) (at least 1);
    queries = ``cre_len / 2`` open CREs + closed CREs filling the rest to ``cre_len`` (the reference's rule:
              balanced whenever the cell has ``cre_len / 2`` open CREs), target 1 / 0. For ``arch="cisformer"``
              the item also carries ``draw_offset``, the log odds by which the draw favours open CREs in this
              cell (log(pi_open / pi_closed), pi = share of the cell's open / closed CREs drawn: the case-control
              correction that keeps logits trained on balanced draws on the natural scale), ``expr`` (log1p
              counts per 10,000 of every gene, the cell encoder's input), ``open_all`` (every CRE's open state)
              and ``depth`` (log number of open CREs minus the training cells' mean).
atac2rna
    keys    = up to ``cre_len`` open CREs;
    queries = ``gene_len`` genes drawn uniformly from the whole gene vocabulary (all genes when the vocabulary
              is smaller), target = expression bin. Drawing uniformly - zeros included, in their natural
              proportion - lets the model learn which genes are silent, so prediction can query every gene
              without reading the true non-zero pattern (the reference trained on expressed genes only and had
              to mask its predictions with the measured non-zero pattern, a leak). ``arch="cisformer"`` items
              also carry ``bins_all`` (every gene's bin) and ``open_all`` (the encoder's reconstruction target).
    bins    = 0 for zero; 1..n_bins-1 = equal-width bins of the log-scale expression (log1p counts per 10,000,
              :func:`cisformer.metrics.log_expression`) between 0 and the training maximum. The paper binned raw
              counts; binning depth-normalised values puts predictions on the scale the benchmark measures, so
              sequencing depth is not scored as expression.

Randomness: every item draws from ``np.random.default_rng((seed, epoch, item))``, so batches are identical
whatever the number of DataLoader workers and a resumed run sees the same draws as an uninterrupted one.
Nothing here densifies a cells x features matrix.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset

from .baselines import cre_base_rate_logits
from .metrics import log_normalized
from .model import CisformerConfig


# ------------------------------------------------------------------------------------------- per-cell draws

def _subset(rng: np.random.Generator, idx: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` elements of ``idx`` drawn without replacement (all of them, in order, if few enough)."""
    return idx if len(idx) <= k else idx[rng.choice(len(idx), k, replace=False)]


def _closed_indices(rng: np.random.Generator, open_sorted: np.ndarray, n_total: int, k: int) -> np.ndarray:
    """``k`` distinct indices of ``range(n_total)`` not in ``open_sorted``, without materialising the complement.

    Draws ranks ``j`` among the closed indices and maps rank -> index: index = j + #open indices at or below it.
    """
    n_closed = n_total - len(open_sorted)
    ranks = rng.choice(n_closed, min(k, n_closed), replace=False)
    shifted = open_sorted - np.arange(len(open_sorted))  # open index minus number of open before it
    return ranks + np.searchsorted(shifted, ranks, side="right")


def expression_values(counts: np.ndarray, max_value: int) -> np.ndarray:
    """Gene value tokens: counts floored and capped at ``max_value``; any positive value gets at least 1."""
    return np.clip(np.floor(counts), 1, max_value).astype(np.int64)


def expression_bin_edges(rna_log: sp.csr_matrix, n_bins: int = 8) -> np.ndarray:
    """Bin edges (length ``n_bins``) on the log scale of ``rna_log`` (the training cells'
    :func:`cisformer.metrics.log_expression`): 0, w, 2w, ..., max with w = max / (n_bins - 1)."""
    top = float(rna_log.data.max()) if rna_log.nnz else 1.0
    return np.linspace(0.0, top, n_bins)


def bin_expression(log_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Log-scale expression -> bin index: 0 for zero, else 1 + floor(value / w), capped at ``len(edges) - 1``."""
    n_bins = len(edges)
    width = edges[-1] / (n_bins - 1)
    bins = np.floor(np.maximum(log_values, 0) / width).astype(np.int64) + 1
    return np.where(log_values > 0, np.minimum(bins, n_bins - 1), 0)


def base_rate_logits(rna_log: sp.csr_matrix, atac_X: sp.csr_matrix, config: CisformerConfig,
                     bin_edges=None) -> np.ndarray:
    """Base rates of the training targets as logits, the model's ``query_prior`` (one pseudocount per outcome).

    rna2atac: (n_CREs,) :func:`cre_base_rate_logits` of the cells of ``atac_X``; for ``arch="paper"`` plus the
    log odds by which its balanced query draw (up to ``cre_len / 2`` open CREs, closed ones for the rest) favours
    open CREs, so that the offset matches the targets that model is trained on.
    atac2rna: (n_genes, n_bins) log frequency of each expression bin of each gene over the cells of ``rna_log``
    (log-scale expression; queries are drawn uniformly, so no correction).
    """
    if config.direction == "rna2atac":
        prior = cre_base_rate_logits(atac_X)
        if config.arch == "cisformer":
            return prior
        n_cells, n_cres = atac_X.shape
        open_per_cell = np.diff(sp.csr_matrix(atac_X > 0).indptr)
        n_query = min(config.cre_len, n_cres)
        n_open_query = np.minimum(open_per_cell, n_query // 2)
        p_open_drawn = np.mean(n_open_query / np.maximum(open_per_cell, 1))  # an open CRE is a query
        p_closed_drawn = np.mean((n_query - n_open_query) / np.maximum(n_cres - open_per_cell, 1))
        return (prior + np.log(p_open_drawn / p_closed_drawn)).astype(np.float32)
    rna_log = sp.csr_matrix(rna_log)
    n_cells, n_genes, n_bins = rna_log.shape[0], rna_log.shape[1], len(bin_edges)
    counts = np.zeros((n_genes, n_bins))
    positive = rna_log.data > 0
    np.add.at(counts, (rna_log.indices[positive], bin_expression(rna_log.data[positive], bin_edges)), 1)
    counts[:, 0] = n_cells - counts[:, 1:].sum(1)
    return np.log((counts + 1.0) / (n_cells + n_bins)).astype(np.float32)


def log_depth(atac_X) -> np.ndarray:
    """log(number of open CREs) per cell (at least 1): the depth the rna2atac model's offset is measured in."""
    return np.log(np.maximum(np.diff(sp.csr_matrix(atac_X > 0).indptr), 1)).astype(np.float32)


def bin_centres(edges) -> np.ndarray:
    """Expected log1p value of each bin: 0 for bin 0, the midpoint of its edges otherwise."""
    edges = np.asarray(edges, dtype=np.float64)
    return np.concatenate([[0.0], (edges[:-1] + edges[1:]) / 2])


# ------------------------------------------------------------------------------------------- datasets

def _as_csr(X) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)  # a copy: the caller's matrix is never changed
    X.sum_duplicates()  # canonical: sorted indices, no duplicates
    X.eliminate_zeros()
    return X


class PairedCells(Dataset):
    """Training samples: item ``i`` is cell ``cells[i // multiple]``, repeat ``i % multiple``.

    Parameters
    ----------
    rna_X, atac_X
        Cells x genes and cells x CREs matrices (CSR, raw counts), columns in the model's vocabulary order.
    cells
        Row indices of the cells to sample (e.g. the training split).
    config
        The model config (direction, token budgets, ``max_value``, ``n_bins``).
    multiple
        Repeats of every cell per epoch, each with fresh draws.
    bin_edges
        atac2rna expression bin edges (from :func:`expression_bin_edges` on the training cells).
    depth_centre
        rna2atac ``arch="cisformer"``: the training cells' mean :func:`log_depth` (default: these cells').
    rna_log
        The cells' log-scale expression (:func:`cisformer.metrics.log_expression`), the targets' scale and the
        cell encoder's input; default: ``rna_X`` taken as counts (:func:`cisformer.metrics.log_normalized`).
    """

    def __init__(self, rna_X, atac_X, cells, config: CisformerConfig, multiple: int = 1, seed: int = 0,
                 bin_edges=None, depth_centre: float | None = None, rna_log=None):
        self.rna_X, self.atac_X = _as_csr(rna_X), _as_csr(atac_X)
        self.rna_log = log_normalized(self.rna_X) if rna_log is None else _as_csr(rna_log)
        if self.rna_X.shape[0] != self.atac_X.shape[0]:
            raise ValueError(f"RNA has {self.rna_X.shape[0]} cells but ATAC has {self.atac_X.shape[0]}")
        if (self.rna_X.shape[1], self.atac_X.shape[1]) != (config.n_genes, config.n_cres):
            raise ValueError(f"matrices have {self.rna_X.shape[1]} genes x {self.atac_X.shape[1]} CREs, the model "
                             f"vocabulary {config.n_genes} x {config.n_cres}")
        self.cells = np.asarray(cells, dtype=np.int64)
        self.config, self.multiple, self.seed, self.epoch = config, int(multiple), int(seed), 0
        if config.direction == "atac2rna" and bin_edges is None:
            raise ValueError("atac2rna needs bin_edges (see expression_bin_edges)")
        self.bin_edges = None if bin_edges is None else np.asarray(bin_edges, dtype=np.float64)
        self.depth = log_depth(self.atac_X)
        self.depth_centre = float(self.depth[self.cells].mean()) if depth_centre is None else float(depth_centre)

    def set_epoch(self, epoch: int) -> None:
        """Fresh draws every epoch (called by the training loop)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.cells) * self.multiple

    def _row(self, X, cell):
        lo, hi = X.indptr[cell], X.indptr[cell + 1]
        return X.indices[lo:hi].astype(np.int64), X.data[lo:hi]

    def __getitem__(self, i: int) -> dict:
        cfg = self.config
        cell = int(self.cells[i // self.multiple])
        rng = np.random.default_rng((self.seed, self.epoch, i))
        genes, counts = self._row(self.rna_X, cell)
        cres, _ = self._row(self.atac_X, cell)  # open CREs (stored entries are > 0), sorted
        item = {"cell": cell}
        if cfg.arch == "cisformer":
            item["open_all"] = _dense_row(cres, np.ones(len(cres)), cfg.n_cres)
        if cfg.direction == "rna2atac":
            pick = _subset(rng, np.arange(len(genes)), cfg.gene_len)
            n_query = min(cfg.cre_len, cfg.n_cres)
            open_q = _subset(rng, cres, n_query // 2)
            closed_q = _closed_indices(rng, cres, cfg.n_cres, n_query - len(open_q))
            item.update(gene_idx=genes[pick], gene_value=expression_values(counts[pick], cfg.max_value),
                        cre_idx=np.concatenate([open_q, closed_q]),
                        target=np.concatenate([np.ones(len(open_q)), np.zeros(len(closed_q))]).astype(np.float32))
            if cfg.arch == "cisformer":
                pi_open = max(len(open_q), 1) / max(len(cres), 1)
                pi_closed = max(len(closed_q), 1) / max(cfg.n_cres - len(cres), 1)
                item.update(draw_offset=np.float32(np.log(pi_open / pi_closed)),
                            depth=np.float32(self.depth[cell] - self.depth_centre),
                            expr=_dense_row(*self._row(self.rna_log, cell), cfg.n_genes))
            return item
        query = np.sort(_subset(rng, np.arange(cfg.n_genes), cfg.gene_len))
        bins = bin_expression(_dense_row(*self._row(self.rna_log, cell), cfg.n_genes), self.bin_edges)
        item.update(cre_idx=_subset(rng, cres, cfg.cre_len), gene_idx=query, target=bins[query])
        if cfg.arch == "cisformer":
            item["bins_all"] = bins
        return item


def _dense_row(idx: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    out[idx] = values
    return out


class CellKeys(Dataset):
    """Prediction inputs: the key tokens of each cell (no targets, nothing about the other modality).

    rna2atac: up to ``gene_len`` expressed genes with their values (and, for ``arch="cisformer"``, ``expr``:
    the log-scale expression of every gene, from ``X_log`` or, by default, ``X`` taken as counts); atac2rna: up
    to ``cre_len`` open CREs. Cells with more tokens than the budget get a seeded random subset, as in training.
    """

    def __init__(self, X, config: CisformerConfig, seed: int = 0, X_log=None):
        self.X, self.config, self.seed = _as_csr(X), config, int(seed)
        if config.direction == "rna2atac" and config.arch == "cisformer":
            self.X_log = log_normalized(self.X) if X_log is None else _as_csr(X_log)

    def __len__(self) -> int:
        return self.X.shape[0]

    def _log_row(self, cell: int):
        lo, hi = self.X_log.indptr[cell], self.X_log.indptr[cell + 1]
        return self.X_log.indices[lo:hi].astype(np.int64), self.X_log.data[lo:hi]

    def __getitem__(self, cell: int) -> dict:
        cfg, rng = self.config, np.random.default_rng((self.seed, cell))
        lo, hi = self.X.indptr[cell], self.X.indptr[cell + 1]
        idx, data = self.X.indices[lo:hi].astype(np.int64), self.X.data[lo:hi]
        if cfg.direction == "atac2rna":
            return {"cell": cell, "cre_idx": _subset(rng, idx, cfg.cre_len)}
        pick = _subset(rng, np.arange(len(idx)), cfg.gene_len)
        item = {"cell": cell, "gene_idx": idx[pick], "gene_value": expression_values(data[pick], cfg.max_value)}
        if cfg.arch == "cisformer":
            item["expr"] = _dense_row(*self._log_row(cell), cfg.n_genes)
        return item


# ------------------------------------------------------------------------------------------- batching

_PAD_OF = {"gene_idx": "gene_pad", "cre_idx": "cre_pad"}
_TOKENS = ("gene_idx", "cre_idx", "gene_value", "target")                       # per-token lists, padded
_PER_CELL = ("expr", "open_all", "depth", "draw_offset", "bins_all")            # fixed size per cell, stacked


def _pad_stack(arrays, dtype, pad_value=0):
    length = max(1, max(len(a) for a in arrays))
    out = np.full((len(arrays), length), pad_value, dtype=dtype)
    pad = np.ones((len(arrays), length), dtype=bool)
    for row, a in enumerate(arrays):
        out[row, :len(a)] = a
        pad[row, :len(a)] = False
    return torch.from_numpy(out), torch.from_numpy(pad)


def collate(items: list[dict]) -> dict:
    """Pad the items' token lists to the longest in the batch (``*_pad`` masks are True at padding) and stack
    their per-cell arrays."""
    batch = {"cell": torch.tensor([it["cell"] for it in items], dtype=torch.long)}
    for key in _TOKENS:
        if key not in items[0]:
            continue
        dtype = items[0][key].dtype if key == "target" else np.int64
        values, pad = _pad_stack([it[key] for it in items], dtype)
        batch[key] = values
        if key in _PAD_OF:
            batch[_PAD_OF[key]] = pad
    for key in _PER_CELL:
        if key in items[0]:
            batch[key] = torch.from_numpy(np.stack([it[key] for it in items]))
    return batch


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                num_workers: int = 0) -> DataLoader:
    """DataLoader with the cisformer collate; the shuffle order is seeded by (seed, epoch)."""
    generator = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator,
                      num_workers=num_workers, persistent_workers=False)
