"""An ``.h5ad`` written block of rows after block of rows, in the layout ``anndata.read_h5ad`` reads (also backed).

Used by :func:`cisformer.predict.rna_to_atac` with ``out=``: a full-vocabulary prediction (1,033,239 CREs per cell)
never exists whole in memory. ``obs`` / ``var`` / ``uns`` are written up front with anndata's own ``write_elem``;
the matrices are HDF5 datasets filled block by block:

* dense: ``X`` (or a layer) is created at its final shape, chunked by rows, and each block writes its rows;
* CSR: ``data`` / ``indices`` grow by appending each block's entries; ``indptr`` is created at its final length.

Resuming: the root attribute ``cisformer_rows_done`` (rows written and flushed) is updated only after a block's
data are flushed, so a file interrupted at any point resumes at the first unwritten block: sparse datasets are cut
back to ``indptr[rows_done]``, dense rows are overwritten. Identity attributes (``cisformer_identity_*``) record
what the file is a prediction of, so a second run refuses to resume another model's or another input's file.
An exception or Ctrl-C closes the file cleanly; a hard kill (SIGKILL, power loss) while HDF5 is writing can leave
a file HDF5 cannot reopen, which the caller then starts over (HDF5 has no journal without SWMR).
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

try:  # anndata >= 0.11
    from anndata.io import write_elem
except ImportError:  # pragma: no cover - older anndata
    from anndata.experimental import write_elem

DONE = "cisformer_rows_done"
IDENTITY = "cisformer_identity_"


def partial_path(out) -> Path:
    """Where a file written block by block lives until it is complete (``OUT.partial``), then renamed ``OUT``.

    Parameters
    ----------
    out
        Final path of the file (str or path).

    Returns
    -------
    Path ``OUT.partial`` next to it.
    """
    out = Path(out)
    return out.with_name(out.name + ".partial")


class StreamedH5ad:
    """An open partial ``.h5ad``: :meth:`create` or :meth:`open_resume`, then :meth:`write_block` per block.

    Parameters
    ----------
    file
        The open ``h5py.File`` (mode ``"w"`` or ``"r+"``).
    matrices
        Matrix name (``"X"``, ``"layers/NAME"``) -> ``"dense"`` or ``"csr"``.
    """

    def __init__(self, file: h5py.File, matrices: dict):
        self.file, self.matrices = file, matrices  # name -> "dense" | "csr"

    # ---- creation ------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path, n_rows: int, n_cols: int, obs, var, uns: dict, matrices: dict, identity: dict,
               *, chunk_rows: int = 16, compression=None) -> "StreamedH5ad":
        """A new file at ``path``. ``matrices``: ``{"X": ("dense"|"csr", dtype), "layers/NAME": (...)}``;
        ``identity``: strings recorded for :meth:`open_resume` to compare.

        Parameters
        ----------
        path
            File to create (overwritten), usually :func:`partial_path` of the output.
        n_rows, n_cols
            Final shape of every matrix (cells x features).
        obs, var, uns
            Written up front with anndata's ``write_elem``; ``obs`` / ``var`` DataFrames of ``n_rows`` /
            ``n_cols`` rows.
        matrices, identity
            As above; identity values are stored with ``str()``.
        chunk_rows
            Rows per HDF5 chunk of dense matrices.
        compression
            HDF5 compression of the matrices (e.g. ``"gzip"``; default none).

        Returns
        -------
        The writer, with 0 rows done.
        """
        f = h5py.File(path, "w")
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        write_elem(f, "uns", uns)
        for group in ("obsm", "varm", "obsp", "varp", "layers"):
            write_elem(f, group, {})
        kinds = {}
        for name, (kind, dtype) in matrices.items():
            kinds[name] = kind
            if kind == "dense":
                ds = f.create_dataset(name, shape=(n_rows, n_cols), dtype=dtype, compression=compression,
                                      chunks=(max(1, min(chunk_rows, n_rows)), max(1, min(n_cols, (1 << 19) // chunk_rows))))
                ds.attrs["encoding-type"], ds.attrs["encoding-version"] = "array", "0.2.0"
            elif kind == "csr":
                g = f.create_group(name)
                g.attrs["encoding-type"], g.attrs["encoding-version"] = "csr_matrix", "0.1.0"
                g.attrs["shape"] = (n_rows, n_cols)
                index_dtype = np.int32 if n_cols < 2 ** 31 else np.int64
                g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 18,),
                                 compression=compression)
                g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=index_dtype, chunks=(1 << 18,),
                                 compression=compression)
                g.create_dataset("indptr", data=np.zeros(n_rows + 1, dtype=np.int64))
            else:
                raise ValueError(f"matrix kind must be 'dense' or 'csr', got {kind!r}")
        f.attrs[IDENTITY + "matrices"] = json.dumps(kinds)
        for key, value in identity.items():
            f.attrs[IDENTITY + key] = str(value)
        f.attrs[DONE] = 0
        f.flush()
        return cls(f, kinds)

    @staticmethod
    def identity_of(path) -> tuple[dict, int]:
        """The identity strings and rows done of a partial file (raises ``OSError`` / ``KeyError`` when it is
        unreadable or not one of ours).

        Parameters
        ----------
        path
            The partial file.

        Returns
        -------
        (identity, rows_done): dict of the identity strings given to :meth:`create` (plus ``matrices``, the JSON
        of the matrix kinds) and the number of rows written.
        """
        with h5py.File(path, "r") as f:
            ident = {k[len(IDENTITY):]: str(v) for k, v in f.attrs.items() if k.startswith(IDENTITY)}
            return ident, int(f.attrs[DONE])

    @classmethod
    def open_resume(cls, path) -> tuple["StreamedH5ad", int]:
        """Reopen a partial file; sparse datasets are cut back to the last completed block.

        Parameters
        ----------
        path
            The partial file, written by :meth:`create`.

        Returns
        -------
        (writer, rows_done): the writer, opened ``"r+"``, and the first row still to write.
        """
        f = h5py.File(path, "r+")
        kinds = json.loads(f.attrs[IDENTITY + "matrices"])
        done = int(f.attrs[DONE])
        for name, kind in kinds.items():
            if kind == "csr":
                g = f[name]
                end = int(g["indptr"][done])
                g["data"].resize((end,))
                g["indices"].resize((end,))
        return cls(f, kinds), done

    # ---- writing -------------------------------------------------------------------------------------------
    def write_block(self, start: int, blocks: dict) -> None:
        """Write rows ``start:start + n`` of every matrix (``{name: dense array or CSR}``), flush, then record
        them as done.

        Parameters
        ----------
        start
            First row of the block; blocks must be written in row order (CSR data are appended).
        blocks
            Matrix name -> block of ``n`` rows (every matrix of the file, same ``n``).
        """
        n = None
        for name, block in blocks.items():
            n = block.shape[0]
            if self.matrices[name] == "dense":
                self.file[name][start:start + n] = block
            else:
                block = sp.csr_matrix(block)
                g = self.file[name]
                begin = int(g["indptr"][start])
                end = begin + block.nnz
                for key, values in (("data", block.data), ("indices", block.indices)):
                    g[key].resize((end,))
                    g[key][begin:end] = values
                g["indptr"][start + 1:start + n + 1] = begin + block.indptr[1:].astype(np.int64)
        self.file.flush()
        self.file.attrs[DONE] = start + n
        self.file.flush()

    def finish(self) -> None:
        """Drop the resume attributes and close: the file is an ordinary ``.h5ad``."""
        for key in list(self.file.attrs):
            if key == DONE or key.startswith(IDENTITY):
                del self.file.attrs[key]
        self.file.close()

    def close(self) -> None:
        """Close the file, keeping the resume attributes (an unfinished file can be resumed)."""
        self.file.close()
