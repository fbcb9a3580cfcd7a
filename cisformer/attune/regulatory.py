"""Attune's regulatory cross-attention (GigaScience 2025), re-implemented in PyTorch: genes read the peaks of
their cis window; the attention weights become gene-peak interaction scores.

The method
----------
The frozen, pretrained teachers of an :class:`cisformer.attune.alignment.AttuneAligner` turn a cell into gene tokens
and peak tokens (:meth:`TeacherEncoder.weighted_tokens`: pooling weight x feature embedding x scaled value;
exactly zero for a zero feature). A learned CLS token is prepended to each side, and one pre-LayerNorm decoder
layer (1 head, FFN 512 ReLU, dropout 0.1) reads them::

    r   = cls_g + Attn(LN(cls_g) -> LN([cls_g; gene tokens]))        RNA summary (the gene CLS row of the
    a   = cls_p + Attn(LN(cls_p) -> LN([cls_p; peak tokens]))        ATAC summary  self-attentions)
    z_g = x_g + CrossAttn(LN(x_g) -> LN([a; peak tokens]))           x_0 = r (gene CLS), x_g = gene g's token
    out = z + FFN(LN(z))

In the cross-attention gene ``g`` sees only the peaks within ``window`` bp of its TSS
(:func:`cisformer.tl.attention.candidate_pairs`) plus the peak CLS; the gene CLS sees the peak CLS and every peak
(with ``RegulatoryConfig(cls_sees_closed=False)``: only the open ones).

Losses: NT-Xent (temperature 0.1, :func:`cisformer.attune.alignment.nt_xent`) between ``r`` and ``a`` (each
standardised over the batch, see the deviations); and a matching head (Linear on the
gene-CLS output ``out_0`` -> 1 logit) that tells the true (RNA, ATAC) pair of each cell from two hard negatives:
for each RNA cell an ATAC cell drawn from ``softmax(cos(r_i, a_j) / T)`` over the *other* cells of the batch, and
symmetrically for each ATAC cell an RNA cell (:func:`sample_hard_negatives`); labels 1 for the B true pairs,
0 for the 2B negatives (binary cross-entropy). Loss = NT-Xent + matching. Adam, lr decaying linearly per step.

Interaction score of gene ``g`` and peak ``p`` in the window (:func:`interaction_scores`), summed over cells:
``attune`` = (attention of g to the peak CLS) x (attention of the gene CLS to p) (the reference's definition,
CLS row and column dropped), and ``attention`` = the direct attention weight of g to p.

The reference's defects fixed here, the sparse exact computation of the closed peaks' attention, the deviations
and what the losses train (measured): ``docs/attune.md``, "Regulatory layer".

Shapes: B = cells, G = genes, P = peaks, D = model dim, N = open peak entries of a batch, E = window pairs,
M = (RNA cell, ATAC cell) pairs scored by the matching head, S = softmax segments (one per query and pair).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..profiles import check_profile
from ..protocol import scored_validation_cells
from ..runs import Fingerprint
from ..train import cell_indices
from .alignment import TeacherEncoder, nt_xent, rows_tensor

CHECKPOINT_FORMAT = 1


@dataclass
class RegulatoryConfig:
    """Sizes and optimisation of the regulatory layer. ``dim`` is the teachers' width (set from the aligner).

    Parameters
    ----------
    n_genes, n_peaks, dim, ffn, dropout, window, temperature
        G, P, D, the FFN width, dropout, the cis window (bp around the TSS), NT-Xent and hard-negative temperature.
    epochs, batch_size, lr, min_lr, patience, scored_val_cells, min_epoch_samples
        The schedule (``lr`` decays linearly per step to ``min_lr``); the rest: see the comments on the fields.
    """
    n_genes: int
    n_peaks: int
    dim: int = 128
    ffn: int = 512
    dropout: float = 0.1
    window: int = 1_200_000
    temperature: float = 0.1
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 1e-6
    patience: int = 10            # epochs without a lower validation loss before training stops
    scored_val_cells: int = 1024  # validation cells scored each epoch (loss, model selection)
    min_epoch_samples: int = 6400  # an epoch shows at least this many cells (the package's epoch rule)
    cls_sees_closed: bool = True  # gene CLS query over closed peaks too (the reference); False: open ones + peak CLS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_profile(cls, profile: str, n_genes: int, n_peaks: int, dim: int = 128,
                     **overrides) -> "RegulatoryConfig":
        """``paper``: the reference's 10 epochs, lr 1e-4 -> 1e-6, batch 32 (the reference was limited to 2-4
        cells by its dense mask). ``cpu``: 4 epochs, batch 32, lr 5e-4 -> 5e-6 (fewer steps need a larger rate;
        at 1e-3 one of three SNARE-seq seeds stayed on the collapsed plateau); ``quick``: 3 epochs, batch 32,
        lr 1e-3 -> 1e-5, for tests and CI (a few dozen steps).

        Parameters
        ----------
        profile, n_genes, n_peaks, dim, **overrides
            ``"quick"``, ``"cpu"`` or ``"paper"``; G, P and D; fields to set instead of the profile's.

        Returns
        -------
        :class:`RegulatoryConfig`
        """
        check_profile(profile)
        sizes = {"paper": dict(epochs=10, lr=1e-4, min_lr=1e-6),
                 "cpu": dict(epochs=4, lr=5e-4, min_lr=5e-6),
                 "quick": dict(epochs=3, lr=1e-3, min_lr=1e-5, min_epoch_samples=0)}[profile]
        return cls(**{**dict(n_genes=n_genes, n_peaks=n_peaks, dim=dim), **sizes, **overrides})


# --------------------------------------------------------------------------------------------------- pieces

def segment_softmax(edge_logits: torch.Tensor, edge_segment: torch.Tensor,
                    extra_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax within segments of a flat edge list, each segment also holding a few dense extra logits.

    Parameters
    ----------
    edge_logits
        [N] logits of the edges.
    edge_segment
        [N] segment of each edge, in [0, S).
    extra_logits
        [S, K] logits of K further keys per segment (e.g. the CLS, a pseudo-key); ``-inf`` for an absent one.
        Every segment needs at least one finite logit (an edge or an extra).

    Returns
    -------
    edge_weights [N], extra_weights [S, K]: in each segment they are non-negative and sum to 1.
    """
    edge_logits, extra_logits = edge_logits.float(), extra_logits.float()
    with torch.no_grad():  # a constant shift per segment (it cancels in the softmax), for stability
        shift = extra_logits.amax(dim=1).scatter_reduce(0, edge_segment, edge_logits, reduce="amax")  # [S]
    edge_exp = torch.exp(edge_logits - shift[edge_segment])  # [N]
    extra_exp = torch.exp(extra_logits - shift.unsqueeze(1))  # [S, K]
    denom = extra_exp.sum(dim=1).index_add(0, edge_segment, edge_exp)  # [S]
    return edge_exp / denom[edge_segment], extra_exp / denom.unsqueeze(1)


def sample_hard_negatives(similarity: torch.Tensor, temperature: float,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard negatives for the matching head from a [B, B] RNA x ATAC similarity (cosine) matrix.

    Row i draws an ATAC cell j != i with probability softmax_j(similarity[i, j] / T) (the diagonal gets probability
    exactly 0); column j draws an RNA cell i != j likewise. Returns (atac_for_rna [B], rna_for_atac [B]). Needs B >= 2.
    """
    B = similarity.shape[0]
    if B < 2:
        raise ValueError("hard negatives need at least 2 cells in the batch")
    eye = torch.eye(B, dtype=torch.bool, device=similarity.device)
    logits = (similarity.detach().float() / temperature).masked_fill(eye, -math.inf)
    atac_for_rna = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)  # p_ii = 0
    rna_for_atac = torch.multinomial(torch.softmax(logits.T, dim=1), 1, generator=generator).squeeze(1)
    return atac_for_rna, rna_for_atac


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """[B, D] -> [B, D]: each dimension centred and scaled over the batch (what all cells share removed)."""
    x = x.float()
    return (x - x.mean(0)) / (x.std(0) + 1e-5)


class _Attention(nn.Module):
    """Single-head attention projections (queries from one side, keys/values from the other) and out-projection."""

    def __init__(self, dim: int):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)


class _PeakBatch:
    """A batch's open peak entries and their window edges (index bookkeeping, no model state).

    ``rows``, ``cols`` [N]: cell and peak of each open entry (sorted by cell); ``ptr`` [B + 1]: entries of cell
    b are ``ptr[b]:ptr[b + 1]``; ``edge_entry``, ``edge_id`` [N_oe]: for each open entry its window edges (an
    edge = a row of the candidate-pair table).
    """

    def __init__(self, rows, cols, n_cells: int, peak_ptr, peak_edges):
        self.rows, self.cols, self.n_cells = rows, cols, n_cells
        counts = torch.bincount(rows, minlength=n_cells)
        self.ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # [B + 1]
        start, degree = peak_ptr[cols], peak_ptr[cols + 1] - peak_ptr[cols]  # [N], [N]
        self.edge_entry = torch.repeat_interleave(torch.arange(len(cols), device=cols.device), degree)  # [N_oe]
        first = torch.repeat_interleave(degree.cumsum(0) - degree, degree)
        offset = torch.arange(len(self.edge_entry), device=cols.device) - first
        self.edge_id = peak_edges[start[self.edge_entry] + offset]  # [N_oe]


# --------------------------------------------------------------------------------------------------- model

class RegulatoryAttention(nn.Module):
    """Attune's regulatory layer on frozen teachers (see the module docstring).

    Parameters
    ----------
    config
        :class:`RegulatoryConfig`.
    edge_gene, edge_peak
        [E] gene and peak index of each window pair (the rows of :func:`cisformer.tl.attention.candidate_pairs`).
    rna_teacher, atac_teacher
        Pretrained :class:`cisformer.attune.alignment.TeacherEncoder` (e.g. ``aligner.rna_teacher``); frozen and
        always in eval mode. ``None``: fresh ones (to load a checkpoint into).
    """

    def __init__(self, config: RegulatoryConfig, edge_gene, edge_peak, rna_teacher=None, atac_teacher=None):
        super().__init__()
        self.config = config
        D = config.dim
        self.rna_teacher = rna_teacher if rna_teacher is not None else TeacherEncoder(config.n_genes, D)
        self.atac_teacher = atac_teacher if atac_teacher is not None else TeacherEncoder(config.n_peaks, D)
        for teacher, n in ((self.rna_teacher, config.n_genes), (self.atac_teacher, config.n_peaks)):
            if teacher.feature_embedding.num_embeddings != n or teacher.feature_embedding.embedding_dim != D:
                raise ValueError(f"teacher has {teacher.feature_embedding.num_embeddings} features of width "
                                 f"{teacher.feature_embedding.embedding_dim}; the config expects {n} x {D}")
            teacher.requires_grad_(False)

        self.gene_cls = nn.Parameter(torch.randn(D) * 0.02)
        self.peak_cls = nn.Parameter(torch.randn(D) * 0.02)
        self.ln_rna, self.rna_pool = nn.LayerNorm(D), _Attention(D)    # gene CLS row of the gene self-attention
        self.ln_atac, self.atac_pool = nn.LayerNorm(D), _Attention(D)  # peak CLS row of the peak self-attention
        self.ln_query, self.ln_key, self.cross = nn.LayerNorm(D), nn.LayerNorm(D), _Attention(D)
        self.ln_ffn = nn.LayerNorm(D)
        self.ffn = nn.Sequential(nn.Linear(D, config.ffn), nn.ReLU(), nn.Linear(config.ffn, D))
        self.dropout = nn.Dropout(config.dropout)
        self.match_head = nn.Linear(D, 1)

        edge_gene = torch.as_tensor(np.asarray(edge_gene), dtype=torch.long)
        edge_peak = torch.as_tensor(np.asarray(edge_peak), dtype=torch.long)
        self.register_buffer("edge_gene", edge_gene)  # [E]
        self.register_buffer("edge_peak", edge_peak)  # [E]
        self.register_buffer("window_size", torch.bincount(edge_gene, minlength=config.n_genes))  # [G]
        self.register_buffer("peak_edges", torch.argsort(edge_peak, stable=True))  # [E] edges ordered by peak
        per_peak = torch.bincount(edge_peak, minlength=config.n_peaks)
        self.register_buffer("peak_ptr", torch.cat([per_peak.new_zeros(1), per_peak.cumsum(0)]))  # [P + 1]
        self.gene_names: list[str] = []
        self.peak_names: list[str] = []

    def train(self, mode: bool = True):
        super().train(mode)
        self.rna_teacher.eval()  # frozen: BatchNorm statistics and dropout stay as pretrained
        self.atac_teacher.eval()
        return self

    # ---- tokens and summaries

    @staticmethod
    def _packed_tokens(teacher, x: torch.Tensor):
        """Open entries of x [B, F] and their weighted tokens: rows [N], cols [N], tokens [N, D]: the nonzero rows
        of ``teacher.weighted_tokens(x)`` times F (the pooling weight relative to a uniform one), without building
        the dense [B, F, D] tensor. The factor F matters only for the LayerNorm's epsilon: pooling weights of order
        1 / 25,734 would leave token variances far below it, and every open peak would look like a closed one."""
        rows, cols, tokens, weights, *_ = teacher._softmax_parts(x)
        return rows, cols, (weights * x.shape[1]).to(tokens.dtype).unsqueeze(-1) * tokens

    def _cls_pool(self, cls, ln, attn, k_tokens, entry_row, n_zero):
        """Attention of a CLS token (one per cell) over [CLS; all F tokens of its cell], F - n_zero of them open.

        cls [D]; k_tokens [N, D] open tokens, entry_row [N] their cell; n_zero [B] closed tokens per cell.
        Returns cls + dropout(out-projection of the attention) [B, D]."""
        D, B = cls.shape[0], n_zero.shape[0]
        keys = ln(torch.cat([cls.unsqueeze(0), torch.zeros_like(cls).unsqueeze(0), k_tokens]))  # [2 + N, D]
        q = attn.q(keys[:1])  # [1, D]: the CLS query, the same in every cell
        k, v = attn.k(keys), attn.v(keys)  # [2 + N, D]
        logits = (k @ q.T).squeeze(1) / math.sqrt(D)  # [2 + N]
        extra = torch.stack([logits[0].expand(B),
                             logits[1] + torch.log(n_zero.float())], dim=1)  # [B, 2]: CLS, closed pseudo-key
        w_open, w_extra = segment_softmax(logits[2:], entry_row, extra)
        pooled = w_extra @ v[:2] + torch.zeros(B, D, dtype=v.dtype, device=v.device).index_add(
            0, entry_row, w_open.to(v.dtype).unsqueeze(1) * v[2:])  # [B, D]
        return cls + self.dropout(attn.out(pooled))

    def encode(self, rna_x: torch.Tensor, atac_x: torch.Tensor) -> dict:
        """Tokens and CLS summaries of a batch: rna_x [B, G], atac_x [B, P] dense, unscaled teacher inputs.

        Returns a dict: ``gene_tokens`` [B, G, D] (dense, zero rows for unexpressed genes), ``peaks``
        (:class:`_PeakBatch`), ``peak_tokens`` [N, D], ``rna`` r [B, D], ``atac`` a [B, D]."""
        B, G, P = rna_x.shape[0], self.config.n_genes, self.config.n_peaks
        with torch.no_grad():
            g_rows, g_cols, g_tokens = self._packed_tokens(self.rna_teacher, rna_x)
            p_rows, p_cols, p_tokens = self._packed_tokens(self.atac_teacher, atac_x)
        gene_tokens = g_tokens.new_zeros(B, G, g_tokens.shape[-1])
        gene_tokens[g_rows, g_cols] = g_tokens  # [B, G, D]
        n_open_genes = torch.bincount(g_rows, minlength=B)
        n_open_peaks = torch.bincount(p_rows, minlength=B)
        rna = self._cls_pool(self.gene_cls, self.ln_rna, self.rna_pool, g_tokens, g_rows, G - n_open_genes)
        atac = self._cls_pool(self.peak_cls, self.ln_atac, self.atac_pool, p_tokens, p_rows, P - n_open_peaks)
        peaks = _PeakBatch(p_rows, p_cols, B, self.peak_ptr, self.peak_edges)
        return {"gene_tokens": gene_tokens, "peaks": peaks, "peak_tokens": p_tokens, "rna": rna, "atac": atac}

    def _keys(self, enc: dict) -> dict:
        """Cross-attention keys/values: open peaks k, v [N, D]; closed peaks k0, v0 [D]; peak CLS (the ATAC
        summaries) k_cls, v_cls [B, D]."""
        ln = self.ln_key
        open_ = ln(enc["peak_tokens"])
        zero = ln(enc["atac"].new_zeros(1, self.config.dim))
        cls = ln(enc["atac"])
        a = self.cross
        return {"k": a.k(open_), "v": a.v(open_), "k0": a.k(zero)[0], "v0": a.v(zero)[0],
                "k_cls": a.k(cls), "v_cls": a.v(cls)}

    # ---- cross-attention

    def _cls_closed_logit(self, q_k0: torch.Tensor, n_closed: torch.Tensor) -> torch.Tensor:
        """The gene CLS query's logit for its cell's n_closed identical closed keys, folded into one (exact)."""
        if self.config.cls_sees_closed:
            return q_k0 / math.sqrt(self.config.dim) + torch.log(n_closed.float())
        return torch.full_like(q_k0, -math.inf)  # a weight of 0

    def fused_cls(self, enc: dict, keys: dict, rna_idx: torch.Tensor, atac_idx: torch.Tensor) -> torch.Tensor:
        """Gene-CLS output of the decoder layer for M (RNA cell, ATAC cell) pairs of the batch: [M, D].

        The gene CLS (query r of the RNA cell) attends to the ATAC cell's peak CLS and all its peaks."""
        D, P = self.config.dim, self.config.n_peaks
        peaks = enc["peaks"]
        x = enc["rna"][rna_idx]  # [M, D]
        q = self.cross.q(self.ln_query(x))  # [M, D]
        # open entries of each pair's ATAC cell, concatenated: entry index and pair (segment)
        count = (peaks.ptr[1:] - peaks.ptr[:-1])[atac_idx]  # [M]
        pair = torch.repeat_interleave(torch.arange(len(atac_idx), device=q.device), count)  # [sum count]
        first = torch.repeat_interleave(peaks.ptr[atac_idx] - (count.cumsum(0) - count), count)
        entry = torch.arange(len(pair), device=q.device) + first
        logits = (q[pair] * keys["k"][entry]).sum(-1) / math.sqrt(D)
        extra = torch.stack([(q * keys["k_cls"][atac_idx]).sum(-1) / math.sqrt(D),
                             self._cls_closed_logit(q @ keys["k0"], P - count)], dim=1)  # [M, 2]
        w_open, w_extra = segment_softmax(logits, pair, extra)
        read = (w_extra[:, :1] * keys["v_cls"][atac_idx] + w_extra[:, 1:] * keys["v0"]).to(q.dtype)
        read = read.index_add(0, pair, w_open.to(q.dtype).unsqueeze(1) * keys["v"][entry])  # [M, D]
        z = x + self.dropout(self.cross.out(read))
        return z + self.dropout(self.ffn(self.ln_ffn(z)))

    def gene_attention(self, enc: dict, keys: dict) -> dict:
        """Cross-attention weights of the true pairs (cell b's genes over cell b's peaks), per window edge.

        Returns a dict of tensors: ``to_cls`` [B, G] (gene -> peak CLS), ``closed_each`` [B, G] (gene -> each of
        its closed window peaks), ``open_weight`` [N_oe] (gene -> open peak, for ``peaks.edge_id`` /
        ``peaks.edge_entry``), and of the gene CLS row: ``cls_open`` [N] (-> each open peak), ``cls_closed_each``
        [B] (-> each closed peak), ``cls_to_cls`` [B]."""
        D, G = self.config.dim, self.config.n_genes
        peaks, B = enc["peaks"], enc["peaks"].n_cells
        q = self.cross.q(self.ln_query(enc["gene_tokens"]))  # [B, G, D]
        cell = peaks.rows[peaks.edge_entry]  # [N_oe]
        gene = self.edge_gene[peaks.edge_id]  # [N_oe]
        segment = cell * G + gene
        logits = (q[cell, gene] * keys["k"][peaks.edge_entry]).sum(-1) / math.sqrt(D)  # [N_oe]
        n_closed = self.window_size.unsqueeze(0) - torch.bincount(segment, minlength=B * G).view(B, G)  # [B, G]
        extra = torch.stack([(q * keys["k_cls"].unsqueeze(1)).sum(-1) / math.sqrt(D),
                             q @ keys["k0"] / math.sqrt(D) + torch.log(n_closed.float())], dim=-1)  # [B, G, 2]
        w_open, w_extra = segment_softmax(logits, segment, extra.view(B * G, 2))
        w_extra = w_extra.view(B, G, 2)
        closed_each = torch.where(n_closed > 0, w_extra[..., 1] / n_closed.clamp(min=1), 0.0)
        c_open, c_closed, c_n_closed, c_cls = self.cls_attention(enc, keys)
        return {"to_cls": w_extra[..., 0], "closed_each": closed_each, "open_weight": w_open,
                "cls_open": c_open, "cls_closed_each": c_closed / c_n_closed.clamp(min=1).float(), "cls_to_cls": c_cls}

    def cls_attention(self, enc: dict, keys: dict) -> tuple:
        """The gene CLS row of each cell over its own peaks: weights of each open peak [N], of the closed peaks
        together [B], their number [B], and the weight of the peak CLS [B]."""
        D, peaks = self.config.dim, enc["peaks"]
        q_cls = self.cross.q(self.ln_query(enc["rna"]))  # [B, D]
        cls_logits = (q_cls[peaks.rows] * keys["k"]).sum(-1) / math.sqrt(D)  # [N]
        n_closed = self.config.n_peaks - peaks.ptr.diff()  # [B]
        cls_extra = torch.stack([(q_cls * keys["k_cls"]).sum(-1) / math.sqrt(D),
                                 self._cls_closed_logit(q_cls @ keys["k0"], n_closed)], dim=1)
        c_open, c_extra = segment_softmax(cls_logits, peaks.rows, cls_extra)
        return c_open, c_extra[:, 1], n_closed, c_extra[:, 0]

    # ---- losses

    def forward(self, rna_x: torch.Tensor, atac_x: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """Losses of a batch (B >= 2 paired cells): ``loss`` = ``nt_xent`` + ``matching``, plus
        ``matching_accuracy`` (share of the 3B pairs classified right) and the batch-standardised summaries.

        Parameters
        ----------
        rna_x, atac_x, generator
            Dense [B, G] / [B, P] unscaled teacher inputs; the negatives' random draws (default: torch's).

        Returns
        -------
        dict: ``loss``, ``nt_xent``, ``matching``, ``matching_accuracy``; ``rna``, ``atac`` [B, D], NT-Xent's inputs.
        """
        enc = self.encode(rna_x, atac_x)
        rna_emb, atac_emb = _standardise(enc["rna"]), _standardise(enc["atac"])  # [B, D] each
        contrastive = nt_xent(rna_emb, atac_emb, self.config.temperature)
        with torch.no_grad():
            sim = F.normalize(rna_emb.float(), dim=1) @ F.normalize(atac_emb.float(), dim=1).T  # [B, B]
            atac_neg, rna_neg = sample_hard_negatives(sim, self.config.temperature, generator)
        B = rna_x.shape[0]
        cells = torch.arange(B, device=rna_x.device)
        rna_idx = torch.cat([cells, cells, rna_neg])  # [3B]: true pairs, ATAC negatives, RNA negatives
        atac_idx = torch.cat([cells, atac_neg, cells])
        labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).to(rna_x.device)
        logits = self.match_head(self.fused_cls(enc, self._keys(enc), rna_idx, atac_idx)).squeeze(1).float()
        matching = F.binary_cross_entropy_with_logits(logits, labels)
        accuracy = ((logits > 0).float() == labels).float().mean()
        return {"loss": contrastive + matching, "nt_xent": contrastive, "matching": matching,
                "matching_accuracy": accuracy, "rna": rna_emb, "atac": atac_emb}

    # ---- checkpoints

    def checkpoint_dict(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "state_dict": self.state_dict(),
                "gene_names": self.gene_names, "peak_names": self.peak_names}

    def save(self, path) -> None:
        """Write :meth:`checkpoint_dict` to ``path`` (str or Path), a file that :meth:`load` reads back."""
        torch.save(self.checkpoint_dict(), path)

    @classmethod
    def load(cls, path) -> "RegulatoryAttention":
        """A model written by :meth:`save` or the ``best.pt`` of :func:`fit_regulatory`, in eval mode (CPU).

        Parameters
        ----------
        path
            The file (str or Path); another checkpoint format raises ValueError.

        Returns
        -------
        :class:`RegulatoryAttention`
        """
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: checkpoint format {ckpt.get('format')}, this code reads {CHECKPOINT_FORMAT}")
        state = ckpt["state_dict"]
        model = cls(RegulatoryConfig(**ckpt["config"]), state["edge_gene"], state["edge_peak"])
        model.load_state_dict(state)
        model.gene_names, model.peak_names = ckpt["gene_names"], ckpt["peak_names"]
        return model.eval()


# --------------------------------------------------------------------------------------------------- data

def _window_pairs(rna, atac, window: int) -> pd.DataFrame:
    from ..tl.attention import candidate_pairs

    pairs = candidate_pairs(rna.var, atac.var, window)
    if len(pairs) == 0:
        raise ValueError(f"no gene-peak pair lies within {window} bp: rna.var needs chrom/tss (or start/end/strand) "
                         "and atac.var chrom/start/end")
    return pairs


def _validation_loss(model, inputs, idx: np.ndarray, batch_size: int, seed: int) -> dict:
    """Mean losses over ``idx`` (eval mode, no gradients), hard negatives drawn with a fixed seed so that epochs
    compare; ``val_score`` = -``val_loss`` (the model-selection criterion, higher is better)."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sums, n = {"loss": 0.0, "nt_xent": 0.0, "matching": 0.0, "matching_accuracy": 0.0}, 0
    for rows in _batches(idx, batch_size):
        out = model(rows_tensor(inputs.rna_log, rows, device), rows_tensor(inputs.atac_bin, rows, device), generator)
        for key in sums:
            sums[key] += out[key].item() * len(rows)
        n += len(rows)
    val = {f"val_{key}": value / n for key, value in sums.items()}
    return {**val, "val_score": -val["val_loss"]}


def _batches(idx: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Near-equal batches of at most ``batch_size`` cells (each >= 2 cells when there are >= 2 cells)."""
    return np.array_split(idx, max(1, math.ceil(len(idx) / batch_size)))


# --------------------------------------------------------------------------------------------------- fit

def fit_regulatory(aligner, rna, atac, train_cells, val_cells, *, profile: str = "cpu", seed: int = 0,
                   checkpoint_dir=None, device: str = "auto", epochs: int | None = None, progress: bool = True,
                   **overrides):
    """Train the regulatory layer on the frozen teachers of a pretrained aligner.

    The training loop, checkpoints and resume are :func:`cisformer.attune.alignment.fit_alignment`'s (folder
    ``<checkpoint_dir>/<fingerprint>/`` with ``last.pt``, ``best.pt``, ``history.csv``, ``done.json``, atomic
    writes; a finished run is loaded, an interrupted one resumes from its last epoch). The fingerprint covers the
    config, the seed, the teachers' weights, the data and this module's source.

    Parameters
    ----------
    aligner
        A trained :class:`cisformer.attune.alignment.AttuneAligner` for the vocabularies of ``rna`` and ``atac`` (its
        ``rna_teacher`` and ``atac_teacher`` are copied and frozen; the aligner is not changed).
    rna, atac
        Paired AnnData (same cells, same order), raw counts; ``rna.var`` with gene coordinates (chrom and tss,
        or start/end/strand), ``atac.var`` with chrom/start/end: they define the window pairs.
    train_cells, val_cells
        Cells to train on and to select the epoch on (lowest validation loss): names, positions or masks.
    profile
        ``"quick"``, ``"cpu"`` or ``"paper"`` (:meth:`RegulatoryConfig.from_profile`).
    seed
        Seeds the new weights, the batch order, dropout and the negative draws.
    checkpoint_dir
        Folder of runs; ``None`` keeps nothing on disk.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (mixed precision on CUDA only).
    epochs
        Number of epochs (default: the profile's; the length of the learning-rate schedule).
    **overrides
        Any :class:`RegulatoryConfig` field, e.g. ``batch_size=64``.

    Returns
    -------
    model
        The best-validation :class:`RegulatoryAttention` in eval mode, carrying ``gene_names``, ``peak_names``.
    history
        One row per epoch: ``epoch, train_loss, val_loss, val_nt_xent, val_matching, val_matching_accuracy,
        val_score`` (= -val_loss), ``lr``, ``seconds`` (wall-clock of the epoch, validation included).
    """
    import copy

    from ..runs import finished_run, run_folder
    from ..train import check_pair, split_indices
    from .alignment import attune_inputs, run_fingerprint
    from .training import training_loop

    check_pair(rna, atac)
    train_idx, val_idx = split_indices(rna, train_cells, val_cells, min_cells=2)
    fields = {f.name for f in dataclasses.fields(RegulatoryConfig)} - {"n_genes", "n_peaks", "dim"}
    if set(overrides) - fields:
        raise TypeError(f"unknown override(s) {sorted(set(overrides) - fields)}; allowed: {sorted(fields)}")
    if epochs is not None:
        overrides["epochs"] = int(epochs)
    dim = aligner.rna_teacher.feature_embedding.embedding_dim
    config = RegulatoryConfig.from_profile(profile, rna.n_vars, atac.n_vars, dim, **overrides)
    pairs = _window_pairs(rna, atac, config.window)
    inputs = attune_inputs(rna, atac, train_idx)  # the teachers carry their own value scale: only X is read
    scored_val = scored_validation_cells(val_idx, config.scored_val_cells, seed)
    teachers = [copy.deepcopy(aligner.rna_teacher).cpu(), copy.deepcopy(aligner.atac_teacher).cpu()]

    rows = np.concatenate([train_idx, val_idx])
    teacher_arrays = [v.detach().numpy() for t in teachers for v in t.state_dict().values()]
    run_dir = run_folder(checkpoint_dir, run_fingerprint(
        ["regulatory", Fingerprint().code(["attune/regulatory.py"]).hexdigest(), CHECKPOINT_FORMAT,
         config.to_dict(), seed, list(map(str, rna.var_names)), list(map(str, atac.var_names)),
         list(map(str, rna.obs_names[train_idx])), list(map(str, rna.obs_names[val_idx]))],
        [inputs.rna_log[rows], inputs.atac_bin[rows], *teacher_arrays]))
    done = finished_run(run_dir, RegulatoryAttention.load)
    if done is not None:
        return done

    torch.manual_seed(seed)
    model = RegulatoryAttention(config, pairs["gene_idx"].to_numpy(), pairs["cre_idx"].to_numpy(), *teachers)
    model.gene_names, model.peak_names = list(map(str, rna.var_names)), list(map(str, atac.var_names))

    def batch_loss(m, rows_, device_):  # negatives from the global torch RNG (seeded, restored on resume)
        return m(rows_tensor(inputs.rna_log, rows_, device_), rows_tensor(inputs.atac_bin, rows_, device_))["loss"]

    def validate(m):
        return _validation_loss(m, inputs, scored_val, config.batch_size, seed + 1)

    return training_loop(model, batch_loss, validate, train_idx, epochs=config.epochs, batch_size=config.batch_size,
                         lr=config.lr, lr_end=config.min_lr, patience=config.patience, seed=seed, run_dir=run_dir,
                         device=device, progress=progress, desc="attune regulatory",
                         min_epoch_samples=config.min_epoch_samples)


# --------------------------------------------------------------------------------------------------- scores

@torch.no_grad()
def matching_auroc(model: RegulatoryAttention, rna, atac, cells, *, batch_size: int = 64, seed: int = 0,
                   device: str = "cpu") -> dict:
    """How well the matching head tells a cell's true (RNA, ATAC) pair from mismatched ones, on ``cells``.

    In batches of ``batch_size`` cells (summaries standardised per batch, as in training), each cell's true pair
    is scored against two negatives of each kind: its RNA with another cell's ATAC and its ATAC with another
    cell's RNA, the other cell drawn **uniformly** from the batch, or drawn as in training (**hard**:
    :func:`sample_hard_negatives`, mostly the same cell type). AUROC does not depend on the 1 : 2 class balance,
    where the accuracy at logit 0 stays at the base rate whatever the head learns.

    Parameters
    ----------
    model
        A trained :class:`RegulatoryAttention`.
    rna, atac
        Paired AnnData with the model's vocabularies (raw counts).
    cells, batch_size
        The cells to score (e.g. the validation cells; names, positions or a mask), and cells per batch (default 64).
    seed, device
        Seed of the negatives' draws (default 0) and the torch device (default ``"cpu"``).

    Returns
    -------
    dict of floats: the AUROC of the head's logit, true pairs vs negatives, for both kinds (``"uniform"``,
    ``"hard"``) and, on the hard pairs, that of the cosine of the two summaries (``"hard_cosine"``: what the
    summaries alone tell apart), and the gene CLS query's mean attention on the true pairs to the peak CLS
    (``"cls_to_peak_cls"``) and to the closed peaks together (``"cls_to_closed"``; the rest goes to open peaks).
    """
    from sklearn.metrics import roc_auc_score

    from .alignment import attune_inputs

    rows = cell_indices(rna, cells, "cells")
    if len(rows) < 2:
        raise ValueError("matching_auroc needs at least 2 cells")
    inputs = attune_inputs(rna[rows], atac[rows], np.arange(len(rows)))
    model = model.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    found, shares = {"uniform": ([], []), "hard": ([], []), "hard_cosine": ([], [])}, []
    for batch in _batches(np.arange(len(rows)), batch_size):
        enc = model.encode(rows_tensor(inputs.rna_log, batch, device), rows_tensor(inputs.atac_bin, batch, device))
        keys = model._keys(enc)
        _, to_closed, _, to_cls = model.cls_attention(enc, keys)
        shares.append(torch.stack([to_cls, to_closed], 1))
        rna_emb, atac_emb = _standardise(enc["rna"]), _standardise(enc["atac"])
        sim = F.normalize(rna_emb.float(), dim=1) @ F.normalize(atac_emb.float(), dim=1).T  # [B, B]
        B = len(batch)
        cell = torch.arange(B, device=sim.device)
        uniform = [(cell + torch.randint(1, B, (B,), generator=generator, device=sim.device)) % B for _ in range(2)]
        for kind, (atac_neg, rna_neg) in (("uniform", uniform),
                                          ("hard", sample_hard_negatives(sim, model.config.temperature, generator))):
            rna_idx, atac_idx = torch.cat([cell, cell, rna_neg]), torch.cat([cell, atac_neg, cell])
            logits = model.match_head(model.fused_cls(enc, keys, rna_idx, atac_idx)).squeeze(1).float()
            found[kind][0].append(logits.cpu().numpy())
            found[kind][1].append(np.r_[np.ones(B), np.zeros(2 * B)])
            if kind == "hard":
                found["hard_cosine"][0].append(sim[rna_idx, atac_idx].cpu().numpy())
                found["hard_cosine"][1].append(found[kind][1][-1])
    aurocs = {kind: float(roc_auc_score(np.concatenate(y), np.concatenate(s))) for kind, (s, y) in found.items()}
    return aurocs | dict(zip(("cls_to_peak_cls", "cls_to_closed"), torch.cat(shares).mean(0).tolist()))


@torch.no_grad()
def interaction_scores(model: RegulatoryAttention, rna, atac, *, cells=None, groupby: str | None = None,
                       batch_size: int = 64, device: str = "cpu") -> pd.DataFrame:
    """Gene-peak interaction scores of every window pair, summed over cells.

    Parameters
    ----------
    model
        A trained :class:`RegulatoryAttention`.
    rna, atac
        Paired AnnData with the model's vocabularies (raw counts).
    cells
        Cells to sum over (names, positions or a mask; default all).
    groupby
        Optional ``rna.obs`` column (e.g. ``"cell_type"``): the sums per group are added as columns.
    batch_size, device
        Cells per forward pass and the torch device.

    Returns
    -------
    DataFrame, one row per window pair (:func:`cisformer.tl.attention.candidate_pairs` order): ``gene, cre,
    gene_idx, cre_idx, distance``, ``attune`` (sum over cells of attention(g -> peak CLS) x attention(gene CLS ->
    p), the reference's score) and ``attention`` (sum over cells of the direct attention weight of g to p; a
    closed peak gets its share of the closed peaks' softmax mass); with ``groupby``, wide columns
    ``attune:<group>`` and ``attention:<group>`` (sums over that group's cells; the plain columns are their sum).
    ``attrs["n_cells"]``: cells summed per group (``{"all": n}`` without ``groupby``).
    """
    from .alignment import attune_inputs

    if list(rna.var_names) != model.gene_names or list(atac.var_names) != model.peak_names:
        raise ValueError("rna / atac features differ from the model's vocabulary (gene_names / peak_names)")
    rows = np.arange(rna.n_obs) if cells is None else cell_indices(rna, cells, "cells")
    pairs = _window_pairs(rna, atac, model.config.window)
    if not (np.array_equal(pairs["gene_idx"], model.edge_gene.cpu().numpy())
            and np.array_equal(pairs["cre_idx"], model.edge_peak.cpu().numpy())):
        raise ValueError("the window pairs of rna.var / atac.var differ from the model's")
    if groupby is None:
        labels = pd.Categorical(np.full(len(rows), "all"))
    else:
        labels = pd.Categorical(rna.obs[groupby].to_numpy()[rows])
    codes = torch.as_tensor(labels.codes.astype(np.int64))
    n_groups, E, G = len(labels.categories), len(pairs), model.config.n_genes
    inputs = attune_inputs(rna[rows], atac[rows], np.arange(len(rows)))
    model = model.to(device).eval()

    # per group: sum over cells of the closed-peak part (per gene, spread to its edges at the end) and of the
    # open-peak corrections (per edge)
    closed_attention = torch.zeros(n_groups, G, dtype=torch.float64)
    closed_attune = torch.zeros(n_groups, G, dtype=torch.float64)
    open_attention = torch.zeros(n_groups * E, dtype=torch.float64)
    open_attune = torch.zeros(n_groups * E, dtype=torch.float64)
    for batch in _batches(np.arange(len(rows)), batch_size):
        enc = model.encode(rows_tensor(inputs.rna_log, batch, device), rows_tensor(inputs.atac_bin, batch, device))
        w = {k: v.double().cpu() for k, v in model.gene_attention(enc, model._keys(enc)).items()}
        peaks = enc["peaks"]
        group = codes[batch]  # [B]
        cell = peaks.rows[peaks.edge_entry].cpu()  # [N_oe]
        edge = peaks.edge_id.cpu()
        gene = model.edge_gene[peaks.edge_id].cpu()
        slot = group[cell] * E + edge
        closed_attention.index_add_(0, group, w["closed_each"])
        open_attention.index_add_(0, slot, w["open_weight"] - w["closed_each"][cell, gene])
        cls_closed = w["cls_closed_each"]  # [B]
        closed_attune.index_add_(0, group, w["to_cls"] * cls_closed.unsqueeze(1))
        open_attune.index_add_(0, slot, w["to_cls"][cell, gene]
                               * (w["cls_open"][peaks.edge_entry.cpu()] - cls_closed[cell]))
    edge_gene = model.edge_gene.cpu()
    attention = (closed_attention[:, edge_gene] + open_attention.view(n_groups, E)).numpy()  # [groups, E]
    attune = (closed_attune[:, edge_gene] + open_attune.view(n_groups, E)).numpy()
    out = pairs[["gene", "cre", "gene_idx", "cre_idx", "distance"]].copy()
    out["attune"], out["attention"] = attune.sum(0), attention.sum(0)
    if groupby is not None:
        for i, name in enumerate(labels.categories):
            out[f"attune:{name}"], out[f"attention:{name}"] = attune[i], attention[i]
    out.attrs["n_cells"] = {str(name): int((labels.codes == i).sum()) for i, name in enumerate(labels.categories)}
    return out
