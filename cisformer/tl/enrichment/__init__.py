"""Do attention-derived CRE-gene links mean something? Statistics against random sets of equal size
(``statistics``, ``background`` for the matched null, ``gwas``, ``regions`` for ChIP, region sets and motifs).

* :func:`pair_correlation` + :func:`topk_vs_random`: expression-accessibility correlation across pseudobulks
  of the top-k pairs vs random candidate pairs (Fig 3d-e), one-sided tests.
* Matched null (:func:`matching_covariates`, :func:`matching_bins`, :func:`matched_random_sets`): random CRE
  sets with the accessibility x width composition of the tested set. Attention-ranked CREs are biased towards
  frequently open CREs (they are co-sampled in more cells), and open CREs carry more GWAS variants and ChIP
  peaks, so a uniform null would reward that bias; both enrichments below draw from the matched null.
* :func:`gwas_enrichment` / :func:`gwas_compare` / :func:`pooled_enrichment`: fine-mapped PIP load of the top
  CREs over that of matched random sets (Fig 3f), per trait, one-sided empirical p, Benjamini-Hochberg q over
  all tests, and a per-method summary over one shared trait set (pooled ratio and geometric mean, bootstrap
  CIs).
* :func:`chip_enrichment` and :func:`bound_vs_unbound`: overlap of a TF gene's top attention-ranked CREs with
  the TF's ChIP-seq peaks vs matched random CRE sets (fold, empirical p), and attention of bound vs unbound
  CREs (one-sided Welch t-test) (Fig 3b-c); :func:`bh_qvalues` corrects either family.
* :func:`expression_by_link_count`: expression of genes grouped by their number of linked CREs (Fig 3h-i).
* :func:`region_set_enrichment` (LOLA-style), :func:`motif_enrichment` and :func:`tf_enrichment` (both): CRE sets
  (e.g. cell-type-specific CREs) vs ChIP-seq peak sets or TF motif occurrences (:mod:`cisformer.tl.motifs`),
  one-sided Fisher test against the universe or a matched background (accessibility x width, and GC for
  motifs), BH q.

Intervals are 0-based half-open (``chrom``, ``start``, ``end``); overlaps of >= 1 bp count
(:func:`cisformer.data.vocab.overlap_index`).
"""
from __future__ import annotations

from .statistics import (bh_qvalues, empirical_p, expression_by_link_count, link_count_group, metacell_groups,
                         one_sided_ttest, overlap_index, pair_correlation, pearson_pairs, pseudobulk, topk_vs_random)
from .background import (bin_composition, matched_random_sets, matching_bins, matching_covariates, null_overlap)
from .gwas import (gwas_compare, gwas_enrichment, gwas_traits, locus_bootstrap, pooled_enrichment, variant_load)
from .regions import (bound_cres, bound_vs_unbound, chip_enrichment, motif_enrichment, region_set_enrichment,
                      tf_enrichment, top_cres)

__all__ = [
    "bh_qvalues", "empirical_p", "expression_by_link_count", "link_count_group", "metacell_groups", "one_sided_ttest",
    "overlap_index", "pair_correlation", "pearson_pairs", "pseudobulk", "topk_vs_random", "bin_composition",
    "matched_random_sets", "matching_bins", "matching_covariates", "null_overlap", "gwas_compare", "gwas_enrichment",
    "gwas_traits", "locus_bootstrap", "pooled_enrichment", "variant_load", "bound_cres", "bound_vs_unbound",
    "chip_enrichment", "motif_enrichment", "region_set_enrichment", "tf_enrichment", "top_cres"
]
