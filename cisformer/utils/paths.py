"""Where the shipped data, the figures and the model cache live.

Every location can be overridden by an environment variable, so a notebook run by papermill, a test and a user
on their own machine all resolve the same folders:

``CISFORMER_DATA``   shipped data folder (default: ``<repo>/data``); a user's data folder given as ``data_dir``
                     is searched first, then this one (:func:`data_dirs`)
``CISFORMER_CACHE``  trained-model cache (default: ``<repo>/.cache``)
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Folder holding the shipped data and its ``MANIFEST``.

    Parameters
    ----------
    override
        Folder to use instead (default ``None``: ``CISFORMER_DATA``, else ``<repo>/data``).

    Returns
    -------
    Path
        The folder (not created).
    """
    return Path(override or os.environ.get("CISFORMER_DATA") or REPO_ROOT / "data")


def data_dirs(override: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for a data file, in order: ``override`` (e.g. a user's data folder written by
    ``cisformer.data.write_dataset``), then the default data folder (``CISFORMER_DATA`` or ``<repo>/data``), then
    ``<repo>/data``; so a user's folder needs to hold only the user's own files.

    Parameters
    ----------
    override
        A user's data folder searched first (default ``None``).

    Returns
    -------
    list of Path
        The folders in search order, without duplicates.
    """
    found: list[Path] = []
    for path in (data_dir(override), data_dir(), REPO_ROOT / "data"):
        if path not in found:
            found.append(path)
    return found


def cache_dir(*, override: str | os.PathLike | None = None) -> Path:
    """Folder for trained-model checkpoints shared between notebooks (git-ignored).

    Parameters
    ----------
    override
        Folder to use instead (default ``None``: ``CISFORMER_CACHE``, else ``<repo>/.cache``).

    Returns
    -------
    Path
        The folder, created if missing.
    """
    path = Path(override or os.environ.get("CISFORMER_CACHE") or REPO_ROOT / ".cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path, write) -> None:
    """``write(tmp_path)`` to a temporary name next to ``path`` (same suffix), then rename it to ``path``: an
    interrupted write leaves no partial file.

    Parameters
    ----------
    path
        Final file path (str or path-like); its folder is created if missing.
    write
        Callable taking the temporary :class:`~pathlib.Path` and writing the file there.
    """
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
