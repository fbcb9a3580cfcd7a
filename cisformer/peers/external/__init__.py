"""External methods run in their own Python environments, on h5ad files, through driver scripts (``drivers/``):
scButterfly for RNA -> ATAC (``scbutterfly``), MultiVI and scGLUE for RNA / ATAC integration (``integration``).
What each is run with and what is changed at runtime (no package file is edited): ``docs/external_peers.md``.
"""
from __future__ import annotations

from .scbutterfly import (base_rate_bias, ButterflyPreprocessing, ensure_scbutterfly_env, run_scbutterfly_rna2atac,
                          scbutterfly_python, SCBUTTERFLY_REQUIREMENTS, SCBUTTERFLY_VERSION)
from .integration import (CONVERGED_DIR, converged_peer, CONVERGED_RUNNERS, ensure_integration_env, integration_python,
                          INTEGRATION_REQUIREMENTS, integration_versions, linked_features, run_multivi, run_scglue,
                          scglue_guidance_edges, SCGLUE_PROMOTER_BP, SCGLUE_VERSION, SCVI_TOOLS_VERSION)

__all__ = [
    "base_rate_bias", "ButterflyPreprocessing", "ensure_scbutterfly_env", "run_scbutterfly_rna2atac",
    "scbutterfly_python", "SCBUTTERFLY_REQUIREMENTS", "SCBUTTERFLY_VERSION", "CONVERGED_DIR", "converged_peer",
    "CONVERGED_RUNNERS", "ensure_integration_env", "integration_python", "INTEGRATION_REQUIREMENTS",
    "integration_versions", "linked_features", "run_multivi", "run_scglue", "scglue_guidance_edges",
    "SCGLUE_PROMOTER_BP", "SCGLUE_VERSION", "SCVI_TOOLS_VERSION"
]
