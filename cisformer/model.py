"""The Cisformer model: cross-attention from one modality's tokens (queries) to the other's (keys).

Two directions share every module:

* ``rna2atac``: queries = CREs, keys = the cell's expressed genes (gene token + value embedding).
  One logit per CRE -> sigmoid -> P(open). Loss: binary cross-entropy.
* ``atac2rna``: queries = genes, keys = the cell's open CREs.
  ``n_bins`` logits per gene -> softmax over bins of log1p(counts per 10,000); the prediction is the expected
  value over the bins. Loss: categorical cross-entropy (``arch="cisformer"``: plus the expected value's squared
  error).

Two architectures (``CisformerConfig.arch``):

``"cisformer"`` (the default, this package's model). The prediction for output feature ``j`` (a CRE, or a gene's
bins) of cell ``i`` is a sum of four terms::

    logit_ij = prior_j + <h(z_i), u_j> + b_j + readout_j(attention of query j over cell i's key tokens) (+ depth_i)

``prior_j`` is the training base rate, ``z_i`` a cell state from the cell's whole input profile read for every
output feature by one matrix product, the readout the attention path's (what :mod:`cisformer.tl.attention`
reads), ``depth_i`` the cell's log number of open CREs (rna2atac). ``"paper"``: the paper's model (CREs as
base-10 digits, pre-LN transformer decoder layers, balanced draws of open and closed CREs). What each term is
for, why, and how keys, padding and prediction work: ``docs/model.md``.

Shapes: B = cells in the batch, Lq = query tokens, Lk = key tokens, D = model dim, H = heads, Dh = head dim,
R = cell-state width (``rank``), N_in = input features (genes or CREs), N_out = output features.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .profiles import check_profile

try:  # optional GPU extra: flash-attn's variable-length kernel (packed keys, no padding work at all)
    from flash_attn import flash_attn_varlen_func
except Exception:  # ImportError, or a broken CUDA build: fall back to scaled_dot_product_attention
    flash_attn_varlen_func = None

DIRECTIONS = ("rna2atac", "atac2rna")
ARCHS = ("cisformer", "paper")
CHECKPOINT_FORMAT = 4  # bumped when the state dict or the training targets change: older cached runs are not reused


@dataclass
class CisformerConfig:
    """Architecture and token budget of one Cisformer model.

    ``gene_len`` / ``cre_len`` are the sampler's token budgets per cell (L_g, L_p): for rna2atac ``gene_len``
    expressed genes are keys and ``cre_len`` CREs (open ones, up to half, and closed ones) are queries; for
    atac2rna ``cre_len`` open CREs are keys and ``gene_len`` genes drawn uniformly are queries.
    ``rank``, ``hidden``, ``input_dropout`` and ``decoder_width`` size the cell encoder and its readout of
    ``arch="cisformer"``; ``cis_window`` (atac2rna, 0 = no window) restricts its attention path to each gene's cis CREs;
    ``n_digits`` and ``ff_mult`` belong to ``arch="paper"``.
    """
    direction: str
    n_genes: int
    n_cres: int
    arch: str = "cisformer"
    dim: int = 210
    n_layers: int = 6
    n_heads: int = 6
    head_dim: int = 128
    ff_mult: int = 4
    dropout: float = 0.1
    n_digits: int = 7           # paper: CRE index written with this many base-10 digits
    max_value: int = 64         # rna2atac: expression counts are floored and capped at this value (key tokens)
    n_bins: int = 8             # atac2rna: expression classes (bin 0 = zero)
    gene_len: int = 2048
    cre_len: int = 2048
    rank: int = 64              # cisformer: width of the cell state z
    decoder_width: int = 256    # cisformer: width of the nonlinear cell features h(z) read for every output feature
    hidden: int = 256           # cisformer: width of the cell encoder's MLP
    input_dropout: float = 0.2  # cisformer: share of the encoder's input features dropped while training
    cis_window: int = 0         # cisformer atac2rna: genes attend only to CREs within this many bp of their TSS

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if min(self.n_genes, self.n_cres) < 1:
            raise ValueError("n_genes and n_cres must be positive")
        if self.arch == "paper":
            if self.dim % self.n_digits:
                raise ValueError(f"dim ({self.dim}) must be divisible by n_digits ({self.n_digits}): the digit "
                                 "embeddings are concatenated")
            if self.n_cres > 10 ** self.n_digits:
                raise ValueError(f"n_cres ({self.n_cres}) needs more than n_digits={self.n_digits} digits")

    @classmethod
    def from_profile(cls, direction: str, profile: str, n_genes: int, n_cres: int, arch: str = "cisformer",
                     **overrides) -> "CisformerConfig":
        """Sizes for a profile: ``paper`` (GPU), ``cpu`` (minutes on 2 cores) or ``quick`` (tests, CI).

        ``arch="paper"``, profile ``paper``: the paper's sizes, rna2atac 6 layers, dim 210, 6 heads (head dim 128), 2048
        genes / 2048 CREs; atac2rna 4 layers, dim 280, 7 heads (head dim 140), 10,000 CREs in, 3,000 genes out. ``cpu``
        and ``quick`` keep the code and shrink depth, width and token budgets; their ``n_digits`` is the fewest digits
        that index ``n_cres`` and ``dim`` the multiple of ``n_digits`` nearest the target width:

        =========  =======  ========  ======  ================  ==========  ==========  ====  ======
        arch       profile  dir.      layers  dim x heads x hd  gene_len    cre_len     rank  hidden
        =========  =======  ========  ======  ================  ==========  ==========  ====  ======
        paper      cpu      rna2atac  2       64 x 4 x 16       256 keys    256 queries
        paper      cpu      atac2rna  2       64 x 4 x 16       256 queries 1024 keys
        paper      quick    both      2       48 x 2 x 16       128         128 (512)
        cisformer  paper    rna2atac  1       128 x 8 x 16      2048 keys   4096 queries 128  1024
        cisformer  paper    atac2rna  1       128 x 8 x 16      3000        10,000 keys  128  1024
        cisformer  cpu      rna2atac  1       32 x 2 x 16       256 keys    128 queries  32   256
        cisformer  cpu      atac2rna  1       32 x 2 x 16       128         1024 keys    64   256
        cisformer  quick    both      1       32 x 2 x 16       128         256 / 512    32   128
        =========  =======  ========  ======  ================  ==========  ==========  ====  ======

        ``arch="cisformer"`` reads the cell state through nonlinear features of width 256 (64 in quick), has no
        dropout in rna2atac (0.1, input 0.5 in atac2rna) and a 250 kb cis window in atac2rna.

        Parameters
        ----------
        direction, profile, n_genes, n_cres, arch, **overrides
            ``"rna2atac"`` or ``"atac2rna"``; the profile; vocabulary sizes; the architecture; fields to set.

        Returns
        -------
        :class:`CisformerConfig`
        """
        check_profile(profile)
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        if arch == "cisformer":
            dim, layers, heads, head_dim, glen, clen, rank, hidden = {
                ("paper", "rna2atac"): (128, 1, 8, 16, 2048, 4096, 128, 1024),
                ("paper", "atac2rna"): (128, 1, 8, 16, 3000, 10_000, 128, 1024),
                ("cpu", "rna2atac"): (32, 1, 2, 16, 256, 128, 32, 256),
                ("cpu", "atac2rna"): (32, 1, 2, 16, 128, 1024, 64, 256),
                ("quick", "rna2atac"): (32, 1, 2, 16, 128, 256, 32, 128),
                ("quick", "atac2rna"): (32, 1, 2, 16, 128, 512, 32, 128),
            }[(profile, direction)]
            # rna2atac: no dropout (measured on SNARE-seq: higher AUROC gain, probe and AMI than 0.1 / 0.2);
            # atac2rna: half the open CREs dropped (held-out gene-wise Pearson 0.185 -> 0.186, and no plateau at 15
            # epochs; notebook 02's SNARE-seq random split, seed 0)
            drop, input_drop = (0.0, 0.0) if direction == "rna2atac" else (0.1, 0.5)
            sizes = dict(dim=dim, n_layers=layers, n_heads=heads, head_dim=head_dim, gene_len=glen, cre_len=clen,
                         rank=rank, hidden=hidden, decoder_width=64 if profile == "quick" else 256, dropout=drop,
                         input_dropout=input_drop, cis_window=250_000 if direction == "atac2rna" else 0)
        elif profile == "paper":
            if direction == "rna2atac":
                sizes = dict(dim=210, n_layers=6, n_heads=6, head_dim=128, gene_len=2048, cre_len=2048)
            else:
                sizes = dict(dim=280, n_layers=4, n_heads=7, head_dim=140, gene_len=3000, cre_len=10_000)
            sizes["n_digits"] = 7
        else:
            n_digits = max(1, len(str(max(n_cres - 1, 0))))
            target_dim, layers, heads, head_dim, glen, clen = {
                ("cpu", "rna2atac"): (64, 2, 4, 16, 256, 256),
                ("cpu", "atac2rna"): (64, 2, 4, 16, 256, 1024),
                ("quick", "rna2atac"): (48, 2, 2, 16, 128, 128),
                ("quick", "atac2rna"): (48, 2, 2, 16, 128, 512),
            }[(profile, direction)]
            dim = n_digits * max(1, round(target_dim / n_digits))
            sizes = dict(dim=dim, n_layers=layers, n_heads=heads, head_dim=head_dim, gene_len=glen, cre_len=clen,
                         n_digits=n_digits, dropout=0.1 if profile == "cpu" else 0.0)
        sizes.update(overrides)
        return cls(direction=direction, n_genes=n_genes, n_cres=n_cres, arch=arch, **sizes)

    @property
    def n_out(self) -> int:
        """Output features: CREs (rna2atac) or genes (atac2rna)."""
        return self.n_cres if self.direction == "rna2atac" else self.n_genes

    @property
    def out_width(self) -> int:
        """Logits per output feature: 1 (P(open)) or ``n_bins``."""
        return 1 if self.direction == "rna2atac" else self.n_bins

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------- embeddings

def cre_digits(cre_idx: torch.Tensor, n_digits: int) -> torch.Tensor:
    """CRE indices (...,) -> their base-10 digits (..., n_digits), most significant first."""
    powers = 10 ** torch.arange(n_digits - 1, -1, -1, device=cre_idx.device)
    return (cre_idx.unsqueeze(-1) // powers) % 10


class DigitEncoding(nn.Module):
    """Peak digit index encoding: one embedding table of the 10 digits, shared by all digit positions; the
    digit embeddings (D / n_digits each) are concatenated, so CRE 12345 -> [e1 | e2 | e3 | e4 | e5]."""

    def __init__(self, dim: int, n_digits: int):
        super().__init__()
        self.n_digits = n_digits
        self.digit_emb = nn.Embedding(10, dim // n_digits)

    def forward(self, cre_idx: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, D)
        digits = cre_digits(cre_idx, self.n_digits)  # (B, L, n_digits)
        return self.digit_emb(digits).flatten(-2)


# --------------------------------------------------------------------------------------------------- attention

def _flash_attention(q, k, v, key_pad):
    """flash-attn varlen on CUDA: keys packed without their padding. q (B,H,Lq,Dh), k/v (B,H,Lk,Dh)."""
    B, H, Lq, Dh = q.shape
    keep = ~key_pad  # (B, Lk)
    n_keys = keep.sum(1, dtype=torch.int32)
    cu_k = F.pad(n_keys.cumsum(0, dtype=torch.int32), (1, 0))
    cu_q = torch.arange(0, (B + 1) * Lq, Lq, dtype=torch.int32, device=q.device)
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    q_packed = q.transpose(1, 2).reshape(B * Lq, H, Dh).to(dtype)
    k_packed = k.transpose(1, 2)[keep].to(dtype)  # (total_keys, H, Dh)
    v_packed = v.transpose(1, 2)[keep].to(dtype)
    out = flash_attn_varlen_func(q_packed, k_packed, v_packed, cu_q, cu_k, Lq, int(n_keys.max()))
    return out.reshape(B, Lq, H, Dh).transpose(1, 2).to(q.dtype)


class CrossAttention(nn.Module):
    """Multi-head cross-attention with a key-padding mask."""

    def __init__(self, cfg: CisformerConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        inner = cfg.n_heads * cfg.head_dim
        self.to_q = nn.Linear(cfg.dim, inner)
        self.to_k = nn.Linear(cfg.dim, inner)
        self.to_v = nn.Linear(cfg.dim, inner)
        self.to_out = nn.Linear(inner, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def _heads(self, x):  # (B, L, H*Dh) -> (B, H, L, Dh)
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)

    def project_keys(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """keys (B, Lk, D) -> k, v (B, H, Lk, Dh); depends on the keys only, so reusable across query chunks."""
        return self._heads(self.to_k(keys)), self._heads(self.to_v(keys))

    def forward(self, x, k, v, key_pad, return_attention=False, allowed=None):
        """x (B, Lq, D) queries; k, v (B, H, Lk, Dh); key_pad (B, Lk) True = padding; ``allowed`` (B, Lq, Lk)
        optional: which keys each query may attend to (a query with no allowed key attends nowhere, output 0).

        Returns the output (B, Lq, D) and, with ``return_attention``, the head-averaged weights (B, Lq, Lk).
        """
        B, Lq, _ = x.shape
        if k.shape[0] == 1 and B > 1:  # one cell's keys shared by a batch of query chunks
            k, v, key_pad = k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1), key_pad.expand(B, -1)
        q = self._heads(self.to_q(x))  # (B, H, Lq, Dh)
        mask = ~key_pad[:, None, :] if allowed is None else allowed & ~key_pad[:, None, :]  # (B, 1 or Lq, Lk)
        nowhere = ~mask.any(-1)  # queries without a single key: attend nowhere, output 0
        if nowhere.any():
            mask = mask | nowhere[..., None]  # any key, then the output is zeroed (avoids an all -inf row)
        attn = None
        if return_attention:  # explicit softmax: the returned weights are exactly the ones applied
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, Lq, Lk)
            weights = scores.float().masked_fill(~mask[:, None], float("-inf")).softmax(-1)
            weights = weights.masked_fill(nowhere[:, None, :, None], 0.0)
            out = weights.to(v.dtype) @ v
            attn = weights.mean(1)  # (B, Lq, Lk)
        elif flash_attn_varlen_func is not None and q.is_cuda and allowed is None and not nowhere.any():
            out = _flash_attention(q, k, v, key_pad)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        if nowhere.any():
            out = out.masked_fill(nowhere[:, None, :, None], 0.0)
        out = out.transpose(1, 2).flatten(-2)  # (B, Lq, H*Dh)
        return self.dropout(self.to_out(out)), attn


class FeedForward(nn.Module):
    def __init__(self, cfg: CisformerConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.dim, cfg.ff_mult * cfg.dim), nn.ReLU(),
                                 nn.Linear(cfg.ff_mult * cfg.dim, cfg.dim), nn.Dropout(cfg.dropout))

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """Cross-attention block: residual + LayerNorm around MHA, then (paper) around a ReLU FFN."""

    def __init__(self, cfg: CisformerConfig, feed_forward: bool = True):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.dim)
        self.attn = CrossAttention(cfg)
        if feed_forward:
            self.ln_ff = nn.LayerNorm(cfg.dim)
            self.ff = FeedForward(cfg)
        self.feed_forward = feed_forward

    def forward(self, x, k, v, key_pad, return_attention=False, allowed=None):
        a, attn = self.attn(self.ln_attn(x), k, v, key_pad, return_attention, allowed)
        x = x + a
        if self.feed_forward:
            x = x + self.ff(self.ln_ff(x))
        return x, attn


# --------------------------------------------------------------------------------------------------- cell state

class CellEncoder(nn.Module):
    """Cell state ``z`` (B, R) from the cell's whole input profile, and a reconstruction of that profile.

    rna2atac: the input is the cell's log1p(counts per 10,000) of every gene, standardised with the training
    cells' mean and sd (buffers ``input_mean`` / ``input_std``, set by :func:`cisformer.train.fit`).
    atac2rna: the input is the cell's standardised open state of every CRE and its standardised log number of
    open CREs (the depth), read as a sum of learned embeddings over the open-CRE tokens weighted by
    ``cre_weight`` (:meth:`set_input_scale`), i.e. a linear layer over all CREs computed from the open ones only.
    A mean of the open CREs' embeddings, the earlier input, dropped the depth and weighed a CRE open in half the
    cells like one open in a single cell type (measured on notebook 02's SNARE-seq random split, seed 0: held-out
    gene-wise Pearson 0.089 -> 0.176, 0.185 with the squared error of :meth:`Cisformer.loss`).
    Input features are dropped at random in training (``input_dropout``), then an MLP gives ``z``. The
    reconstruction is an auxiliary loss: it keeps the cell's identity in ``z`` where the sparse targets alone would
    not. rna2atac reconstructs the cell's expression profile as a multinomial (cross-entropy of the softmax over
    genes against each gene's share of the cell's counts per 10,000, the count likelihood of scVI / BABEL without
    the library size), so genes weigh by their expression; an MSE on the standardised expression weighed every gene
    alike, and at SNARE-seq depth (~100 genes detected per cell) the standardised values of rare genes are mostly
    sampling noise (measured on notebook 01's random split, 3 seeds: AUROC gain over the floor 0.030 -> 0.032, AMI
    0.453 -> 0.495). atac2rna reconstructs every CRE's open state (BCE).
    """

    def __init__(self, cfg: CisformerConfig):
        super().__init__()
        self.direction = cfg.direction
        if cfg.direction == "rna2atac":
            self.register_buffer("input_mean", torch.zeros(cfg.n_genes))
            self.register_buffer("input_std", torch.ones(cfg.n_genes))
            self.input = nn.Linear(cfg.n_genes, cfg.hidden)
            self.reconstruct = nn.Sequential(nn.Linear(cfg.rank, cfg.hidden), nn.ReLU(),
                                             nn.Linear(cfg.hidden, cfg.n_genes))
        else:
            self.register_buffer("cre_weight", torch.ones(cfg.n_cres))  # 1 / (RMS x sd) of each CRE's open state
            self.register_buffer("depth_mean", torch.zeros(()))         # log open CREs over the training cells
            self.register_buffer("depth_std", torch.ones(()))
            self.input = nn.Embedding(cfg.n_cres, cfg.hidden)
            self.depth_input = nn.Linear(1, cfg.hidden)
            self.reconstruct = nn.Linear(cfg.rank, cfg.n_cres)
        self.input_dropout = cfg.input_dropout
        self.mlp = nn.Sequential(nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.rank))

    @torch.no_grad()
    def set_input_scale(self, open_share, log_open) -> None:
        """atac2rna: per-CRE input weights and the depth scale from the training cells (``open_share``: the share of
        them in which each CRE is open; ``log_open``: their log number of open CREs). A CRE open in a share p of cells
        weighs 1 / sqrt(p (1 - p + 0.01)): its open state scaled to unit root-mean-square (Attune's value scale), then
        divided by its standard deviation, so rare CREs, which tell cell types apart, are not drowned by common ones (a
        mean over the open CREs' embeddings weighed them alike and dropped the depth)."""
        p = np.asarray(open_share, dtype=np.float64).ravel()
        weight = np.where(p > 0, 1.0 / np.sqrt(np.maximum(p, 1e-12) * (1.0 - p + 0.01)), 0.0)
        self.cre_weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        log_open = np.asarray(log_open, dtype=np.float64)
        self.depth_mean.fill_(float(log_open.mean()))
        self.depth_std.fill_(float(max(log_open.std(), 1e-3)))

    def standardized(self, expr: torch.Tensor) -> torch.Tensor:
        return (expr - self.input_mean) / self.input_std

    def forward(self, batch: dict) -> torch.Tensor:
        if self.direction == "rna2atac":
            x = F.dropout(self.standardized(batch["expr"]), self.input_dropout, self.training)
            h = self.input(x)  # (B, hidden)
        else:
            keep = (~batch["cre_pad"]).float()  # (B, Lk)
            n_keys = keep.sum(1).clamp(min=1)
            # log number of open CREs: the sampler's (a cell with more open CREs than key tokens: the drawn keys
            # stand for all of them), else the keys' own (batches built by hand, e.g. in-silico deletion)
            log_open = batch["log_open"] if "log_open" in batch else n_keys.log()
            keep = keep * (log_open.exp() / n_keys).clamp(min=1).unsqueeze(-1)
            keep = F.dropout(keep, self.input_dropout, self.training)
            w = keep * self.cre_weight[batch["cre_idx"]]  # standardised open state, up to a constant per feature
            depth = ((log_open - self.depth_mean) / self.depth_std).unsqueeze(-1)  # (B, 1)
            h = (self.input(batch["cre_idx"]) * w.unsqueeze(-1)).sum(1) + self.depth_input(depth)  # (B, hidden)
        return self.mlp(h)  # (B, R)

    def reconstruction_loss(self, z: torch.Tensor, batch: dict) -> torch.Tensor:
        if self.direction == "rna2atac":
            share = torch.expm1(batch["expr"])                              # counts per 10,000 (B, n_genes)
            share = share / share.sum(1, keepdim=True).clamp(min=1e-8)
            return -(share * F.log_softmax(self.reconstruct(z), -1)).sum(1).mean()
        return F.binary_cross_entropy_with_logits(self.reconstruct(z), batch["open_all"])


class AttentionPath(nn.Module):
    """Output features attend to the cell's key tokens: a free query embedding per output feature, ``n_layers``
    cross-attention layers (no FFN: what a query gathers is the attention-weighted sum of the cell's key values),
    and a per-feature readout (zero at initialisation, so the path starts silent)."""

    def __init__(self, cfg: CisformerConfig):
        super().__init__()
        self.out_width = cfg.out_width
        self.query_emb = nn.Embedding(cfg.n_out, cfg.dim)
        self.blocks = nn.ModuleList([Block(cfg, feed_forward=False) for _ in range(cfg.n_layers)])
        self.ln_out = nn.LayerNorm(cfg.dim)
        self.readout = nn.Embedding(cfg.n_out, cfg.dim * cfg.out_width)
        nn.init.zeros_(self.readout.weight)

    def forward(self, query_idx, kv, key_pad, return_attention=False, allowed=None):
        """query_idx (B, Lq) -> logits (B, Lq, out_width) and the per-layer attention (B, Lq, Lk) or None;
        ``allowed`` (B, Lq, Lk): the keys each query may attend to (the cis window), or None for all."""
        x = self.query_emb(query_idx)
        attns = []
        for blk, (k, v) in zip(self.blocks, kv):
            x, attn = blk(x, k, v, key_pad, return_attention, allowed)
            attns.append(attn)
        h = self.ln_out(x).unsqueeze(-2)  # (B, Lq, 1, D)
        readout = self.readout(query_idx).unflatten(-1, (self.out_width, -1))  # (B, Lq, out_width, D)
        return (h * readout).sum(-1), attns


# --------------------------------------------------------------------------------------------------- model

@dataclass
class Keys:
    """What :meth:`Cisformer.encode_keys` computes once per batch of cells."""
    kv: list                            # n_layers x (k, v), each (B, H, Lk, Dh)
    pad: torch.Tensor                   # (B, Lk) True = padding
    tokens: torch.Tensor | None = None  # (B, Lk) vocabulary indices of the key tokens
    state: torch.Tensor | None = None       # cisformer: cell state z (B, R)
    factorised: torch.Tensor | None = None  # cisformer: factorised logits of every output feature (B, N_out[, bins])


class Cisformer(nn.Module):
    """Cisformer for one direction and architecture (``config.direction``, ``config.arch``).

    Besides the weights, a trained model carries its vocabulary so that prediction aligns new AnnData by name:
    ``gene_names`` and ``cre_names`` (lists, set by :func:`cisformer.train.fit`), ``cre_coords`` (dict of
    chrom/start/end lists or None), ``bin_edges`` (atac2rna: edges of the expression bins on the
    log1p(counts per 10,000) scale) and ``open_fraction`` (rna2atac: mean fraction of open CREs per training cell).

    Parameters
    ----------
    config
        :class:`CisformerConfig`.
    """

    def __init__(self, config: CisformerConfig):
        super().__init__()
        self.config = cfg = config
        self.gene_emb = nn.Embedding(cfg.n_genes, cfg.dim)
        if cfg.direction == "rna2atac":
            self.value_emb = nn.Embedding(cfg.max_value + 1, cfg.dim)  # value 0 = padding only
        self.key_norm = nn.LayerNorm(cfg.dim)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        if cfg.arch == "paper":
            self.cre_enc = DigitEncoding(cfg.dim, cfg.n_digits)
            self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
            self.ln_out = nn.LayerNorm(cfg.dim)
            self.head = nn.Linear(cfg.dim, cfg.out_width)
        else:
            if cfg.direction == "atac2rna":
                self.cre_emb = nn.Embedding(cfg.n_cres, cfg.dim)  # key tokens
            self.encoder = CellEncoder(cfg)
            self.path = AttentionPath(cfg)
            self.cell_features = nn.Sequential(nn.Linear(cfg.rank, cfg.decoder_width), nn.PReLU())  # h(z)
            self.out_factor = nn.Embedding(cfg.n_out, cfg.out_width * cfg.decoder_width)  # u_j, one per bin
            self.out_bias = nn.Embedding(cfg.n_out, cfg.out_width)             # b_j
            if cfg.direction == "rna2atac":
                self.depth_head = nn.Linear(cfg.rank, 1)
        self.apply(self._init_weights)
        if cfg.arch == "cisformer":
            for module in [*self.encoder.modules(), *self.cell_features.modules(),
                           self.depth_head if cfg.direction == "rna2atac" else None]:
                if isinstance(module, nn.Linear):
                    module.reset_parameters()  # PyTorch's default (fan-in) initialisation for the MLP
            if cfg.direction == "atac2rna":  # the embedding bag is a linear layer over every CRE: the same rule
                bound = 1 / math.sqrt(cfg.n_cres)
                nn.init.uniform_(self.encoder.input.weight, -bound, bound)
            nn.init.normal_(self.out_factor.weight, std=0.01)
            nn.init.zeros_(self.out_bias.weight)
            nn.init.zeros_(self.path.readout.weight)
        self.ablate_attention = False  # True: predict without the attention path (how much does it carry?)
        self.gene_names: list[str] | None = None
        self.cre_names: list[str] | None = None
        self.cre_coords: dict | None = None
        self.open_fraction: float | None = None
        # rna2atac: states of (up to MAX_REFERENCE_CELLS) training cells and how many of them smooth a cell's state
        self.reference_states: torch.Tensor | None = None  # (N_ref, R)
        self.state_neighbors = 0
        self.state_neighbor_scores: dict | None = None  # {k: validation criterion} of the values tried
        self.register_buffer("bin_edges", torch.zeros(cfg.n_bins))  # set by the sampler's binning (atac2rna)
        prior_shape = (cfg.n_cres,) if cfg.direction == "rna2atac" else (cfg.n_genes, cfg.n_bins)
        self.register_buffer("query_prior", torch.zeros(prior_shape))  # base-rate logits (see module docstring)
        if cfg.cis_window:  # genome positions (chromosome code, bp) for the cis window; -1 = unknown
            self.register_buffer("gene_position", torch.full((cfg.n_genes, 2), -1, dtype=torch.long))
            self.register_buffer("cre_position", torch.full((cfg.n_cres, 2), -1, dtype=torch.long))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.5)

    # ---- the two halves ------------------------------------------------------------------------------------
    def _key_tokens(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.direction == "rna2atac":
            value = batch["gene_value"].clamp(0, self.config.max_value)
            return self.gene_emb(batch["gene_idx"]) + self.value_emb(value), batch["gene_pad"]  # (B, Lg, D)
        emb = self.cre_enc(batch["cre_idx"]) if self.config.arch == "paper" else self.cre_emb(batch["cre_idx"])
        return emb, batch["cre_pad"]  # (B, Lp, D)

    def encode_keys(self, batch: dict) -> Keys:
        """Embed the key tokens of ``batch`` and project them for every layer (done once per cell); for
        ``arch="cisformer"`` also the cell state and (rna2atac) the depth offset: ``batch["depth"]`` when the
        batch carries it (training), else predicted from the cell state."""
        keys, pad = self._key_tokens(batch)
        keys = self.emb_dropout(self.key_norm(keys))
        blocks = self.blocks if self.config.arch == "paper" else self.path.blocks
        tokens = batch["gene_idx"] if self.config.direction == "rna2atac" else batch["cre_idx"]
        out = Keys(kv=[blk.attn.project_keys(keys) for blk in blocks], pad=pad, tokens=tokens)
        if self.config.arch == "cisformer":
            out.state = self.smoothed_state(self.encoder(batch))
            depth = None
            if self.config.direction == "rna2atac":
                depth = batch["depth"] if "depth" in batch else self.depth_head(out.state).squeeze(-1)
            out.factorised = self.factorised_logits(out.state, depth)
        return out

    def smoothed_state(self, z: torch.Tensor) -> torch.Tensor:
        """In eval mode with ``state_neighbors`` = k > 0: each state averaged with its k nearest (Euclidean)
        ``reference_states``, (B, R) -> (B, R); else ``z`` itself (always while training)."""
        if self.training or not self.state_neighbors or self.reference_states is None:
            return z
        reference = self.reference_states.to(z.device, z.dtype)  # (N_ref, R)
        k = min(self.state_neighbors, len(reference))
        nearest = torch.cdist(z, reference).topk(k, dim=1, largest=False).indices  # (B, k)
        return (z + reference[nearest].sum(1)) / (k + 1)

    def factorised_logits(self, z: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        """prior + <h(z), u> + b (+ depth) for every output feature at once (one matmul): z (B, R) ->
        (B, N_out) for rna2atac, (B, N_out, n_bins) for atac2rna."""
        width = self.config.out_width
        u = self.out_factor.weight.view(-1, self.config.decoder_width)  # (N_out * width, H)
        logits = (self.cell_features(z) @ u.T).unflatten(-1, (-1, width)) + self.out_bias.weight \
            + self.query_prior.view(-1, width)  # (B, N_out, width)
        if depth is not None:
            logits = logits + depth[:, None, None]
        return logits.squeeze(-1) if width == 1 else logits

    def cis_mask(self, query_idx: torch.Tensor, keys: Keys) -> torch.Tensor | None:
        """(B, Lq, Lk) True where the key CRE lies within ``cis_window`` bp of the query gene's TSS on the same
        chromosome (atac2rna with a window and known positions); None = every key allowed."""
        if not self.config.cis_window or self.gene_position[:, 0].max() < 0:
            return None
        gene = self.gene_position[query_idx]     # (B, Lq, 2)
        cre = self.cre_position[keys.tokens]     # (B, Lk, 2)
        same = (gene[..., None, 0] == cre[:, None, :, 0]) & (gene[..., None, 0] >= 0)
        return same & ((gene[..., None, 1] - cre[:, None, :, 1]).abs() <= self.config.cis_window)

    def _gather(self, per_feature: torch.Tensor, query_idx: torch.Tensor) -> torch.Tensor:
        """(B, N_out[, bins]) -> the entries of ``query_idx`` (B, Lq[, bins])."""
        if self.config.out_width > 1:
            query_idx = query_idx[..., None].expand(-1, -1, self.config.out_width)
        return per_feature.gather(1, query_idx)

    def decode(self, query_idx: torch.Tensor, keys: Keys, return_attention: bool = False):
        """Queries attend to precomputed keys. Returns logits (B, Lq) for rna2atac, (B, Lq, n_bins) for
        atac2rna, and with ``return_attention`` also the per-layer head-averaged weights (B, Lq, Lk)."""
        if self.config.arch == "cisformer":
            logits = self._gather(keys.factorised, query_idx)
            if self.ablate_attention and not return_attention:  # the path is not computed: prediction without it
                return logits                                    # does not pay for it
            path, attns = self.path(query_idx, keys.kv, keys.pad, return_attention, self.cis_mask(query_idx, keys))
            if not self.ablate_attention:
                logits = logits + (path.squeeze(-1) if self.config.out_width == 1 else path)
            return (logits, attns) if return_attention else logits
        x = self.emb_dropout(self.cre_enc(query_idx) if self.config.direction == "rna2atac"
                             else self.gene_emb(query_idx))
        attns = []
        for blk, (k, v) in zip(self.blocks, keys.kv):
            x, attn = blk(x, k, v, keys.pad, return_attention)
            attns.append(attn)
        logits = self.head(self.ln_out(x))
        if self.config.direction == "rna2atac":
            logits = logits.squeeze(-1)
        logits = logits + self.query_prior[query_idx]  # (B, Lq) or (B, Lq, n_bins)
        return (logits, attns) if return_attention else logits

    def forward(self, batch: dict, return_attention: bool = False, return_loss: bool = False):
        """Logits for the query tokens of ``batch`` (a dict from :mod:`cisformer.sampler`).

        Parameters
        ----------
        batch, return_attention, return_loss
            rna2atac: queries ``cre_idx`` (B, Lp), keys ``gene_idx``/``gene_value``/``gene_pad``.
            atac2rna: queries ``gene_idx`` (B, Lg), keys ``cre_idx``/``cre_pad``.
            ``arch="cisformer"`` also reads ``expr`` (rna2atac, the cell's log1p counts per 10,000 of every gene).
            ``return_attention``, ``return_loss``: also return the attention weights, the loss (see Returns).

        Returns
        -------
        Logits (B, Lp) for rna2atac, (B, Lg, n_bins) for atac2rna. With ``return_attention=True`` ``(logits,
        attn)``, ``attn`` a list (one per layer) of head-averaged cross-attention weights (B, L_query, L_key);
        padded keys get exactly 0. With ``return_loss=True`` ``(loss, logits)`` (training batches; see :meth:`loss`).
        """
        query_idx = batch["cre_idx"] if self.config.direction == "rna2atac" else batch["gene_idx"]
        keys = self.encode_keys(batch)
        out = self.decode(query_idx, keys, return_attention)
        if return_loss:
            return self.loss(out, batch, keys), out
        return out

    def loss(self, logits: torch.Tensor, batch: dict, keys: Keys | None = None) -> torch.Tensor:
        """Training loss of one batch.

        paper: mean BCE (rna2atac) or CCE (atac2rna) over the non-padded query tokens.
        cisformer: the factorised logits are fitted on *every* output feature (BCE over all CREs, ``batch["open_all"]``,
        or CCE over all genes, ``batch["bins_all"]``, plus the squared error of the expected value over the bins against
        the log1p(counts per 10,000), ``batch["expr"]``: the scale that prediction returns and the benchmark scores; the
        bins alone fit the coarse shape of each gene's distribution and not its mean); the attention path is fitted on
        the drawn queries, added to the factorised logits held fixed (detached), so that it learns what the cell state
        does not explain. rna2atac draws are balanced, so their logits get the case-control offset
        ``batch["draw_offset"]``; atac2rna genes are drawn uniformly. Plus the encoder's reconstruction loss and
        (rna2atac) the depth head's MSE.
        """
        cfg = self.config
        keep = ~(batch["cre_pad"] if cfg.direction == "rna2atac" else batch["gene_pad"])
        if cfg.arch == "paper":
            if cfg.direction == "rna2atac":
                return F.binary_cross_entropy_with_logits(logits[keep].float(), batch["target"][keep].float())
            return F.cross_entropy(logits[keep].float(), batch["target"][keep])
        query_idx = batch["cre_idx"] if cfg.direction == "rna2atac" else batch["gene_idx"]
        factorised = self._gather(keys.factorised, query_idx)
        path_only = logits - factorised + factorised.detach()  # gradient reaches the attention path only
        reconstruction = self.encoder.reconstruction_loss(keys.state, batch)
        if cfg.direction == "rna2atac":
            drawn = path_only + batch["draw_offset"][:, None]
            drawn = F.binary_cross_entropy_with_logits(drawn[keep].float(), batch["target"][keep].float())
            dense = F.binary_cross_entropy_with_logits(keys.factorised.float(), batch["open_all"])
            depth = F.mse_loss(self.depth_head(keys.state).squeeze(-1), batch["depth"])
            return dense + drawn + reconstruction + 0.01 * depth
        drawn = F.cross_entropy(path_only[keep].float(), batch["target"][keep])
        dense = F.cross_entropy(keys.factorised.flatten(0, 1).float(), batch["bins_all"].flatten())
        expected = keys.factorised.float().softmax(-1) @ self.bin_centres()  # (B, N_out), the predicted value
        return dense + F.mse_loss(expected, batch["expr"]) + drawn + reconstruction

    def bin_centres(self) -> torch.Tensor:
        """atac2rna: the expected log1p value of each bin (:func:`cisformer.sampler.bin_centres`), (n_bins,)."""
        edges = self.bin_edges.float()
        return torch.cat([edges.new_zeros(1), (edges[:-1] + edges[1:]) / 2])

    # ---- persistence ---------------------------------------------------------------------------------------
    def checkpoint_dict(self) -> dict:
        """Everything needed to rebuild the model (weights, config, vocabulary); safe for weights_only load."""
        return {"config": self.config.to_dict(), "state_dict": self.state_dict(), "gene_names": self.gene_names,
                "cre_names": self.cre_names, "cre_coords": self.cre_coords, "open_fraction": self.open_fraction,
                "reference_states": self.reference_states, "state_neighbors": self.state_neighbors,
                "state_neighbor_scores": self.state_neighbor_scores}

    @classmethod
    def from_checkpoint_dict(cls, ckpt: dict) -> "Cisformer":
        model = cls(CisformerConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        model.gene_names, model.cre_names = ckpt["gene_names"], ckpt["cre_names"]
        model.cre_coords, model.open_fraction = ckpt["cre_coords"], ckpt["open_fraction"]
        # the per-epoch best.pt of train.fit has none: fit sets them once training has ended
        model.reference_states, model.state_neighbors = ckpt.get("reference_states"), ckpt.get("state_neighbors", 0)
        model.state_neighbor_scores = ckpt.get("state_neighbor_scores")
        return model

    def save(self, path) -> None:
        """Write :meth:`checkpoint_dict` to ``path`` (str or Path), a file that :meth:`load` reads back."""
        torch.save(self.checkpoint_dict(), path)

    @classmethod
    def load(cls, path, map_location="cpu") -> "Cisformer":
        """Load a model saved by :meth:`save` or the ``best.pt`` written by :func:`cisformer.train.fit`.

        Parameters
        ----------
        path, map_location
            The file (str or Path) and ``torch.load``'s ``map_location`` (default ``"cpu"``).

        Returns
        -------
        :class:`Cisformer` carrying its vocabulary, in training mode as any new module (the predict functions set eval).
        """
        return cls.from_checkpoint_dict(torch.load(path, map_location=map_location, weights_only=True))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
