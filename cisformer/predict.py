"""Generation with a trained Cisformer: full-vocabulary prediction, chunked so memory stays bounded.

* :func:`rna_to_atac` - P(open) of every CRE of the model's vocabulary (or a chosen subset) for every cell.
  The gene keys of a cell batch are projected once per layer (:meth:`Cisformer.encode_keys`) and reused for
  every chunk of CRE queries.
* :func:`atac_to_rna` - the expression-bin distribution of every gene of the vocabulary from the cell's open
  CREs only. The reference implementation instead masked its output with the *measured* non-zero pattern; that
  convention is available only through the explicit ``mask=`` argument, for reproducing the paper's numbers.

Both read new AnnData by feature name against the model's vocabulary (``model.gene_names`` / ``model.cre_names``);
:func:`feature_match` reports how many of them an input provides (the CLI refuses below half, with the likely cause).
Peaks called on another peak set must first be mapped onto the model's CREs
(``cisformer.data.vocab.map_peaks_to_cres``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .runs import Fingerprint
from .data.h5stream import StreamedH5ad, partial_path
from .data.preprocess import log_expression
from .sampler import CellKeys, bin_centres, collate

PAPER_THRESHOLD = 0.5


MIN_FEATURE_SHARE = 0.5


def _mismatch_cause(names, vocabulary, what: str) -> str:
    """The likely reason why input feature names miss a model's vocabulary, in words."""
    names = pd.Index(names).astype(str)
    vocabulary = pd.Index(vocabulary).astype(str)
    if what == "genes":
        ens_in, ens_model = names.str.startswith("ENS").mean(), vocabulary.str.startswith("ENS").mean()
        if abs(ens_in - ens_model) > 0.5:
            return ("the input names genes by Ensembl id and the model by symbol" if ens_in > ens_model else
                    "the input names genes by symbol and the model by Ensembl id") + \
                   " (map them with rna.var columns, e.g. rna.var_names = rna.var['gene_symbols'])"
        upper_in = names.str.isupper().mean()
        upper_model = vocabulary.str.isupper().mean()
        overlap_ci = len(set(names.str.upper()) & set(vocabulary.str.upper())) / max(len(vocabulary), 1)
        if abs(upper_in - upper_model) > 0.5 or overlap_ci > 0.5:
            return ("gene symbols differ in case (human symbols are upper case, e.g. GATA1; mouse symbols are not, "
                    "e.g. Gata1): the model was likely trained on another species")
        return "the model was trained on other genes (another species, annotation or gene filter)"
    try:
        from .data.vocab import parse_peak_names

        parse_peak_names(names[:1000])
        peaks = True
    except ValueError:
        peaks = False
    if peaks:
        return ("the input peaks are another peak set than the model's CREs: map them onto the model's CRE "
                "vocabulary first (cisformer preprocess --cre-vocabulary human|mouse|BED, or "
                "cisformer.data.vocab.map_peaks_to_cres), on the same genome build")
    return "the input features are not named 'chrom:start-end' like the model's CREs"


def feature_match(adata, vocabulary, what: str, source="input", *, min_share: float = MIN_FEATURE_SHARE) -> dict:
    """How many of the model's ``vocabulary`` features (genes or CREs) the input provides, by name.

    Raises ``cisformer.data.InputError`` naming a few unmatched model features and the likely cause (Ensembl ids vs
    symbols, another species, another peak set) when ``share < min_share``. The predictions themselves read absent
    features as zero (:func:`align_features`).

    Parameters
    ----------
    adata
        The input AnnData; its ``var_names`` are matched.
    vocabulary
        The model's feature names (``model.gene_names`` or ``model.cre_names``).
    what, source
        ``"genes"`` or ``"CREs"``, and the input's name (e.g. its file): the wording of the error message.
    min_share
        Smallest share of ``vocabulary`` found that passes (default :data:`MIN_FEATURE_SHARE`, 0.5).

    Returns
    -------
    dict ``{"n_model", "n_found", "share", "note"}``: model features, those found, their share, a sentence.
    """
    from .data import input_error

    vocabulary = pd.Index(vocabulary).astype(str)
    found = vocabulary.isin(pd.Index(adata.var_names).astype(str))
    share = float(found.mean()) if len(vocabulary) else 0.0
    note = f"the input provides {int(found.sum())} of the model's {len(vocabulary)} {what} ({share:.1%})"
    if share < min_share:
        missing = list(vocabulary[~found][:5])
        raise input_error(source, f"var_names ({what})", f"{note}, below {min_share:.0%}; model {what} missing from the "
                     f"input e.g. {missing}; input e.g. {list(adata.var_names[:3])}",
                     _mismatch_cause(adata.var_names, vocabulary, what))
    return {"n_model": len(vocabulary), "n_found": int(found.sum()), "share": share, "note": note}


def align_features(adata, vocabulary: list[str], what: str) -> sp.csr_matrix:
    """``adata.X`` re-indexed to ``vocabulary`` columns by name (absent features are all-zero columns).

    Parameters
    ----------
    adata
        The input AnnData, non-negative values in ``X``.
    vocabulary
        The model's feature names (list of str).
    what
        ``"genes"`` or ``"CREs"``, for messages.

    Returns
    -------
    scipy.sparse.csr_matrix (cells, len(vocabulary)), float32; ValueError when no name matches.
    """
    if vocabulary is None:
        raise ValueError("the model carries no vocabulary; train it with cisformer.train.fit")
    vocab_index = pd.Index(vocabulary)
    col = vocab_index.get_indexer(adata.var_names)
    found = col >= 0
    if not found.any():
        raise ValueError(f"none of the {adata.n_vars} {what} in the input match the model's {len(vocabulary)} "
                         f"{what} by name (input e.g. {list(adata.var_names[:2])}, model e.g. {vocabulary[:2]}): "
                         f"{_mismatch_cause(adata.var_names, vocabulary, what)}")
    X = sp.csr_matrix(adata.X, dtype=np.float32)
    if X.nnz and X.data.min() < 0:
        raise ValueError(f"input {what} matrix has negative values: Cisformer expects raw (non-negative) counts")
    select = sp.csr_matrix((np.ones(found.sum(), dtype=np.float32), (np.flatnonzero(found), col[found])),
                           shape=(adata.n_vars, len(vocabulary)))
    return sp.csr_matrix(X @ select)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _batches(model, dataset, batch_size: int, n_keys: np.ndarray, cells=None, rank: int = 0, world: int = 1):
    """Key batches of ``dataset``'s cells (default all; else the rows ``cells``) grouped by their number of key
    tokens ``n_keys``, so that little padding is computed. Under ``world`` processes, this process (``rank``)
    takes batches ``rank, rank + world, ...`` of that order: the same batches as one process computes."""
    device = _device_of(model)
    order = np.argsort(n_keys, kind="stable") if cells is None else cells[np.argsort(n_keys[cells], kind="stable")]
    for b, lo in enumerate(range(0, len(order), batch_size)):
        if b % world != rank:
            continue
        batch = collate([dataset[int(i)] for i in order[lo:lo + batch_size]])
        yield batch["cell"].numpy(), {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict_logits(model, X, queries=None, batch_size: int = 1, chunk: int = 8192, seed: int = 0,
                   X_log=None, *, cells=None, distributed: bool | None = None) -> np.ndarray:
    """Logits of ``queries`` (default: every output feature) for every cell of ``X`` (or the rows ``cells``).

    The keys of a batch of cells are encoded once and reused for every chunk of queries; a cell's key draw depends
    on its row of ``X`` and ``seed`` only, so a block of rows gives the rows of the whole.

    Parameters
    ----------
    model
        A trained :class:`~cisformer.model.Cisformer`.
    X
        A cells x input-vocabulary CSR matrix (genes for rna2atac, CREs for atac2rna, columns in the model's
        order), or a prepared :class:`~cisformer.sampler.CellKeys` (then ``seed`` and ``X_log`` are its own), so
        that predicting block after block of ``cells`` prepares the input once.
    queries
        Indices of the output features to score (default: all).
    batch_size, chunk
        Cells and queries per forward pass.
    seed
        Seeds the key draw of cells with more key tokens than the model's budget.
    X_log
        ``X``'s log-scale expression (rna2atac, ``arch="cisformer"``; default: ``X`` taken as counts).
    cells
        Rows of ``X`` to predict (default: all).
    distributed
        ``None`` (default) splits the batches between the processes of a running multi-process group
        (:mod:`cisformer.utils.distributed`) and gathers them, so every process returns the whole, equal bit for
        bit to one process's result (the same batches are computed); ``False``: this process computes every row.

    Returns
    -------
    float32 array (cells, queries) for rna2atac, (cells, queries, n_bins) for atac2rna, rows in the order of
    ``cells``.
    """
    from .utils.distributed import all_gather, process_group

    cfg = model.config
    queries = np.arange(cfg.n_out) if queries is None else np.asarray(queries)
    dataset = X if isinstance(X, CellKeys) else CellKeys(X, cfg, seed, X_log)
    n_keys = np.diff((X.X if isinstance(X, CellKeys) else X).indptr)
    if cells is not None:
        cells = np.asarray(cells, dtype=np.int64)
        position = np.empty(dataset.X.shape[0], dtype=np.int64)
        position[cells] = np.arange(len(cells))
    was_training = model.training
    model.eval()
    device = _device_of(model)
    query_all = torch.as_tensor(queries, device=device)
    n_rows = dataset.X.shape[0] if cells is None else len(cells)
    shape = (n_rows, len(queries)) + (() if cfg.out_width == 1 else (cfg.out_width,))
    out = np.empty(shape, dtype=np.float32)
    rank, world = (0, 1) if distributed is False else process_group(cpu=device.type == "cpu")
    mine = []
    for rows, batch in _batches(model, dataset, batch_size, n_keys, cells, rank, world):
        if cells is not None:
            rows = position[rows]
        mine.append(rows)
        keys = model.encode_keys(batch)  # projected once, reused for every chunk
        for lo in range(0, len(queries), chunk):
            query = query_all[lo:lo + chunk].expand(len(rows), -1)
            out[rows, lo:lo + chunk] = model.decode(query, keys).float().cpu().numpy()
    if world > 1:
        mine = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
        for rows, values in all_gather((mine, out[mine]), world):
            out[rows] = values
    model.train(was_training)
    return out


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-logit) overflows to inf for logits below about -709: P = 0, correct
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def _binary_rule(model, threshold, n_cres: int):
    """``(value, rule, k)`` of a ``threshold`` argument: ``k`` is None for a probability rule."""
    if threshold is None or isinstance(threshold, (int, float)):
        value = PAPER_THRESHOLD if threshold is None else float(threshold)
        return value, f"P(open) >= {value}" + (" (the paper's threshold)" if threshold is None else ""), None
    if threshold == "topk":
        k = _open_fraction_k(model, n_cres, "threshold='topk'")
        return "topk", (f"per cell, the {k} most probable CREs (training open fraction {model.open_fraction:.4f} "
                        f"of {n_cres} CREs)"), k
    raise ValueError(f"threshold must be None, a number or 'topk', got {threshold!r}")


def _open_fraction_k(model, n_cres: int, what: str) -> int:
    if model.open_fraction is None:
        raise ValueError(f"{what} needs model.open_fraction (set by cisformer.train.fit)")
    return max(1, int(round(model.open_fraction * n_cres)))


def _binarize(prob: np.ndarray, value, k) -> np.ndarray:
    """uint8 cells x CREs: ``prob >= value``, or per cell the ``k`` most probable CREs."""
    if k is None:
        return (prob >= value).astype(np.uint8)
    top = np.argpartition(-prob, k - 1, axis=1)[:, :k]
    binary = np.zeros_like(prob, dtype=np.uint8)
    np.put_along_axis(binary, top, 1, axis=1)
    return binary


def _cre_var(model, cre_idx, cres) -> pd.DataFrame:
    names = list(model.cre_names) if cres is None else [model.cre_names[i] for i in cre_idx]
    if model.cre_coords is not None:
        return pd.DataFrame({k: np.asarray(v) if cres is None else np.asarray(v)[cre_idx]
                             for k, v in model.cre_coords.items()}, index=names)
    return pd.DataFrame(index=names)


@torch.no_grad()
def rna_to_atac(model, rna, *, threshold=None, batch_size: int = 1, chunk: int = 8192, cres=None,
                seed: int = 0, out=None, store: str = "prob+binary", dtype: str = "float16", top_k=None,
                block_cells=None, compression=None, resume: bool = True, on_block=None,
                distributed: bool | None = None) -> ad.AnnData:
    """Predict chromatin accessibility of every CRE for every cell from its RNA.

    Parameters
    ----------
    model
        A trained rna2atac :class:`~cisformer.model.Cisformer` (from :func:`cisformer.train.fit`).
    rna
        AnnData cells x genes, raw counts; genes are matched to ``model.gene_names`` by name.
    threshold
        Rule for ``layers["binary"]``: ``None`` -> the paper's 0.5 on the probabilities; a float -> that
        probability; ``"topk"`` -> per cell, the ``k = round(model.open_fraction * n_CREs)`` most probable CREs
        (the mean open fraction of the training cells), which undoes the 50/50 open/closed training balance.
    batch_size
        Cells per forward pass (cells are grouped by key count, so batches carry little padding). On CPU one cell
        x 8192 CREs per pass is fastest; on a GPU raise ``batch_size``.
    chunk
        CRE queries per forward pass (memory ~ batch_size x chunk x model dim).
    cres
        Optional subset of CRE names to predict (default: the whole vocabulary).
    seed
        Seeds the choice of gene keys for cells expressing more genes than ``model.config.gene_len``.
    out
        ``None`` (default): predict in memory and return an in-memory AnnData (dense float32: 4 bytes per cell
        and CRE, 4 GB per 1,000 cells on the 1,033,239 human cCREs, plus 1 byte for the binary layer). A path:
        stream to that ``.h5ad`` block of ``block_cells`` cells after block, so memory is set by the block, not
        by the number of cells; the file is written as ``OUT.partial`` and renamed when complete, an interrupted
        run resumes at its first unwritten block when called again with the same model, input and settings
        (another model or input is refused with the reason); returns the file opened backed (read-only).
        The arguments below apply to ``out`` only.
    store
        What the file holds: ``"prob+binary"`` (default) ``X`` = P(open) dense and ``layers["binary"]`` (sparse
        CSR, uint8, by ``threshold``); ``"prob"`` only ``X``; ``"binary"`` only the binary matrix, as a sparse
        ``X``; ``"topk"`` ``X`` = sparse, per cell only the ``top_k`` most probable CREs with their
        probabilities (the smallest file).
    dtype
        ``"float16"`` (default; P(open) to 3 decimal digits, 2 bytes per cell and CRE) or ``"float32"`` (exactly
        the in-memory values). ``store="topk"`` keeps its values rounded to ``dtype`` in a float32 sparse
        matrix (scipy has no float16 sparse matrices).
    top_k
        ``store="topk"``: CREs kept per cell (default: ``round(model.open_fraction * n_CREs)``, the
        ``threshold="topk"`` count).
    block_cells
        Cells predicted and written at once (default: as many as make ~2^25 probabilities, 32 cells on the
        human vocabulary: ~0.6 GB of temporaries).
    compression
        HDF5 compression of the matrices (``None``, ``"gzip"`` or ``"lzf"``).
    resume
        ``False``: discard an interrupted ``OUT.partial`` and start over.
    on_block
        Called as ``on_block(cells_done, n_cells)`` after each written block (progress); under several
        processes, each process reports its own cells.
    distributed
        ``None`` (default): in a running multi-process group (``torchrun``; README, "Many processes") the
        processes share the cells and every process returns the whole result, equal to one process's (call it on
        every process); with ``out``, each process writes a shard and the main process merges them into ``out``.
        ``False``: this process predicts every cell alone (e.g. on the main process only).

    Returns
    -------
    AnnData cells x CREs: ``X`` dense float32 P(open); ``layers["binary"]`` (uint8); ``obs`` copied from
    ``rna``; ``var`` CRE coordinates; ``uns["threshold"]`` and ``uns["threshold_rule"]``. With ``out``: the
    written file read backed, ``X`` / ``layers["binary"]`` as chosen by ``store`` and ``dtype``.
    In memory and streamed give the same values (float32 bit for bit with ``batch_size=1``; with larger batches
    cells are grouped per block, which can change float rounding).
    """
    if model.config.direction != "rna2atac":
        raise ValueError(f"rna_to_atac needs an rna2atac model, got a {model.config.direction} model")
    X = align_features(rna, model.gene_names, "genes")
    if cres is None:
        cre_idx = np.arange(model.config.n_cres)
    else:
        cre_idx = pd.Index(model.cre_names).get_indexer(list(cres))
        if (cre_idx < 0).any():
            raise ValueError(f"{int((cre_idx < 0).sum())} requested CREs are not in the model's vocabulary")
    X_log = log_expression(ad.AnnData(X, uns={"counts": rna.uns.get("counts", True)}))
    if out is not None:
        return stream_rna_to_atac(model, rna, X, X_log, cre_idx, cres, out, threshold=threshold,
                                  batch_size=batch_size, chunk=chunk, seed=seed, store=store, dtype=dtype,
                                  top_k=top_k, block_cells=block_cells, compression=compression, resume=resume,
                                  on_block=on_block, distributed=distributed)
    logits = predict_logits(model, X, cre_idx, batch_size, chunk, seed, X_log, distributed=distributed)
    prob = _sigmoid(logits)
    value, rule, k = _binary_rule(model, threshold, len(cre_idx))
    binary = _binarize(prob, value, k)

    result = ad.AnnData(prob, obs=rna.obs.copy(), var=_cre_var(model, cre_idx, cres))
    result.layers["binary"] = binary
    result.uns["threshold"] = value
    result.uns["threshold_rule"] = rule
    result.uns["direction"] = "rna2atac"
    return result


@torch.no_grad()
def atac_to_rna(model, atac, *, mask=None, batch_size: int = 1, chunk: int = 8192, seed: int = 0,
                distributed: bool | None = None) -> ad.AnnData:
    """Predict the expression of every gene of the vocabulary for every cell from its open CREs.

    Parameters
    ----------
    model
        A trained atac2rna :class:`~cisformer.model.Cisformer`.
    atac
        AnnData cells x CREs (counts or binary); CREs are matched to ``model.cre_names`` by name.
    mask
        Only to reproduce the paper's convention: the *true* non-zero pattern (cells x model genes; bool array,
        sparse matrix, or an AnnData of measured RNA aligned by gene name). Where it is False the prediction is
        set to 0; where True the bin distribution is renormalised over the non-zero bins. This reads the
        measured RNA, so it is not a prediction from ATAC alone; the default (``None``) reads nothing of it.
    batch_size, chunk
        Cells and gene queries per forward pass.
    seed
        Seeds the choice of CRE keys for cells with more open CREs than ``model.config.cre_len``.
    distributed
        As in :func:`rna_to_atac`: ``None`` shares the cells between the processes of a running group (every
        process returns the whole), ``False`` predicts every cell in this process.

    Returns
    -------
    AnnData cells x genes: ``X`` expected log1p(counts per 10,000), the scale of ``data.true_expression``
    (probability-weighted bin centres, float32);
    ``layers["bin"]`` most probable bin; ``layers["p_bin0"] ... layers["p_bin7"]`` bin probabilities;
    ``uns["bin_edges"]``, ``uns["bin_centres"]``, ``uns["masked"]``.
    """
    if model.config.direction != "atac2rna":
        raise ValueError(f"atac_to_rna needs an atac2rna model, got a {model.config.direction} model")
    X = align_features(atac, model.cre_names, "CREs")
    n_genes, n_bins = model.config.n_genes, model.config.n_bins
    prob = torch.softmax(torch.from_numpy(predict_logits(model, X, None, batch_size, chunk, seed,
                                                         distributed=distributed)), -1).numpy()

    if mask is not None:
        if isinstance(mask, ad.AnnData):
            mask = align_features(mask, model.gene_names, "genes") > 0
        mask = mask.toarray() if sp.issparse(mask) else np.asarray(mask)
        mask = mask.astype(bool)
        if mask.shape != (atac.n_obs, n_genes):
            raise ValueError(f"mask must be cells x model genes {(atac.n_obs, n_genes)}, got {mask.shape}")
        prob[:, :, 0] = 0.0
        prob /= np.maximum(prob.sum(-1, keepdims=True), 1e-12)
        prob[~mask] = 0.0
        prob[~mask, 0] = 1.0

    edges = model.bin_edges.cpu().numpy().astype(np.float64)
    centres = bin_centres(edges)
    out = ad.AnnData((prob @ centres).astype(np.float32), obs=atac.obs.copy(),
                     var=pd.DataFrame(index=list(model.gene_names)))
    out.layers["bin"] = prob.argmax(-1).astype(np.int8)
    for j in range(n_bins):
        out.layers[f"p_bin{j}"] = np.ascontiguousarray(prob[:, :, j])
    out.uns.update({"bin_edges": edges, "bin_centres": centres, "masked": mask is not None,
                    "direction": "atac2rna"})
    return out

# ------------------------------------------------------------------------------------ streamed to a file
# Full-vocabulary RNA -> ATAC prediction streamed to an ``.h5ad`` (``rna_to_atac(out=...)``).
#
# Cells are predicted in blocks (:func:`predict_logits` on the block's rows, the same computation
# as the in-memory path) and each block is written before the next is computed (:mod:`cisformer.data.h5stream`), so
# memory is the model, the (sparse) input and one block, whatever the number of cells.
#
# The file is written as ``OUT.partial`` and renamed to ``OUT`` when complete. An interrupted run leaves
# ``OUT.partial`` with the number of cells written; calling again with the same model, input cells and settings
# resumes at the first unwritten block. The partial file records fingerprints of the model (weights, vocabulary),
# the input (aligned counts, cell names) and the settings; a mismatch is refused with which one differs.

STORES = ("prob+binary", "prob", "binary", "topk")
DTYPES = ("float16", "float32")
BLOCK_VALUES = 1 << 25  # default block: about this many probabilities (128 MB as float32)


def model_fingerprint(model) -> str:
    """A digest of a model's weights, buffers, config and vocabulary.

    Parameters
    ----------
    model
        A :class:`~cisformer.model.Cisformer` (its state smoothing included when ``state_neighbors`` > 0).

    Returns
    -------
    str of 32 hex digits.
    """
    parts = [json.dumps(model.config.to_dict(), sort_keys=True), model.open_fraction]
    for name, tensor in sorted(model.state_dict().items()):
        parts += [name, tensor.detach().cpu().numpy()]
    parts += ["\n".join(map(str, model.gene_names or [])), "\n".join(map(str, model.cre_names or []))]
    if model.state_neighbors:  # rna2atac's state smoothing changes the prediction (model.smoothed_state)
        parts += [model.state_neighbors, model.reference_states.cpu().numpy()]
    return Fingerprint(16).parts(*parts).hexdigest()


def input_fingerprint(X: sp.csr_matrix, X_log: sp.csr_matrix, obs_names) -> str:
    """A digest of the aligned input counts, their log scale and the cell names.

    Parameters
    ----------
    X, X_log
        The input aligned to the model's genes (:func:`align_features`) and its log-scale expression (CSR).
    obs_names
        The cells' names.

    Returns
    -------
    str of 32 hex digits.
    """
    return Fingerprint(16).parts(X.indptr, X.indices, X.data, X_log.indptr, X_log.indices, X_log.data,
                                 "\n".join(map(str, obs_names))).hexdigest()


def stream_rna_to_atac(model, rna, X, X_log, cre_idx, cres, out, *, threshold=None, batch_size: int = 1,
                       chunk: int = 8192, seed: int = 0, store: str = "prob+binary", dtype: str = "float16",
                       top_k=None, block_cells=None, compression=None, resume: bool = True, on_block=None,
                       distributed: bool | None = None):
    """The streamed path of :func:`rna_to_atac` (see there); returns ``OUT`` read backed.

    Parameters
    ----------
    model, rna, out
        As :func:`rna_to_atac`; ``out`` is the ``.h5ad`` path to write.
    X, X_log
        ``rna``'s counts aligned to the model's genes (CSR, :func:`align_features`) and their log scale.
    cre_idx, cres
        Vocabulary indices of the CREs to predict, and :func:`rna_to_atac`'s ``cres`` (None: every CRE).
    threshold, batch_size, chunk, seed, store, dtype, top_k, block_cells, compression, resume, on_block, distributed
        As :func:`rna_to_atac`.

    Returns
    -------
    anndata.AnnData, the file opened with ``backed="r"``.
    """
    if store not in STORES:
        raise ValueError(f"store must be one of {STORES}, got {store!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_cells, n_cres = X.shape[0], len(cre_idx)
    block_cells = max(1, BLOCK_VALUES // max(n_cres, 1)) if block_cells is None else int(block_cells)
    if block_cells < 1:
        raise ValueError(f"block_cells must be >= 1, got {block_cells}")

    uns = {"direction": "rna2atac", "store": store, "dtype": dtype}
    value = rule = k = None
    if store in ("prob+binary", "binary"):
        value, rule, k = _binary_rule(model, threshold, n_cres)
        uns.update(threshold=value, threshold_rule=rule)
    elif store == "topk":
        k = _open_fraction_k(model, n_cres, "store='topk' without top_k") if top_k is None else int(top_k)
        if not 1 <= k <= n_cres:
            raise ValueError(f"top_k must be between 1 and {n_cres}, got {k}")
        uns.update(top_k=k, threshold_rule=f"per cell, the {k} most probable CREs (with their P(open)); "
                                           "every other CRE is stored as 0")
    matrices = {"prob+binary": {"X": ("dense", dtype), "layers/binary": ("csr", "uint8")},
                "prob": {"X": ("dense", dtype)},
                "binary": {"X": ("csr", "uint8")},
                "topk": {"X": ("csr", "float32")}}[store]  # scipy has no float16 sparse matrices
    settings = json.dumps({"cres": Fingerprint(16).parts(np.asarray(cre_idx, dtype=np.int64)).hexdigest(),
                           "threshold": str(threshold),
                           "store": store, "dtype": dtype, "top_k": k, "seed": seed, "batch_size": batch_size,
                           "chunk": chunk, "block_cells": block_cells, "compression": compression}, sort_keys=True)
    identity = {"model": model_fingerprint(model), "input": input_fingerprint(X, X_log, rna.obs_names),
                "settings": settings}

    from .utils.distributed import barrier, process_group

    rank, world = (0, 1) if distributed is False else process_group(cpu=next(model.parameters()).device.type == "cpu")
    blocks = [(lo, min(lo + block_cells, n_cells)) for lo in range(0, n_cells, block_cells)]
    partial = partial_path(out)
    obs = rna.obs.copy()
    obs.index = obs.index.astype(str)
    var = _cre_var(model, cre_idx, cres)

    np_dtype = np.dtype(dtype)

    def block_matrices(prob):
        found = {}
        if store in ("prob+binary", "prob"):
            found["X"] = prob.astype(np_dtype, copy=False)
        if store in ("prob+binary", "binary"):
            found["layers/binary" if store == "prob+binary" else "X"] = sp.csr_matrix(_binarize(prob, value, k))
        if store == "topk":
            top = sp.csr_matrix(_binarize(prob, None, k))
            row_of = np.repeat(np.arange(top.shape[0]), np.diff(top.indptr))
            found["X"] = sp.csr_matrix((prob[row_of, top.indices].astype(np_dtype).astype(np.float32), top.indices,
                                        top.indptr), shape=top.shape)
        return found

    if world == 1:
        _predict_blocks(model, X, X_log, seed, cre_idx, batch_size, chunk, blocks, partial, obs, var, uns, matrices,
                        identity, compression, resume, block_matrices, on_block, n_cells)
        os.replace(partial, out)
        return ad.read_h5ad(out, backed="r")

    # many processes: process r predicts blocks r, r + world, ... into its own shard; the main process merges
    mine = blocks[rank::world]
    rows = np.concatenate([np.arange(lo, hi) for lo, hi in mine]) if mine else np.zeros(0, dtype=np.int64)
    if mine:  # more processes than blocks: the last ones have none
        shard = shard_path(out, rank, world)
        _predict_blocks(model, X, X_log, seed, cre_idx, batch_size, chunk, mine, partial_path(shard), obs.iloc[rows],
                        var, uns, matrices, {**identity, "shard": f"{rank}/{world}"}, compression, resume,
                        block_matrices, on_block, len(rows))
        os.replace(partial_path(shard), shard)
    barrier()
    if rank == 0:
        _merge_shards(out, world, blocks, obs, var, uns, matrices, identity, compression)
    barrier()
    return ad.read_h5ad(out, backed="r")


def shard_path(out, rank: int, world: int) -> Path:
    """The file that process ``rank`` of ``world`` writes its blocks to before they are merged into ``out``.

    Parameters
    ----------
    out
        The final output file (str or Path).
    rank, world
        This process's rank and the number of processes.

    Returns
    -------
    pathlib.Path ``OUT.shard{rank}of{world}`` beside ``out``.
    """
    out = Path(out)
    return out.with_name(f"{out.name}.shard{rank}of{world}")


def _open_writer(path: Path, n_rows: int, obs, var, uns, matrices, identity, compression, resume):
    """A :class:`StreamedH5ad` at ``path``: resumed when an interrupted file of the same ``identity`` is there
    (another identity is refused), else new. Returns (writer, rows done)."""
    if path.exists() and resume:
        try:
            found, _ = StreamedH5ad.identity_of(path)
        except (OSError, KeyError):  # unreadable (killed while creating it): start over
            found = None
        if found is not None:
            differ = [what for what in ("model", "input", "settings") if found.get(what) != identity[what]]
            if differ:
                words = {"model": "another model", "input": "other input cells or counts",
                         "settings": f"other settings ({found.get('settings')})"}
                raise ValueError(f"{path} holds an interrupted prediction made with "
                                 f"{' and '.join(words[d] for d in differ)}; refusing to resume it. Delete it, "
                                 "or start over with resume=False (cisformer predict --restart)")
            if found.get("shard") == identity.get("shard"):
                return StreamedH5ad.open_resume(path)
    if path.exists():
        path.unlink()
    return StreamedH5ad.create(path, n_rows, len(var), obs, var, uns, matrices, identity, compression=compression), 0


def _predict_blocks(model, X, X_log, seed, cre_idx, batch_size, chunk, blocks, path, obs, var, uns, matrices,
                    identity, compression, resume, block_matrices, on_block, n_total) -> None:
    """Predict the cell ``blocks`` ((lo, hi) row ranges of ``X``) and write them one after the other to ``path``
    (resuming an interrupted file), then finish it."""
    n_rows = sum(hi - lo for lo, hi in blocks)
    writer, done = _open_writer(path, n_rows, obs, var, uns, matrices, identity, compression, resume)
    try:
        dataset = CellKeys(X, model.config, seed, X_log)  # prepared once, read block after block
        at = 0
        for lo, hi in blocks:
            if at + hi - lo <= done:  # written before the interruption
                at += hi - lo
                continue
            rows = np.arange(lo, hi)
            prob = _sigmoid(predict_logits(model, dataset, cre_idx, batch_size, chunk, cells=rows,
                                           distributed=False))
            found = block_matrices(prob)
            del prob
            writer.write_block(at, found)
            del found
            at += hi - lo
            if on_block is not None:
                on_block(at, n_total)  # one process: at == hi; a shard: its own cells so far
        writer.finish()
    except BaseException:
        writer.close()
        raise


def _merge_shards(out: Path, world: int, blocks, obs, var, uns, matrices, identity, compression) -> None:
    """Write ``out`` from the shards of ``world`` processes (block ``b`` is in shard ``b % world``), block by
    block in cell order, then delete the shards."""
    import h5py

    partial = partial_path(out)
    if partial.exists():
        partial.unlink()
    writer = StreamedH5ad.create(partial, len(obs), len(var), obs, var, uns, matrices, identity,
                                 compression=compression)
    used = min(world, len(blocks))
    files = [h5py.File(shard_path(out, r, world), "r") for r in range(used)]
    try:
        at = [0] * world
        for b, (lo, hi) in enumerate(blocks):
            r, n = b % world, hi - lo
            f, a = files[r], at[r]
            found = {}
            for name, (kind, _) in matrices.items():
                if kind == "dense":
                    found[name] = f[name][a:a + n]
                else:
                    g = f[name]
                    ptr = g["indptr"][a:a + n + 1]
                    found[name] = sp.csr_matrix((g["data"][ptr[0]:ptr[-1]], g["indices"][ptr[0]:ptr[-1]],
                                                 ptr - ptr[0]), shape=(n, len(var)))
            writer.write_block(lo, found)
            at[r] += n
        writer.finish()
    except BaseException:
        writer.close()
        raise
    finally:
        for f in files:
            f.close()
    os.replace(partial, out)
    for r in range(used):
        shard_path(out, r, world).unlink()
