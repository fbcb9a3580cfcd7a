"""EpiTrace cell age from scATAC at clock-like loci, in Python (Xiao et al., Nat Biotechnol 2024).

A re-implementation of EpiTrace's ``EpiTrace_prepare_object`` cell filter, ``EpiTraceAge`` /
``EpiTraceAge_Convergence`` and ``AssociationOfPeaksToAge``, written from reading the R source (``R/EpiTrace.R`` of
MagpiePKU/EpiTrace at commit 5a9dd1a, GPL-3.0-or-later; the shipped mouse clock loci come from the same commit, see
their line in ``data/MANIFEST``); no R code is copied. ``clock``: the age itself; ``association``: age-associated
CREs and trajectories; ``agreement``: comparing ages; ``simulate``: cells with planted ages::

    clock = cisformer.data.load_clock_loci("lifted")           # mm10, 61,503 loci
    epitrace.age(atac, clock)                                    # obs["epitrace_age"] in [0, 1]
    cres = epitrace.age_associated_cres(atac)                    # per-peak correlation with age, p, BH q
    clusters = epitrace.trajectory_clusters(atac, cres.index[cres["q"] < 0.05])
    generated = epitrace.generated_age(pred, clock, open_fraction)   # predicted probabilities, top-k calls
    epitrace.age_agreement(atac.obs["epitrace_age"], known_age, groups=atac.obs["cell_type"])
    epitrace.split_half_ceiling(atac, clock)                     # how well measured age agrees with itself
    epitrace.partial_spearman(age_a, age_b, library_size)        # agreement beyond a shared depth effect

Steps of :func:`age` (defaults as in the R package):

0. cells with fewer than ``min_clock_reads`` (10) reads on the clock peaks get no age (R's ``qualnum``);
1. keep the peaks overlapping >= 1 clock locus (:func:`clock_matrix`), drop all-zero peaks;
2. normalise (:func:`normalize`, ``"randomized"`` by default);
3. per cell, count the accessible clock peaks (the raw age signal);
4. among peaks open in > 5% of cells take the ``n_dispersed`` most dispersed (variance / mean), correlate cells
   on them, zero the diagonal, negative and below-mean correlations, row-normalise: the transition matrix ``W``;
5. the ``n_signal_peaks`` peaks best correlated with the per-cell counts; their per-cell mean is the signal ``s``;
6. non-negative least squares ``s ~ W x``; ``v0 = W x``; diffuse ``v <- (1 - restart) W v + restart v0`` until
   the mean absolute change is below ``tol``;
7. age = rank of ``v``, min-max scaled to [0, 1].

The simulator :func:`simulate_aged_cells` plants an age signal at clock peaks (the truth used by the tests).
Intervals are 0-based half-open; a peak overlaps a locus when they share >= 1 bp
(:func:`cisformer.data.vocab.overlap_index`).
"""
from __future__ import annotations
from __future__ import annotations

from .clock import (age, age_correlations, clock_matrix, clock_peak_mask, clock_reads, column_correlations,
                    coordinates, diffuse, generated_age, NORMALIZATIONS, normalize, transition_matrix)
from .association import (age_associated_cres, trajectory_clusters)
from .agreement import (accessible_clock_loci, age_agreement, age_by_depth, age_cre_list, age_groups, compare_ages,
                        cre_list_overlap, parse_ages, partial_spearman, spearman_brown, split_half_ceiling)
from .simulate import (simulate_aged_cells)

__all__ = [
    "age", "age_correlations", "clock_matrix", "clock_peak_mask", "clock_reads", "column_correlations", "coordinates",
    "diffuse", "generated_age", "NORMALIZATIONS", "normalize", "transition_matrix", "age_associated_cres",
    "trajectory_clusters", "accessible_clock_loci", "age_agreement", "age_by_depth", "age_cre_list", "age_groups",
    "compare_ages", "cre_list_overlap", "parse_ages", "partial_spearman", "spearman_brown", "split_half_ceiling",
    "simulate_aged_cells"
]
