"""Attune alignment model (cisformer.contrastive): exact sparse pooling, NT-Xent, training, resume, ATAC->RNA."""
import numpy as np
import torch

from cisformer.contrastive import TeacherEncoder


def _dense_teacher_pooled(enc: TeacherEncoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: every feature of every cell a token, zeros included; softmax over all of them."""
    tokens = enc.feature_embedding.weight.unsqueeze(0) * (x * enc.value_scale).unsqueeze(-1)  # [B, F, D]
    scores = torch.tanh(enc.pool_proj(tokens)) @ enc.pool_context  # [B, F]
    weights = torch.softmax(scores, dim=-1)
    weighted = weights.unsqueeze(-1) * tokens
    return torch.tanh(weighted.sum(1)), weighted


def test_sparse_pooling_equals_dense_reference():
    torch.manual_seed(0)
    enc = TeacherEncoder(n_features=40, dim=16).double()
    enc.value_scale.copy_(torch.rand(40, dtype=torch.float64) + 0.5)
    with torch.no_grad():
        enc.pool_proj.bias.normal_()
    x = torch.rand(6, 40, dtype=torch.float64) * (torch.rand(6, 40) < 0.3)
    x[2] = 0.0  # a cell with no nonzero entry
    x[3] = torch.rand(40, dtype=torch.float64) + 0.1  # a cell with no zero entry
    pooled, weighted = _dense_teacher_pooled(enc, x)
    assert torch.allclose(enc.pooled(x), pooled, atol=1e-12)
    assert torch.allclose(enc.weighted_tokens(x), weighted, atol=1e-12)
    cols = torch.tensor([5, 0, 39])
    assert torch.allclose(enc.weighted_tokens(x, cols), weighted[:, cols], atol=1e-12)
    assert (enc.weighted_tokens(x)[x == 0] == 0).all()
    enc.eval()
    assert enc(x).shape == (6, 16)
