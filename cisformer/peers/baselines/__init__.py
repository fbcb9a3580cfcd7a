"""Baselines for the Fig 2 benchmark, written here from the papers' descriptions (no code copied): ``rna2atac``,
``atac2rna``, ``integration``, and what they share (``common``).

All methods share one interface::

    method = KNNTransfer(n_neighbors=20).fit(rna_train, atac_train, seed=0)
    atac_pred = method.predict_atac(rna_test)      # RNA -> ATAC methods
    rna_pred = method.predict_rna(atac_test)       # ATAC -> RNA methods

``fit`` takes paired AnnData (raw counts, identical ``obs_names``; ATAC ``var`` with ``chrom``/``start``/``end``,
RNA ``var`` with ``chrom``/``start``/``end``/``strand``/``tss``) and returns the fitted object. Predictions are
AnnData like ``cisformer.predict``: ``predict_atac`` gives cells x CREs, ``X`` = dense float32 probabilities and
``layers["binary"]`` (the shared rule of ``metrics.binarize``); ``predict_rna`` gives cells x genes, ``X`` =
expression on the log1p(normalised to 10,000) scale.

Every method that learns starts from the same base rate as the floor: ``BabelStyle``'s output biases are the
training base rates (:func:`cre_base_rate_logits`, the definition Cisformer uses too), and ``KNNTransfer``'s
neighbour average is shrunk towards the floor by the rule ``CellTypeMean`` uses (:func:`shrink_to_floor`).

RNA -> ATAC
    ``Floor``          each CRE's open frequency in the training cells, the same for every cell.
    ``CellTypeMean``   a reference, not a method: each CRE's open frequency in the training cells of the test
                       cell's *annotated* cell type (it reads the test labels); how much a perfect cell-type
                       classifier gains over the floor on each metric.
    ``KNNTransfer``    RNA PCA space -> average of the k nearest training cells' binarised ATAC, shrunk towards
                       the floor.
    ``RidgeRNA``       ridge regression of the open state minus the floor on RNA PCA; penalty tuned on
                       validation cells by :mod:`cisformer.peers.benchmark`.
    ``BabelStyle``     BABEL (Wu et al., Nat Commun 2021): RNA encoder/decoder and per-chromosome ATAC
                       encoders/decoders around one shared latent; negative-binomial loss for RNA and binary
                       cross-entropy for ATAC; all four paths (RNA->RNA, ATAC->ATAC, RNA->ATAC, ATAC->RNA) trained
                       jointly. Prediction uses the RNA->ATAC path. Output layers start at the training base
                       rates (zero weights, base-rate biases), so the untrained network predicts the floor.
ATAC -> RNA
    ``GeneMean``       the floor: each gene's mean log-normalised expression in the training cells, for every cell.
    ``DepthOnly``      a depth-aware floor: per gene, a line on the cell's log number of open CREs.
    ``RidgeATAC``      ridge regression on the open CREs (scaled to unit RMS) and the log depth; penalty tuned on
                       validation cells by :mod:`cisformer.peers.benchmark`.
    ``KNNTransfer``    ATAC LSI space -> average of the k nearest training cells' log-normalised RNA.
    ``ArchRGeneScore`` ArchR's gene activity score (Granja et al., Nat Genet 2021): accessibility summed with
                       weights exp(-|d|/5 kb) + exp(-1) around the gene body extended 5 kb upstream (d = distance
                       to the extended body, 0 inside it, window 100 kb beyond it), scaled by inverse gene length
                       (1..5), depth-normalised to 10,000 and log1p. Unsupervised: ``fit`` only reads coordinates.
                       ArchR sums fragments in 500-bp genome tiles; here it sums whatever ``atac.var`` holds:
                       called peaks for SNARE-seq / BMMC (genes with no peak in their window score 0, listed in
                       ``genes_without_cres``), tiles for ``data.load("pbmc_scarlink")``.
    ``PeakToGene``     ArchR's peak-to-gene links: correlation of metacell (kNN-aggregated) accessibility with
                       metacell expression for CREs within 250 kb of the TSS; linked CREs (r above a cutoff) feed a
                       per-gene ridge regression fitted on the metacells and applied to single cells.
    ``ScarlinkStyle``  SCARlink (Mitra et al., Nat Genet 2024): per-gene Poisson regression (log link) of
                       normalised expression on the accessibility of CREs / tiles within 250 kb of the gene,
                       L2-regularised, coefficients constrained non-negative (projected gradient, torch).
Integration (a shared embedding of both modalities, ``embed(rna, atac, cells) -> {"rna", "atac", "seconds"}``)
    ``PcaCca``         canonical correlation analysis between RNA PCA and ATAC LSI fitted on the training cells,
                       the baseline of the integration benchmark (``metrics.integration_scores``).
"""
from __future__ import annotations

from .common import (atac_prediction, AtacLSI, check_paired, epoch_batches, open_frequency, rna_prediction, RnaPCA,
                     shrink_to_floor)
from .rna2atac import (BabelStyle, CellTypeMean, Floor, KNNTransfer, RidgeRNA)
from .atac2rna import (ArchRGeneScore, DepthOnly, GeneMean, log_open, PeakToGene, RidgeATAC, ScarlinkStyle)
from .integration import (PcaCca)

# the methods the benchmark (cisformer.peers.benchmark) runs by name
RNA2ATAC_METHODS = {"floor": Floor, "cell-type mean": CellTypeMean, "kNN": KNNTransfer, "ridge": RidgeRNA,
                    "BABEL-style": BabelStyle}
ATAC2RNA_METHODS = {"floor": GeneMean, "depth only": DepthOnly, "ArchR gene score": ArchRGeneScore,
                    "peak-to-gene": PeakToGene, "SCARlink-style": ScarlinkStyle, "kNN": KNNTransfer,
                    "ridge": RidgeATAC}

__all__ = [
    "atac_prediction", "AtacLSI", "check_paired", "epoch_batches", "open_frequency", "rna_prediction", "RnaPCA",
    "shrink_to_floor", "BabelStyle", "CellTypeMean", "Floor", "KNNTransfer", "RidgeRNA", "ArchRGeneScore",
    "DepthOnly", "GeneMean", "log_open", "PeakToGene", "RidgeATAC", "ScarlinkStyle", "PcaCca", "RNA2ATAC_METHODS",
    "ATAC2RNA_METHODS"
]
