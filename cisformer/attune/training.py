"""The training loop that Attune's alignment, its ATAC -> RNA head and its regulatory layer share: index batches
drawn per ``(seed, epoch)``, Adam with a learning rate decaying linearly per step, selection on a validation score
with patience, and a checkpoint folder per run (:mod:`cisformer.runs`) that resumes an interrupted run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..protocol import epoch_repeats
from ..runs import epoch_loop, make_accelerator
from ..utils.progress import progress as progress_bar


def training_loop(model: nn.Module, batch_loss, validate, train_idx: np.ndarray, *, epochs: int, batch_size: int,
                  lr: float, lr_end: float, patience: int, seed: int, run_dir: Path | None, device: str,
                  progress: bool, desc: str, min_epoch_samples: int = 0):
    """The training loop of :func:`fit_alignment` and :func:`fit_atac2rna`.

    Each epoch draws permutations of the training cells from ``(seed, epoch)``, as many as it takes to show at least
    ``min_epoch_samples`` cells (the package's epoch rule, :func:`cisformer.protocol.epoch_repeats`), and steps
    through their full batches; Adam with a learning rate decaying linearly per step from ``lr`` to ``lr_end``.

    Parameters
    ----------
    model
        The module to train (with ``config.to_dict()``, written into ``done.json``).
    batch_loss
        ``batch_loss(model, rows, device) -> scalar`` for training cells ``rows`` (the prepared model: DDP under
        several processes).
    validate
        ``validate(raw_model) -> dict`` with ``val_loss``, ``val_score`` (higher is better) and diagnostics,
        called in eval mode without gradients.
    train_idx
        Row indices of the training cells.
    epochs, batch_size, lr, lr_end, patience, min_epoch_samples
        Epoch limit, cells per batch, first and last learning rate, early-stopping patience, cells per epoch.
    seed, run_dir, device
        Seed of the draws; checkpoint folder (:func:`run_folder`) or None; ``"auto"``, ``"cpu"`` or ``"cuda"``.
    progress, desc
        Show a progress bar and per-epoch lines; their label.

    Returns
    -------
    ``(model, history)``: the best-validation model (eval mode) and the history DataFrame (one row per epoch).
    """
    repeats = epoch_repeats(len(train_idx), min_epoch_samples)
    batch_size = min(batch_size, len(train_idx))
    n_steps = max(repeats * len(train_idx) // batch_size, 1)
    total_steps = epochs * n_steps
    final = lr_end / lr

    accelerator = make_accelerator(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 + (final - 1.0) * min(step / max(total_steps - 1, 1), 1.0))
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler is kept unwrapped (steps per batch)
    raw_model = accelerator.unwrap_model(model)

    def train_epoch(epoch: int) -> dict:
        rng = np.random.default_rng([seed, epoch])
        order = np.concatenate([rng.permutation(train_idx) for _ in range(repeats)])
        batches = [order[i * batch_size:(i + 1) * batch_size] for i in range(n_steps)]
        # several processes: each takes every num_processes-th batch of the one order (the rest dropped)
        n_rounds = len(batches) // accelerator.num_processes
        batches = batches[accelerator.process_index:n_rounds * accelerator.num_processes:accelerator.num_processes]
        model.train()
        total, n_seen = 0.0, 0
        bar = progress_bar(batches, desc=f"{desc} epoch {epoch + 1}/{epochs}",
                           disable=not (progress and accelerator.is_local_main_process))
        for rows_ in bar:
            with accelerator.autocast():
                loss = batch_loss(model, rows_, accelerator.device)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            total, n_seen = total + loss.item() * len(rows_), n_seen + len(rows_)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if accelerator.num_processes > 1:  # every process's batches: the same history on every process
            sums = accelerator.reduce(torch.tensor([total, n_seen], dtype=torch.float64, device=accelerator.device),
                                      reduction="sum")
            total, n_seen = sums[0].item(), int(sums[1].item())
        return {"train_loss": total / max(n_seen, 1), "samples": n_seen}

    def validation() -> dict:
        model.eval()
        with torch.no_grad():
            return validate(raw_model)

    def report(row: dict, improved: bool) -> None:
        scores = "  ".join(f"{k} {v:.4f}" for k, v in row.items()
                           if k not in ("epoch", "train_loss", "lr", "seconds", "samples"))
        print(f"{desc} epoch {row['epoch']}: train {row['train_loss']:.4f}  {scores}  ({row['seconds']:.1f} s)"
              f"{'  *best*' if improved else ''}", flush=True)

    history = epoch_loop(accelerator, raw_model, optimizer, scheduler, run_dir, epochs=epochs, patience=patience,
                         train_epoch=train_epoch, validate=validation, report=report if progress else None,
                         config=raw_model.config.to_dict(), seed=seed)
    return raw_model, history
