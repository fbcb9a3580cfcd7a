"""Training runs, shared by :func:`cisformer.train.fit` and Attune's loops: the accelerator of a device (mixed
precision on CUDA only), the epoch loop with selection on a validation score and early stopping
(:func:`epoch_loop`), a run's checkpoint files (``best.pt``, ``last.pt``, ``history.csv`` written atomically each
epoch, ``done.json`` at the end), resuming an interrupted run where it stopped, and :class:`Fingerprint`, the one
digest of what a result depends on (code, settings, names, matrices) that names run folders and saved results."""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .sampler import as_blocks
from .utils.paths import write_atomic

PACKAGE_ROOT = Path(__file__).resolve().parent  # the source files Fingerprint.code reads


def hash_matrix(h, X) -> None:
    """Add a matrix, or its row blocks (:func:`cisformer.sampler.as_blocks`; :func:`~cisformer.sampler.row_blocks`
    gives the same blocks from memory or disk), to the hash ``h``: row lengths, column indices and values, each as
    one stream, so the digest does not depend on how the rows were split into blocks.

    Parameters
    ----------
    h
        A ``hashlib`` hash object, updated in place.
    X
        A sparse or dense matrix, or an iterable of its row blocks.
    """
    parts = [hashlib.blake2b(digest_size=8) for _ in range(3)]
    for block in map(sp.csr_matrix, as_blocks(X)):
        for part, arr in zip(parts, (np.diff(block.indptr).astype(np.int64), block.indices.astype(np.int64),
                                     block.data)):
            part.update(np.ascontiguousarray(arr).tobytes())
    for part in parts:
        h.update(part.digest())


class Fingerprint:
    """A digest of everything a result depends on, fed piece by piece (each method returns the fingerprint, so
    calls chain): the source of the code that computes it, JSON-able settings, names, matrices and arrays.

    Parameters
    ----------
    digest_size
        Bytes of the BLAKE2b digest (:meth:`hexdigest` has twice as many hex digits).
    """

    def __init__(self, digest_size: int = 8):
        self._hash = hashlib.blake2b(digest_size=digest_size)

    def code(self, sources) -> "Fingerprint":
        """The source files ``sources`` (paths under ``cisformer/``; a folder stands for every ``.py`` file in it, in
        sorted order), so that changed code never reuses a result of the old one.

        Parameters
        ----------
        sources
            Paths relative to the package folder, e.g. ``("model.py", "metrics")``.

        Returns
        -------
        This :class:`Fingerprint`.
        """
        for source in sources:
            path = PACKAGE_ROOT / source
            for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
                self._hash.update(file.read_bytes())
        return self

    def json(self, value) -> "Fingerprint":
        """A JSON-able value (dict keys sorted).

        Parameters
        ----------
        value
            Anything ``json.dumps`` writes.

        Returns
        -------
        This :class:`Fingerprint`.
        """
        self._hash.update(json.dumps(value, sort_keys=True).encode())
        return self

    def names(self, names, *, sep: str = "\x00") -> "Fingerprint":
        """A sequence of names (cells, features), joined by ``sep``.

        Parameters
        ----------
        names, sep
            The names (each turned into ``str``) and the separator written between them.

        Returns
        -------
        This :class:`Fingerprint`.
        """
        self._hash.update(sep.join(map(str, names)).encode())
        return self

    def matrix(self, X) -> "Fingerprint":
        """A sparse matrix or its row blocks (:func:`hash_matrix`).

        Parameters
        ----------
        X
            A sparse or dense matrix, or an iterable of its row blocks.

        Returns
        -------
        This :class:`Fingerprint`.
        """
        hash_matrix(self._hash, X)
        return self

    def array(self, values: np.ndarray) -> "Fingerprint":
        """A dense array's bytes.

        Parameters
        ----------
        values
            A numpy array (its bytes in C order; dtype and shape are not hashed).

        Returns
        -------
        This :class:`Fingerprint`.
        """
        self._hash.update(np.ascontiguousarray(values).tobytes())
        return self

    def parts(self, *parts) -> "Fingerprint":
        """Values one by one, each closed by a zero byte: arrays as dtype, shape and bytes, anything else as text."""
        for part in parts:
            if isinstance(part, np.ndarray):
                self._hash.update(str((part.dtype, part.shape)).encode())
                self.array(part)
            else:
                self._hash.update(str(part).encode())
            self._hash.update(b"\0")
        return self

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_epoch(run_dir: Path | None, model, optimizer, scheduler) -> tuple:
    """Restore what :func:`save_epoch` wrote (an interrupted run) into ``model``, ``optimizer``, ``scheduler`` and
    the RNG; ``run_dir/done.json`` is removed, since the run goes on.

    Parameters
    ----------
    run_dir
        The run's checkpoint folder, or None (nothing kept on disk: a fresh start).
    model, optimizer, scheduler
        The unwrapped model, its optimizer and learning-rate scheduler, loaded in place.

    Returns
    -------
    ``(next epoch, best score, epochs without improvement, history rows, best state dict)``, or a fresh start
    ``(0, -inf, 0, [], current weights)`` when ``run_dir`` holds no ``last.pt``.
    """
    if run_dir is None or not (run_dir / "last.pt").exists():
        return 0, -math.inf, 0, [], {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    best_state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)["state_dict"]
    _set_rng_state(state["rng"])
    (run_dir / "done.json").unlink(missing_ok=True)
    return state["epoch"], state["best_score"], state["bad_epochs"], state["history"], best_state


def save_epoch(run_dir: Path, model, optimizer, scheduler, epoch: int, best_score: float, bad_epochs: int,
               history: list, improved: bool) -> None:
    """Write an epoch's checkpoint files atomically: ``best.pt`` (when ``improved``), ``last.pt`` (everything a
    resume needs: weights, optimizer, scheduler, RNG, counters, history) and ``history.csv``.

    Parameters
    ----------
    run_dir
        The run's checkpoint folder.
    model, optimizer, scheduler
        The unwrapped model (with ``checkpoint_dict``), its optimizer and learning-rate scheduler.
    epoch, best_score, bad_epochs
        Epochs done, the best validation score so far and the epochs since it improved.
    history, improved
        The history rows (dicts) so far; whether this epoch's score is the best (then ``best.pt`` is written).
    """
    if improved:
        write_atomic(run_dir / "best.pt", lambda tmp: torch.save(model.checkpoint_dict(), tmp))
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": _rng_state(), "epoch": epoch, "best_score": best_score, "bad_epochs": bad_epochs,
             "history": history}
    write_atomic(run_dir / "last.pt", lambda tmp: torch.save(state, tmp))
    write_atomic(run_dir / "history.csv", lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))


def save_done(run_dir: Path, history: pd.DataFrame, stopped_early: bool, best_score: float, **info) -> None:
    """Mark a run finished: ``done.json`` with the epochs run, whether early stopping ended it, the best
    validation score and ``info`` (configs, seed).

    Parameters
    ----------
    run_dir
        The run's checkpoint folder.
    history
        The run's history (one row per epoch, column ``epoch``).
    stopped_early, best_score
        Whether early stopping ended the run; the best validation score.
    **info
        Further JSON-able entries of ``done.json``.
    """
    text = json.dumps({"epochs": int(history["epoch"].max()) if len(history) else 0,
                       "stopped_early": bool(stopped_early), "best_val_score": best_score, **info}, indent=1)
    write_atomic(run_dir / "done.json", lambda tmp: tmp.write_text(text))


def run_folder(checkpoint_dir, fingerprint: str) -> Path | None:
    """``checkpoint_dir/fingerprint``, created; None without a checkpoint folder (nothing kept on disk).

    Parameters
    ----------
    checkpoint_dir, fingerprint
        The folder of all runs (str, Path or None) and the run's fingerprint (its subfolder's name).

    Returns
    -------
    The run's folder (Path), or None.
    """
    if checkpoint_dir is None:
        return None
    run_dir = Path(checkpoint_dir) / fingerprint
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def finished_run(run_dir: Path | None, loader, epochs: int | None = None):
    """The finished run's (best model, history) in ``run_dir``, or None.

    Parameters
    ----------
    run_dir
        The run's checkpoint folder, or None.
    loader
        Reads a model from a path, e.g. :meth:`cisformer.model.Cisformer.load`.
    epochs
        The epoch limit asked for, when it is not part of the fingerprint: a run that ran to a smaller limit without
        stopping early is not finished (training continues it). None: any ``done.json`` means finished.

    Returns
    -------
    ``(loader(run_dir / "best.pt"), history DataFrame)`` when the run is finished, else None.
    """
    if run_dir is None or not (run_dir / "done.json").exists():
        return None
    if epochs is not None:
        info = json.loads((run_dir / "done.json").read_text())
        if not info["stopped_early"] and info["epochs"] < epochs:
            return None
    return loader(run_dir / "best.pt"), pd.read_csv(run_dir / "history.csv")


def make_accelerator(device: str):
    """The ``accelerate.Accelerator`` of a training run: CUDA with bf16 (else fp16) mixed precision, or the CPU.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` (RuntimeError without a GPU).

    Returns
    -------
    accelerate.Accelerator
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    use_cuda = torch.cuda.is_available() and device != "cpu"
    # mixed precision only on CUDA: bf16 matmuls are ~400x slower than fp32 on CPUs without AMX
    precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if use_cuda else "no"
    # under several processes (DDP): some parameters get no gradient in some steps (e.g. the value embedding of
    # a direction that has none), which DDP must be told; one process never reads this
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=not use_cuda, mixed_precision=precision, kwargs_handlers=[ddp])


def epoch_loop(accelerator, raw_model, optimizer, scheduler, run_dir: Path | None, *, epochs: int, patience: int,
               train_epoch, validate, report=None, **done_info) -> pd.DataFrame:
    """The epochs of a training run: train, validate, keep the best-scoring weights, stop after ``patience`` epochs
    without improvement, checkpoint every epoch and resume an interrupted run where it stopped.

    Parameters
    ----------
    accelerator, raw_model, optimizer, scheduler
        The run's ``accelerate.Accelerator``, its unwrapped model (``state_dict`` / ``checkpoint_dict``), optimizer
        and learning-rate scheduler (all restored from ``run_dir/last.pt`` when it exists).
    run_dir
        The run's checkpoint folder (:func:`save_epoch`, :func:`save_done`), or None: nothing kept on disk.
    epochs, patience
        Epoch limit, and epochs without a better validation score before stopping.
    train_epoch
        ``train_epoch(epoch) -> dict`` trains one epoch (0-based) and returns ``train_loss``, ``samples`` and any
        further columns of the history (after ``samples``).
    validate
        ``validate() -> dict`` with ``val_score`` (higher is better) and the validation columns of the history.
    report
        ``report(row, improved)``, called on the main process after each epoch (progress lines), or None.
    **done_info
        Written into ``done.json`` (configs, seed).

    Returns
    -------
    The history (one row per epoch: ``epoch``, ``train_loss``, the validation columns, ``lr``, ``seconds``,
    ``samples`` and ``train_epoch``'s other columns); ``raw_model`` holds the best weights, in eval mode.
    """
    start_epoch, best_score, bad_epochs, rows, best_state = resume_epoch(run_dir, raw_model, optimizer, scheduler)
    stopped_early = False
    for epoch in range(start_epoch, epochs):
        if bad_epochs >= patience:
            stopped_early = True
            break
        t0 = time.perf_counter()
        trained = train_epoch(epoch)
        val = validate()
        seconds = time.perf_counter() - t0  # the epoch's wall-clock, validation included
        improved = val["val_score"] > best_score
        if improved:
            best_score, bad_epochs = val["val_score"], 0
            best_state = {k: v.detach().cpu().clone() for k, v in raw_model.state_dict().items()}
        else:
            bad_epochs += 1
        rows.append({"epoch": epoch + 1, "train_loss": trained.pop("train_loss"), **val,
                     "lr": optimizer.param_groups[0]["lr"], "seconds": seconds, **trained})
        if report is not None and accelerator.is_main_process:
            report(rows[-1], improved)
        if run_dir is not None and accelerator.is_main_process:
            save_epoch(run_dir, raw_model, optimizer, scheduler, epoch + 1, best_score, bad_epochs, rows, improved)
    else:
        stopped_early = bad_epochs >= patience

    history = pd.DataFrame(rows)
    if run_dir is not None and accelerator.is_main_process:
        save_done(run_dir, history, stopped_early, best_score, **done_info)
    accelerator.wait_for_everyone()
    raw_model.load_state_dict(best_state)
    raw_model.eval()
    return history
