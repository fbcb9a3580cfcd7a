"""Running an external method in its own Python environment: installation steps, the subprocess's environment
(one thread, no inherited Python path) and its driver script, run on h5ad files in a temporary folder.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ...utils import paths

DRIVERS = Path(__file__).parent / "drivers"  # scripts run inside a method's environment, not imported


def child_env(threads: int = 1) -> dict:
    """Environment of an external method's subprocess: no inherited notebook plotting backend or Python path.

    Parameters
    ----------
    threads
        Value of ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``NUMBA_NUM_THREADS``.

    Returns
    -------
    dict: ``os.environ`` without ``PYTHONPATH``, ``PYTHONHOME``, ``VIRTUAL_ENV``, with ``MPLBACKEND=Agg`` and the
    thread counts.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return env | {"MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                  "NUMBA_NUM_THREADS": str(threads)}


def imports_ok(python: Path, statement: str) -> bool:
    """True when ``python`` exists and runs ``statement`` (an import) without error.

    Parameters
    ----------
    python
        Path of the interpreter.
    statement
        Python code run with ``python -c`` (in :func:`child_env`, at most 300 s).

    Returns
    -------
    bool
    """
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", statement], capture_output=True, timeout=300, env=child_env())
    return probe.returncode == 0


def run_steps(steps: list, what: str, verbose: bool) -> None:
    """Run installation commands in order; the first that fails raises with its last output lines.

    Parameters
    ----------
    steps
        Commands, each a list of arguments, run in :func:`child_env`.
    what
        What is installed, named in the ``RuntimeError``.
    verbose
        Print each command before it runs.
    """
    for cmd in steps:
        if verbose:
            print("+", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
        if done.returncode != 0:
            raise RuntimeError(f"installing {what} failed at {' '.join(cmd)}:\n"
                               + "\n".join((done.stdout + done.stderr).splitlines()[-15:]))


@dataclass(frozen=True)
class Environment:
    """An external method's virtual environment, ``<cache>/env-<name>``, that works when ``python -c probe`` does;
    ``what`` names it in messages.

    Parameters
    ----------
    name
        Folder suffix: the environment is ``env-<name>`` in :func:`cisformer.utils.paths.cache_dir`.
    probe
        Python statement (an import) that succeeds when the environment works.
    what
        Name of the environment in messages.
    """
    name: str
    probe: str
    what: str

    @property
    def folder(self) -> Path:
        return paths.cache_dir() / f"env-{self.name}"

    @property
    def python(self) -> Path:
        return self.folder / "bin" / "python"

    def available(self) -> bool:
        """True when the environment's Python runs ``probe`` (:func:`imports_ok`)."""
        return imports_ok(self.python, self.probe)

    def ensure(self, installs: list[list[str]], verbose: bool = False) -> Path:
        """Create the environment if it does not work yet (a venv, then ``pip install`` of each argument list in
        ``installs``, with the local wheel folder when there is one); return its Python interpreter. Raises
        ``RuntimeError`` with pip's last lines when a step fails.

        Parameters
        ----------
        installs
            Argument lists of ``pip install``, one per step, in order.
        verbose
            Print each command before it runs.

        Returns
        -------
        Path of the environment's Python interpreter.
        """
        if self.available():
            return self.python
        wheels = ["--find-links", "/opt/wheels"] if Path("/opt/wheels").is_dir() else []
        steps = [[sys.executable, "-m", "venv", str(self.folder)]]
        steps += [[str(self.python), "-m", "pip", "install", "-q", *args, *wheels] for args in installs]
        run_steps(steps, self.what, verbose)
        if not self.available():
            raise RuntimeError(f"{self.what} at {self.folder} was installed but `{self.probe}` fails")
        return self.python


def paired_names(python: Path, env: str, ensure: str, rna: ad.AnnData, atac: ad.AnnData) -> pd.Index:
    """The cells' names, after checking that the method's environment exists (``ensure``: the function that
    creates it) and that ``rna`` and ``atac`` hold the same cells in the same order.

    Parameters
    ----------
    python
        The environment's interpreter; ``RuntimeError`` when it does not exist.
    env, ensure
        Name of the environment and of the function that creates it, for the error message.
    rna, atac
        Paired AnnData; ``ValueError`` when their ``obs_names`` differ.

    Returns
    -------
    pandas.Index of the cells' names as str.
    """
    if not python.exists():
        raise RuntimeError(f"{env} is missing; call {ensure}() first")
    if not np.array_equal(rna.obs_names, atac.obs_names):
        raise ValueError("rna and atac must hold the same cells in the same order (obs_names differ)")
    return pd.Index(rna.obs_names.astype(str))


def run_driver(python: Path, driver: str, work: str, threads: int, timeout_s: float | None, method: str) -> float:
    """Run the driver script ``drivers/<driver>`` with ``python`` in the folder ``work`` (arguments: the folder and
    the thread count); returns its wall-clock seconds, raises with its last output lines when it fails.

    Parameters
    ----------
    python
        The method environment's interpreter.
    driver
        File name of the script in ``drivers/``.
    work
        Folder of the driver's inputs and outputs, also its working directory.
    threads
        Thread count passed to the driver and set in :func:`child_env`.
    timeout_s
        Seconds after which the subprocess is killed (``subprocess.TimeoutExpired``); ``None``: no limit.
    method
        Name of the method in the ``RuntimeError``.

    Returns
    -------
    float: wall-clock seconds of the subprocess.
    """
    t0 = time.time()
    done = subprocess.run([str(python), str(DRIVERS / driver), work, str(threads)], capture_output=True, text=True,
                          timeout=timeout_s, env=child_env(threads), cwd=work)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n" + "\n".join((done.stdout + done.stderr).splitlines()[-20:]))
    return time.time() - t0


def cell_positions(names: pd.Index, cells, field: str) -> np.ndarray:
    """Positions of ``cells`` in ``names``; ``ValueError`` naming ``field`` when some are not there.

    Parameters
    ----------
    names
        All cells' names (:func:`paired_names`).
    cells
        obs names to look up (compared as str).
    field
        Name of the argument that passed ``cells``, for the error message.

    Returns
    -------
    int array of positions, in the order of ``cells``.
    """
    pos = names.get_indexer(pd.Index(cells).astype(str))
    if (pos < 0).any():
        missing = list(pd.Index(cells)[pos < 0][:3])
        raise ValueError(f"{field}: {int((pos < 0).sum())} cells not in rna.obs_names (e.g. {missing}); pass obs names "
                         "of the paired AnnData")
    return pos
