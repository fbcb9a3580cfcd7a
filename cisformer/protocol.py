"""The training protocol every learned method shares (Cisformer, Attune, BABEL-style and the learned baselines), so
that their comparisons differ in the model, not in the rules: each CRE's base rate as the starting logit, how many
passes over the training cells make an epoch, and which validation cells score each epoch."""
from __future__ import annotations

import numpy as np


def cre_base_rate_logits(binary, *, n_cells: int | None = None) -> np.ndarray:
    """Each CRE's training base rate as a logit, ``log((open + 1) / (n_cells - open + 1))`` (float32).

    One pseudocount per outcome keeps CREs never (or always) open finite. The one definition of the base rate that
    the learned RNA -> ATAC methods start from (BABEL-style's output biases, Cisformer's prior).

    Parameters
    ----------
    binary
        Cells x CREs (sparse or dense; entries > 0 count as open), the training cells only; or, with ``n_cells``,
        the number of those cells in which each CRE is open (a matrix read in blocks).
    n_cells
        Number of training cells when ``binary`` holds per-CRE open counts (default ``None``: ``binary`` is a matrix).

    Returns
    -------
    ndarray
        [CREs] float32 logits.
    """
    if n_cells is None:
        n_cells = binary.shape[0]
        opened = np.asarray((binary > 0).sum(axis=0), dtype=np.float64).ravel()
    else:
        opened = np.asarray(binary, dtype=np.float64)
    return np.log((opened + 1.0) / (n_cells - opened + 1.0)).astype(np.float32)


def epoch_repeats(n_cells: int, min_epoch_samples: int) -> int:
    """How many times an epoch draws every training cell so that it shows at least ``min_epoch_samples`` cells.

    One rule for every learned method (Cisformer and BABEL-style): on a small data set (the shipped BMMC's 400
    training cells are 6 optimiser steps of 64 cells) an epoch is otherwise too short for early stopping on the
    validation criterion to see a model learn, and the budget would be set by the data's size, not by training.

    Parameters
    ----------
    n_cells
        Number of training cells.
    min_epoch_samples
        Fewest cells an epoch shows.

    Returns
    -------
    int
        ``ceil(min_epoch_samples / n_cells)``, at least 1.
    """
    return max(1, -(-int(min_epoch_samples) // max(int(n_cells), 1)))


def scored_validation_cells(val_idx: np.ndarray, n_cells: int, seed: int) -> np.ndarray:
    """The validation cells scored each epoch: ``n_cells`` of ``val_idx`` drawn with ``seed`` (all when fewer),
    sorted. One draw for every method that selects its epoch on validation cells, so that they are scored on the
    same cells.

    Parameters
    ----------
    val_idx
        [n_val] indices of the validation cells.
    n_cells
        Number of cells to score.
    seed
        Seed of the draw (``numpy.random.default_rng``).

    Returns
    -------
    ndarray
        Sorted indices, a subset of ``val_idx`` without repeats.
    """
    return np.sort(np.random.default_rng(seed).choice(val_idx, min(n_cells, len(val_idx)), replace=False))
