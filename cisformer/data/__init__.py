"""Data: the shipped data sets and references, readers for your own paired data, checks, QC and cell splits.

    rna, atac = cisformer.data.load("snareseq")                                  # datasets
    rna, atac = cisformer.data.read_paired("filtered_feature_bc_matrix.h5")      # readers: 10x multiome, h5ad, ...
    validate_pair(rna, atac, "rna.h5ad", "atac.h5ad", cre_vocabulary="hg38")    # checks
    rna, atac, table = qc(rna, atac)                                             # preprocess
    train, val, test = split_cells(rna.obs, by="cell_type")

Conventions (the team's data contract): ``rna`` and ``atac`` are AnnData with identical ``obs_names``; ``X`` is CSR
float32 (raw counts unless ``uns["counts"]`` is False); ``obs["cell_type"]`` and ``obs["batch"]`` are categorical;
``atac.var`` has ``chrom``/``start``/``end`` (0-based half-open) and var_names ``chrom:start-end``; ``rna.var`` has
``gene_id``, ``chrom``, ``start``, ``end``, ``strand``, ``tss``; ``uns["genome"]``, ``uns["dataset"]``, ``uns["counts"]``.
Genome coordinates and vocabularies are in ``vocab``, simulated paired data in ``simulate``, the streamed h5ad
writer in ``h5stream`` (imported on first use).
"""
from __future__ import annotations

from .errors import (input_error, InputError)
from .datasets import (dataset_files, DATASETS, list_datasets, load, load_chip_peaks, load_clock_loci,
                       load_cre_vocabulary, load_dnase_peaks, load_genes, load_gwas_finemapped, load_remodelers,
                       load_tf_list, MANIFEST_COLUMNS, read_manifest, reference_path, REFERENCES, shipped_path,
                       write_dataset)
from .checks import (ATAC_RULE, check_atac_values, check_genome, check_unique_names, COUNT_LAYERS, describe_values,
                     find_counts, is_integer_matrix, lift_peaks, LIFTOVER, pair_cells, recover_counts, SPECIES,
                     validate_pair)
from .readers import (check_readable, read_10x, read_any, read_fragments, read_paired, read_rna, use_cell_type_column,
                      write_10x_h5)
from .preprocess import (cells_per_feature, downsample_atac, label_tokens, log_expression, log_normalized, qc,
                         qc_metrics, qc_report, QC_RULES, split_cells, subsample, tfidf_lsi, true_expression)
from .. import lazy_modules

__getattr__, __dir__ = lazy_modules(__name__, ("h5stream", "simulate", "vocab"))

__all__ = [
    "input_error", "InputError", "dataset_files", "DATASETS", "list_datasets", "load", "load_chip_peaks",
    "load_clock_loci", "load_cre_vocabulary", "load_dnase_peaks", "load_genes", "load_gwas_finemapped",
    "load_remodelers", "load_tf_list", "MANIFEST_COLUMNS", "read_manifest", "reference_path", "REFERENCES",
    "shipped_path", "write_dataset", "ATAC_RULE", "check_atac_values", "check_genome", "check_unique_names",
    "COUNT_LAYERS", "describe_values", "find_counts", "is_integer_matrix", "lift_peaks", "LIFTOVER", "pair_cells",
    "recover_counts", "SPECIES", "validate_pair", "check_readable", "read_10x", "read_any", "read_fragments",
    "read_paired", "read_rna", "use_cell_type_column", "write_10x_h5", "cells_per_feature", "downsample_atac",
    "label_tokens", "log_expression", "log_normalized", "qc", "qc_metrics", "qc_report", "QC_RULES", "split_cells",
    "subsample", "tfidf_lsi", "true_expression"
]
