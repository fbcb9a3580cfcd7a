"""Run external methods that live in their own Python environment: scButterfly (PyPI ``scButterfly``).

scButterfly pins old versions (``scipy==1.9.3``, ``scvi-tools==0.19.0``, ...) that cannot share the compendium's
environment, so it gets its own virtual environment under ``paths.cache_dir() / "env-scbutterfly"`` and runs in a
subprocess through a small driver script that this module writes to a temporary folder. Data travel as h5ad files.

What is installed (``ensure_scbutterfly_env``): ``torch==2.13.0`` (the CPU wheel, never the CUDA one), the
``scButterfly`` package itself without its pinned dependency list, and the packages its RNA<->ATAC code path
actually imports (scanpy, anndata, episcanpy, adjustText, seaborn, scikit-learn, leidenalg, POT, torchmetrics).
torchvision, torchaudio, scvi-tools and scvi-colab are left out: they are only used by the data augmentation
options and the package's own plotting, which the driver does not call.

How scButterfly 0.0.9 is run (``run_scbutterfly_rna2atac``), and what is changed at runtime (no code copied; the
package's files are not edited):

* **Preprocessing fitted on training cells only** (``ButterflyPreprocessing``, run here, not in the driver).
  ``Butterfly.data_preprocessing`` computes every cross-cell statistic on all cells it is given, test cells
  included: the median library size of ``normalize_total``, the highly variable genes, the inverse document
  frequency of its TF-IDF and the maximum used to scale the TF-IDF into [0, 1]. The same steps with the same
  formulas are fitted here on the training cells (those passed as ``train_cells``, i.e. scButterfly's training
  and validation cells) and applied to every cell: RNA normalised to the training cells' median total count,
  log1p, the ``n_top_genes`` highly variable genes of the training cells (scanpy's default ``seurat`` flavour);
  ATAC binarised, ``tfidf[i, j] = b[i, j] / n_i * log(1 + N / df_j)`` (``n_i`` open CREs of cell ``i``, ``df_j``
  training cells in which CRE ``j`` is open, ``N`` training cells) divided by the largest training value.
  The driver hands these matrices to ``Butterfly`` and marks them as processed, so ``data_preprocessing`` is not
  called. Test cells' ATAC rows are sent as zeros: RNA -> ATAC prediction never needs them. CREs never open in a
  training cell (infinite IDF) are left out and predicted closed (0).
* **Base rate.** The other learned methods start from each CRE's training base rate as output bias. scButterfly's
  ATAC decoder ends, per chromosome, in Linear -> BatchNorm1d -> Sigmoid; the BatchNorm removes the Linear's bias,
  so the bias that sets the output level is the BatchNorm's shift. It is initialised to the logit of each CRE's
  mean training target (the mean max-scaled TF-IDF over scButterfly's training cells, clipped to
  [1e-6, 1 - 1e-6]), and then trained as usual. The same decoder serves ATAC pretraining and translation.
  ``base_rate=False`` keeps scButterfly's own initialisation (BatchNorm shift 0, outputs start at 0.5).
* **Budget.** Without ``time_budget_s`` the epoch limits and patience are scButterfly's defaults (RNA and ATAC
  pretraining 100 epochs each, translator 200, patience 50, KL warm-up 50 epochs). With a budget, the driver
  replaces ``scButterfly.train_model.EarlyStopping`` (called once at the end of every epoch of each phase) by a
  subclass that, after the usual patience check, also stops the phase when its wall-clock deadline has passed;
  scButterfly then restores the phase's best validation checkpoint exactly as after early stopping. The budget
  is split over the three phases in proportion to their epoch limits (1/4, 1/4, 1/2 at the defaults), with
  cumulative deadlines, so time left by a phase that stops early goes to the next ones; training therefore ends
  at the end of the epoch during which the budget runs out. The timing dict reports epochs run and why each
  phase stopped (``"time_budget"``, ``"early_stopping"`` or ``"max_epochs"``).
* **Prediction outside** ``test_model``. ``Butterfly.test_model`` zeroes every output below 1e-4 (its
  ``tensor2adata``), which ties every CRE whose output falls below it (targets are of order 1e-3), and then
  computes PCA and neighbour graphs that are not used here. The driver runs the same modules in evaluation mode
  (RNA encoder -> translator from RNA, deterministic latent mean -> ATAC decoder) and returns the raw outputs in
  test-cell order.
* **Output on the accessibility scale** (``ButterflyPreprocessing.to_accessibility``). The R2A output estimates a
  max-scaled TF-IDF, ``b[i, j] / n_i * idf_j / M``. Dividing by ``idf_j`` leaves ``b / n_i`` up to the constant
  ``M``, and ``b / n_i`` sums to 1 over a cell's CREs, so the score is
  ``p[i, j] = clip(n_mean * q[i, j] / sum_k q[i, k], 0, 1)`` with ``q = r2a / idf`` and ``n_mean`` the training
  cells' mean number of open CREs: per cell proportional to the estimated accessibility, on the open-probability
  scale on average, and independent of how well the sigmoid's overall level is calibrated (with scButterfly's own
  zero initialisation and a short budget the outputs sit near 0.5, and a fixed ``M * n_mean / idf`` rescaling
  clipped every one of them to 1).
* **Seeds.** ``Butterfly()`` seeds with 19193 before the model is built; the driver re-seeds with ``seed`` so
  that seeds also change the weight initialisation, not only the validation draw and the batch order.
* **CPU.** scButterfly only casts its batches to float32 on its CUDA code path (on CPU it feeds float64 into
  float32 layers and fails) and its discriminator calls ``torch.tensor(...).cuda()`` unconditionally. On a
  CPU-only machine the driver therefore reports CUDA as available and replaces ``torch.Tensor.cuda`` and
  ``torch.nn.Module.cuda`` by functions that return the object unchanged (on the CPU).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import paths

SCBUTTERFLY_VERSION = "0.0.9"
# episcanpy 0.3.2 imports numpy.NaN (gone in numpy 2) and anndata.read (gone in anndata 0.11)
SCBUTTERFLY_REQUIREMENTS = [
    "numpy<2", "scanpy>=1.9,<1.11", "anndata>=0.8,<0.11", "episcanpy==0.3.2", "adjustText", "seaborn", "scikit-learn",
    "leidenalg", "pot", "torchmetrics",
]


def scbutterfly_env_dir() -> Path:
    """Folder of scButterfly's virtual environment (``<cache>/env-scbutterfly``)."""
    return paths.cache_dir() / "env-scbutterfly"


def scbutterfly_python() -> Path:
    return scbutterfly_env_dir() / "bin" / "python"


def _child_env(threads: int = 1) -> dict:
    """Environment of scButterfly's subprocess: no inherited notebook plotting backend or Python path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return env | {"MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def scbutterfly_available() -> bool:
    """True when the scButterfly environment exists and imports the package."""
    python = scbutterfly_python()
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import scButterfly.butterfly"], capture_output=True, timeout=300,
                           env=_child_env())
    return probe.returncode == 0


def ensure_scbutterfly_env(verbose: bool = False) -> Path:
    """Create scButterfly's environment if it is missing; return its Python interpreter.

    Raises ``RuntimeError`` (with pip's last lines) when the installation fails.
    """
    if scbutterfly_available():
        return scbutterfly_python()
    env = scbutterfly_env_dir()
    steps = [
        [sys.executable, "-m", "venv", str(env)],
        [str(scbutterfly_python()), "-m", "pip", "install", "-q", "torch==2.13.0"]
        + (["--find-links", "/opt/wheels"] if Path("/opt/wheels").is_dir() else []),
        [str(scbutterfly_python()), "-m", "pip", "install", "-q", "--no-deps", f"scButterfly=={SCBUTTERFLY_VERSION}"],
        [str(scbutterfly_python()), "-m", "pip", "install", "-q", "torch==2.13.0", *SCBUTTERFLY_REQUIREMENTS]
        + (["--find-links", "/opt/wheels"] if Path("/opt/wheels").is_dir() else []),
    ]
    for cmd in steps:
        if verbose:
            print("+", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
        if done.returncode != 0:
            raise RuntimeError(f"installing scButterfly's environment failed at {' '.join(cmd)}:\n"
                               + "\n".join((done.stdout + done.stderr).splitlines()[-15:]))
    if not scbutterfly_available():
        raise RuntimeError(f"scButterfly's environment at {env} was installed but `import scButterfly` fails")
    return scbutterfly_python()


# ----------------------------------------------------------------------------------------------- preprocessing
def _positions(names: pd.Index, cells, field: str) -> np.ndarray:
    pos = names.get_indexer(pd.Index(cells).astype(str))
    if (pos < 0).any():
        missing = list(pd.Index(cells)[pos < 0][:3])
        raise ValueError(f"{field}: {int((pos < 0).sum())} cells not in rna.obs_names (e.g. {missing}); pass obs names "
                         "of the paired AnnData")
    return pos


@dataclass
class ButterflyPreprocessing:
    """scButterfly's preprocessing (``Butterfly.data_preprocessing``) with every cross-cell statistic taken from the
    training cells only; ``fit`` on the training cells, then ``transform_rna`` / ``transform_atac`` any cells.

    Attributes
    ----------
    target_sum
        Library size every cell's RNA is normalised to (median total count of the training cells).
    genes
        Positions (in the fitted ``rna.var``) of the highly variable genes kept, in their original order.
    cres
        Positions (in the fitted ``atac.var``) of the CREs open in at least one training cell, in original order.
    idf
        ``log(1 + N / df)`` of each kept CRE (``N`` training cells, ``df`` training cells in which it is open).
    scale
        Largest TF-IDF value over the training cells (the training targets lie in [0, 1]).
    mean_open
        Mean number of open kept CREs per training cell.
    """

    target_sum: float
    genes: np.ndarray
    cres: np.ndarray
    idf: np.ndarray
    scale: float
    mean_open: float

    @staticmethod
    def _binary(atac: ad.AnnData) -> sp.csr_matrix:
        return (sp.csr_matrix(atac.X) > 0).astype(np.float32).tocsr()

    @staticmethod
    def _log_normalized(rna: ad.AnnData, target_sum: float) -> sp.csr_matrix:
        x = sp.csr_matrix(rna.X, dtype=np.float32)
        totals = np.asarray(x.sum(axis=1)).ravel()
        factor = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        return sp.csr_matrix(sp.diags(factor) @ x, dtype=np.float32).log1p()

    @classmethod
    def fit(cls, rna: ad.AnnData, atac: ad.AnnData, train_cells, n_top_genes: int = 3000) -> "ButterflyPreprocessing":
        """Fit on ``train_cells`` (obs names) of paired counts ``rna``/``atac``; no other cell is read."""
        import scanpy as sc

        train = _positions(pd.Index(rna.obs_names.astype(str)), train_cells, "train_cells")
        rna, atac = rna[train], atac[train]
        totals = np.asarray(sp.csr_matrix(rna.X).sum(axis=1)).ravel()
        target_sum = float(np.median(totals))
        if n_top_genes < rna.n_vars:
            logged = ad.AnnData(cls._log_normalized(rna, target_sum), var=pd.DataFrame(index=rna.var_names.astype(str)))
            hvg = sc.pp.highly_variable_genes(logged, n_top_genes=n_top_genes, inplace=False)
            genes = np.flatnonzero(hvg["highly_variable"].to_numpy())
        else:
            genes = np.arange(rna.n_vars)
        binary = cls._binary(atac)
        df = np.asarray(binary.sum(axis=0)).ravel()
        cres = np.flatnonzero(df > 0)
        idf = np.log1p(atac.n_obs / df[cres]).astype(np.float64)
        unscaled = cls._tfidf(binary[:, cres], idf)
        scale = float(unscaled.max()) if unscaled.nnz else 1.0
        mean_open = float(binary[:, cres].sum(axis=1).mean())
        return cls(target_sum, genes, cres, idf, scale, mean_open)

    @staticmethod
    def _tfidf(binary: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
        n_open = np.asarray(binary.sum(axis=1)).ravel()
        inverse = np.divide(1.0, n_open, out=np.zeros_like(n_open, dtype=np.float64), where=n_open > 0)
        return sp.csr_matrix(sp.diags(inverse) @ binary @ sp.diags(idf))

    def transform_rna(self, rna: ad.AnnData) -> sp.csr_matrix:
        """log1p of RNA normalised to ``target_sum``, highly variable genes only (cells x genes, float32)."""
        return self._log_normalized(rna, self.target_sum)[:, self.genes].tocsr()  # library size over all genes

    def transform_atac(self, atac: ad.AnnData) -> sp.csr_matrix:
        """scButterfly's training targets: max-scaled TF-IDF of the kept CREs, clipped to [0, 1] (cells x CREs).

        ``n_i`` (a cell's open CREs) counts the kept CREs only, as scButterfly counts the features it is given.
        """
        scaled = self._tfidf(self._binary(atac)[:, self.cres], self.idf) / self.scale
        return sp.csr_matrix(scaled.minimum(1.0), dtype=np.float32)

    def to_accessibility(self, targets: np.ndarray) -> np.ndarray:
        """Invert the per-CRE weighting of predicted targets (cells x kept CREs) to accessibility scores in [0, 1].

        A target is ``b[i, j] / n_i * idf_j / scale``; ``q = targets / idf`` estimates ``b / n_i`` up to the constant
        ``scale``, and ``b / n_i`` sums to 1 over each cell's CREs. So each cell's ``q`` is divided by its sum (which
        removes ``scale`` and the test cell's unknown ``n_i``) and multiplied by the training cells' mean number of
        open CREs: ``p = clip(mean_open * q / q.sum(axis=1), 0, 1)``, on average the open-probability scale. Within
        a cell ``p`` ranks CREs like ``targets / idf``, whatever the overall calibration of the outputs.
        """
        q = np.asarray(targets, dtype=np.float64) / self.idf
        total = q.sum(axis=1, keepdims=True)
        scores = np.divide(q * self.mean_open, total, out=np.zeros_like(q), where=total > 0)
        return np.clip(scores, 0.0, 1.0).astype(np.float32)


def _base_rate_bias(targets: sp.csr_matrix, eps: float = 1e-6) -> np.ndarray:
    """Logit of each column's mean target, the mean clipped to [eps, 1 - eps]."""
    mean = np.clip(np.asarray(targets.mean(axis=0), dtype=np.float64).ravel(), eps, 1 - eps)
    return np.log(mean / (1 - mean)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- driver
_DRIVER = r"""
# Driver for scButterfly written by cisformer.external (runs inside scButterfly's own environment).
import json, os, sys, time
import anndata as ad
import numpy as np
import torch

if not torch.cuda.is_available():
    # documented runtime patch (see cisformer.external): route scButterfly's CUDA code path to the CPU
    torch.cuda.is_available = lambda: True
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
work, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
os.makedirs(f"{work}/out", exist_ok=True)
cfg = json.load(open(f"{work}/config.json"))
import scButterfly.train_model as butterfly_training
from scButterfly.butterfly import Butterfly
from scButterfly.model_utlis import setup_seed

# documented runtime patch: the end-of-epoch early-stopping check also stops a phase when its deadline has passed
PHASES = {"rna_pretrain": "early_stopping_R2R", "atac_pretrain": "early_stopping_A2A",
          "translator": "early_stopping_all"}
epochs = dict.fromkeys(PHASES, 0)
stopped_by = dict.fromkeys(PHASES, "max_epochs")
deadline = dict.fromkeys(PHASES, float("inf"))


class BudgetedEarlyStopping(butterfly_training.EarlyStopping):
    def __call__(self, val_loss, model, path):
        super().__call__(val_loss, model, path)
        phase = next(p for p, attr in PHASES.items() if getattr(model, attr, None) is self)
        epochs[phase] += 1
        if self.early_stop:
            stopped_by[phase] = "early_stopping"
        elif time.time() >= deadline[phase]:
            self.early_stop = True
            stopped_by[phase] = "time_budget"


butterfly_training.EarlyStopping = BudgetedEarlyStopping

rna = ad.read_h5ad(f"{work}/rna.h5ad")
atac = ad.read_h5ad(f"{work}/atac.h5ad")
t0 = time.time()
butterfly = Butterfly()
butterfly.load_data(rna, atac, cfg["train_id"], cfg["test_id"], cfg["validation_id"])
# preprocessing was done by cisformer.external on the training cells only
butterfly.RNA_data_p, butterfly.ATAC_data_p, butterfly.is_processed = butterfly.RNA_data, butterfly.ATAC_data, True
setup_seed(cfg["seed"])
butterfly.construct_model(chrom_list=cfg["chrom_counts"])
# base rate: the BatchNorm shift of the decoder's last (per-chromosome) layer sets each CRE's output level
bias = torch.as_tensor(np.load(f"{work}/bias.npy"), dtype=torch.float32)
with torch.no_grad():
    for norm, part in zip(butterfly.model.ATAC_decoder.bn_list[-1], torch.split(bias, cfg["chrom_counts"])):
        norm.bias.copy_(part)
limits = {"rna_pretrain": cfg["pretrain_epochs"], "atac_pretrain": cfg["pretrain_epochs"],
          "translator": cfg["translator_epochs"]}
t_train = time.time()
if cfg["time_budget_s"] is not None:
    done = 0.0
    for phase in PHASES:
        done += limits[phase] / max(1, sum(limits.values()))
        deadline[phase] = t_train + cfg["time_budget_s"] * done
warmup = {phase: min(50, max(1, n // 2)) for phase, n in limits.items()}
butterfly.train_model(R2R_pretrain_epoch=limits["rna_pretrain"], A2A_pretrain_epoch=limits["atac_pretrain"],
                      translator_epoch=limits["translator"], patience=cfg["patience"], seed=cfg["seed"],
                      R_pretrain_kl_warmup=warmup["rna_pretrain"], A_pretrain_kl_warmup=warmup["atac_pretrain"],
                      translation_kl_warmup=warmup["translator"], output_path=f"{work}/out")
train_s = time.time() - t0
loop_s = time.time() - t_train

# prediction: the modules test_model runs, in evaluation mode, without its zeroing of outputs below 1e-4
t0 = time.time()
model = butterfly.model
model.set_eval()
rna_test = model.RNA_data[cfg["test_id"]]
outputs = []
with torch.no_grad():
    for start in range(0, len(rna_test), 256):
        latent = model.RNA_encoder(torch.as_tensor(rna_test[start:start + 256], dtype=torch.float32))
        _, r2a, _, _ = model.translator.test_model(latent, "RNA")
        outputs.append(model.ATAC_decoder(r2a).numpy())
np.save(f"{work}/r2a.npy", np.concatenate(outputs).astype(np.float32))
json.dump({"train_s": train_s, "train_loop_s": loop_s, "predict_s": time.time() - t0,
           **{f"epochs_{p}": n for p, n in epochs.items()}, **{f"stop_{p}": s for p, s in stopped_by.items()}},
          open(f"{work}/timing.json", "w"))
"""


def _sorted_by_chromosome(atac: ad.AnnData) -> tuple[np.ndarray, list[int]]:
    """Order of ATAC features grouped by chromosome (scButterfly's per-chromosome encoders) and group sizes."""
    chrom = atac.var["chrom"].astype(str).to_numpy()
    start = atac.var["start"].to_numpy()
    order = np.lexsort((start, chrom))
    _, counts = np.unique(chrom[order], return_counts=True)
    return order, counts.tolist()


def run_scbutterfly_rna2atac(rna: ad.AnnData, atac: ad.AnnData, train_cells, test_cells, seed: int = 0,
                             pretrain_epochs: int = 100, translator_epochs: int = 200, patience: int = 50,
                             n_top_genes: int = 3000, threads: int = 1, time_budget_s: float | None = None,
                             base_rate: bool = True, timeout_s: float | None = None):
    """Train scButterfly on ``train_cells`` and predict ATAC of ``test_cells`` from their RNA.

    Preprocessing, base-rate bias, budget and output scale are described in the module docstring.

    Parameters
    ----------
    rna, atac
        Paired AnnData (raw counts, identical ``obs_names``); ``atac.var`` holds ``chrom``/``start``.
    train_cells, test_cells
        obs names. A seeded 20 % of the training cells are scButterfly's validation cells (early stopping).
    pretrain_epochs, translator_epochs, patience
        Epoch limits of the RNA and ATAC pretraining (each) and of the translator, and the early-stopping patience;
        the defaults are scButterfly's (100, 200, 50). Each phase's KL warm-up is scButterfly's 50 epochs, or half
        its epoch limit when that is below 100. A phase that runs to its limit keeps its last weights (as in
        scButterfly); one stopped by patience or by the budget goes back to its best validation checkpoint.
    n_top_genes
        Highly variable genes of the training cells fed to scButterfly (its default 3000; all genes if fewer).
    threads
        torch threads of the subprocess.
    time_budget_s
        Wall-clock seconds for training (``None``: the epoch limits only). Training stops at the end of the epoch
        during which the budget runs out, split over the phases in proportion to their epoch limits.
    base_rate
        Initialise the ATAC decoder's output shift to the logit of each CRE's mean training target (default), as
        the other learned methods start from the base rate; ``False`` keeps scButterfly's own initialisation (0).
    timeout_s
        Kill the subprocess after this many seconds (``None``: no limit).

    Returns
    -------
    (AnnData, dict)
        Predicted accessibility scores in [0, 1] (test cells x ``atac.var_names``, same order as ``atac``; CREs
        never open in a training cell are 0) with ``layers["binary"]`` like the baselines, and a dict:
        ``train_s`` (preprocessing + model construction + training), ``predict_s``, ``wall_s`` (the subprocess),
        ``train_loop_s`` (scButterfly's training loops, the part the budget limits), ``time_budget_s``,
        ``epochs_<phase>`` and ``stop_<phase>`` (``"time_budget"``, ``"early_stopping"`` or ``"max_epochs"``) for
        the phases ``rna_pretrain``, ``atac_pretrain``, ``translator``.
    """
    from .baselines import _atac_prediction

    python = scbutterfly_python()
    if not python.exists():
        raise RuntimeError("scButterfly's environment is missing; call ensure_scbutterfly_env() first")
    if not np.array_equal(rna.obs_names, atac.obs_names):
        raise ValueError("rna and atac must hold the same cells in the same order (obs_names differ)")
    for column in ("chrom", "start"):
        if column not in atac.var:
            raise ValueError(f"atac.var['{column}'] is missing; scButterfly groups CREs by chromosome")
    names = pd.Index(rna.obs_names.astype(str))
    train_pos = _positions(names, train_cells, "train_cells")
    test_pos = _positions(names, test_cells, "test_cells")
    if np.intersect1d(train_pos, test_pos).size:
        raise ValueError("train_cells and test_cells overlap; pass disjoint cell sets")
    shuffled = np.random.default_rng(seed).permutation(train_pos)
    n_val = max(1, len(shuffled) // 5)
    val_pos, fit_pos = shuffled[:n_val], shuffled[n_val:]

    t0 = time.time()
    prep = ButterflyPreprocessing.fit(rna, atac, names[train_pos], n_top_genes=int(n_top_genes))
    order, chrom_counts = _sorted_by_chromosome(atac[:, prep.cres])
    targets = prep.transform_atac(atac)[:, order]
    is_test = np.zeros(atac.n_obs, dtype=np.float32)
    is_test[test_pos] = 1.0
    targets = sp.csr_matrix(sp.diags(1.0 - is_test) @ targets, dtype=np.float32)  # test cells' ATAC never sent
    bias = _base_rate_bias(targets[fit_pos]) if base_rate else np.zeros(targets.shape[1], dtype=np.float32)
    obs = pd.DataFrame(index=names)  # no labels: scButterfly reads them only for plots and augmentation
    rna_out = ad.AnnData(prep.transform_rna(rna), obs=obs,
                         var=pd.DataFrame(index=rna.var_names[prep.genes].astype(str)))
    atac_out = ad.AnnData(targets, obs=obs.copy(), var=pd.DataFrame(index=atac.var_names[prep.cres[order]].astype(str)))
    preprocess_s = time.time() - t0
    with tempfile.TemporaryDirectory(prefix="scbutterfly_") as work:
        rna_out.write_h5ad(f"{work}/rna.h5ad")
        atac_out.write_h5ad(f"{work}/atac.h5ad")
        np.save(f"{work}/bias.npy", bias)
        json.dump({
            "train_id": [int(i) for i in fit_pos], "validation_id": [int(i) for i in val_pos],
            "test_id": [int(i) for i in test_pos], "chrom_counts": chrom_counts, "seed": int(seed),
            "pretrain_epochs": int(pretrain_epochs), "translator_epochs": int(translator_epochs),
            "patience": int(patience), "time_budget_s": None if time_budget_s is None else float(time_budget_s),
        }, open(f"{work}/config.json", "w"))
        Path(f"{work}/driver.py").write_text(_DRIVER)
        t0 = time.time()
        done = subprocess.run([str(python), f"{work}/driver.py", work, str(threads)], capture_output=True,
                              text=True, timeout=timeout_s, env=_child_env(threads), cwd=work)
        wall_s = time.time() - t0
        if done.returncode != 0:
            raise RuntimeError("scButterfly failed:\n" + "\n".join((done.stdout + done.stderr).splitlines()[-20:]))
        r2a_sorted = np.load(f"{work}/r2a.npy")
        timing = json.load(open(f"{work}/timing.json"))
    r2a = np.empty_like(r2a_sorted)
    r2a[:, order] = r2a_sorted
    probs = np.zeros((len(test_pos), atac.n_vars), dtype=np.float32)
    probs[:, prep.cres] = prep.to_accessibility(r2a)
    pred = _atac_prediction(probs, atac.obs.iloc[test_pos], atac.var, "scButterfly")
    timing.update(train_s=preprocess_s + timing["train_s"], wall_s=wall_s, time_budget_s=time_budget_s)
    return pred, timing
