"""Cisformer compendium: cross-attention generation of scATAC from scRNA and back, and CRE-gene links.

Submodules are imported on first use so that ``import cisformer`` stays fast::

    import cisformer as cf
    rna, atac = cf.data.load("snareseq")
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "attention", "baselines", "benchmark", "cli", "contrastive", "data", "distributed", "enrichment", "epitrace",
    "external", "h5stream", "matrix", "metrics", "model", "motifs", "paths", "plotting", "potential", "predict",
    "progress", "protocol", "provenance", "regulators", "regulatory", "sampler", "simulate", "train", "verify",
    "vocab",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'cisformer' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
