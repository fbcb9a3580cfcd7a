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
(``cisformer.vocab.map_peaks_to_cres``).
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .metrics import log_expression
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
        from .vocab import parse_peak_names

        parse_peak_names(names[:1000])
        peaks = True
    except ValueError:
        peaks = False
    if peaks:
        return ("the input peaks are another peak set than the model's CREs: map them onto the model's CRE "
                "vocabulary first (cisformer preprocess --cre-vocabulary human|mouse|BED, or "
                "cisformer.vocab.map_peaks_to_cres), on the same genome build")
    return "the input features are not named 'chrom:start-end' like the model's CREs"


def feature_match(adata, vocabulary, what: str, source="input", min_share: float = MIN_FEATURE_SHARE) -> dict:
    """How many of the model's ``vocabulary`` features (genes or CREs) the input provides, by name.

    Returns ``{"n_model", "n_found", "share", "note"}``; raises ``cisformer.data.InputError`` naming a few
    unmatched model features and the likely cause (Ensembl ids vs symbols, another species, another peak set)
    when ``share < min_share``. The predictions themselves read absent features as zero (:func:`align_features`).
    """
    from .data import _error

    vocabulary = pd.Index(vocabulary).astype(str)
    found = vocabulary.isin(pd.Index(adata.var_names).astype(str))
    share = float(found.mean()) if len(vocabulary) else 0.0
    note = f"the input provides {int(found.sum())} of the model's {len(vocabulary)} {what} ({share:.1%})"
    if share < min_share:
        missing = list(vocabulary[~found][:5])
        raise _error(source, f"var_names ({what})", f"{note}, below {min_share:.0%}; model {what} missing from the "
                     f"input e.g. {missing}; input e.g. {list(adata.var_names[:3])}",
                     _mismatch_cause(adata.var_names, vocabulary, what))
    return {"n_model": len(vocabulary), "n_found": int(found.sum()), "share": share, "note": note}


def align_features(adata, vocabulary: list[str], what: str) -> sp.csr_matrix:
    """``adata.X`` re-indexed to ``vocabulary`` columns by name (absent features are all-zero columns)."""
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


def _batches(model, X, batch_size: int, seed: int, X_log=None):
    """Key batches of cells grouped by their number of key tokens, so that little padding is computed."""
    device = _device_of(model)
    dataset = CellKeys(X, model.config, seed, X_log)
    order = np.argsort(np.diff(X.indptr), kind="stable")
    for lo in range(0, len(order), batch_size):
        batch = collate([dataset[int(i)] for i in order[lo:lo + batch_size]])
        yield batch["cell"].numpy(), {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict_logits(model, X, queries=None, batch_size: int = 1, chunk: int = 8192, seed: int = 0,
                   X_log=None) -> np.ndarray:
    """Logits of ``queries`` (default: every output feature) for every cell of ``X``.

    ``X`` is a cells x input-vocabulary CSR matrix (genes for rna2atac, CREs for atac2rna, columns in the
    model's order); ``X_log`` its log-scale expression (rna2atac, ``arch="cisformer"``; default: ``X`` taken as
    counts). Returns (cells, queries) for rna2atac, (cells, queries, n_bins) for atac2rna, float32.
    The keys of a batch of cells are encoded once and reused for every chunk of queries.
    """
    cfg = model.config
    queries = np.arange(cfg.n_out) if queries is None else np.asarray(queries)
    was_training = model.training
    model.eval()
    device = _device_of(model)
    query_all = torch.as_tensor(queries, device=device)
    shape = (X.shape[0], len(queries)) + (() if cfg.out_width == 1 else (cfg.out_width,))
    out = np.empty(shape, dtype=np.float32)
    for rows, batch in _batches(model, X, batch_size, seed, X_log):
        keys = model.encode_keys(batch)  # projected once, reused for every chunk
        for lo in range(0, len(queries), chunk):
            query = query_all[lo:lo + chunk].expand(len(rows), -1)
            out[rows, lo:lo + chunk] = model.decode(query, keys).float().cpu().numpy()
    model.train(was_training)
    return out


@torch.no_grad()
def rna_to_atac(model, rna, threshold=None, batch_size: int = 1, chunk: int = 8192, cres=None,
                seed: int = 0) -> ad.AnnData:
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

    Returns
    -------
    AnnData cells x CREs: ``X`` dense float32 P(open); ``layers["binary"]`` (uint8); ``obs`` copied from
    ``rna``; ``var`` CRE coordinates; ``uns["threshold"]`` and ``uns["threshold_rule"]``.
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
    logits = predict_logits(model, X, cre_idx, batch_size, chunk, seed, X_log)
    prob = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    if threshold is None or isinstance(threshold, (int, float)):
        value = PAPER_THRESHOLD if threshold is None else float(threshold)
        binary = (prob >= value).astype(np.uint8)
        rule = f"P(open) >= {value}" + (" (the paper's threshold)" if threshold is None else "")
    elif threshold == "topk":
        if model.open_fraction is None:
            raise ValueError("threshold='topk' needs model.open_fraction (set by cisformer.train.fit)")
        k = max(1, int(round(model.open_fraction * len(cre_idx))))
        top = np.argpartition(-prob, k - 1, axis=1)[:, :k]
        binary = np.zeros_like(prob, dtype=np.uint8)
        np.put_along_axis(binary, top, 1, axis=1)
        value = "topk"
        rule = (f"per cell, the {k} most probable CREs (training open fraction {model.open_fraction:.4f} "
                f"of {len(cre_idx)} CREs)")
    else:
        raise ValueError(f"threshold must be None, a number or 'topk', got {threshold!r}")

    names = list(model.cre_names) if cres is None else [model.cre_names[i] for i in cre_idx]
    if model.cre_coords is not None:
        var = pd.DataFrame({k: np.asarray(v) if cres is None else np.asarray(v)[cre_idx]
                            for k, v in model.cre_coords.items()}, index=names)
    else:
        var = pd.DataFrame(index=names)
    out = ad.AnnData(prob, obs=rna.obs.copy(), var=var)
    out.layers["binary"] = binary
    out.uns["threshold"] = value
    out.uns["threshold_rule"] = rule
    out.uns["direction"] = "rna2atac"
    return out


@torch.no_grad()
def atac_to_rna(model, atac, mask=None, batch_size: int = 1, chunk: int = 8192, seed: int = 0) -> ad.AnnData:
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

    Returns
    -------
    AnnData cells x genes: ``X`` expected log1p(counts per 10,000), the scale of ``metrics.true_expression``
    (probability-weighted bin centres, float32);
    ``layers["bin"]`` most probable bin; ``layers["p_bin0"] ... layers["p_bin7"]`` bin probabilities;
    ``uns["bin_edges"]``, ``uns["bin_centres"]``, ``uns["masked"]``.
    """
    if model.config.direction != "atac2rna":
        raise ValueError(f"atac_to_rna needs an atac2rna model, got a {model.config.direction} model")
    X = align_features(atac, model.cre_names, "CREs")
    n_genes, n_bins = model.config.n_genes, model.config.n_bins
    prob = torch.softmax(torch.from_numpy(predict_logits(model, X, None, batch_size, chunk, seed)), -1).numpy()

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
