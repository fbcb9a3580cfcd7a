"""CPU stand-in for ``flash_attn`` so the reference Cisformer (which imports it unconditionally) runs here.

Only ``flash_attn_func`` is provided. It follows flash-attn's layout, (batch, seqlen, heads, head_dim), computes
in fp32 with ``torch.nn.functional.scaled_dot_product_attention`` and returns the input dtype, as flash-attn does.
Used by ``benchmarks/setup_reference_env.sh``; never imported by the ``cisformer`` package.
"""
import torch
import torch.nn.functional as F

__version__ = "0.0.0+cpu-standin"


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    alibi_slopes=None, deterministic=False, return_attn_probs=False, **kwargs):
    if window_size != (-1, -1) or alibi_slopes is not None or return_attn_probs:
        raise NotImplementedError("flash_attn stand-in supports plain (causal or not) attention only")
    dtype = q.dtype
    # (B, L, H, D) -> (B, H, L, D), fp32 compute
    q, k, v = (t.transpose(1, 2).float() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2).to(dtype)
