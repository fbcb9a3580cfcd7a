"""Attune's alignment model and ATAC -> RNA head (GigaScience 2025), re-implemented in PyTorch.

Attune aligns paired scRNA and scATAC of the same cells by contrastive learning (no reconstruction loss):

* four 128-d encoders, a *teacher* and a *student* per modality. The teacher (:class:`TeacherEncoder`) reads a
  cell as one token per feature (learned feature embedding x the feature's value), pools the tokens by additive
  attention over every feature, zeros included, then BatchNorm, dropout and a Linear + ReLU layer; its weighted
  tokens are the gene / peak token embeddings of the regulatory step (:mod:`cisformer.attune.regulatory`). The student
  (:class:`StudentEncoder`) is an MLP on the value vector;
* the loss is the mean of two symmetric NT-Xent losses (:func:`nt_xent`, temperature 0.1), RNA teacher vs ATAC
  teacher and RNA student vs ATAC student, both modalities' batches drawn with the same permutation so that pairs
  stay aligned; Adam with a learning rate decaying linearly (paper: 1e-4 -> 1e-6 over 20 epochs, batch 128);
* a cell's embeddings are its L2-normalised teacher outputs, one per modality (:func:`embed`);
* ATAC -> RNA (:class:`ExpressionHead`): the pretrained ATAC student plus Linear 1000 ReLU -> Linear n_genes,
  trained end to end with MSE against log1p CP10k expression (Adam 1e-3, 40 epochs in the paper).

Inputs (:func:`attune_inputs`): RNA as log1p CP10k (:func:`cisformer.data.log_expression`, the scale every
ATAC -> RNA method here predicts), ATAC binarised (the reference's ATAC transform is unknown; a binary matrix is
what every ATAC method here reads). Deviations from the reference and why, the checkpoint folder and the shapes'
letters: ``docs/attune.md``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
from anndata import AnnData

from ..data.preprocess import log_expression
from ..metrics import foscttm
from ..profiles import check_profile
from ..runs import Fingerprint, finished_run, run_folder
from ..train import cell_indices, check_pair, split_indices
from ..utils.matrix import binary_csr, columnwise_pearson
from .training import training_loop

CHECKPOINT_FORMAT = 1  # bumped when the state dicts change: older cached runs are not reused
EMBEDDING_INIT_STD = 0.005  # teacher feature embeddings start small (docs/attune.md, "Deviations")


# --------------------------------------------------------------------------------------------------- config

@dataclass
class AttuneConfig:
    """Architecture and optimisation of the aligner (fields without prefix) and of the ATAC -> RNA head
    (``head_*``; :func:`fit_atac2rna` reads them from the aligner's config, overridable there).

    Parameters
    ----------
    n_genes, n_peaks, dim, dropout, temperature
        Input features G and P, encoder width D, dropout rate, NT-Xent temperature.
    epochs, batch_size, lr, lr_end, patience
        ``lr`` decays linearly per step to ``lr_end`` over ``epochs``; ``patience``: epochs without a better
        validation score before training stops (the best epoch is kept either way).
    head_hidden, head_epochs, head_batch_size, head_lr, head_patience
        The head's hidden width and schedule (a constant learning rate).
    min_epoch_samples
        An epoch (of the aligner and of the head) shows at least this many cells, drawing each cell of a small set
        several times (the rule of :func:`cisformer.train.fit` and the baselines: the shipped BMMC's 199 training
        cells are one batch, so an epoch would otherwise be one optimiser step).
    """
    n_genes: int
    n_peaks: int
    dim: int = 128
    dropout: float = 0.1
    temperature: float = 0.1
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-4
    lr_end: float = 1e-6
    patience: int = 20
    head_hidden: int = 1000
    head_epochs: int = 40
    head_batch_size: int = 128
    head_lr: float = 1e-3
    head_patience: int = 10
    min_epoch_samples: int = 6400

    @classmethod
    def from_profile(cls, profile: str, n_genes: int, n_peaks: int, **overrides) -> "AttuneConfig":
        """``paper``: the reference's settings (dim 128, 20 epochs, batch 128, Adam 1e-4 -> 1e-6; head 1000 hidden, 40
        epochs, Adam 1e-3), patience long enough never to stop the alignment early. ``cpu``: the same networks, Adam
        2e-3 -> 2e-5 over 6 epochs, stopping after 2 epochs without a better validation FOSCTTM (SNARE-seq, 8,247
        training cells: best at epoch 2, stops after 4, ~1 min on one contended core; a longer schedule only overfits),
        head 12 epochs with patience 3 (~45 s). ``quick``: dim 32, seconds, for tests and smoke runs.

        Parameters
        ----------
        profile, n_genes, n_peaks, **overrides
            ``"quick"``, ``"cpu"`` or ``"paper"``; G and P; fields to set instead of the profile's.

        Returns
        -------
        :class:`AttuneConfig`
        """
        check_profile(profile)
        table = {
            "paper": {},
            "cpu": dict(epochs=6, lr=2e-3, lr_end=2e-5, patience=2, head_epochs=12, head_patience=3),
            "quick": dict(dim=32, epochs=15, batch_size=64, lr=3e-3, lr_end=3e-5, patience=15, head_hidden=64,
                          head_epochs=10, head_batch_size=64, head_lr=3e-3, head_patience=10, min_epoch_samples=0),
        }[profile]
        fields = {f.name for f in dataclasses.fields(cls)} - {"n_genes", "n_peaks"}
        unknown = set(overrides) - fields
        if unknown:
            raise TypeError(f"unknown override(s) {sorted(unknown)}; allowed: {sorted(fields)}")
        return cls(n_genes=n_genes, n_peaks=n_peaks, **{**table, **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------- inputs

@dataclass
class AttuneInputs:
    """Both modalities of every cell on the scale the encoders read.

    Parameters
    ----------
    rna_log, atac_bin
        Sparse float32 [cells, G] log1p CP10k (:func:`cisformer.data.log_expression`); sparse float32 [cells, P],
        1 where the peak has any read.
    rna_scale, atac_scale
        float32 [G] / [P], 1 / root-mean-square of the column over the training cells (1 where that is 0).
    rna_scaled_mean, atac_scaled_mean
        The training mean of the scaled column (the students centre on it).
    """
    rna_log: sp.csr_matrix
    atac_bin: sp.csr_matrix
    rna_scale: np.ndarray
    atac_scale: np.ndarray
    rna_scaled_mean: np.ndarray
    atac_scaled_mean: np.ndarray


def _rna_matrix(rna) -> sp.csr_matrix:
    """log1p CP10k, sparse float32 [cells, G]; per cell, so a subset of cells gives the same rows."""
    return sp.csr_matrix(log_expression(rna), dtype=np.float32)


def _inverse_rms(X: sp.csr_matrix) -> np.ndarray:
    ms = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()  # [features]
    scale = np.ones_like(ms)
    scale[ms > 0] = 1.0 / np.sqrt(ms[ms > 0])
    return scale.astype(np.float32)


def attune_inputs(rna, atac, train_cells) -> AttuneInputs:
    """The encoders' inputs for paired ``rna`` / ``atac`` (same cells, same order; raw counts in ``X``) and the
    per-feature value scale, fitted on ``train_cells`` only.

    Parameters
    ----------
    rna, atac, train_cells
        Paired AnnData and the training cells (names, positions or a boolean mask).

    Returns
    -------
    :class:`AttuneInputs` of every cell.
    """
    check_pair(rna, atac)
    train_idx = cell_indices(rna, train_cells, "train_cells")
    rna_log, atac_bin = _rna_matrix(rna), binary_csr(atac)
    rna_scale, atac_scale = _inverse_rms(rna_log[train_idx]), _inverse_rms(atac_bin[train_idx])
    scaled_mean = lambda X, scale: (np.asarray(X.mean(axis=0)).ravel() * scale).astype(np.float32)  # noqa: E731
    return AttuneInputs(rna_log, atac_bin, rna_scale, atac_scale, scaled_mean(rna_log[train_idx], rna_scale),
                        scaled_mean(atac_bin[train_idx], atac_scale))


def rows_tensor(X: sp.csr_matrix, rows: np.ndarray, device) -> torch.Tensor:
    """Rows ``rows`` of a CSR matrix as a dense tensor on ``device``."""
    return torch.from_numpy(X[rows].toarray()).to(device, non_blocking=True)


# --------------------------------------------------------------------------------------------------- encoders

class TeacherEncoder(nn.Module):
    """Feature tokens pooled by additive attention over *every* feature (zeros included), computed exactly from
    the nonzero entries.

    Token of feature f in cell c: ``t_cf = e_f * (x_cf * value_scale_f)``; score ``s_cf = <tanh(t_cf W + b), q>``
    (``q`` = ``pool_context``). A zero feature has a zero token and the common score ``s0 = <tanh(b), q>``, so the
    softmax over all F features is ``w_cf = exp(s_cf) / (sum_{x_cf != 0} exp(s_cf) + n_zero(c) exp(s0))`` and
    ``pooled_c = tanh(sum_f w_cf t_cf)`` needs the nonzero entries only. Then BatchNorm, dropout, Linear + ReLU.

    Shapes: B cells, F features, N nonzero entries of the batch, D = ``dim``, k selected features.

    Parameters
    ----------
    n_features, dim, dropout
        F, D and the dropout rate.
    """

    def __init__(self, n_features: int, dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.feature_embedding = nn.Embedding(n_features, dim)
        nn.init.normal_(self.feature_embedding.weight, std=EMBEDDING_INIT_STD)
        self.pool_proj = nn.Linear(dim, dim)
        self.pool_context = nn.Parameter(torch.randn(dim) / dim ** 0.5)
        self.norm = nn.BatchNorm1d(dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, dim)
        self.register_buffer("value_scale", torch.ones(n_features))  # set from AttuneInputs

    def _scores(self, tokens: torch.Tensor) -> torch.Tensor:  # [..., D] -> [...] in float32
        return (torch.tanh(self.pool_proj(tokens)) @ self.pool_context).float()

    def _softmax_parts(self, x: torch.Tensor):
        """Entries of the batch and the per-cell softmax shift and denominator over all F features."""
        B, F = x.shape
        rows, cols = torch.nonzero(x, as_tuple=True)  # [N], [N]
        tokens = self.feature_embedding(cols) * (x[rows, cols] * self.value_scale[cols]).unsqueeze(-1)  # [N, D]
        scores = self._scores(tokens)  # [N]
        zero_score = self._scores(torch.zeros_like(self.pool_context))  # [] = <tanh(b), q>
        n_zero = (F - torch.bincount(rows, minlength=B)).to(scores.dtype)  # [B]
        shift = zero_score.expand(B).clone().scatter_reduce(0, rows, scores, reduce="amax")  # [B]
        weights = torch.exp(scores - shift[rows])  # [N], unnormalised
        denom = torch.zeros(B, dtype=scores.dtype, device=x.device).index_add_(0, rows, weights)
        denom = denom + n_zero * torch.exp(zero_score - shift)  # [B]
        return rows, cols, tokens, weights / denom[rows], shift, denom, zero_score

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] -> [B, D]: ``tanh(sum_f w_cf t_cf)``, the attention-pooled cell vector before the output layers."""
        rows, _, tokens, weights, *_ = self._softmax_parts(x)
        summed = tokens.new_zeros(x.shape[0], tokens.shape[-1]).index_add_(
            0, rows, weights.to(tokens.dtype).unsqueeze(-1) * tokens)  # [B, D]
        return torch.tanh(summed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x dense [B, F] (log expression or binary accessibility, unscaled) -> [B, D] cell embedding (not
        normalised)."""
        return torch.relu(self.out(self.dropout(self.norm(self.pooled(x)))))

    def weighted_tokens(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """[B, k, D]: attention weight x token for the feature columns ``features`` (LongTensor [k]; all F when
        None), the softmax taken over all F features; exactly zero rows where ``x == 0``.

        Parameters
        ----------
        x, features
            Dense [B, F] values (unscaled); LongTensor [k] of columns, or None.

        Returns
        -------
        Tensor [B, k, D].
        """
        _, _, _, _, shift, denom, _ = self._softmax_parts(x)
        if features is None:
            features = torch.arange(x.shape[1], device=x.device)
        values = x[:, features] * self.value_scale[features]  # [B, k]
        tokens = self.feature_embedding(features).unsqueeze(0) * values.unsqueeze(-1)  # [B, k, D]
        weights = torch.exp(self._scores(tokens) - shift.unsqueeze(-1)) / denom.unsqueeze(-1)  # [B, k]
        weights = torch.where(values != 0, weights, torch.zeros_like(weights))
        return weights.to(tokens.dtype).unsqueeze(-1) * tokens


class _Saved:
    """Persistence of the two trainable models (config, weights, feature names; safe for weights_only loads)."""

    def checkpoint_dict(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "state_dict": self.state_dict(),
                "gene_names": self.gene_names, "peak_names": self.peak_names}

    @classmethod
    def from_checkpoint_dict(cls, ckpt: dict):
        model = cls(AttuneConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        model.gene_names, model.peak_names = ckpt["gene_names"], ckpt["peak_names"]
        return model

    def save(self, path) -> None:
        """Write the model (:meth:`checkpoint_dict`) to a file that :meth:`load` reads.

        Parameters
        ----------
        path
            The file (str or Path), e.g. ``"aligner.pt"``.
        """
        torch.save(self.checkpoint_dict(), path)

    @classmethod
    def load(cls, path, map_location="cpu"):
        """A model written by ``save`` or the ``best.pt`` of its training function, in eval mode.

        Parameters
        ----------
        path, map_location
            The file, and where ``torch.load`` maps its tensors (default ``"cpu"``).

        Returns
        -------
        :class:`AttuneAligner` or :class:`ExpressionHead`: the class it is called on.
        """
        return cls.from_checkpoint_dict(torch.load(path, map_location=map_location, weights_only=True)).eval()


class StudentEncoder(nn.Module):
    """The value vector (scaled as the teacher's) -> standardised with the training cells' mean and standard
    deviation (the first BatchNorm of the reference, with exact statistics: docs/attune.md) -> Linear D ReLU ->
    BatchNorm -> dropout -> Linear D ReLU: [B, F] -> [B, D].

    Parameters
    ----------
    n_features, dim, dropout
        F, D and the dropout rate.
    """

    def __init__(self, n_features: int, dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, dim), nn.ReLU(), nn.BatchNorm1d(dim), nn.Dropout(dropout),
                                 nn.Linear(dim, dim), nn.ReLU())
        self.register_buffer("value_scale", torch.ones(n_features))  # set from AttuneInputs
        self.register_buffer("value_mean", torch.zeros(n_features))  # of the scaled values over training cells
        self.register_buffer("value_sd", torch.ones(n_features))

    def set_statistics(self, scale: np.ndarray, scaled_mean: np.ndarray) -> None:
        """``scale`` [F]: 1 / training root-mean-square; ``scaled_mean`` [F]: training mean of the scaled values
        (their mean square is 1, so their variance is 1 - mean^2; floored at 0.01 for near-constant features)."""
        scaled_mean = np.asarray(scaled_mean, dtype=np.float64)
        self.value_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        self.value_mean.copy_(torch.as_tensor(scaled_mean, dtype=torch.float32))
        self.value_sd.copy_(torch.as_tensor(np.sqrt(np.maximum(1.0 - scaled_mean ** 2, 0.0) + 0.01),
                                            dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x * self.value_scale - self.value_mean) / self.value_sd)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric NT-Xent of paired rows ``a`` [B, D] and ``b`` [B, D] (cell i of a and b are the positive pair).

    Rows are L2-normalised; each of the 2B cells is classified against the 2B - 1 others of the batch (the other
    modality's B cells, its own modality's B - 1 other cells), its partner being the right answer; the loss is
    the mean over all 2B cells, so it is symmetric in ``a`` and ``b``. log(2B - 1) for unrelated embeddings.

    Parameters
    ----------
    a, b, temperature
        The paired embeddings (any scale) and the temperature dividing their cosine similarities.

    Returns
    -------
    Scalar float32 tensor.
    """
    z = F.normalize(torch.cat([a, b]).float(), dim=-1)  # [2B, D]
    n = a.shape[0]
    sim = z @ z.T / temperature  # [2B, 2B]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -math.inf)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # [2B]
    return F.cross_entropy(sim, partner)


class AttuneAligner(_Saved, nn.Module):
    """The four encoders and the alignment loss; carries its feature names (``gene_names``, ``peak_names``).

    Parameters
    ----------
    config
        :class:`AttuneConfig`.
    """

    def __init__(self, config: AttuneConfig):
        super().__init__()
        self.config = config
        c = config
        self.rna_teacher = TeacherEncoder(c.n_genes, c.dim, c.dropout)
        self.atac_teacher = TeacherEncoder(c.n_peaks, c.dim, c.dropout)
        self.rna_student = StudentEncoder(c.n_genes, c.dim, c.dropout)
        self.atac_student = StudentEncoder(c.n_peaks, c.dim, c.dropout)
        self.gene_names: list[str] = []
        self.peak_names: list[str] = []

    def set_value_scales(self, inputs: AttuneInputs) -> None:
        self.rna_teacher.value_scale.copy_(torch.as_tensor(inputs.rna_scale, dtype=torch.float32))
        self.atac_teacher.value_scale.copy_(torch.as_tensor(inputs.atac_scale, dtype=torch.float32))
        self.rna_student.set_statistics(inputs.rna_scale, inputs.rna_scaled_mean)
        self.atac_student.set_statistics(inputs.atac_scale, inputs.atac_scaled_mean)

    def forward(self, rna_x: torch.Tensor, atac_x: torch.Tensor) -> dict:
        """rna_x [B, G] log1p CP10k, atac_x [B, P] binary (dense, unscaled) -> the four [B, D] embeddings (not
        normalised) and ``loss``, the mean of the teachers' and the students' NT-Xent.

        Parameters
        ----------
        rna_x, atac_x
            The same cells' dense values, unscaled.

        Returns
        -------
        dict: ``rna_teacher``, ``atac_teacher``, ``rna_student``, ``atac_student`` and ``loss``.
        """
        out = {"rna_teacher": self.rna_teacher(rna_x), "atac_teacher": self.atac_teacher(atac_x),
               "rna_student": self.rna_student(rna_x), "atac_student": self.atac_student(atac_x)}
        t = self.config.temperature
        out["loss"] = 0.5 * (nt_xent(out["rna_teacher"], out["atac_teacher"], t)
                             + nt_xent(out["rna_student"], out["atac_student"], t))
        return out


class ExpressionHead(_Saved, nn.Module):
    """ATAC -> RNA: the pretrained ATAC student, then Linear H ReLU -> Linear G: [B, P] binary -> [B, G] predicted
    log1p CP10k. Carries ``gene_names`` and ``peak_names``.

    Parameters
    ----------
    config
        :class:`AttuneConfig` (``n_peaks``, ``dim``, ``dropout``, ``head_hidden``, ``n_genes``).
    """

    def __init__(self, config: AttuneConfig):
        super().__init__()
        self.config = config
        self.student = StudentEncoder(config.n_peaks, config.dim, config.dropout)
        self.readout = nn.Sequential(nn.Linear(config.dim, config.head_hidden), nn.ReLU(),
                                     nn.Linear(config.head_hidden, config.n_genes))
        self.gene_names: list[str] = []
        self.peak_names: list[str] = []

    def forward(self, atac_x: torch.Tensor) -> torch.Tensor:
        """The head's prediction.

        Parameters
        ----------
        atac_x
            Dense [B, P] binary accessibility, unscaled.

        Returns
        -------
        Tensor [B, G] of predicted log1p CP10k.
        """
        return self.readout(self.student(atac_x))


# --------------------------------------------------------------------------------------------------- training

def run_fingerprint(parts: list, matrices: list) -> str:
    """Hash of what determines a run: this module's and its helpers' source, JSON-able ``parts`` and arrays."""
    fp = Fingerprint().code(("attune/alignment.py", "attune/training.py", "train.py", "runs.py",
                             "protocol.py", "metrics", "utils/matrix.py"))
    fp.json([CHECKPOINT_FORMAT, *parts])
    for X in matrices:
        fp.matrix(X) if sp.issparse(X) else fp.array(X)
    return fp.hexdigest()


def _batched(fn, n: int, batch_size: int) -> list:
    return [fn(np.arange(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def fit_alignment(rna, atac, train_cells, val_cells, *, profile: str = "cpu", seed: int = 0, checkpoint_dir=None,
                  device: str = "auto", epochs: int | None = None, progress: bool = True, **overrides):
    """Train Attune's four encoders on paired cells (contrastive alignment).

    Parameters
    ----------
    rna, atac
        Paired AnnData (same cells in the same order), raw counts in ``X``.
    train_cells, val_cells
        Cell names, positions or boolean masks; disjoint. Only these cells' rows are read (test cells never).
    profile
        ``"quick"``, ``"cpu"`` or ``"paper"`` (:meth:`AttuneConfig.from_profile`).
    seed
        Seeds the initialisation, the batch order and dropout.
    checkpoint_dir
        Folder for checkpoints (docs/attune.md); None keeps nothing on disk.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    epochs
        Overrides the profile's number of epochs (the length of the learning-rate schedule).
    progress
        progress bar (:func:`cisformer.utils.progress.progress`) and one line per epoch.
    **overrides
        :class:`AttuneConfig` fields.

    Returns
    -------
    model
        The :class:`AttuneAligner` of the epoch with the lowest validation FOSCTTM of the teacher embeddings, in
        eval mode, carrying its feature names.
    history
        One row per epoch: ``epoch, train_loss, val_loss`` (alignment loss on the validation cells, in batches of
        ``batch_size`` in order), ``val_foscttm``, ``val_score`` (= 1 - val_foscttm, the criterion),
        ``val_student_foscttm`` (the students' embeddings, a diagnostic), ``lr`` (after the epoch), ``seconds``
        (the epoch's wall-clock, validation included), ``samples`` (training cells drawn in the epoch).
    """
    check_pair(rna, atac)
    train_idx, val_idx = split_indices(rna, train_cells, val_cells, min_cells=2)
    if epochs is not None:
        overrides["epochs"] = int(epochs)
    cfg = AttuneConfig.from_profile(profile, rna.n_vars, atac.n_vars, **overrides)
    inputs = attune_inputs(rna, atac, train_idx)

    rows = np.concatenate([train_idx, val_idx])
    run_dir = run_folder(checkpoint_dir, run_fingerprint(
        ["alignment", {k: v for k, v in cfg.to_dict().items() if not k.startswith("head_")}, seed,
         list(map(str, rna.var_names)), list(map(str, atac.var_names)),
         list(map(str, rna.obs_names[train_idx])), list(map(str, rna.obs_names[val_idx]))],
        [inputs.rna_log[rows], inputs.atac_bin[rows]]))
    done = finished_run(run_dir, AttuneAligner.load)
    if done is not None:
        return done

    torch.manual_seed(seed)
    model = AttuneAligner(cfg)
    model.set_value_scales(inputs)
    model.gene_names, model.peak_names = list(map(str, rna.var_names)), list(map(str, atac.var_names))
    val_rna, val_atac = inputs.rna_log[val_idx], inputs.atac_bin[val_idx]

    def batch_loss(m, rows_, device_):
        return m(rows_tensor(inputs.rna_log, rows_, device_), rows_tensor(inputs.atac_bin, rows_, device_))["loss"]

    def validate(m):
        device_ = next(m.parameters()).device
        outs = _batched(lambda r: m(rows_tensor(val_rna, r, device_), rows_tensor(val_atac, r, device_)), len(val_idx),
                        cfg.batch_size)
        sizes = np.array([len(o["rna_teacher"]) for o in outs])
        loss = float(np.average([o["loss"].item() for o in outs], weights=sizes))
        emb = {k: F.normalize(torch.cat([o[k] for o in outs]).float(), dim=-1).cpu().numpy()
               for k in ("rna_teacher", "atac_teacher", "rna_student", "atac_student")}
        teacher = foscttm(emb["rna_teacher"], emb["atac_teacher"])
        return {"val_loss": loss, "val_foscttm": teacher, "val_score": 1.0 - teacher,
                "val_student_foscttm": foscttm(emb["rna_student"], emb["atac_student"])}

    return training_loop(model, batch_loss, validate, train_idx, epochs=cfg.epochs, batch_size=cfg.batch_size,
                         lr=cfg.lr, lr_end=cfg.lr_end, patience=cfg.patience, seed=seed, run_dir=run_dir,
                         device=device, progress=progress, desc="attune alignment",
                         min_epoch_samples=cfg.min_epoch_samples)


def _check_features(model, rna=None, atac=None) -> None:
    if rna is not None and list(map(str, rna.var_names)) != model.gene_names:
        raise ValueError("rna.var_names do not match the model's genes (select them: rna[:, model.gene_names])")
    if atac is not None and list(map(str, atac.var_names)) != model.peak_names:
        raise ValueError("atac.var_names do not match the model's peaks (select them: atac[:, model.peak_names])")


@torch.no_grad()
def embed(model: AttuneAligner, rna, atac, cells=None, *, batch_size: int = 256) -> dict:
    """Cell embeddings: the L2-normalised teacher outputs of ``cells`` (names, positions or mask; all when None).

    Parameters
    ----------
    model
        A trained :class:`AttuneAligner` (:func:`fit_alignment`).
    rna, atac
        Paired AnnData with the model's features, raw counts in ``X``.
    cells, batch_size
        The cells to embed (default None: all) and cells per forward pass (default 256).

    Returns
    -------
    ``{"rna": ndarray [n, D], "atac": ndarray [n, D]}``, float32, rows in the order of ``cells``.
    """
    check_pair(rna, atac)
    _check_features(model, rna, atac)
    idx = np.arange(rna.n_obs) if cells is None else cell_indices(rna, cells)
    rna_log, atac_bin = _rna_matrix(rna[idx]), binary_csr(atac[idx])
    model.eval()
    device = next(model.parameters()).device
    out = {}
    for key, X, encoder in (("rna", rna_log, model.rna_teacher), ("atac", atac_bin, model.atac_teacher)):
        parts = _batched(lambda r: encoder(rows_tensor(X, r, device)).float(), X.shape[0], batch_size)
        out[key] = F.normalize(torch.cat(parts), dim=-1).cpu().numpy()
    return out


def embed_anndata(model: AttuneAligner, rna, atac, cells=None) -> tuple[AnnData, AnnData]:
    """Copies of ``rna`` and ``atac`` restricted to ``cells`` (all when None) with ``obsm["X_attune"]``, the
    cells' L2-normalised teacher embedding of that modality (:func:`embed`).

    Parameters
    ----------
    model, rna, atac, cells
        As :func:`embed`.

    Returns
    -------
    ``(rna, atac)``: the two AnnData copies.
    """
    emb = embed(model, rna, atac, cells)
    idx = np.arange(rna.n_obs) if cells is None else cell_indices(rna, cells)
    rna_out, atac_out = rna[idx].copy(), atac[idx].copy()
    rna_out.obsm["X_attune"], atac_out.obsm["X_attune"] = emb["rna"], emb["atac"]
    return rna_out, atac_out


def fit_atac2rna(aligner: AttuneAligner, rna, atac, train_cells, val_cells, *, seed: int = 0, checkpoint_dir=None,
                 device: str = "auto", epochs: int | None = None, progress: bool = True, **overrides):
    """Train the ATAC -> RNA head end to end from the aligner's ATAC student (MSE on log1p CP10k expression).

    Parameters
    ----------
    aligner
        A trained :class:`AttuneAligner` (:func:`fit_alignment`), unchanged; its ``head_*`` config fields set the head.
    rna, atac, train_cells, val_cells, seed, checkpoint_dir, device, progress
        As :func:`fit_alignment`.
    epochs, **overrides
        Override ``head_epochs`` and other ``head_*`` fields (``head_*`` names only; Adam's constant rate: ``head_lr``).

    Returns
    -------
    head
        The :class:`ExpressionHead` of the epoch with the highest mean gene-wise Pearson r on the validation cells
        (eval mode).
    history
        ``epoch, train_loss, val_loss`` (validation MSE), ``val_score`` (validation mean gene-wise Pearson r),
        ``lr``, ``seconds``, ``samples``.
    """
    check_pair(rna, atac)
    _check_features(aligner, rna, atac)
    train_idx, val_idx = split_indices(rna, train_cells, val_cells, min_cells=2)
    bad = {k for k in overrides if not k.startswith("head_")} | (set(overrides) - set(aligner.config.to_dict()))
    if bad:
        raise TypeError(f"unknown or non-head override(s) {sorted(bad)}; allowed: head_* fields of AttuneConfig")
    if epochs is not None:
        overrides["head_epochs"] = int(epochs)
    cfg = dataclasses.replace(aligner.config, **overrides)
    rna_log, atac_bin = _rna_matrix(rna), binary_csr(atac)

    rows = np.concatenate([train_idx, val_idx])
    student = [v.detach().cpu().numpy() for v in aligner.atac_student.state_dict().values()]
    run_dir = run_folder(checkpoint_dir, run_fingerprint(
        ["atac2rna", cfg.to_dict(), seed, aligner.gene_names, aligner.peak_names,
         list(map(str, rna.obs_names[train_idx])), list(map(str, rna.obs_names[val_idx]))],
        [rna_log[rows], atac_bin[rows], *student]))
    done = finished_run(run_dir, ExpressionHead.load)
    if done is not None:
        return done

    torch.manual_seed(seed)
    head = ExpressionHead(cfg)
    head.student.load_state_dict(copy.deepcopy(aligner.atac_student.state_dict()))
    head.gene_names, head.peak_names = list(aligner.gene_names), list(aligner.peak_names)
    with torch.no_grad():  # start at the per-gene training mean (the floor), not at zero
        head.readout[-1].bias.copy_(torch.from_numpy(np.asarray(rna_log[train_idx].mean(axis=0)).ravel()))
    val_truth = rna_log[val_idx].toarray()  # [n_val, G]

    def batch_loss(m, rows_, device_):
        return F.mse_loss(m(rows_tensor(atac_bin, rows_, device_)).float(), rows_tensor(rna_log, rows_, device_))

    def validate(m):
        device_ = next(m.parameters()).device
        pred = torch.cat(_batched(lambda r: m(rows_tensor(atac_bin, val_idx[r], device_)).float(), len(val_idx),
                                  cfg.head_batch_size)).cpu().numpy()
        return {"val_loss": float(((pred - val_truth) ** 2).mean()),
                "val_score": float(columnwise_pearson(pred, val_truth).mean())}

    return training_loop(head, batch_loss, validate, train_idx, epochs=cfg.head_epochs,
                         batch_size=cfg.head_batch_size, lr=cfg.head_lr, lr_end=cfg.head_lr, patience=cfg.head_patience,
                         seed=seed, run_dir=run_dir, device=device, progress=progress, desc="attune atac2rna",
                         min_epoch_samples=cfg.min_epoch_samples)


@torch.no_grad()
def predict_atac2rna(head: ExpressionHead, atac, cells=None, *, batch_size: int = 256) -> AnnData:
    """Predicted log1p CP10k expression of ``cells`` of ``atac`` (all when None), in the convention of the ATAC ->
    RNA predictors of :mod:`cisformer.peers.baselines`, scored by :func:`cisformer.metrics.genewise_correlation`.

    Parameters
    ----------
    head
        A trained :class:`ExpressionHead` (:func:`fit_atac2rna`).
    atac
        AnnData with the head's peaks as ``var_names`` (same order), open where ``X`` > 0.
    cells, batch_size
        The cells to predict (default None: all) and cells per forward pass (default 256).

    Returns
    -------
    AnnData [cells, genes]: those cells' ``obs``, ``var`` indexed by the head's genes, ``uns["method"] = "attune"``.
    """
    _check_features(head, atac=atac)
    idx = np.arange(atac.n_obs) if cells is None else cell_indices(atac, cells)
    atac_bin = binary_csr(atac[idx])
    head.eval()
    device = next(head.parameters()).device
    pred = torch.cat(_batched(lambda r: head(rows_tensor(atac_bin, r, device)).float(), len(idx), batch_size))
    out = AnnData(pred.cpu().numpy(), obs=atac.obs.iloc[idx].copy(), var=pd.DataFrame(index=head.gene_names))
    out.uns["method"] = "attune"
    return out
