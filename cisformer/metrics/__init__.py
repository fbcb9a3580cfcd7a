"""Benchmark metrics, one code path for every method (Fig 2, S2; Attune's integration benchmark).

``translation``: RNA -> ATAC and ATAC -> RNA predictions against the measured profiles; ``clustering``: clusters of a
predicted or measured matrix against cell types and the cell-type probe; ``comparison``: paired differences over
seeds and the sentences written from them; ``integration``: joint RNA / ATAC embeddings (FOSCTTM, scGLUE / scIB
metrics). Every name is importable from ``cisformer.metrics``.
"""
from __future__ import annotations

from .clustering import (atac_clustering, celltype_probe, cluster_embedding, CLUSTER_METRICS, CLUSTERING_BACKEND,
                         clustering_scores,
                         embed_atac, embed_rna, exact_neighbors, identical_rows, rna_clustering)
from .comparison import (describe_comparison, describe_paired, paired_differences, summarize, TIE)
from .integration import (batch_silhouette, celltype_silhouette, foscttm, graph_connectivity, INTEGRATION_BIO,
                          INTEGRATION_METRICS, INTEGRATION_MIXING, integration_overall, integration_scores,
                          mean_average_precision, neighbor_conservation, seurat_alignment_score)
from .translation import (aligned_matrices, atac2rna_summary, auroc_gain, binarize, deviation_spread,
                          genewise_correlation, mean_pearson, per_cell_auprc, per_cell_auroc, per_cell_classification,
                          pseudobulk_pearson, rna2atac_summary, skill_over_floor)

__all__ = [
    "atac_clustering", "celltype_probe", "cluster_embedding", "CLUSTER_METRICS", "CLUSTERING_BACKEND",
    "clustering_scores", "embed_atac", "embed_rna", "exact_neighbors", "identical_rows", "rna_clustering",
    "describe_comparison", "describe_paired", "paired_differences", "summarize", "TIE", "batch_silhouette",
    "celltype_silhouette", "foscttm", "graph_connectivity", "INTEGRATION_BIO", "INTEGRATION_METRICS",
    "INTEGRATION_MIXING", "integration_overall", "integration_scores", "mean_average_precision",
    "neighbor_conservation", "seurat_alignment_score", "aligned_matrices", "atac2rna_summary", "auroc_gain",
    "binarize", "deviation_spread", "genewise_correlation", "mean_pearson", "per_cell_auprc", "per_cell_auroc",
    "per_cell_classification", "pseudobulk_pearson", "rna2atac_summary", "skill_over_floor"
]
