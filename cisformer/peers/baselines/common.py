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
    """Fraction of the rows (cells) in which each column (CRE) is open, float32.

    Parameters
    ----------
    binary
        Cells x CREs, 1 where open (:func:`cisformer.utils.matrix.binary_csr`).

    Returns
    -------
    float32 array (CREs,): the mean of each column.
    """
    return np.asarray(binary.mean(axis=0)).ravel().astype(np.float32)


def epoch_batches(rng: np.random.Generator, n_cells: int, batch_size: int, min_epoch_samples: int) -> list:
    """One epoch's mini-batches of cell indices: :func:`epoch_repeats` shuffled passes over the cells, split into
    batches of about ``batch_size``.

    Parameters
    ----------
    rng
        Generator of the shuffles (one permutation per pass).
    n_cells
        Number of training cells; indices run over ``0 .. n_cells - 1``.
    batch_size
        Target batch size (the passes are split into ``max(1, len // batch_size)`` near-equal batches).
    min_epoch_samples
        Least number of cells an epoch shows (:func:`cisformer.protocol.epoch_repeats`).

    Returns
    -------
    list of int arrays, the batches in order.
    """
    order = np.concatenate([rng.permutation(n_cells) for _ in range(epoch_repeats(n_cells, min_epoch_samples))])
    return np.array_split(order, max(1, len(order) // batch_size))


def shrink_to_floor(open_counts: np.ndarray, n_cells, floor: np.ndarray, prior_cells: float) -> np.ndarray:
    """Open frequency among ``n_cells`` cells with the floor counted as ``prior_cells`` extra cells:
    ``(open_counts + prior_cells * floor) / (n_cells + prior_cells)`` (float32; broadcasts over rows).

    Parameters
    ----------
    open_counts
        Number of those cells in which each CRE is open, (CREs,) or (rows, CREs).
    n_cells
        Number of cells the counts were taken over.
    floor
        Each CRE's open frequency in all training cells (:func:`open_frequency`), (CREs,).
    prior_cells
        Weight of the floor, in cells (0: the plain frequency).

    Returns
    -------
    float32 array, the shape of ``open_counts``: shrunk open frequencies.
    """
    return ((open_counts + prior_cells * floor) / (n_cells + prior_cells)).astype(np.float32)


def atac_prediction(probs: np.ndarray, obs: pd.DataFrame, var: pd.DataFrame, method: str) -> AnnData:
    """An RNA -> ATAC prediction in the package's form (like ``cisformer.predict.rna_to_atac``).

    Parameters
    ----------
    probs
        Predicted open probabilities, cells x CREs; clipped to [0, 1] and stored as float32.
    obs, var
        The predicted cells' ``obs`` and the CREs' ``var`` (copied).
    method
        Method name, stored in ``uns["method"]``.

    Returns
    -------
    AnnData (cells x CREs): ``X`` the probabilities, ``layers["binary"]`` the calls of
    :func:`cisformer.metrics.binarize` (``"expected_count"`` rule, also in ``uns["binarization"]``).
    """
    probs = np.clip(np.asarray(probs, dtype=np.float32), 0.0, 1.0)
    out = AnnData(probs, obs=obs.copy(), var=var.copy())
    out.layers["binary"] = binarize(probs).astype(np.float32)
    out.uns["method"] = method
    out.uns["binarization"] = "expected_count"
    return out


def rna_prediction(log_expr: np.ndarray, obs: pd.DataFrame, var: pd.DataFrame, method: str) -> AnnData:
    """An ATAC -> RNA prediction in the package's form (like ``cisformer.predict.atac_to_rna``).

    Parameters
    ----------
    log_expr
        Predicted expression, cells x genes, on the log1p(normalised to 10,000) scale.
    obs, var
        The predicted cells' ``obs`` and the genes' ``var`` (copied).
    method
        Method name, stored in ``uns["method"]``.

    Returns
    -------
    AnnData (cells x genes) with ``X`` = ``log_expr`` as float32.
    """
    out = AnnData(np.asarray(log_expr, dtype=np.float32), obs=obs.copy(), var=var.copy())
    out.uns["method"] = method
    return out


class RnaPCA:
    """log1p-normalise -> highly variable genes (train variance) -> standardise -> PCA (fitted on training cells).

    Parameters
    ----------
    n_top_genes
        Genes kept: those with the highest variance of log1p(normalised to 10,000) expression in the training cells.
    n_comps
        Principal components (at most ``min(cells, genes) - 1``).
    """

    def __init__(self, n_top_genes: int = 2000, n_comps: int = 30):
        self.n_top_genes, self.n_comps = n_top_genes, n_comps

    def fit(self, rna: AnnData, seed: int = 0) -> "RnaPCA":
        """Fit genes, scaling and PCA on the training cells.

        Parameters
        ----------
        rna
            Training cells' RNA (raw counts; :func:`cisformer.data.true_expression` gives the log1p scale).
        seed
            ``random_state`` of the PCA.

        Returns
        -------
        The fitted object; ``genes`` holds the kept genes and ``train_embedding`` the training cells' PCs.
        """
        from sklearn.decomposition import PCA

        x = true_expression(rna)
        self.genes = rna.var_names[np.sort(np.argsort(-x.var(axis=0))[: min(self.n_top_genes, rna.n_vars)])]
        x = x[:, rna.var_names.get_indexer(self.genes)]
        self.mean, self.std = x.mean(axis=0), x.std(axis=0) + 1e-6
        self.pca = PCA(n_components=min(self.n_comps, min(x.shape) - 1), random_state=seed)
        self.train_embedding = self.pca.fit_transform((x - self.mean) / self.std)
        return self

    def transform(self, rna: AnnData) -> np.ndarray:
        """Project cells onto the fitted PCs.

        Parameters
        ----------
        rna
            Cells' RNA (raw counts, like the training cells), holding at least the fitted ``genes``.

        Returns
        -------
        Array (cells, components).
        """
        x = true_expression(rna)[:, rna.var_names.get_indexer(self.genes)]  # normalised over all genes, as in fit
        return self.pca.transform((x - self.mean) / self.std)


class AtacLSI:
    """ATAC latent semantic indexing: TF-IDF (training IDF) -> truncated SVD, first component dropped, L2 rows.

    Parameters
    ----------
    n_comps
        Components kept after the first is dropped (the SVD computes ``n_comps + 1``, at most
        ``min(cells, CREs) - 1``).
    """

    def __init__(self, n_comps: int = 30):
        self.n_comps = n_comps

    def _tfidf(self, binary: sp.csr_matrix) -> sp.csr_matrix:
        tf = sp.diags(1.0 / np.maximum(np.asarray(binary.sum(axis=1)).ravel(), 1.0)) @ binary
        return sp.csr_matrix(tf.multiply(self.idf[None, :]))

    def fit(self, atac: AnnData, seed: int = 0) -> "AtacLSI":
        """Fit the IDF and the SVD on the training cells.

        Parameters
        ----------
        atac
            Training cells' ATAC (``X > 0`` is open).
        seed
            ``random_state`` of the truncated SVD.

        Returns
        -------
        The fitted object; ``train_embedding`` holds the training cells' L2-normalised components.
        """
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
        """Project cells onto the fitted components.

        Parameters
        ----------
        atac
            Cells' ATAC with the training CREs in the training order.

        Returns
        -------
        Array (cells, components), rows L2-normalised.
        """
        return self._normalize(self.svd.transform(self._tfidf(binary_csr(atac))))


def check_paired(rna: AnnData, atac: AnnData) -> None:
    """Raise ``ValueError`` unless ``rna`` and ``atac`` hold the same cells in the same order.

    Parameters
    ----------
    rna, atac
        Paired AnnData, compared by ``obs_names``.
    """
    if not np.array_equal(rna.obs_names, atac.obs_names):
        raise ValueError("rna and atac must hold the same cells in the same order (obs_names differ)")
