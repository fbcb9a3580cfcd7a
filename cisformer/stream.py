"""Full-vocabulary RNA -> ATAC prediction streamed to an ``.h5ad`` (``cisformer.predict.rna_to_atac(out=...)``).

Cells are predicted in blocks (:func:`cisformer.predict.predict_logits` on the block's rows, the same computation
as the in-memory path) and each block is written before the next is computed (:mod:`cisformer.h5stream`), so
memory is the model, the (sparse) input and one block, whatever the number of cells.

The file is written as ``OUT.partial`` and renamed to ``OUT`` when complete. An interrupted run leaves
``OUT.partial`` with the number of cells written; calling again with the same model, input cells and settings
resumes at the first unwritten block. The partial file records fingerprints of the model (weights, vocabulary),
the input (aligned counts, cell names) and the settings; a mismatch is refused with which one differs.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .h5stream import StreamedH5ad, partial_path
from .sampler import CellKeys

STORES = ("prob+binary", "prob", "binary", "topk")
DTYPES = ("float16", "float32")
BLOCK_VALUES = 1 << 25  # default block: about this many probabilities (128 MB as float32)


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def model_fingerprint(model) -> str:
    """A digest of a model's weights, buffers, config and vocabulary."""
    parts = [json.dumps(model.config.to_dict(), sort_keys=True), model.open_fraction]
    for name, tensor in sorted(model.state_dict().items()):
        parts += [name, tensor.detach().cpu().numpy()]
    parts += ["\n".join(map(str, model.gene_names or [])), "\n".join(map(str, model.cre_names or []))]
    if model.state_neighbors:  # rna2atac's state smoothing changes the prediction (model.smoothed_state)
        parts += [model.state_neighbors, model.reference_states.cpu().numpy()]
    return _digest(*parts)


def input_fingerprint(X: sp.csr_matrix, X_log: sp.csr_matrix, obs_names) -> str:
    """A digest of the aligned input counts, their log scale and the cell names."""
    return _digest(X.indptr, X.indices, X.data, X_log.indptr, X_log.indices, X_log.data,
                   "\n".join(map(str, obs_names)))


def stream_rna_to_atac(model, rna, X, X_log, cre_idx, cres, out, threshold=None, batch_size: int = 1,
                       chunk: int = 8192, seed: int = 0, store: str = "prob+binary", dtype: str = "float16",
                       top_k=None, block_cells=None, compression=None, resume: bool = True, on_block=None,
                       distributed: bool | None = None):
    """The streamed path of :func:`cisformer.predict.rna_to_atac` (see there); returns ``OUT`` read backed."""
    from .predict import _binarize, _binary_rule, _cre_var, _open_fraction_k

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
    settings = json.dumps({"cres": _digest(np.asarray(cre_idx, dtype=np.int64)), "threshold": str(threshold),
                           "store": store, "dtype": dtype, "top_k": k, "seed": seed, "batch_size": batch_size,
                           "chunk": chunk, "block_cells": block_cells, "compression": compression}, sort_keys=True)
    identity = {"model": model_fingerprint(model), "input": input_fingerprint(X, X_log, rna.obs_names),
                "settings": settings}

    from .distributed import barrier, process_group

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
    """The file that process ``rank`` of ``world`` writes its blocks to before they are merged into ``out``."""
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
    from .predict import _sigmoid, predict_logits

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
