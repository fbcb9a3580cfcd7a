"""Training on accelerate: one code path for CPU, one GPU, many GPUs and many nodes (one process each, started by
``python -m torch.distributed.run`` or ``accelerate launch``; README, "Many processes").

:func:`fit` trains one direction on paired AnnData and returns the best-validation model. A checkpoint folder
makes runs cheap to repeat and safe to interrupt::

    <checkpoint_dir>/<fingerprint>/last.pt      full state after the latest epoch (weights, optimizer,
                                                scheduler, RNG, epoch, best loss), written atomically
    <checkpoint_dir>/<fingerprint>/best.pt      the best-validation model (see Cisformer.load)
    <checkpoint_dir>/<fingerprint>/history.csv  one row per epoch: losses, learning rate, time, samples/s
    <checkpoint_dir>/<fingerprint>/done.json    written when the run finished (early stop or last epoch)

The fingerprint hashes the model config, the training config (except ``epochs``), the seed and the data (matrices,
feature names, train/validation cells). Calling :func:`fit` again with the same inputs loads the finished model instead
of retraining; an interrupted run resumes from ``last.pt``; asking for more epochs than a finished run had continues it.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .data.preprocess import log_expression, log_normalized
from .model import CHECKPOINT_FORMAT, DIRECTIONS, Cisformer, CisformerConfig
from .profiles import check_profile
from .protocol import epoch_repeats, scored_validation_cells
from .runs import Fingerprint, epoch_loop, finished_run, make_accelerator, run_folder
from .sampler import (DiskCSR, PairedCells, as_blocks, base_rate_logits, column_mean, expression_bin_edges,
                      make_loader, row_blocks, take_rows)
from .utils.progress import progress as progress_bar

STATE_NEIGHBORS = (0, 10, 30, 100, 300)  # rna2atac: the values of model.state_neighbors tried on validation cells
MAX_REFERENCE_CELLS = 20_000             # rna2atac: training cells whose states are kept for that smoothing


@dataclass
class TrainConfig:
    """Optimisation settings (build them with :meth:`from_profile`).

    Parameters
    ----------
    epochs, batch_size, lr
        Maximum epochs, cells per batch and Adam's learning rate.
    step_size, gamma, patience, scored_val_cells
        StepLR, early stopping and the validation cells scored: see the comments on the fields.
    multiple, min_epoch_samples
        Fresh draws of every training cell per epoch, raised where needed so that an epoch shows at least
        ``min_epoch_samples`` cells (:func:`cisformer.protocol.epoch_repeats`).
    grad_clip, num_workers
        Gradient-norm clip; DataLoader worker processes (0: the main process).
    """
    epochs: int
    batch_size: int
    lr: float
    step_size: int       # StepLR: decay the learning rate every ``step_size`` epochs ...
    gamma: float         # ... by this factor
    patience: int        # early stopping: epochs without validation improvement
    multiple: int = 1
    min_epoch_samples: int = 0
    grad_clip: float = 1.0
    num_workers: int = 0

    scored_val_cells: int = 256  # validation cells scored each epoch (loss and model-selection criterion)

    @classmethod
    def from_profile(cls, direction: str, profile: str, arch: str = "cisformer", **overrides) -> "TrainConfig":
        """``arch="paper"``: profile ``paper``: rna2atac batch 16, Adam lr 1e-3, StepLR(5, 0.9), patience 5, 500
        epochs max, 2 draws per cell; atac2rna batch 96, lr 5e-4, StepLR(4, 0.6), patience 2, 100 epochs max (the
        reference's defaults). ``cpu``: 4 epochs, batch 32 (a SNARE-seq epoch of 7,400 cells takes ~1.5 min on 2
        cores); ``quick``: 3 epochs, for smoke tests and CI.
        ``arch="cisformer"``: batch 64, Adam lr 1e-3 (rna2atac) / 2e-3 (atac2rna), StepLR(4, 0.7), patience 3 on
        the validation criterion, at most 20 epochs in the cpu profile, 200 in paper,
        8 in quick; an epoch shows at least 6,400 cells (100 steps; cpu and paper profiles), drawing each cell of a
        small data set several times; a SNARE-seq epoch (7,400 cells) takes ~8 s on one CPU thread.

        Parameters
        ----------
        direction, profile, arch
            ``"rna2atac"`` / ``"atac2rna"``; ``"quick"``, ``"cpu"`` or ``"paper"``; ``"cisformer"`` or ``"paper"``.
        **overrides
            Fields to set instead of the profile's, e.g. ``lr=5e-4``.

        Returns
        -------
        :class:`TrainConfig`
        """
        check_profile(profile)
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if arch == "cisformer":
            epochs = {"paper": 200, "cpu": 20, "quick": 8}[profile]
            lr = 1e-3 if direction == "rna2atac" else 2e-3
            # atac2rna selects its epoch on (up to 4,096) validation cells: a gene-wise correlation over 256 cells
            # is noisy for the many genes detected in a few cells
            return cls(**{**dict(epochs=epochs, batch_size=64, lr=lr, step_size=4, gamma=0.7, patience=3,
                                 min_epoch_samples=0 if profile == "quick" else 6400,
                                 scored_val_cells=256 if direction == "rna2atac" else 4096), **overrides})
        table = {
            ("paper", "rna2atac"): dict(epochs=500, batch_size=16, lr=1e-3, step_size=5, gamma=0.9, patience=5,
                                        multiple=2),
            ("paper", "atac2rna"): dict(epochs=100, batch_size=96, lr=5e-4, step_size=4, gamma=0.6, patience=2),
            ("cpu", "rna2atac"): dict(epochs=4, batch_size=32, lr=2e-3, step_size=2, gamma=0.7, patience=2),
            ("cpu", "atac2rna"): dict(epochs=4, batch_size=32, lr=2e-3, step_size=2, gamma=0.7, patience=2),
            ("quick", "rna2atac"): dict(epochs=3, batch_size=32, lr=3e-3, step_size=2, gamma=0.7, patience=2),
            ("quick", "atac2rna"): dict(epochs=3, batch_size=32, lr=3e-3, step_size=2, gamma=0.7, patience=2),
        }
        return cls(**{**table[(profile, direction)], **overrides})


# --------------------------------------------------------------------------------------------------- helpers

def cell_indices(adata, cells, what: str = "cells") -> np.ndarray:
    """Row indices of ``cells`` given as obs names, integer positions or a boolean mask.

    Parameters
    ----------
    adata, cells
        The AnnData and its cells (a mask has ``adata.n_obs`` entries).
    what
        The argument's name in error messages.

    Returns
    -------
    Integer array of row positions, in the order of ``cells``.
    """
    cells = np.asarray(cells)
    if cells.dtype == bool:
        if len(cells) != adata.n_obs:
            raise ValueError(f"{what}: boolean mask has {len(cells)} entries for {adata.n_obs} cells")
        return np.flatnonzero(cells)
    if cells.dtype.kind in "iu":
        if len(cells) and (cells.min() < 0 or cells.max() >= adata.n_obs):
            raise ValueError(f"{what}: positions must lie in [0, {adata.n_obs})")
        return cells.astype(np.int64)
    idx = adata.obs_names.get_indexer(cells.astype(str))
    if (idx < 0).any():
        missing = cells[idx < 0][:3].tolist()
        raise ValueError(f"{what}: {int((idx < 0).sum())} names not in obs_names, e.g. {missing}")
    return idx


def split_indices(rna, train_cells, val_cells, min_cells: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and validation cells (:func:`cell_indices`), at least ``min_cells`` of each and
    disjoint (``ValueError`` otherwise).

    Parameters
    ----------
    rna, train_cells, val_cells
        The AnnData and its training and validation cells (names, positions or masks).
    min_cells
        Fewest cells of each set.

    Returns
    -------
    ``(train_idx, val_idx)``, integer arrays.
    """
    train_idx = cell_indices(rna, train_cells, "train_cells")
    val_idx = cell_indices(rna, val_cells, "val_cells")
    if min(len(train_idx), len(val_idx)) < min_cells:
        raise ValueError(f"train_cells and val_cells need at least {min_cells} cell{'s' if min_cells > 1 else ''} each")
    if np.intersect1d(train_idx, val_idx).size:
        raise ValueError("train_cells and val_cells overlap")
    return train_idx, val_idx


def check_pair(rna, atac) -> None:
    """Check paired input: same cells in the same order, sparse or numpy matrices, no negative values.

    Parameters
    ----------
    rna, atac
        Paired AnnData (cells x genes, cells x CREs), in memory or ``backed="r"`` (backed RNA: integer counts).
    """
    if rna.n_obs != atac.n_obs or not np.array_equal(rna.obs_names, atac.obs_names):
        raise ValueError("rna and atac must hold the same cells in the same order (identical obs_names); "
                         "align them first, e.g. atac = atac[rna.obs_names]")
    for name, a in (("rna", rna), ("atac", atac)):
        if a.isbacked:
            blocks = _on_disk(a, name).blocks()
        else:
            X = a.X
            if not sp.issparse(X) and not isinstance(X, np.ndarray):
                raise TypeError(f"{name}.X must be a scipy sparse matrix or numpy array, got {type(X).__name__}")
            blocks = [X]
        counts_needed = name == "rna" and a.isbacked  # log-normalised row by row while training
        for block in blocks:
            data = block.data if sp.issparse(block) else block
            if data.size and data.min() < 0:
                raise ValueError(f"{name}.X has negative values: Cisformer expects raw (non-negative) counts")
            if counts_needed and not np.array_equal(data, np.round(data)):
                raise ValueError(f"rna ({a.filename}): field 'X' holds non-integer values, but training from a "
                                 "backed file log-normalises raw counts row by row. Fix: write the file with raw "
                                 "counts in X (e.g. adata.X = adata.layers['counts']), or load it into memory")


def _on_disk(adata, name: str) -> DiskCSR:
    """The CSR matrix of an AnnData opened with ``backed="r"``, read from its file block by block."""
    if adata.is_view:
        raise ValueError(f"{name} ({adata.filename}) is a subset view of a backed file, which is read whole: pass "
                         "the backed AnnData itself and choose the cells with train_cells / val_cells")
    try:
        return DiskCSR.from_anndata(adata)
    except ValueError as err:
        raise ValueError(f"{name} ({adata.filename}): {err}") from None


def _training_matrices(rna, atac) -> tuple:
    """``(rna_X, atac_X, rna_log)`` as :func:`fit` reads them. In memory: float32 CSR copies and the log-scale
    expression (:func:`cisformer.data.log_expression`). An AnnData opened with ``backed="r"``: its file, read
    row by row by the sampler and block by block by every whole-matrix statistic
    (:class:`~cisformer.sampler.DiskCSR`), so memory holds row pointers, not cells; its log-scale expression is
    then computed per row (``rna_log`` None), which needs raw counts."""
    if rna.isbacked and not rna.uns.get("counts", True):
        raise ValueError(f"rna ({rna.filename}): uns['counts'] is False (normalised values), but training from a "
                         "backed file log-normalises raw counts row by row. Fix: pass raw counts, or load the "
                         "file into memory (anndata.read_h5ad without backed=)")
    rna_X = _on_disk(rna, "rna") if rna.isbacked else sp.csr_matrix(rna.X, dtype=np.float32)
    atac_X = _on_disk(atac, "atac") if atac.isbacked else sp.csr_matrix(atac.X, dtype=np.float32)
    return rna_X, atac_X, None if rna.isbacked else log_expression(rna)


# the modules whose code decides a trained model: the network, the draws, the loop, the shared rules and base rates,
# the validation criterion and the predictions it scores, the cis window's gene positions
_TRAINING_CODE = ("model.py", "sampler.py", "train.py", "runs.py", "protocol.py", "metrics", "utils/matrix.py",
                  "predict.py", "data/vocab.py")


def fingerprint(model_cfg: CisformerConfig, train_cfg: TrainConfig, seed: int, rna, atac, train_idx, val_idx,
                rna_X=None, atac_X=None) -> str:
    """Hash of everything that determines a training run's result (except the number of epochs): the configs,
    the seed, the data and the source of the modules that training runs, so that a cache written by older code is
    never reused.

    Parameters
    ----------
    model_cfg, train_cfg, seed
        The run's :class:`CisformerConfig`, :class:`TrainConfig` and seed.
    rna, atac, train_idx, val_idx
        The paired AnnData and the row indices of the training and validation cells (only those rows are hashed).
    rna_X, atac_X
        The matrices as :func:`fit` reads them (default ``rna.X``, ``atac.X``; a :class:`DiskCSR` is read in blocks).

    Returns
    -------
    str, 16 hex digits: the run's folder name under ``checkpoint_dir``.
    """
    rna_X = rna.X if rna_X is None else rna_X
    atac_X = atac.X if atac_X is None else atac_X
    cfg = dataclasses.asdict(train_cfg)
    cfg.pop("epochs")
    cfg.pop("num_workers")
    fp = Fingerprint().code(_TRAINING_CODE).json([CHECKPOINT_FORMAT, model_cfg.to_dict(), cfg, seed])
    for names in (rna.var_names, atac.var_names, rna.obs_names[train_idx], rna.obs_names[val_idx]):
        fp.names(names)
    rows = np.concatenate([train_idx, val_idx])
    for X in (rna_X, atac_X):
        fp.matrix(row_blocks(X, rows))
    return fp.hexdigest()


def _set_positions(model: Cisformer, gene_var: pd.DataFrame, cre_var: pd.DataFrame) -> None:
    """The model's gene TSS and CRE midpoints (chromosome code, bp) for its cis window; genes or CREs without
    coordinates keep -1 (their attention path then reads no CRE)."""
    from .data.vocab import gene_tss

    if "chrom" not in gene_var or not {"chrom", "start", "end"} <= set(cre_var.columns):
        return
    chroms = {c: i for i, c in enumerate(sorted(set(gene_var["chrom"].astype(str)) | set(cre_var["chrom"].astype(str))))}
    tss = gene_tss(gene_var)
    known = np.isfinite(tss) & (gene_var["chrom"].astype(str).str.len().to_numpy() > 0)
    gene = np.full((len(gene_var), 2), -1, dtype=np.int64)
    gene[known, 0] = [chroms[c] for c in gene_var["chrom"].astype(str).to_numpy()[known]]
    gene[known, 1] = tss[known].astype(np.int64)
    mid = ((pd.to_numeric(cre_var["start"]) + pd.to_numeric(cre_var["end"])) // 2).to_numpy(dtype=np.int64)
    cre = np.stack([[chroms[c] for c in cre_var["chrom"].astype(str)], mid], axis=1)
    model.gene_position.copy_(torch.from_numpy(gene))
    model.cre_position.copy_(torch.from_numpy(cre))


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# --------------------------------------------------------------------------------------------------- fit

def fit(rna, atac, direction: str, train_cells, val_cells, *, profile: str = "cpu", seed: int = 0,
        checkpoint_dir=None, device: str = "auto", epochs: int | None = None, progress: bool = True,
        arch: str = "cisformer", **overrides):
    """Train Cisformer in one direction on paired cells.

    The kept model is the epoch with the best *validation criterion*, not the best validation loss: on sparse
    data the loss is nearly blind to cell-specific structure (a model that learns each cell's depth and nothing
    of its type gains more loss than one that learns its type). rna2atac: the mean per-cell AUROC gain over the
    floor (the base rate; :func:`cisformer.metrics.per_cell_auroc`) on up to ``scored_val_cells`` validation cells
    over every CRE; atac2rna: the mean gene-wise Pearson r between the predicted and measured log1p(counts per
    10,000) of those cells (the per-gene mean, the floor, scores 0). Early stopping counts epochs without an
    improvement of the criterion.

    Parameters
    ----------
    rna, atac
        Paired AnnData (same ``obs_names``), raw counts; their ``var_names`` become the model's vocabulary. Either
        may be opened with ``backed="r"`` (CSR ``X``): it is then read from its file block by block and row by
        row, never whole (see README, "Training data larger than memory"), with the in-memory result.
    direction
        ``"rna2atac"`` or ``"atac2rna"``.
    train_cells, val_cells
        Cells to train on and to early-stop on: obs names, integer positions or boolean masks.
    profile
        ``"quick"``, ``"cpu"`` or ``"paper"`` sizes (:meth:`CisformerConfig.from_profile`,
        :meth:`TrainConfig.from_profile`).
    seed
        Seeds weights, sampling and shuffling.
    checkpoint_dir
        Folder for checkpoints (see module docstring). ``None``: train in memory, no resume.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; under a multi-process launch
        (``torchrun``, ``accelerate launch``) the launcher's processes and devices are used: each process trains
        on every N-th batch of the epoch's shuffled order, and all end with the same weights and history.
    epochs
        Maximum epochs (default: the profile's).
    arch
        ``"cisformer"`` (this package's model, the default) or ``"paper"`` (the paper's architecture), see
        :mod:`cisformer.model`.
    **overrides
        Any :class:`CisformerConfig` or :class:`TrainConfig` field, e.g. ``dim=96, batch_size=64``.

    Returns
    -------
    model
        The best-validation :class:`~cisformer.model.Cisformer` in eval mode, carrying its vocabulary.
    history
        DataFrame with one row per epoch: ``epoch, train_loss, val_loss, val_score`` (the criterion above),
        rna2atac also ``val_within_sd, val_across_sd`` (spread of the predicted logit minus the base rate
        within cells and across cells, :func:`cisformer.metrics.deviation_spread`), then ``lr``, ``seconds``
        (the epoch's wall-clock, validation included: their sum is the training time), ``samples`` (training
        samples drawn in the epoch, at least ``min_epoch_samples``) and ``samples_per_s``.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    check_pair(rna, atac)
    train_idx, val_idx = split_indices(rna, train_cells, val_cells)

    model_fields = {f.name for f in dataclasses.fields(CisformerConfig)} - {"direction", "n_genes", "n_cres", "arch"}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - model_fields - train_fields
    if unknown:
        raise TypeError(f"unknown override(s) {sorted(unknown)}; allowed: {sorted(model_fields | train_fields)}")
    model_cfg = CisformerConfig.from_profile(direction, profile, rna.n_vars, atac.n_vars, arch,
                                             **{k: v for k, v in overrides.items() if k in model_fields})
    train_cfg = TrainConfig.from_profile(direction, profile, arch,
                                         **{k: v for k, v in overrides.items() if k in train_fields})
    if epochs is not None:
        train_cfg.epochs = int(epochs)

    rna_X, atac_X, rna_log = _training_matrices(rna, atac)

    # the training cells' rows: one matrix in memory (as always), row blocks read from disk (a pass per call)
    def train_log():
        if rna_log is not None:
            return rna_log[train_idx]
        return (log_normalized(block) for block in row_blocks(rna_X, train_idx))

    def train_atac():
        return row_blocks(atac_X, train_idx) if isinstance(atac_X, DiskCSR) else atac_X[train_idx]

    bin_edges = expression_bin_edges(train_log(), model_cfg.n_bins) if direction == "atac2rna" else None
    multiple = max(train_cfg.multiple, epoch_repeats(len(train_idx), train_cfg.min_epoch_samples))
    train_set = PairedCells(rna_X, atac_X, train_idx, model_cfg, multiple, seed, bin_edges, rna_log=rna_log)
    scored_val = scored_validation_cells(val_idx, train_cfg.scored_val_cells, seed)
    val_set = PairedCells(rna_X, atac_X, scored_val, model_cfg, 1, seed + 1, bin_edges, train_set.depth_centre,
                          rna_log)

    def log_rows(rows):
        """Log-scale expression of the cells ``rows``, in memory."""
        return take_rows(rna_log, rows) if rna_log is not None else log_normalized(take_rows(rna_X, rows))

    torch.manual_seed(seed)
    model = Cisformer(model_cfg)
    model.gene_names, model.cre_names = [str(x) for x in rna.var_names], [str(x) for x in atac.var_names]
    if {"chrom", "start", "end"} <= set(atac.var.columns):
        model.cre_coords = {"chrom": atac.var["chrom"].astype(str).tolist(),
                            "start": atac.var["start"].astype(np.int64).tolist(),
                            "end": atac.var["end"].astype(np.int64).tolist()}
    model.open_fraction = float(train_set.n_open[train_idx].mean() / model_cfg.n_cres)
    if bin_edges is not None:
        model.bin_edges.copy_(torch.as_tensor(bin_edges, dtype=torch.float32))
    model.query_prior.copy_(torch.from_numpy(base_rate_logits(
        train_log() if direction == "atac2rna" else None,
        train_atac() if direction == "rna2atac" else None, model_cfg, bin_edges)))
    if model_cfg.cis_window:
        _set_positions(model, rna.var, atac.var)
    n_train = len(train_idx)
    if arch == "cisformer" and direction == "atac2rna":
        open_share = column_mean((sp.csr_matrix(block) > 0 for block in as_blocks(train_atac())), n_train)
        model.encoder.set_input_scale(open_share, train_set.depth[train_idx])
    if arch == "cisformer" and direction == "rna2atac":
        mean = column_mean(train_log(), n_train)
        square = column_mean((sp.csr_matrix(b).multiply(b) for b in as_blocks(train_log())), n_train)
        sd = np.sqrt(np.maximum(square - mean ** 2, 0.0))
        model.encoder.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        model.encoder.input_std.copy_(torch.as_tensor(sd + 1e-3, dtype=torch.float32))

    val_atac = take_rows(atac_X, scored_val)
    val_input = (take_rows(rna_X, scored_val), log_rows(scored_val)) if direction == "rna2atac" else (val_atac, None)
    val_truth = val_atac > 0 if direction == "rna2atac" else log_rows(scored_val)

    def finished(best):
        if arch == "cisformer" and direction == "rna2atac":  # from disk: rows in file order, read in few slabs
            reference = np.sort(train_idx) if isinstance(rna_X, DiskCSR) else train_idx
            fit_state_neighbors(best, log_rows, reference, val_input, val_truth, seed)
        return best

    run_dir = None if checkpoint_dir is None else run_folder(checkpoint_dir, fingerprint(
        model_cfg, train_cfg, seed, rna, atac, train_idx, val_idx, rna_X, atac_X))
    done = finished_run(run_dir, lambda path: Cisformer.load(path).eval(), epochs=train_cfg.epochs)
    if done is not None:
        return finished(done[0]), done[1]

    accelerator = make_accelerator(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=train_cfg.step_size, gamma=train_cfg.gamma)
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler steps per epoch: kept unwrapped
    raw_model = accelerator.unwrap_model(model)

    def train_epoch(epoch: int) -> dict:
        t0 = time.perf_counter()
        train_set.set_epoch(epoch)
        loader = make_loader(train_set, train_cfg.batch_size, shuffle=True, seed=seed, epoch=epoch,
                             num_workers=train_cfg.num_workers)
        if accelerator.num_processes > 1:
            # each process takes every num_processes-th batch of the one shuffled order (accelerate pads the last
            # round with the epoch's first samples when the batches do not divide evenly); the prepared loader
            # calls train_set.set_epoch with its own count, which starts at 0 for a new loader: give it ours
            loader = accelerator.prepare(loader)
            loader.set_epoch(epoch)
        model.train()
        total, n_seen = 0.0, 0
        bar = progress_bar(loader, desc=f"{direction} epoch {epoch + 1}/{train_cfg.epochs}",
                           disable=not (progress and accelerator.is_local_main_process))
        for batch in bar:
            batch = _to_device(batch, accelerator.device)
            with accelerator.autocast():
                loss, _ = model(batch, return_loss=True)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            optimizer.step()
            n = batch["cell"].shape[0]
            total, n_seen = total + loss.item() * n, n_seen + n
            bar.set_postfix(loss=f"{loss.item():.4f}")
        scheduler.step()
        if accelerator.num_processes > 1:  # every process's samples: the same history on every process
            sums = accelerator.reduce(torch.tensor([total, n_seen], dtype=torch.float64, device=accelerator.device),
                                      reduction="sum")
            total, n_seen = sums[0].item(), int(sums[1].item())
        return {"train_loss": total / max(n_seen, 1), "samples": n_seen,
                "samples_per_s": n_seen / (time.perf_counter() - t0)}

    def validate() -> dict:
        return {"val_loss": evaluate(model, val_set, train_cfg.batch_size, accelerator),
                **validation_criterion(raw_model, val_input, val_truth)}

    def report(row: dict, improved: bool) -> None:
        print(f"{direction} epoch {row['epoch']}: train {row['train_loss']:.4f}  val {row['val_loss']:.4f}  "
              f"criterion {row['val_score']:.4f}  ({row['seconds']:.1f} s, {row['samples_per_s']:.1f} "
              f"samples/s){'  *best*' if improved else ''}", flush=True)

    history = epoch_loop(accelerator, raw_model, optimizer, scheduler, run_dir, epochs=train_cfg.epochs,
                         patience=train_cfg.patience, train_epoch=train_epoch, validate=validate,
                         report=report if progress else None, model=model_cfg.to_dict(),
                         train=dataclasses.asdict(train_cfg), seed=seed)
    return finished(raw_model), history


@torch.no_grad()
def fit_state_neighbors(model, log_rows, train_idx, val_input, val_truth, seed: int = 0) -> dict:
    """rna2atac, ``arch="cisformer"``: store the cell states of the training cells ``train_idx`` (``log_rows(rows)``
    gives their log-scale expression; at most :data:`MAX_REFERENCE_CELLS`, drawn with ``seed``) as
    ``model.reference_states``, and set ``model.state_neighbors`` to the value of :data:`STATE_NEIGHBORS` with
    the best validation criterion (:func:`validation_criterion`, the epochs' criterion; the smallest on ties).
    The scores tried are kept as ``model.state_neighbor_scores`` ({k: score}) and returned.

    Parameters
    ----------
    model
        A trained rna2atac :class:`~cisformer.model.Cisformer` (``arch="cisformer"``), set to eval mode.
    log_rows
        ``log_rows(rows)``: the log-scale expression of the cells ``rows`` (sparse, cells x genes).
    train_idx
        Row indices of the training cells.
    val_input, val_truth
        The validation cells' ``(X, X_log)`` and measured open state, as in :func:`validation_criterion`.
    seed
        Seeds the draw of the reference cells.

    Returns
    -------
    dict ``{k: validation criterion}`` over :data:`STATE_NEIGHBORS`.
    """
    from .predict import predict_logits

    cells = np.asarray(train_idx)
    if len(cells) > MAX_REFERENCE_CELLS:
        cells = np.sort(np.random.default_rng(seed).choice(cells, MAX_REFERENCE_CELLS, replace=False))
    device = next(model.parameters()).device
    model.eval()
    states = [model.encoder({"expr": torch.as_tensor(log_rows(cells[lo:lo + 1024]).toarray(), dtype=torch.float32,
                                                      device=device)}).cpu()
              for lo in range(0, len(cells), 1024)]
    model.reference_states = torch.cat(states)  # (N_ref, R)
    # the attention path does not read the state: the logits at k are those at k = 0 with the factorised term of
    # the smoothed state in place of the cell's own, so the path is computed once
    model.state_neighbors = 0
    X, X_log = val_input
    logits = predict_logits(model, sp.csr_matrix(X), batch_size=16, X_log=X_log)
    z = model.encoder({"expr": torch.as_tensor(sp.csr_matrix(X_log).toarray(), dtype=torch.float32, device=device)})

    def factorised(state):
        return model.factorised_logits(state, model.depth_head(state).squeeze(-1)).cpu().numpy()

    path = logits - factorised(z)
    scores = {}
    for k in STATE_NEIGHBORS:
        model.state_neighbors = k
        scores[k] = criterion_of_logits(model, path + factorised(model.smoothed_state(z)), val_truth)["val_score"]
    model.state_neighbors = max(scores, key=scores.get)
    model.state_neighbor_scores = scores
    return scores


@torch.no_grad()
def validation_criterion(model, inputs, truth) -> dict:
    """The model-selection criterion of :func:`fit` on validation cells (see there), with diagnostics.

    Parameters
    ----------
    model
        A :class:`~cisformer.model.Cisformer`.
    inputs
        ``(X, X_log)``: the cells' input matrix (cells x the model's input vocabulary) and (rna2atac) its log scale.
    truth
        rna2atac: the measured open state (cells x CREs, sparse bool); atac2rna: :func:`cisformer.data.log_expression`.

    Returns
    -------
    dict of floats: ``val_score`` (the criterion); rna2atac also ``val_within_sd``, ``val_across_sd``.
    """
    from .predict import predict_logits

    X, X_log = inputs
    return criterion_of_logits(model, predict_logits(model, sp.csr_matrix(X), batch_size=16, X_log=X_log), truth)


def criterion_of_logits(model, logits: np.ndarray, truth) -> dict:
    """:func:`validation_criterion` from the model's logits of the validation cells (see there).

    Parameters
    ----------
    model
        A :class:`~cisformer.model.Cisformer` (its direction, base rates and bin edges are read).
    logits
        The cells' logits over every output feature: (cells, CREs) or (cells, genes, bins).
    truth
        As in :func:`validation_criterion`.

    Returns
    -------
    dict of floats: ``val_score``; rna2atac also ``val_within_sd``, ``val_across_sd``.
    """
    from .metrics import auroc_gain, deviation_spread
    from .sampler import bin_centres
    from .utils.matrix import columnwise_pearson

    if model.config.direction == "rna2atac":
        truth = np.asarray(sp.csr_matrix(truth).toarray(), dtype=bool)
        prior = model.query_prior.cpu().numpy()
        within, across = deviation_spread(logits - prior)
        return {"val_score": auroc_gain(logits, truth, prior), "val_within_sd": within, "val_across_sd": across}
    prob = torch.softmax(torch.from_numpy(logits), -1).numpy()
    expected = prob @ bin_centres(model.bin_edges.cpu().numpy())
    truth = np.asarray(sp.csr_matrix(truth).toarray(), dtype=np.float32)
    return {"val_score": float(columnwise_pearson(expected, truth).mean())}


@torch.no_grad()
def evaluate(model, dataset: PairedCells, batch_size: int, accelerator=None) -> float:
    """Mean training loss of ``model`` over ``dataset`` (eval mode, fixed draws).

    Parameters
    ----------
    model
        A :class:`~cisformer.model.Cisformer` (or its prepared wrapper).
    dataset, batch_size
        A :class:`~cisformer.sampler.PairedCells` and the cells per batch.
    accelerator
        The training ``accelerate.Accelerator`` (device, mixed precision, processes); None: the model's device.

    Returns
    -------
    float, the loss averaged over the cells (of every process).
    """
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, n_seen = 0.0, 0
    loader = make_loader(dataset, batch_size)
    if accelerator is not None and accelerator.num_processes > 1:
        loader = accelerator.prepare(loader)
    for batch in loader:
        batch = _to_device(batch, device)
        if accelerator is not None:
            with accelerator.autocast():
                loss, _ = model(batch, return_loss=True)
        else:
            loss, _ = model(batch, return_loss=True)
        n = batch["cell"].shape[0]
        total, n_seen = total + loss.item() * n, n_seen + n
    if accelerator is not None and accelerator.num_processes > 1:
        sums = accelerator.reduce(torch.tensor([total, n_seen], device=device), reduction="sum")
        total, n_seen = sums.tolist()
    model.train(was_training)
    return total / max(n_seen, 1)
