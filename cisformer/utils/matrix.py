"""Matrix helpers the package shares: a dense copy of a (sparse or dense) matrix, the binary accessibility of an
AnnData, and Pearson correlation column by column."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def dense(x, dtype=np.float32) -> np.ndarray:
    """``x`` (scipy sparse or array-like) as a dense numpy array of ``dtype``.

    Parameters
    ----------
    x
        Scipy sparse matrix or array-like.
    dtype
        Output dtype (default float32).

    Returns
    -------
    ndarray
        Dense array of ``x``'s shape.
    """
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=dtype)


def binary_csr(atac) -> sp.csr_matrix:
    """The accessibility of an AnnData's cells as float32 CSR: 1 where ``atac.X > 0`` (open), no stored zeros.

    Parameters
    ----------
    atac
        Cells x CREs AnnData (``X`` sparse or dense).

    Returns
    -------
    scipy.sparse.csr_matrix
        Cells x CREs float32 matrix of 0 / 1.
    """
    return (sp.csr_matrix(atac.X) > 0).astype(np.float32).tocsr()


def columnwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between each column of ``a`` and the same column of ``b`` (cells x features); 0 where a column is
    constant.

    Parameters
    ----------
    a, b
        [cells, features] dense arrays of the same shape.

    Returns
    -------
    ndarray
        [features] Pearson r per column (never NaN or infinite).
    """
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=0) / denom
    return np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
