"""What every baseline shares: the floor's open frequency and the shrinkage towards it, epoch batches, the
prediction AnnData of each direction, RNA PCA and ATAC LSI fitted on training cells, the paired-input check.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ...data.preprocess import true_expression
from ...metrics import binarize
from ...protocol import epoch_repeats
from ...utils.matrix import binary_csr


def open_frequency(binary: sp.csr_matrix) -> np.ndarray:
    """Fraction of the rows (cells) in which each column (CRE) is open, float32."""
    return np.asarray(binary.mean(axis=0)).ravel().astype(np.float32)


def epoch_batches(rng: np.random.Generator, n_cells: int, batch_size: int, min_epoch_samples: int) -> list:
    """One epoch's mini-batches of cell indices: :func:`epoch_repeats` shuffled passes over the cells, split into
    batches of about ``batch_size``."""
    order = np.concatenate([rng.permutation(n_cells) for _ in range(epoch_repeats(n_cells, min_epoch_samples))])
    return np.array_split(order, max(1, len(order) // batch_size))


def shrink_to_floor(open_counts: np.ndarray, n_cells, floor: np.ndarray, prior_cells: float) -> np.ndarray:
    """Open frequency among ``n_cells`` cells with the floor counted as ``prior_cells`` extra cells:
    ``(open_counts + prior_cells * floor) / (n_cells + prior_cells)`` (float32; broadcasts over rows)."""
    return ((open_counts + prior_cells * floor) / (n_cells + prior_cells)).astype(np.float32)


def atac_prediction(probs: np.ndarray, obs: pd.DataFrame, var: pd.DataFrame, method: str) -> AnnData:
    probs = np.clip(np.asarray(probs, dtype=np.float32), 0.0, 1.0)
    out = AnnData(probs, obs=obs.copy(), var=var.copy())
    out.layers["binary"] = binarize(probs).astype(np.float32)
    out.uns["method"] = method
    out.uns["binarization"] = "expected_count"
    return out


def rna_prediction(log_expr: np.ndarray, obs: pd.DataFrame, var: pd.DataFrame, method: str) -> AnnData:
    out = AnnData(np.asarray(log_expr, dtype=np.float32), obs=obs.copy(), var=var.copy())
    out.uns["method"] = method
    return out


class RnaPCA:
    """log1p-normalise -> highly variable genes (train variance) -> standardise -> PCA (fitted on training cells)."""

    def __init__(self, n_top_genes: int = 2000, n_comps: int = 30):
        self.n_top_genes, self.n_comps = n_top_genes, n_comps

    def fit(self, rna: AnnData, seed: int = 0) -> "RnaPCA":
        from sklearn.decomposition import PCA

        x = true_expression(rna)
        self.genes = rna.var_names[np.sort(np.argsort(-x.var(axis=0))[: min(self.n_top_genes, rna.n_vars)])]
        x = x[:, rna.var_names.get_indexer(self.genes)]
        self.mean, self.std = x.mean(axis=0), x.std(axis=0) + 1e-6
        self.pca = PCA(n_components=min(self.n_comps, min(x.shape) - 1), random_state=seed)
        self.train_embedding = self.pca.fit_transform((x - self.mean) / self.std)
        return self

    def transform(self, rna: AnnData) -> np.ndarray:
        x = true_expression(rna[:, self.genes])
        return self.pca.transform((x - self.mean) / self.std)


class AtacLSI:
    """ATAC latent semantic indexing: TF-IDF (training IDF) -> truncated SVD, first component dropped, L2 rows."""

    def __init__(self, n_comps: int = 30):
        self.n_comps = n_comps

    def _tfidf(self, binary: sp.csr_matrix) -> sp.csr_matrix:
        tf = sp.diags(1.0 / np.maximum(np.asarray(binary.sum(axis=1)).ravel(), 1.0)) @ binary
        return sp.csr_matrix(tf.multiply(self.idf[None, :]))

    def fit(self, atac: AnnData, seed: int = 0) -> "AtacLSI":
        from sklearn.decomposition import TruncatedSVD

        binary = binary_csr(atac)
        self.idf = np.log1p(binary.shape[0] / (1.0 + np.asarray(binary.sum(axis=0)).ravel())).astype(np.float32)
        self.svd = TruncatedSVD(n_components=min(self.n_comps + 1, min(binary.shape) - 1), random_state=seed)
        self.train_embedding = self._normalize(self.svd.fit_transform(self._tfidf(binary)))
        return self

    @staticmethod
    def _normalize(z: np.ndarray) -> np.ndarray:
        z = z[:, 1:]
        return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)

    def transform(self, atac: AnnData) -> np.ndarray:
        return self._normalize(self.svd.transform(self._tfidf(binary_csr(atac))))


def check_paired(rna: AnnData, atac: AnnData) -> None:
    if not np.array_equal(rna.obs_names, atac.obs_names):
        raise ValueError("rna and atac must hold the same cells in the same order (obs_names differ)")
