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
              :func:`cisformer.data.log_expression`) between 0 and the training maximum. The paper binned raw
              counts; binning depth-normalised values puts predictions on the scale the benchmark measures, so
              sequencing depth is not scored as expression.

Randomness: every item draws from ``np.random.default_rng((seed, epoch, item))``, so batches are identical
whatever the number of DataLoader workers and a resumed run sees the same draws as an uninterrupted one.
Nothing here densifies a cells x features matrix.

Larger than memory: the matrices of :class:`PairedCells` may be :class:`DiskCSR` (rows of a CSR matrix in an
``.h5ad`` written by anndata - the file a ``backed="r"`` AnnData reads - or in memory-mapped ``.npy`` files,
:meth:`DiskCSR.write_memmap`), read row by row in each DataLoader worker. They give the same items as the matrices
in memory (same cells, same token draws, bit for bit), with any number of workers.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset

from .data.preprocess import log_normalized
from .model import CisformerConfig
from .protocol import cre_base_rate_logits


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


def as_blocks(X) -> Iterable:
    """``X`` as row blocks: a matrix (sparse or dense) becomes the one block ``[X]``; an iterable of row blocks
    (e.g. :func:`row_blocks`) is returned as it is. The whole-matrix statistics below take either, so a matrix on
    disk is read one block at a time and a matrix in memory gives exactly what it always gave."""
    return [X] if sp.issparse(X) or isinstance(X, np.ndarray) else X


def column_mean(X, n_rows: int) -> np.ndarray:
    """Column means (float64 for 0/1 or integer input, else the input's float type) of a matrix or of its row
    blocks (:func:`as_blocks`) holding ``n_rows`` rows in all: every entry times 1 / ``n_rows``, summed, as scipy's
    ``X.mean(axis=0)`` computes it, so that one block gives exactly that.

    Parameters
    ----------
    X
        A matrix (sparse or dense) or its row blocks.
    n_rows
        Rows of ``X`` in all (over every block).

    Returns
    -------
    1-D array (n_columns,).
    """
    total = None
    for block in as_blocks(X):
        block = sp.csr_matrix(block)
        integral = np.issubdtype(block.dtype, np.integer) or np.issubdtype(block.dtype, np.bool_)
        dtype = np.float64 if integral else block.dtype
        part = np.asarray((block.astype(dtype) * (1.0 / n_rows)).sum(axis=0, dtype=dtype)).ravel()
        total = part if total is None else total + part
    return total


def expression_bin_edges(rna_log, n_bins: int = 8) -> np.ndarray:
    """Bin edges on the log scale of ``rna_log``: 0, w, 2w, ..., max with w = max / (n_bins - 1).

    Parameters
    ----------
    rna_log
        The training cells' :func:`cisformer.data.log_expression` (cells x genes), a matrix or its row blocks.
    n_bins
        Number of bins, bin 0 (zero) included (``CisformerConfig.n_bins``; default 8).

    Returns
    -------
    float64 array (n_bins,); max is 1.0 when no value is positive.
    """
    tops = [float(block.data.max()) for block in map(sp.csr_matrix, as_blocks(rna_log)) if block.nnz]
    return np.linspace(0.0, max(tops) if tops else 1.0, n_bins)


def bin_expression(log_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Log-scale expression -> bin index: 0 for zero, else 1 + floor(value / w), capped at ``len(edges) - 1``.

    Parameters
    ----------
    log_values
        Log-scale expression (array of any shape).
    edges
        Bin edges (:func:`expression_bin_edges`); w = ``edges[-1] / (len(edges) - 1)``.

    Returns
    -------
    int64 array of the shape of ``log_values``.
    """
    n_bins = len(edges)
    width = edges[-1] / (n_bins - 1)
    bins = np.floor(np.maximum(log_values, 0) / width).astype(np.int64) + 1
    return np.where(log_values > 0, np.minimum(bins, n_bins - 1), 0)


def base_rate_logits(rna_log, atac_X, config: CisformerConfig, bin_edges=None) -> np.ndarray:
    """Base rates of the training targets as logits, the model's ``query_prior`` (one pseudocount per outcome).

    Parameters
    ----------
    rna_log, atac_X
        The training cells' log-scale expression (cells x genes) and ATAC (cells x CREs), each a matrix or its row
        blocks (:func:`as_blocks`); only the one the direction needs is read (the other may be None).
    config
        The model's :class:`~cisformer.model.CisformerConfig` (``direction``, ``arch``, ``cre_len``).
    bin_edges
        atac2rna: the expression bin edges (:func:`expression_bin_edges`).

    Returns
    -------
    float32 array. rna2atac: (n_CREs,) :func:`cre_base_rate_logits` of the cells of ``atac_X``; for
    ``arch="paper"`` plus the log odds by which its balanced query draw (up to ``cre_len / 2`` open CREs, closed
    ones for the rest) favours open CREs, so that the offset matches the targets that model is trained on.
    atac2rna: (n_genes, n_bins) log frequency of each expression bin of each gene over the cells of ``rna_log``
    (queries are drawn uniformly, so no correction).
    """
    if config.direction == "rna2atac":
        opened, open_per_cell = 0, []
        for block in as_blocks(atac_X):
            binary = sp.csr_matrix(sp.csr_matrix(block) > 0)
            opened = opened + np.asarray(binary.sum(axis=0), dtype=np.float64).ravel()
            open_per_cell.append(np.diff(binary.indptr))
        open_per_cell = np.concatenate(open_per_cell)
        prior = cre_base_rate_logits(opened, n_cells=len(open_per_cell))
        if config.arch == "cisformer":
            return prior
        n_cres = len(prior)
        n_query = min(config.cre_len, n_cres)
        n_open_query = np.minimum(open_per_cell, n_query // 2)
        p_open_drawn = np.mean(n_open_query / np.maximum(open_per_cell, 1))  # an open CRE is a query
        p_closed_drawn = np.mean((n_query - n_open_query) / np.maximum(n_cres - open_per_cell, 1))
        return (prior + np.log(p_open_drawn / p_closed_drawn)).astype(np.float32)
    n_bins, n_cells, counts = len(bin_edges), 0, None
    for block in as_blocks(rna_log):
        block = sp.csr_matrix(block)
        counts = np.zeros((block.shape[1], n_bins)) if counts is None else counts
        positive = block.data > 0
        np.add.at(counts, (block.indices[positive], bin_expression(block.data[positive], bin_edges)), 1)
        n_cells += block.shape[0]
    counts[:, 0] = n_cells - counts[:, 1:].sum(1)
    return np.log((counts + 1.0) / (n_cells + n_bins)).astype(np.float32)


def bin_centres(edges) -> np.ndarray:
    """Expected log1p value of each bin: 0 for bin 0, the midpoint of its edges otherwise.

    Parameters
    ----------
    edges
        Bin edges (n_bins,), e.g. ``model.bin_edges``.

    Returns
    -------
    float64 array (n_bins,).
    """
    edges = np.asarray(edges, dtype=np.float64)
    return np.concatenate([[0.0], (edges[:-1] + edges[1:]) / 2])


# ------------------------------------------------------------------------------------------- datasets

def _as_csr(X) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)  # a copy: the caller's matrix is never changed
    X.sum_duplicates()  # canonical: sorted indices, no duplicates
    X.eliminate_zeros()
    return X


class DiskCSR:
    """A cells x features CSR matrix on disk, read one row at a time (the rows a training batch needs).

    :meth:`from_h5ad`: a CSR matrix of an ``.h5ad`` file (``X`` or ``layers/NAME``, as anndata writes it; the file a
    ``backed="r"`` AnnData reads, see :meth:`from_anndata`), through h5py; :meth:`memmap`: ``indptr.npy``,
    ``indices.npy`` and ``data.npy`` in a folder (:meth:`write_memmap`), memory-mapped. Only ``indptr`` is held in
    memory (8 bytes per cell); files are opened lazily in each process, so a DataLoader worker opens its own handle.
    Rows come back as :class:`PairedCells` reads in-memory rows: float32 values, sorted indices, duplicates summed,
    stored zeros dropped.

    Parameters
    ----------
    source, path, key, indptr, shape
        Set by the constructors above: ``"h5ad"`` or ``"memmap"``, the file or folder, the matrix's HDF5 key
        (``""`` for a folder), the CSR row pointers (n_rows + 1,) and ``(n_rows, n_columns)``.
    """

    def __init__(self, source: str, path, key: str, indptr: np.ndarray, shape: tuple[int, int]):
        self.source, self.path, self.key = source, str(path), key
        self.indptr, self.shape = np.asarray(indptr, dtype=np.int64), (int(shape[0]), int(shape[1]))
        self._pid, self._arrays = None, None

    @classmethod
    def from_h5ad(cls, path, key: str = "X") -> "DiskCSR":
        """The CSR matrix ``key`` (``"X"``, ``"layers/counts"``, ...) of the ``.h5ad`` file ``path``.

        Parameters
        ----------
        path, key
            The file (str or Path) and the HDF5 path of its CSR matrix (default ``"X"``; absent or dense: ValueError).

        Returns
        -------
        :class:`DiskCSR`
        """
        import h5py

        with h5py.File(path, "r") as f:
            if key not in f:
                raise ValueError(f"{path}: no matrix {key!r}")
            g = f[key]
            kind = g.attrs.get("encoding-type", "")
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if not isinstance(g, h5py.Group) or kind != "csr_matrix":
                raise ValueError(f"{path}: {key!r} is stored as {kind or 'a dense array'}, not a CSR matrix; "
                                 "write it sparse (adata.X = scipy.sparse.csr_matrix(adata.X)) or use "
                                 "DiskCSR.write_memmap")
            return cls("h5ad", path, key, g["indptr"][:], tuple(g.attrs["shape"]))

    @classmethod
    def from_anndata(cls, adata, *, layer: str | None = None) -> "DiskCSR":
        """``adata.X`` (or ``adata.layers[layer]``) of an AnnData opened with ``backed="r"``.

        Parameters
        ----------
        adata, layer
            The backed AnnData (one in memory: ValueError) and the layer to read (default None: ``X``).

        Returns
        -------
        :class:`DiskCSR`
        """
        if not adata.isbacked:
            raise ValueError("the AnnData is in memory: pass its matrix itself, or open it with backed='r'")
        return cls.from_h5ad(adata.filename, "X" if layer is None else f"layers/{layer}")

    @classmethod
    def memmap(cls, folder) -> "DiskCSR":
        """The matrix that :meth:`write_memmap` wrote to ``folder``.

        Parameters
        ----------
        folder
            str or Path holding ``indptr.npy``, ``indices.npy``, ``data.npy`` and ``shape.npy``.

        Returns
        -------
        :class:`DiskCSR`
        """
        folder = Path(folder)
        shape = tuple(np.load(folder / "shape.npy"))
        return cls("memmap", folder, "", np.load(folder / "indptr.npy"), shape)

    @staticmethod
    def write_memmap(X, folder, *, rows_per_block: int = 4096) -> "DiskCSR":
        """Write ``X`` to ``folder`` as CSR ``.npy`` files, ``rows_per_block`` rows at a time; returns it opened.

        Parameters
        ----------
        X
            Any scipy sparse matrix, numpy array or a backed AnnData's ``X`` (cells x features).
        folder
            Output folder (str or Path), created if missing.
        rows_per_block
            Rows in memory at a time (default 4096).

        Returns
        -------
        :class:`DiskCSR` of the written files (:meth:`memmap`).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n_rows, n_cols = X.shape
        blocks = [(lo, min(lo + rows_per_block, n_rows)) for lo in range(0, n_rows, rows_per_block)]
        indptr, dtype = np.zeros(n_rows + 1, dtype=np.int64), np.dtype(np.float32)
        for lo, hi in blocks:  # two passes over X: one block in memory at a time
            block = sp.csr_matrix(X[lo:hi])
            indptr[lo + 1:hi + 1] = indptr[lo] + block.indptr[1:]
            dtype = np.result_type(dtype, block.dtype)
        nnz = int(indptr[-1])
        indices = np.lib.format.open_memmap(folder / "indices.npy", mode="w+", dtype=np.int64, shape=(nnz,))
        data = np.lib.format.open_memmap(folder / "data.npy", mode="w+", dtype=dtype, shape=(nnz,))
        for lo, hi in blocks:
            block = sp.csr_matrix(X[lo:hi])
            indices[indptr[lo]:indptr[hi]], data[indptr[lo]:indptr[hi]] = block.indices, block.data
        indices.flush(), data.flush()
        del indices, data
        np.save(folder / "indptr.npy", indptr)
        np.save(folder / "shape.npy", np.array([n_rows, n_cols], dtype=np.int64))
        return DiskCSR.memmap(folder)

    def __getstate__(self):  # no open handles to a worker process
        return {**self.__dict__, "_pid": None, "_arrays": None}

    def _open(self):
        if self._pid != os.getpid():
            if self.source == "h5ad":
                import h5py

                g = h5py.File(self.path, "r")[self.key]
                self._arrays = (g["indices"], g["data"])
            else:
                folder = Path(self.path)
                self._arrays = (np.load(folder / "indices.npy", mmap_mode="r"),
                                np.load(folder / "data.npy", mmap_mode="r"))
            self._pid = os.getpid()
        return self._arrays

    def row(self, cell: int) -> tuple[np.ndarray, np.ndarray]:
        """Column indices (int64, sorted) and values (float32, non-zero) of row ``cell``."""
        lo, hi = int(self.indptr[cell]), int(self.indptr[cell + 1])
        indices, data = self._open()
        idx = np.asarray(indices[lo:hi]).astype(np.int64)
        values = np.asarray(data[lo:hi]).astype(np.float32)
        if (len(idx) > 1 and not (np.diff(idx) > 0).all()) or not values.all():
            X = _as_csr(sp.csr_matrix((values, idx, [0, len(idx)]), shape=(1, self.shape[1])))
            idx, values = X.indices.astype(np.int64), X.data
        return idx, values

    def blocks(self, rows=None, rows_per_block: int = 4096) -> Iterator[sp.csr_matrix]:
        """Rows as CSR blocks in the canonical form of :meth:`row`, one block per ``rows_per_block`` consecutive
        rows of the file (one slab read each), so that a pass over the matrix holds one block in memory.

        Parameters
        ----------
        rows
            Sorted, unique row indices (else ValueError); default None: all.
        rows_per_block
            File rows per block (default 4096).

        Yields
        ------
        scipy.sparse.csr_matrix of the block's rows of ``rows`` (blocks without any are skipped).
        """
        rows = np.arange(self.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(rows) > 1 and not (np.diff(rows) > 0).all():
            raise ValueError("rows must be sorted and unique")
        indices, data = self._open()
        for lo in range(0, self.shape[0], rows_per_block):
            part = rows[np.searchsorted(rows, lo):np.searchsorted(rows, lo + rows_per_block)]
            if len(part) == 0:
                continue
            hi = int(part[-1]) + 1
            ptr = self.indptr[lo:hi + 1]
            slab = sp.csr_matrix((np.asarray(data[ptr[0]:ptr[-1]]), np.asarray(indices[ptr[0]:ptr[-1]]), ptr - ptr[0]),
                                 shape=(hi - lo, self.shape[1]))
            yield _as_csr(slab[part - lo])

    def take(self, rows) -> sp.csr_matrix:
        """Rows ``rows`` (any order, repeats allowed) as one CSR matrix in memory (canonical form, see :meth:`row`)."""
        unique, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        stacked = sp.vstack(list(self.blocks(unique)) or [sp.csr_matrix((0, self.shape[1]), dtype=np.float32)])
        return sp.csr_matrix(stacked)[inverse]

    def positive_per_row(self, *, rows_per_block: int = 65536) -> np.ndarray:
        """Number of positive entries of every row (of its canonical form, see :meth:`row`), reading the matrix
        block after block."""
        indices, data = self._open()
        counts = np.zeros(self.shape[0], dtype=np.int64)
        for lo in range(0, self.shape[0], rows_per_block):
            hi = min(lo + rows_per_block, self.shape[0])
            ptr = self.indptr[lo:hi + 1]
            positive = np.concatenate([[0], np.cumsum(np.asarray(data[ptr[0]:ptr[-1]]).astype(np.float32) > 0)])
            counts[lo:hi] = positive[ptr[1:] - ptr[0]] - positive[ptr[:-1] - ptr[0]]
            # rows whose indices are not strictly increasing (unsorted or duplicated): counted after canonicalising
            idx = np.asarray(indices[ptr[0]:ptr[-1]])
            bad = np.flatnonzero(np.diff(idx) <= 0) + 1  # entry k + 1 not after entry k ...
            bad = bad[~np.isin(bad, ptr - ptr[0])]       # ... within a row
            for cell in np.unique(lo + np.searchsorted(ptr - ptr[0], bad, side="right") - 1):
                counts[cell] = int((self.row(int(cell))[1] > 0).sum())
        return counts


class PairedCells(Dataset):
    """Training samples: item ``i`` is cell ``cells[i // multiple]``, repeat ``i % multiple``.

    Parameters
    ----------
    rna_X, atac_X
        Cells x genes and cells x CREs matrices (CSR or :class:`DiskCSR`, raw counts), in the model's vocab order.
    cells
        Row indices of the cells to sample (e.g. the training split).
    config
        The model config (direction, token budgets, ``max_value``, ``n_bins``).
    multiple
        Repeats of every cell per epoch, each with fresh draws (default 1).
    seed
        Item ``i`` of epoch ``e`` draws from ``np.random.default_rng((seed, e, i))`` (:meth:`set_epoch`).
    bin_edges
        atac2rna expression bin edges (from :func:`expression_bin_edges` on the training cells).
    depth_centre
        rna2atac ``arch="cisformer"``: the training cells' mean log number of open CREs (default: these cells').
    rna_log
        The cells' log-scale expression (:func:`cisformer.data.log_expression`), the targets' scale and the
        cell encoder's input; default: ``rna_X`` taken as counts (:func:`cisformer.data.log_normalized`).
    """

    def __init__(self, rna_X, atac_X, cells, config: CisformerConfig, multiple: int = 1, seed: int = 0,
                 bin_edges=None, depth_centre: float | None = None, rna_log=None):
        self.rna_X, self.atac_X = _as_csr_or_disk(rna_X), _as_csr_or_disk(atac_X)
        if rna_log is None:  # on disk: computed row by row (the same values, see _row)
            self.rna_log = None if isinstance(self.rna_X, DiskCSR) else log_normalized(self.rna_X)
        else:
            self.rna_log = _as_csr_or_disk(rna_log)
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
        # open CREs per cell (stored zeros are not open) and their log (at least 1): the depth the rna2atac
        # model's offset is measured in
        if isinstance(self.atac_X, DiskCSR):
            self.n_open = self.atac_X.positive_per_row()
        else:
            self.n_open = np.diff(sp.csr_matrix(self.atac_X > 0).indptr)
        self.depth = np.log(np.maximum(self.n_open, 1)).astype(np.float32)
        self.depth_centre = float(self.depth[self.cells].mean()) if depth_centre is None else float(depth_centre)

    def set_epoch(self, epoch: int) -> None:
        """Fresh draws every epoch (called by the training loop).

        Parameters
        ----------
        epoch
            The epoch (0-based), part of every item's seed.
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.cells) * self.multiple

    def _row(self, X, cell):
        if X is None:  # rna_log of matrices on disk: log_normalized of the row, as of the whole in memory
            genes, counts = self.rna_X.row(cell)
            X = log_normalized(sp.csr_matrix((counts, genes, [0, len(genes)]), shape=(1, self.rna_X.shape[1])))
            return X.indices.astype(np.int64), X.data
        if isinstance(X, DiskCSR):
            return X.row(cell)
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
            item.update(bins_all=bins, log_open=self.depth[cell],
                        expr=_dense_row(*self._row(self.rna_log, cell), cfg.n_genes))
        return item


def _as_csr_or_disk(X):
    return X if isinstance(X, DiskCSR) else _as_csr(X)


def row_blocks(X, rows, rows_per_block: int = 4096) -> Iterator[sp.csr_matrix]:
    """Rows ``rows`` of ``X`` in ascending order, as CSR blocks in the canonical form of :meth:`DiskCSR.row`
    (float32, sorted indices, no duplicates, no stored zeros), so that the same rows give the same blocks from
    memory or from disk.

    Parameters
    ----------
    X
        A matrix in memory or a :class:`DiskCSR`.
    rows
        Row indices (sorted and deduplicated here).
    rows_per_block
        Rows per block (on disk: consecutive file rows per block; default 4096).

    Yields
    ------
    scipy.sparse.csr_matrix
    """
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if isinstance(X, DiskCSR):
        yield from X.blocks(rows, rows_per_block)
        return
    for start in range(0, len(rows), rows_per_block):
        yield _as_csr(X[rows[start:start + rows_per_block]])


def take_rows(X, rows) -> sp.csr_matrix:
    """Rows ``rows`` of ``X`` (a matrix in memory or a :class:`DiskCSR`), in the given order, in memory."""
    return X.take(rows) if isinstance(X, DiskCSR) else sp.csr_matrix(X[rows])


def _dense_row(idx: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    out[idx] = values
    return out


class CellKeys(Dataset):
    """Prediction inputs: the key tokens of each cell (no targets, nothing about the other modality).

    rna2atac: up to ``gene_len`` expressed genes with their values (and, for ``arch="cisformer"``, ``expr``:
    the log-scale expression of every gene, from ``X_log`` or, by default, ``X`` taken as counts); atac2rna: up
    to ``cre_len`` open CREs. Cells with more tokens than the budget get a seeded random subset, as in training.

    Parameters
    ----------
    X
        Cells x input vocabulary (genes for rna2atac, CREs for atac2rna), columns in the model's order.
    config
        The model's :class:`~cisformer.model.CisformerConfig`.
    seed
        Cell ``c`` draws its keys from ``np.random.default_rng((seed, c))``.
    X_log
        Log-scale expression of ``X`` (rna2atac, ``arch="cisformer"``).
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
            item = {"cell": cell, "cre_idx": _subset(rng, idx, cfg.cre_len)}
            if cfg.arch == "cisformer":
                item["log_open"] = np.float32(np.log(max(len(idx), 1)))
            return item
        pick = _subset(rng, np.arange(len(idx)), cfg.gene_len)
        item = {"cell": cell, "gene_idx": idx[pick], "gene_value": expression_values(data[pick], cfg.max_value)}
        if cfg.arch == "cisformer":
            item["expr"] = _dense_row(*self._log_row(cell), cfg.n_genes)
        return item


# ------------------------------------------------------------------------------------------- batching

_PAD_OF = {"gene_idx": "gene_pad", "cre_idx": "cre_pad"}
_TOKENS = ("gene_idx", "cre_idx", "gene_value", "target")                       # per-token lists, padded
_PER_CELL = ("expr", "open_all", "depth", "draw_offset", "bins_all", "log_open")  # fixed size per cell, stacked


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
    their per-cell arrays.

    Parameters
    ----------
    items
        Items of :class:`PairedCells` or :class:`CellKeys`.

    Returns
    -------
    dict of tensors: ``cell`` (B,); token lists (``gene_idx``, ``cre_idx``, ``gene_value``, ``target``) (B, L),
    padded with 0; ``gene_pad`` / ``cre_pad`` (B, L) bool; per-cell arrays (``expr``, ...) stacked (B, ...).
    """
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


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                num_workers: int = 0) -> DataLoader:
    """DataLoader with the cisformer collate; the shuffle order is seeded by (seed, epoch). Items draw from their
    own seeded generators (:class:`PairedCells`), so batches do not depend on ``num_workers``; workers' global
    numpy and torch generators are seeded by (seed, epoch, worker) besides.

    Parameters
    ----------
    dataset, batch_size
        :class:`PairedCells` or :class:`CellKeys`, and items per batch.
    shuffle, seed, epoch
        Shuffle the items (default False), in an order seeded by ``(seed, epoch)``.
    num_workers
        DataLoader worker processes (default 0: the main process).

    Returns
    -------
    torch.utils.data.DataLoader of :func:`collate` batches.
    """
    generator = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    extra = {}
    if num_workers > 0:
        extra["worker_init_fn"] = _WorkerSeed(int(seed), int(epoch))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator,
                      num_workers=num_workers, persistent_workers=False, **extra)


class _WorkerSeed:
    """``worker_init_fn``: seeds a worker's global numpy and torch generators by (seed, epoch, worker id)."""

    def __init__(self, seed: int, epoch: int):
        self.seed, self.epoch = seed, epoch

    def __call__(self, worker_id: int) -> None:
        entropy = np.random.SeedSequence((self.seed, self.epoch, worker_id)).generate_state(2)
        np.random.seed(int(entropy[0]))
        torch.manual_seed(int(entropy[1]))
