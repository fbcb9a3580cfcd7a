"""Cisformer compendium: cross-attention generation of scATAC from scRNA and back, and CRE-gene links.

The package is laid out by role; every name below is imported on first use, so ``import cisformer`` stays fast::

    import cisformer as cf
    rna, atac = cf.data.load("snareseq")                 # data: datasets, readers, checks, QC, vocabularies
    model, history = cf.train.fit(rna, atac, ...)        # the model: model, sampler, train, runs, predict, protocol
    pred = cf.predict.rna_to_atac(model, rna)
    links = cf.tl.attention.links(model, rna, atac)      # tl: links, regulators, enrichment, motifs, EpiTrace
    cf.metrics.rna2atac_summary(pred, atac)              # metrics: translation, clustering, integration
    cf.attune.alignment.fit_alignment(...)               # attune: Attune's alignment, regulatory layer, potential
    cf.peers.baselines.KNNTransfer(...)                  # peers: in-house baselines, external tools, the benchmark
    cf.pl.savefig(...)                                   # pl: figures and tables; utils: paths, progress, ...
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

MODULES = ("cli", "model", "pl", "predict", "profiles", "protocol", "runs", "sampler", "train")
SUBPACKAGES = ("attune", "data", "metrics", "peers", "tl", "utils")


def lazy_modules(package: str, names):
    """``(__getattr__, __dir__)`` for a package whose submodules ``names`` are imported on first access."""
    names = tuple(names)

    def __getattr__(name: str):
        if name in names:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(importlib.import_module(package).__dict__) | set(names))

    return __getattr__, __dir__


__getattr__, __dir__ = lazy_modules(__name__, MODULES + SUBPACKAGES)
