"""Cross-attention of a trained Cisformer as CRE-gene links (``extract``: reading it; ``scoring``: link scores and
their checks).

The model's cross-attention weights (head-averaged, the ones the model actually applied; padded keys get 0) are
read for sampled cells of each cell type, normalised per cell as in the paper, restricted to CRE-gene pairs
within +-250 kb of the gene's TSS, and averaged per cell type:

* RNA -> ATAC (queries = CREs, keys = expressed genes): log normalisation, :func:`log_normalize`.
* ATAC -> RNA (queries = genes, keys = open CREs): rank normalisation over rows and then columns, then min-max,
  :func:`rank_normalize` (the reference's scGPT-style scheme).

Denominator: a pair's cell-type score is the mean over the cells in which *that pair was co-sampled* (gene and
CRE both present among the cell's tokens). The reference implementation divides the sum by the total number of
cells of the type, which penalises rarely open CREs and rewards ubiquitous ones regardless of attention.

Memory stays bounded: only the window pairs (:func:`candidate_pairs`) are ever stored, as flat arrays, and
each cell type's result is a sparse genes x CREs AnnData - never a dense genes x 1.03M matrix.

Links are scored by within-cell-type regression by default (:func:`regression`, no model needed): on planted
links it is the best or tied-best scorer in most settings of notebook 04, where the model-based readouts are not.
The model's readouts stay beside it: in-silico deletion (:func:`deletion`, atac2rna models: what the model uses)
and attention, the paper's reading (:func:`extract`).

Typical use::

    table = cisformer.tl.attention.links(None, rna, atac)          # within-cell-type regression (default)
    table = cisformer.tl.attention.links(model, rna, atac, "deletion")   # in-silico deletion of a trained model
    per_type = cisformer.tl.attention.extract(model, rna, atac, n_cells_per_type=100)   # attention, paper's reading
    table = cisformer.tl.attention.links_table(per_type)          # tidy CRE-gene pairs x cell types
    scores = cisformer.tl.attention.gene_scores(per_type)         # gene-wise attention per cell type
"""
from __future__ import annotations

from .extract import (all_pairs, candidate_pairs, extract, gene_attention, iter_cell_attention, log_normalize,
                      mean_scores, model_vocabulary, NORMALIZERS, pair_anndata, PairAccumulator, Prepared,
                      rank_normalize, sample_cells, shared_model, torch_device, WINDOW, window_mask)
from .scoring import (DEFAULT_SCORER, deletion, deletion_effects, explain_empty_links, gene_scores, held_out_check,
                      link_recovery, linked_cre_counts, links, links_table, pair_scores, path_ablation,
                      peak_to_gene_correlation, regression, regression_coefficients, scarlink_coefficients,
                      score_reproducibility, SCORERS)

__all__ = [
    "all_pairs", "candidate_pairs", "extract", "gene_attention", "iter_cell_attention", "log_normalize",
    "mean_scores", "model_vocabulary", "NORMALIZERS", "pair_anndata", "PairAccumulator", "Prepared", "rank_normalize",
    "sample_cells", "shared_model", "torch_device", "WINDOW", "window_mask", "DEFAULT_SCORER", "deletion",
    "deletion_effects", "explain_empty_links", "gene_scores", "held_out_check", "link_recovery", "linked_cre_counts",
    "links", "links_table", "pair_scores", "path_ablation", "peak_to_gene_correlation", "regression",
    "regression_coefficients", "scarlink_coefficients", "score_reproducibility", "SCORERS"
]
