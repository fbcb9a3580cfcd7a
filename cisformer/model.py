"""The Cisformer model: cross-attention from one modality's tokens (queries) to the other's (keys).

Two directions share every module:

* ``rna2atac``: queries = CREs (peak digit index encoding), keys = the cell's expressed genes (gene token +
  value embedding). One logit per CRE query -> sigmoid -> P(open). Loss: binary cross-entropy.
* ``atac2rna``: queries = genes (gene token embedding), keys = the cell's open CREs (digit encoding).
  ``n_bins`` logits per gene query -> softmax over expression bins. Loss: categorical cross-entropy.

As in the paper's Methods there is no self-attention: the keys are embedded once (embedding + LayerNorm, i.e.
the reference's depth-0 encoder) and every layer is ``x = x + MHA(LN(x), keys)`` then ``x = x + FFN(LN(x))``
(ReLU FFN). Because keys are never updated, their per-layer projections can be computed once per cell and
reused for any number of query chunks (:meth:`Cisformer.encode_keys` / :meth:`Cisformer.decode`), which is how
:mod:`cisformer.predict` scores a full CRE vocabulary.

Base rates: every query token's logits carry a fixed offset, ``query_prior``, the training cells' base rate of
that feature (rna2atac: logit of the CRE's open frequency, shifted by the odds of the balanced open/closed query
draw; atac2rna: log frequency of each expression bin of the gene), set by :func:`cisformer.train.fit` from
:func:`cisformer.sampler.base_rate_logits`. The network then learns only the cell-specific deviation from the
base rate. This is our addition to the paper's model: with the paper's GPU budget the digit encoding eventually
memorises a base rate per CRE, but with minutes of CPU training it cannot, and a model that has not learned base
rates scores below the trivial "open frequency" baseline. All-zero offsets give back the paper's model exactly.

Padding: key padding is a boolean mask given to the attention kernel, so padded keys receive exactly zero
attention mass (the reference implementation zeroed the padded *values* only, leaving them in the softmax).

Shapes: B = cells in the batch, Lq = query tokens, Lk = key tokens, D = model dim, H = heads, Dh = head dim.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # optional GPU extra: flash-attn's variable-length kernel (packed keys, no padding work at all)
    from flash_attn import flash_attn_varlen_func
except Exception:  # ImportError, or a broken CUDA build: fall back to scaled_dot_product_attention
    flash_attn_varlen_func = None

DIRECTIONS = ("rna2atac", "atac2rna")
PROFILES = ("quick", "cpu", "paper")
CHECKPOINT_FORMAT = 2  # bumped when the state dict changes, so cached runs of older code are not reused


@dataclass
class CisformerConfig:
    """Architecture and token budget of one Cisformer model.

    ``gene_len`` / ``cre_len`` are the sampler's token budgets per cell (L_g, L_p): for rna2atac ``gene_len``
    expressed genes are keys and ``cre_len`` CREs (half open, half closed) are queries; for atac2rna
    ``cre_len`` open CREs are keys and ``gene_len`` genes are queries.
    """
    direction: str
    n_genes: int
    n_cres: int
    dim: int = 210
    n_layers: int = 6
    n_heads: int = 6
    head_dim: int = 128
    ff_mult: int = 4
    dropout: float = 0.1
    n_digits: int = 7           # CRE index written with this many base-10 digits
    max_value: int = 64         # rna2atac: expression counts are floored and capped at this value
    n_bins: int = 8             # atac2rna: expression classes (bin 0 = zero)
    gene_len: int = 2048
    cre_len: int = 2048

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.dim % self.n_digits:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_digits ({self.n_digits}): the digit "
                             "embeddings are concatenated")
        if self.n_cres > 10 ** self.n_digits:
            raise ValueError(f"n_cres ({self.n_cres}) needs more than n_digits={self.n_digits} digits")
        if min(self.n_genes, self.n_cres) < 1:
            raise ValueError("n_genes and n_cres must be positive")

    @classmethod
    def from_profile(cls, direction: str, profile: str, n_genes: int, n_cres: int, **overrides) -> "CisformerConfig":
        """Sizes for a profile: ``paper`` (the paper's), ``cpu`` (minutes on 2 cores) or ``quick`` (tests, CI).

        Paper: rna2atac 6 layers, dim 210, 6 heads (head dim 128), 2048 genes / 2048 CREs;
        atac2rna 4 layers, dim 280, 7 heads (head dim 140), 10,000 CREs in, 3,000 genes out, 8 bins.
        ``cpu`` and ``quick`` keep the code and shrink depth, width and token budgets; their ``n_digits`` is the
        fewest digits that index ``n_cres`` (the paper's 7 digits cover 10 million CREs) and ``dim`` the multiple
        of ``n_digits`` nearest the target width:

        =======  ========  ======  ========================  ==================  =================
        profile  dir.      layers  dim (target) x heads x hd  gene_len (L_g)      cre_len (L_p)
        =======  ========  ======  ========================  ==================  =================
        cpu      rna2atac  2       64 x 4 x 16               256 keys            256 queries
        cpu      atac2rna  2       64 x 4 x 16               256 queries         1024 keys
        quick    both      2       48 x 2 x 16               128                 128 (512 keys)
        =======  ========  ======  ========================  ==================  =================
        """
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if profile == "paper":
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
        return cls(direction=direction, n_genes=n_genes, n_cres=n_cres, **sizes)

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

    def forward(self, x, k, v, key_pad, return_attention=False):
        """x (B, Lq, D) queries; k, v (B, H, Lk, Dh); key_pad (B, Lk) True = padding.

        Returns the output (B, Lq, D) and, with ``return_attention``, the head-averaged weights (B, Lq, Lk).
        """
        B, Lq, _ = x.shape
        if k.shape[0] == 1 and B > 1:  # one cell's keys shared by a batch of query chunks
            k, v, key_pad = k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1), key_pad.expand(B, -1)
        q = self._heads(self.to_q(x))  # (B, H, Lq, Dh)
        empty = key_pad.all(1)  # cells without a single key: attend nowhere, output 0
        if empty.any():
            key_pad = key_pad.clone()
            key_pad[empty, 0] = False
        attn = None
        if return_attention:  # explicit softmax: the returned weights are exactly the ones applied
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, Lq, Lk)
            scores = scores.float().masked_fill(key_pad[:, None, None, :], float("-inf"))
            weights = scores.softmax(-1)
            weights = weights.masked_fill(empty[:, None, None, None], 0.0)
            out = weights.to(v.dtype) @ v
            attn = weights.mean(1)  # (B, Lq, Lk)
        elif flash_attn_varlen_func is not None and q.is_cuda:
            out = _flash_attention(q, k, v, key_pad)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=~key_pad[:, None, None, :])
        if empty.any():
            out = out.masked_fill(empty[:, None, None, None], 0.0)
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
    """Cross-attention block: residual + LayerNorm around MHA, then around a ReLU FFN."""

    def __init__(self, cfg: CisformerConfig):
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.dim)
        self.attn = CrossAttention(cfg)
        self.ln_ff = nn.LayerNorm(cfg.dim)
        self.ff = FeedForward(cfg)

    def forward(self, x, k, v, key_pad, return_attention=False):
        a, attn = self.attn(self.ln_attn(x), k, v, key_pad, return_attention)
        x = x + a
        x = x + self.ff(self.ln_ff(x))
        return x, attn


# --------------------------------------------------------------------------------------------------- model

@dataclass
class Keys:
    """Per-layer key/value projections of one batch of cells (from :meth:`Cisformer.encode_keys`)."""
    kv: list            # n_layers x (k, v), each (B, H, Lk, Dh)
    pad: torch.Tensor   # (B, Lk) True = padding


class Cisformer(nn.Module):
    """Cisformer for one direction (``config.direction``).

    Besides the weights, a trained model carries its vocabulary so that prediction aligns new AnnData by name:
    ``gene_names`` and ``cre_names`` (lists, set by :func:`cisformer.train.fit`), ``cre_coords`` (dict of
    chrom/start/end lists or None), ``bin_edges`` (atac2rna: log1p edges of the expression bins) and
    ``open_fraction`` (rna2atac: mean fraction of open CREs per training cell).
    """

    def __init__(self, config: CisformerConfig):
        super().__init__()
        self.config = cfg = config
        self.gene_emb = nn.Embedding(cfg.n_genes, cfg.dim)
        self.cre_enc = DigitEncoding(cfg.dim, cfg.n_digits)
        if cfg.direction == "rna2atac":
            self.value_emb = nn.Embedding(cfg.max_value + 1, cfg.dim)  # value 0 = padding only
        self.key_norm = nn.LayerNorm(cfg.dim)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_out = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, 1 if cfg.direction == "rna2atac" else cfg.n_bins)
        self.apply(self._init_weights)
        self.gene_names: list[str] | None = None
        self.cre_names: list[str] | None = None
        self.cre_coords: dict | None = None
        self.open_fraction: float | None = None
        self.register_buffer("bin_edges", torch.zeros(cfg.n_bins))  # set by the sampler's binning (atac2rna)
        prior_shape = (cfg.n_cres,) if cfg.direction == "rna2atac" else (cfg.n_genes, cfg.n_bins)
        self.register_buffer("query_prior", torch.zeros(prior_shape))  # base-rate logits (see module docstring)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.5)

    # ---- the two halves ------------------------------------------------------------------------------------
    def embed_queries(self, query_idx: torch.Tensor) -> torch.Tensor:
        """(B, Lq) CRE indices (rna2atac) or gene indices (atac2rna) -> (B, Lq, D)."""
        if self.config.direction == "rna2atac":
            return self.emb_dropout(self.cre_enc(query_idx))
        return self.emb_dropout(self.gene_emb(query_idx))

    def encode_keys(self, batch: dict) -> Keys:
        """Embed the key tokens of ``batch`` and project them for every layer (done once per cell)."""
        if self.config.direction == "rna2atac":
            value = batch["gene_value"].clamp(0, self.config.max_value)
            keys = self.gene_emb(batch["gene_idx"]) + self.value_emb(value)  # (B, Lg, D)
            pad = batch["gene_pad"]
        else:
            keys = self.cre_enc(batch["cre_idx"])  # (B, Lp, D)
            pad = batch["cre_pad"]
        keys = self.emb_dropout(self.key_norm(keys))
        return Keys(kv=[blk.attn.project_keys(keys) for blk in self.blocks], pad=pad)

    def decode(self, query_idx: torch.Tensor, keys: Keys, return_attention: bool = False):
        """Queries attend to precomputed keys. Returns logits (B, Lq) for rna2atac, (B, Lq, n_bins) for
        atac2rna, and with ``return_attention`` also the per-layer head-averaged weights (B, Lq, Lk)."""
        x = self.embed_queries(query_idx)
        attns = []
        for blk, (k, v) in zip(self.blocks, keys.kv):
            x, attn = blk(x, k, v, keys.pad, return_attention)
            attns.append(attn)
        logits = self.head(self.ln_out(x))
        if self.config.direction == "rna2atac":
            logits = logits.squeeze(-1)
        logits = logits + self.query_prior[query_idx]  # (B, Lq) or (B, Lq, n_bins)
        return (logits, attns) if return_attention else logits

    def forward(self, batch: dict, return_attention: bool = False):
        """Logits for the query tokens of ``batch`` (a dict from :mod:`cisformer.sampler`).

        rna2atac: queries ``cre_idx`` (B, Lp), keys ``gene_idx``/``gene_value``/``gene_pad`` -> logits (B, Lp).
        atac2rna: queries ``gene_idx`` (B, Lg), keys ``cre_idx``/``cre_pad`` -> logits (B, Lg, n_bins).
        With ``return_attention=True`` returns ``(logits, attn)``, ``attn`` a list (one per layer) of
        head-averaged cross-attention weights (B, L_query, L_key); padded keys get exactly 0.
        """
        query_idx = batch["cre_idx"] if self.config.direction == "rna2atac" else batch["gene_idx"]
        return self.decode(query_idx, self.encode_keys(batch), return_attention)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Mean BCE (rna2atac) or CCE (atac2rna) over the non-padded query tokens."""
        if self.config.direction == "rna2atac":
            keep = ~batch["cre_pad"]
            return F.binary_cross_entropy_with_logits(logits[keep].float(), batch["target"][keep].float())
        keep = ~batch["gene_pad"]
        return F.cross_entropy(logits[keep].float(), batch["target"][keep])

    # ---- persistence ---------------------------------------------------------------------------------------
    def checkpoint_dict(self) -> dict:
        """Everything needed to rebuild the model (weights, config, vocabulary); safe for weights_only load."""
        return {"config": self.config.to_dict(), "state_dict": self.state_dict(), "gene_names": self.gene_names,
                "cre_names": self.cre_names, "cre_coords": self.cre_coords, "open_fraction": self.open_fraction}

    @classmethod
    def from_checkpoint_dict(cls, ckpt: dict) -> "Cisformer":
        model = cls(CisformerConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        model.gene_names, model.cre_names = ckpt["gene_names"], ckpt["cre_names"]
        model.cre_coords, model.open_fraction = ckpt["cre_coords"], ckpt["open_fraction"]
        return model

    def save(self, path) -> None:
        torch.save(self.checkpoint_dict(), path)

    @classmethod
    def load(cls, path, map_location="cpu") -> "Cisformer":
        """Load a model saved by :meth:`save` or the ``best.pt`` written by :func:`cisformer.train.fit`."""
        return cls.from_checkpoint_dict(torch.load(path, map_location=map_location, weights_only=True))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
