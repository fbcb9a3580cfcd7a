"""Attune's alignment model (GigaScience 2025), re-implemented in PyTorch: contrastive RNA-ATAC alignment.

(Work in progress: the teacher encoder and the input transform first; the rest follows.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn

from .metrics import log_expression
from .train import cell_indices


# --------------------------------------------------------------------------------------------------- inputs

@dataclass
class AttuneInputs:
    """Both modalities of every cell on the scale the encoders read.

    ``rna_log``: sparse float32 [cells, genes] log1p CP10k (:func:`cisformer.metrics.log_expression`);
    ``atac_bin``: sparse float32 [cells, peaks], 1 where the peak has any read; ``rna_scale`` / ``atac_scale``:
    float32 [genes] / [peaks], 1 / root-mean-square of the column over the training cells (1 where that is 0).
    """
    rna_log: sp.csr_matrix
    atac_bin: sp.csr_matrix
    rna_scale: np.ndarray
    atac_scale: np.ndarray


def _inverse_rms(X: sp.csr_matrix) -> np.ndarray:
    ms = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()  # [features]
    scale = np.ones_like(ms)
    scale[ms > 0] = 1.0 / np.sqrt(ms[ms > 0])
    return scale.astype(np.float32)


def attune_inputs(rna, atac, train_cells) -> AttuneInputs:
    """The encoders' inputs for paired ``rna`` / ``atac`` (same cells, same order; raw counts in ``X``) and the
    per-feature value scale, fitted on ``train_cells`` only (names, positions or a boolean mask)."""
    train_idx = cell_indices(rna, train_cells, "train_cells")
    rna_log = sp.csr_matrix(log_expression(rna), dtype=np.float32)
    atac_bin = sp.csr_matrix(atac.X, dtype=np.float32, copy=True)
    atac_bin.eliminate_zeros()
    atac_bin.data[:] = 1.0
    return AttuneInputs(rna_log, atac_bin, _inverse_rms(rna_log[train_idx]), _inverse_rms(atac_bin[train_idx]))


# --------------------------------------------------------------------------------------------------- encoders

class TeacherEncoder(nn.Module):
    """Feature tokens pooled by additive attention over *every* feature (zeros included), computed exactly from
    the nonzero entries.

    Token of feature f in cell c: ``t_cf = e_f * (x_cf * value_scale_f)``; score ``s_cf = <tanh(t_cf W + b), q>``
    (``q`` = ``pool_context``). A zero feature has a zero token and the common score ``s0 = <tanh(b), q>``, so the
    softmax over all F features is ``w_cf = exp(s_cf) / (sum_{x_cf != 0} exp(s_cf) + n_zero(c) exp(s0))`` and
    ``pooled_c = tanh(sum_f w_cf t_cf)`` needs the nonzero entries only. Then BatchNorm, dropout, Linear + ReLU.

    Shapes: B cells, F features, N nonzero entries of the batch, D = ``dim``, k selected features.
    """

    def __init__(self, n_features: int, dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.feature_embedding = nn.Embedding(n_features, dim)
        self.pool_proj = nn.Linear(dim, dim)
        self.pool_context = nn.Parameter(torch.randn(dim) / dim ** 0.5)
        self.norm = nn.BatchNorm1d(dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, dim)
        self.register_buffer("value_scale", torch.ones(n_features))  # set from AttuneInputs

    def _scores(self, tokens: torch.Tensor) -> torch.Tensor:  # [..., D] -> [...] in float32
        return (torch.tanh(self.pool_proj(tokens)) @ self.pool_context).float()

    def _softmax_parts(self, x: torch.Tensor):
        """Entries of the batch and the per-cell softmax shift and denominator over all F features."""
        B, F = x.shape
        rows, cols = torch.nonzero(x, as_tuple=True)  # [N], [N]
        tokens = self.feature_embedding(cols) * (x[rows, cols] * self.value_scale[cols]).unsqueeze(-1)  # [N, D]
        scores = self._scores(tokens)  # [N]
        zero_score = self._scores(torch.zeros_like(self.pool_context))  # [] = <tanh(b), q>
        n_zero = (F - torch.bincount(rows, minlength=B)).to(scores.dtype)  # [B]
        shift = zero_score.expand(B).clone().scatter_reduce(0, rows, scores, reduce="amax")  # [B]
        weights = torch.exp(scores - shift[rows])  # [N], unnormalised
        denom = torch.zeros(B, dtype=scores.dtype, device=x.device).index_add_(0, rows, weights)
        denom = denom + n_zero * torch.exp(zero_score - shift)  # [B]
        return rows, cols, tokens, weights / denom[rows], shift, denom, zero_score

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] -> [B, D]: ``tanh(sum_f w_cf t_cf)``, the attention-pooled cell vector before the output layers."""
        rows, _, tokens, weights, *_ = self._softmax_parts(x)
        summed = tokens.new_zeros(x.shape[0], tokens.shape[-1]).index_add_(
            0, rows, weights.to(tokens.dtype).unsqueeze(-1) * tokens)  # [B, D]
        return torch.tanh(summed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x dense [B, F] (log expression or binary accessibility, unscaled) -> [B, D] cell embedding (not
        normalised)."""
        return torch.relu(self.out(self.dropout(self.norm(self.pooled(x)))))

    def weighted_tokens(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """[B, k, D]: attention weight x token for the feature columns ``features`` (LongTensor [k]; all F when
        None), the softmax taken over all F features; exactly zero rows where ``x == 0``."""
        _, _, _, _, shift, denom, _ = self._softmax_parts(x)
        if features is None:
            features = torch.arange(x.shape[1], device=x.device)
        values = x[:, features] * self.value_scale[features]  # [B, k]
        tokens = self.feature_embedding(features).unsqueeze(0) * values.unsqueeze(-1)  # [B, k, D]
        weights = torch.exp(self._scores(tokens) - shift.unsqueeze(-1)) / denom.unsqueeze(-1)  # [B, k]
        weights = torch.where(values != 0, weights, torch.zeros_like(weights))
        return weights.to(tokens.dtype).unsqueeze(-1) * tokens
