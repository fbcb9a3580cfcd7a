"""Run external methods that live in their own Python environment: scButterfly (PyPI ``scButterfly``), and the
integration peers MultiVI (PyPI ``scvi-tools``) and scGLUE (PyPI ``scglue``).

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

MultiVI and scGLUE (``run_multivi``, ``run_scglue``) share one environment, ``paths.cache_dir() /
"env-integration"`` (``ensure_integration_env``, about 2 minutes and 1.9 GB): ``torch==2.13.0`` (CPU wheel) first,
then ``scvi-tools==1.4.2`` and ``scglue==0.4.1`` with torch already satisfied; they co-install, and the other
packages are pinned to the versions verified with them (``INTEGRATION_REQUIREMENTS``; pynndescent is held at 0.5.13
because 0.7 returns sparse arrays that scanpy 1.11.5's neighbour graph cannot read). scvi-tools 1.4.2 is the
newest release that installs here: 1.4.3 and 1.5.x require Python >= 3.12, and torch's CPU wheel is here only for
Python 3.11. Both methods are trained on ``train_cells`` only, unsupervised (no label travels to the subprocess:
the h5ad files hold counts and cell names), on the CPU with one torch / OpenMP / MKL thread, and return per-modality
embeddings of ``embed_cells`` in their order. What is run, and what is changed at runtime (no code copied; the
packages' files are not edited):

* **MultiVI**: a MuData of the training cells' raw counts (every gene, every peak) set up with
  ``MULTIVI.setup_mudata`` and trained with ``MULTIVI(mdata).train`` at the package defaults (500 epochs, early
  stopping on the validation reconstruction loss with patience 50, its own 10 % validation cells). The embeddings
  are MultiVI's modality-specific latents, the means of its expression and accessibility encoders
  (``get_latent_representation(modality="expression" / "accessibility")``): each is computed from one modality
  alone, so matching them across modalities (FOSCTTM) is meaningful. The embedded cells' MuData gets the
  ``_indices`` column that ``setup_mudata`` adds, so that the model's setup transfers to it.
* **scGLUE**: the two modalities as two unpaired datasets (``configure_dataset`` with the negative binomial for
  both, ``use_highly_variable``, ``use_rep``), ``fit_SCGLUE`` at its defaults (pretraining, balancing weights,
  fine-tuning; automatic epoch limits and patience), ``encode_data`` per modality. Preprocessing as in scGLUE's
  tutorial, fitted on the training cells and applied to every cell: RNA normalised to the training median total,
  log1p, scaled with the training mean and standard deviation, PCA (100 components) on the highly variable genes
  (``seurat_v3`` on the training counts, 2,000 genes; all genes when there are fewer); ATAC LSI as
  ``scglue.data.lsi`` (Seurat v3 TF-IDF with the training cells' IDF, l1-normalised, ``log1p(1e4 x)``, randomized
  SVD with 15 iterations on the training cells, every cell projected onto the training singular vectors, then
  standardised per cell), on all peaks.
* **scGLUE's guidance graph without bedtools** (``scglue_guidance_edges``): scGLUE builds it with pybedtools /
  bedtools; here it is built in the compendium's environment and sent as an edge list. Gene-peak pairs are the
  compendium's candidates (peak midpoint within ``window`` of the TSS, :func:`cisformer.attention.candidate_pairs`),
  by default 150 kb, the window and weighting of scGLUE's regulatory-inference graph (``window_graph`` of 2 kb
  promoters with ``dist_power_decay``). Note that ``rna_anchored_guidance_graph``'s own default links a gene only to
  peaks overlapping its gene body or promoter (``extend_range=0``), so its graph is smaller. Weight
  ``((d + 1000) / 1000) ** -0.75`` with ``d`` the gap between the peak and the 2 kb promoter, sign 1, each edge
  also reversed, self-loops of weight 1 on every feature (as ``rna_anchored_guidance_graph`` adds them). As in the
  tutorial, the peaks scGLUE decodes ("highly variable") are those linked to a highly variable gene, and the graph
  holds only the highly variable features.
* **Budget.** ``max_epochs`` replaces the package's epoch limit (for scGLUE, that of each stage); patience and
  early stopping stay the packages'. With ``time_budget_s``, MultiVI's trainer gets a Lightning callback that sets
  ``trainer.should_stop`` at the end of the epoch that passes the budget (counted from the start of training);
  scGLUE's ``GLUETrainer.fit`` is wrapped so that each stage gets an extra training plugin that terminates the
  ignite engine at the end of the epoch that passes the stage's deadline, half the budget for pretraining and all
  of it (cumulative, from the start of ``fit_SCGLUE``, so it includes the balancing weights) for fine-tuning. A
  stage stopped that way restores its best checkpoint as scGLUE does after early stopping (when it has one: in
  fine-tuning, checkpoints start after ``align_burnin`` epochs, the epochs over which the discriminator's input
  noise is annealed; a shorter budget ends fine-tuning inside that annealing). ``stopped`` says why training
  ended (``"time_budget"``, ``"early_stopping"`` or ``"max_epochs"``); for scGLUE, why fine-tuning ended, with
  both stages in ``stopped_pretrain`` / ``stopped_finetune``.
* **Seeds and threads.** The driver seeds Python, numpy and torch with ``seed``; MultiVI also gets
  ``scvi.settings.seed = seed``, scGLUE ``random_seed=seed``. ``scglue.config.CPU_ONLY`` is set, and scGLUE's graph
  shuffling runs in the driver's process (``GRAPH_SHUFFLE_NUM_WORKERS = 0``) instead of a background worker. numba
  (scanpy's neighbour graph in scGLUE's balancing step) gets ``NUMBA_NUM_THREADS = threads`` like OpenMP and MKL.
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
    """Environment of an external method's subprocess: no inherited notebook plotting backend or Python path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return env | {"MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                  "NUMBA_NUM_THREADS": str(threads)}


def _imports(python: Path, statement: str) -> bool:
    """True when ``python`` exists and runs ``statement`` (an import) without error."""
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", statement], capture_output=True, timeout=300, env=_child_env())
    return probe.returncode == 0


def _run_steps(steps: list, what: str, verbose: bool) -> None:
    """Run installation commands in order; the first that fails raises with its last output lines."""
    for cmd in steps:
        if verbose:
            print("+", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, env=_child_env())
        if done.returncode != 0:
            raise RuntimeError(f"installing {what} failed at {' '.join(cmd)}:\n"
                               + "\n".join((done.stdout + done.stderr).splitlines()[-15:]))


def scbutterfly_available() -> bool:
    """True when the scButterfly environment exists and imports the package."""
    return _imports(scbutterfly_python(), "import scButterfly.butterfly")


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
    _run_steps(steps, "scButterfly's environment", verbose)
    if not scbutterfly_available():
        raise RuntimeError(f"scButterfly's environment at {env} was installed but `import scButterfly` fails")
    return scbutterfly_python()


# ----------------------------------------------------------------------------------------------- preprocessing
def _paired_names(python: Path, env: str, ensure: str, rna: ad.AnnData, atac: ad.AnnData) -> pd.Index:
    """The cells' names, after checking that the method's environment exists (``ensure``: the function that
    creates it) and that ``rna`` and ``atac`` hold the same cells in the same order."""
    if not python.exists():
        raise RuntimeError(f"{env} is missing; call {ensure}() first")
    if not np.array_equal(rna.obs_names, atac.obs_names):
        raise ValueError("rna and atac must hold the same cells in the same order (obs_names differ)")
    return pd.Index(rna.obs_names.astype(str))


def _run_driver(python: Path, work: str, driver: str, threads: int, timeout_s: float | None, method: str) -> float:
    """Write ``driver`` into the folder ``work`` and run it there with ``python`` (arguments: the folder and the
    thread count); returns its wall-clock seconds, raises with its last output lines when it fails."""
    Path(f"{work}/driver.py").write_text(driver)
    t0 = time.time()
    done = subprocess.run([str(python), f"{work}/driver.py", work, str(threads)], capture_output=True, text=True,
                          timeout=timeout_s, env=_child_env(threads), cwd=work)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed:\n" + "\n".join((done.stdout + done.stderr).splitlines()[-20:]))
    return time.time() - t0


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
    def _log_normalized(rna: ad.AnnData, target_sum: float) -> sp.csr_matrix:
        x = sp.csr_matrix(rna.X, dtype=np.float32)
        totals = np.asarray(x.sum(axis=1)).ravel()
        factor = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        return sp.csr_matrix(sp.diags(factor) @ x, dtype=np.float32).log1p()

    @classmethod
    def fit(cls, rna: ad.AnnData, atac: ad.AnnData, train_cells, n_top_genes: int = 3000) -> "ButterflyPreprocessing":
        """Fit on ``train_cells`` (obs names) of paired counts ``rna``/``atac``; no other cell is read."""
        import scanpy as sc

        from .matrix import binary_csr

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
        binary = binary_csr(atac)
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
        from .matrix import binary_csr

        scaled = self._tfidf(binary_csr(atac)[:, self.cres], self.idf) / self.scale
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
    from .baselines import atac_prediction

    python = scbutterfly_python()
    names = _paired_names(python, "scButterfly's environment", "ensure_scbutterfly_env", rna, atac)
    for column in ("chrom", "start"):
        if column not in atac.var:
            raise ValueError(f"atac.var['{column}'] is missing; scButterfly groups CREs by chromosome")
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
        wall_s = _run_driver(python, work, _DRIVER, threads, timeout_s, "scButterfly")
        r2a_sorted = np.load(f"{work}/r2a.npy")
        timing = json.load(open(f"{work}/timing.json"))
    r2a = np.empty_like(r2a_sorted)
    r2a[:, order] = r2a_sorted
    probs = np.zeros((len(test_pos), atac.n_vars), dtype=np.float32)
    probs[:, prep.cres] = prep.to_accessibility(r2a)
    pred = atac_prediction(probs, atac.obs.iloc[test_pos], atac.var, "scButterfly")
    timing.update(train_s=preprocess_s + timing["train_s"], wall_s=wall_s, time_budget_s=time_budget_s)
    return pred, timing


# =============================================================================== integration peers: MultiVI, scGLUE
SCVI_TOOLS_VERSION = "1.4.2"  # the newest release installable here: 1.4.3 and 1.5.x need Python >= 3.12
SCGLUE_VERSION = "0.4.1"
# everything else pinned to the versions verified with these two (pip's resolution on 2026-12-03), except
# pynndescent: 0.7 returns scipy sparse arrays, which have no getnnz, and scanpy 1.11.5's neighbour graph (scGLUE's
# balancing weights; pynndescent is used on larger data: 8,247 SNARE-seq cells failed, 150 cells did not) calls it
INTEGRATION_REQUIREMENTS = [
    f"scvi-tools=={SCVI_TOOLS_VERSION}", f"scglue=={SCGLUE_VERSION}", "lightning==2.6.6", "pytorch-ignite==0.5.5",
    "anndata==0.12.19", "mudata==0.3.10", "scanpy==1.11.5", "numpy==2.4.6", "scipy==1.17.1", "scikit-learn==1.9.1",
    "networkx==3.6.1", "scikit-misc==0.5.3", "pynndescent==0.5.13",
]
SCGLUE_PROMOTER_BP = 2000  # scGLUE's promoter: 2 kb upstream of the TSS


def integration_env_dir() -> Path:
    """Folder of MultiVI's and scGLUE's shared virtual environment (``<cache>/env-integration``)."""
    return paths.cache_dir() / "env-integration"


def integration_python() -> Path:
    return integration_env_dir() / "bin" / "python"


def integration_env_available() -> bool:
    """True when the integration environment exists and imports scvi-tools and scglue."""
    return _imports(integration_python(), "import scvi, scglue")


def ensure_integration_env(verbose: bool = False) -> Path:
    """Create the MultiVI / scGLUE environment if it is missing; return its Python interpreter.

    torch (the CPU wheel) goes in first, so that scvi-tools and scglue find it satisfied and pip never pulls a
    CUDA build. Takes about 2 minutes (1.9 GB). Raises ``RuntimeError`` (with pip's last lines) on failure.
    """
    if integration_env_available():
        return integration_python()
    env = integration_env_dir()
    wheels = ["--find-links", "/opt/wheels"] if Path("/opt/wheels").is_dir() else []
    python = str(integration_python())
    steps = [
        [sys.executable, "-m", "venv", str(env)],
        [python, "-m", "pip", "install", "-q", "torch==2.13.0", *wheels],
        [python, "-m", "pip", "install", "-q", "torch==2.13.0", *INTEGRATION_REQUIREMENTS, *wheels],
    ]
    _run_steps(steps, "the integration environment", verbose)
    if not integration_env_available():
        raise RuntimeError(f"the integration environment at {env} was installed but `import scvi, scglue` fails")
    return integration_python()


def scglue_guidance_edges(rna_var: pd.DataFrame, atac_var: pd.DataFrame, window: int = 150_000) -> pd.DataFrame:
    """Edges of scGLUE's guidance graph between genes and peaks, built without bedtools.

    Gene-peak pairs are the compendium's candidates (:func:`cisformer.attention.candidate_pairs`: peak midpoint
    within ``window`` bp of the TSS). Each pair is weighted as scGLUE weighs its window graphs: the gap ``d``
    between the peak and the gene's promoter (2 kb upstream of the TSS, strand-aware; 0 when they overlap) gives
    ``weight = ((d + 1000) / 1000) ** -0.75`` (``scglue.genomics.dist_power_decay``), sign 1. As in
    ``rna_anchored_guidance_graph`` every gene -> peak edge (``type`` "fwd") also appears reversed ("rev"), and
    every gene and every peak has a self-loop of weight 1, sign 1 ("loop").

    Returns
    -------
    DataFrame with ``source``, ``target`` (feature names), ``weight``, ``sign``, ``type``: the gene -> peak edges
    in the order of ``candidate_pairs``, then their reverses, then the loops (genes, then peaks).
    """
    from .attention import candidate_pairs
    from .vocab import gene_tss

    pairs = candidate_pairs(rna_var, atac_var, window)
    g, c = pairs["gene_idx"].to_numpy(), pairs["cre_idx"].to_numpy()
    tss = gene_tss(rna_var)[g]
    minus = (rna_var["strand"].astype(str).to_numpy() == "-")[g] if "strand" in rna_var else np.zeros(len(g), bool)
    promoter_start = np.where(minus, tss, tss - SCGLUE_PROMOTER_BP)
    promoter_end = np.where(minus, tss + SCGLUE_PROMOTER_BP, tss)
    peak_start = atac_var["start"].to_numpy(dtype=np.float64)[c]
    peak_end = atac_var["end"].to_numpy(dtype=np.float64)[c]
    gap = np.maximum(0.0, np.maximum(peak_start - promoter_end, promoter_start - peak_end))
    weight = ((gap + 1000) / 1000) ** -0.75
    genes, peaks = pairs["gene"].astype(str).to_numpy(), pairs["cre"].astype(str).to_numpy()
    features = np.concatenate([np.asarray(rna_var.index, dtype=str), np.asarray(atac_var.index, dtype=str)])
    return pd.DataFrame({
        "source": np.concatenate([genes, peaks, features]),
        "target": np.concatenate([peaks, genes, features]),
        "weight": np.concatenate([weight, weight, np.ones(len(features))]),
        "sign": np.ones(2 * len(pairs) + len(features), dtype=np.int64),
        "type": np.repeat(["fwd", "rev", "loop"], [len(pairs), len(pairs), len(features)]),
    })


_INTEGRATION_DRIVER = r"""
# Driver for MultiVI / scGLUE written by cisformer.external (runs inside the integration environment).
import json, os, random, sys, time
import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

work, threads = sys.argv[1], int(sys.argv[2])
cfg = json.load(open(f"{work}/config.json"))
torch.set_num_threads(threads)
seed = cfg["seed"]
random.seed(seed)
np.random.seed(seed)
torch.manual_seed(seed)
read = lambda name: ad.read_h5ad(f"{work}/{name}.h5ad")
budget = cfg["time_budget_s"]


def multivi():
    import lightning.pytorch as pl
    import mudata as md
    import scvi

    scvi.settings.seed = seed
    scvi.settings.num_threads = threads
    train = md.MuData({"rna": read("rna_train"), "atac": read("atac_train")})
    embed = md.MuData({"rna": read("rna_embed"), "atac": read("atac_embed")})
    scvi.model.MULTIVI.setup_mudata(train, modalities={"rna_layer": "rna", "atac_layer": "atac"})
    embed.obs["_indices"] = np.arange(embed.n_obs)  # what setup_mudata adds to the training cells
    model = scvi.model.MULTIVI(train)

    # documented runtime addition: a Lightning callback that stops at the end of the epoch that passes the budget
    class TimeBudget(pl.Callback):
        stopped = False

        def on_train_start(self, trainer, module):
            self.deadline = time.time() + (float("inf") if budget is None else budget)

        def on_train_epoch_end(self, trainer, module):
            if not trainer.should_stop and time.time() >= self.deadline:
                trainer.should_stop = self.stopped = True

    timer = TimeBudget()
    limits = {} if cfg["max_epochs"] is None else {"max_epochs": cfg["max_epochs"]}
    t0 = time.time()
    model.train(accelerator="cpu", devices=1, callbacks=[timer], enable_progress_bar=False, **limits)
    train_s = time.time() - t0
    early = [c for c in model.trainer.callbacks if type(c).__name__ == "LoudEarlyStopping"]
    stopped = ("time_budget" if timer.stopped else
               "early_stopping" if early and early[0].early_stopping_reason is not None else "max_epochs")
    out = {modality: model.get_latent_representation(embed, modality=key)
           for modality, key in (("rna", "expression"), ("atac", "accessibility"))}
    return out, {"seconds": train_s, "epochs": int(model.trainer.current_epoch), "stopped": stopped,
                 "max_epochs": int(model.trainer.max_epochs)}


def fit_lsi(counts, n_components):
    # scglue.data.lsi (Seurat v3 TF-IDF, l1, log1p(1e4 x), randomized SVD, per-cell standardised), fitted on the
    # training cells: returns a function that projects any cells onto the training cells' singular vectors
    from sklearn.preprocessing import normalize
    from sklearn.utils.extmath import randomized_svd

    col = np.asarray(counts.sum(axis=0)).ravel()
    idf = np.divide(counts.shape[0], col, out=np.zeros_like(col, dtype=np.float64), where=col > 0)

    def transformed(x):
        tfidf = normalize(sp.csr_matrix(x, dtype=np.float64), norm="l1") @ sp.diags(idf)
        return sp.csr_matrix(normalize(tfidf, norm="l1") * 1e4).log1p()

    _, s, vt = randomized_svd(transformed(counts), n_components, n_iter=15, random_state=seed)

    def project(x):
        u = np.asarray(transformed(x) @ vt.T) / s
        u -= u.mean(axis=1, keepdims=True)
        return (u / np.maximum(u.std(axis=1, ddof=1, keepdims=True), 1e-12)).astype(np.float32)
    return project


def fit_pca(counts, genes, n_components):
    # the scGLUE tutorial's RNA representation: normalize_total (to the median total), log1p, scale, PCA on the
    # highly variable genes; every statistic from the training cells
    from sklearn.decomposition import PCA

    target = float(np.median(np.asarray(counts.sum(axis=1)).ravel()))

    def logged(x):
        x = sp.csr_matrix(x, dtype=np.float64)
        totals = np.asarray(x.sum(axis=1)).ravel()
        factor = np.divide(target, totals, out=np.zeros_like(totals), where=totals > 0)
        return np.asarray((sp.diags(factor) @ x).log1p()[:, genes].todense())

    train = logged(counts)
    mean, std = train.mean(axis=0), train.std(axis=0, ddof=1)
    std[std == 0] = 1.0
    pca = PCA(n_components=min(n_components, train.shape[1] - 1, train.shape[0] - 1), random_state=seed)
    pca.fit((train - mean) / std)
    return lambda x: pca.transform((logged(x) - mean) / std).astype(np.float32)


def scglue_run():
    import networkx as nx
    import scanpy as sc
    import scglue
    from scglue.models import base as glue_base, glue as glue_nets

    scglue.config.CPU_ONLY = True
    scglue.config.GRAPH_SHUFFLE_NUM_WORKERS = 0  # shuffle in this process (one thread), no background worker
    rna, atac = read("rna_train"), read("atac_train")
    rna_embed, atac_embed = read("rna_embed"), read("atac_embed")
    if rna.n_vars > cfg["n_top_genes"]:
        sc.pp.highly_variable_genes(rna, n_top_genes=cfg["n_top_genes"], flavor="seurat_v3")
    else:
        rna.var["highly_variable"] = True
    hvg = set(rna.var_names[rna.var["highly_variable"].to_numpy()])
    edges = pd.read_csv(f"{work}/edges.csv")
    gene_peak = edges[edges["type"] != "loop"]
    gene_peak = gene_peak[gene_peak["source"].isin(hvg) | gene_peak["target"].isin(hvg)]
    hv_peaks = set(gene_peak.loc[gene_peak["type"] == "fwd", "target"])  # peaks reachable from a highly variable gene
    atac.var["highly_variable"] = atac.var_names.isin(hv_peaks)
    loops = edges[(edges["type"] == "loop") & edges["source"].isin(hvg | hv_peaks)]
    graph = nx.MultiDiGraph()
    for row in pd.concat([gene_peak, loops]).itertuples(index=False):
        graph.add_edge(row.source, row.target, weight=float(row.weight), sign=int(row.sign), type=row.type)

    t0 = time.time()
    project_rna = fit_pca(rna.X, rna.var["highly_variable"].to_numpy(), cfg["n_components"])
    project_atac = fit_lsi(atac.X, cfg["n_components"])
    for data, project, key in ((rna, project_rna, "X_pca"), (rna_embed, project_rna, "X_pca"),
                               (atac, project_atac, "X_lsi"), (atac_embed, project_atac, "X_lsi")):
        data.obsm[key] = project(data.X)
    preprocess_s = time.time() - t0
    scglue.models.configure_dataset(rna, "NB", use_highly_variable=True, use_rep="X_pca")
    scglue.models.configure_dataset(atac, "NB", use_highly_variable=True, use_rep="X_lsi")

    # documented runtime patch: every GLUETrainer.fit (pretraining, then fine-tuning) gets a training plugin that
    # stops at the end of the epoch that passes the stage's deadline and records epochs and why the stage stopped
    stages = []
    start = time.time()

    class TimeBudget(glue_base.TrainingPlugin):
        def __init__(self, deadline):
            self.record = {"epochs": 0, "stopped": "max_epochs"}
            self.deadline = deadline

        def attach(self, net, trainer, train_engine, val_engine, train_loader, val_loader, directory):
            import ignite

            @train_engine.on(ignite.engine.Events.EPOCH_COMPLETED)
            def _(engine):
                self.record["epochs"] = engine.state.epoch
                if engine.should_terminate:
                    self.record["stopped"] = "early_stopping"
                elif time.time() >= self.deadline:
                    engine.terminate()
                    self.record["stopped"] = "time_budget"

    original_fit = glue_nets.GLUETrainer.fit

    def budgeted_fit(self, *args, plugins=None, **kwargs):
        share = (len(stages) + 1) / 2  # cumulative deadlines: half the budget for pretraining, the rest after it
        plugin = TimeBudget(start + (float("inf") if budget is None else budget * share))
        t_stage = time.time()
        original_fit(self, *args, plugins=[*(plugins or []), plugin], **kwargs)
        stages.append(plugin.record | {"seconds": time.time() - t_stage, "max_epochs": kwargs.get("max_epochs")})

    glue_nets.GLUETrainer.fit = budgeted_fit
    fit_kws = {"directory": f"{work}/glue"} | ({} if cfg["max_epochs"] is None else {"max_epochs": cfg["max_epochs"]})
    model = scglue.models.fit_SCGLUE({"rna": rna, "atac": atac}, graph, init_kws={"random_seed": seed},
                                     fit_kws=fit_kws)
    train_s = time.time() - start
    out = {"rna": model.encode_data("rna", rna_embed), "atac": model.encode_data("atac", atac_embed)}
    return out, {"seconds": train_s, "epochs": sum(s["epochs"] for s in stages), "stopped": stages[-1]["stopped"],
                 "preprocess_s": preprocess_s, "n_guidance_edges": graph.number_of_edges(),
                 "n_features_rna": len(hvg), "n_features_atac": len(hv_peaks),
                 **{f"{key}_{name}": s[key] for name, s in zip(("pretrain", "finetune"), stages) for key in s}}


out, record = {"multivi": multivi, "scglue": scglue_run}[cfg["method"]]()
np.save(f"{work}/rna_embedding.npy", np.asarray(out["rna"], dtype=np.float32))
np.save(f"{work}/atac_embedding.npy", np.asarray(out["atac"], dtype=np.float32))
json.dump(record, open(f"{work}/record.json", "w"))
"""


def _run_integration(method: str, rna: ad.AnnData, atac: ad.AnnData, train_cells, embed_cells, config: dict,
                     edges: pd.DataFrame | None = None, threads: int = 1, timeout_s: float | None = None) -> dict:
    """Write the training and embedding cells' counts as h5ad, run the driver, read the embeddings back."""
    python = integration_python()
    names = _paired_names(python, "the integration environment", "ensure_integration_env", rna, atac)
    train_pos = _positions(names, train_cells, "train_cells")
    embed_pos = _positions(names, embed_cells, "embed_cells")

    def counts(data: ad.AnnData, pos: np.ndarray) -> ad.AnnData:  # raw counts, names only: no labels travel
        return ad.AnnData(sp.csr_matrix(data.X[pos], dtype=np.float32), obs=pd.DataFrame(index=names[pos]),
                          var=pd.DataFrame(index=data.var_names.astype(str)))

    with tempfile.TemporaryDirectory(prefix=f"{method}_") as work:
        for part, pos in (("train", train_pos), ("embed", embed_pos)):
            counts(rna, pos).write_h5ad(f"{work}/rna_{part}.h5ad")
            counts(atac, pos).write_h5ad(f"{work}/atac_{part}.h5ad")
        if edges is not None:
            edges.to_csv(f"{work}/edges.csv", index=False)
        json.dump({"method": method, **config}, open(f"{work}/config.json", "w"))
        wall_s = _run_driver(python, work, _INTEGRATION_DRIVER, threads, timeout_s, method)
        record = json.load(open(f"{work}/record.json"))
        return {"rna": np.load(f"{work}/rna_embedding.npy"), "atac": np.load(f"{work}/atac_embedding.npy"),
                **record, "wall_s": wall_s}


CONVERGED_DIR = paths.REPO_ROOT / "figures" / "attune" / "converged_peers"


def linked_features(rna: ad.AnnData, atac: ad.AnnData, cells, n_top_genes: int = 2000,
                    window: int = 150_000) -> tuple[pd.Index, pd.Index]:
    """A feature set small enough for every integration method to converge on a CPU: the ``n_top_genes`` highly
    variable genes of ``cells`` that have a TSS, and the peaks whose midpoint lies within ``window`` bp of one of
    their TSSs (:func:`cisformer.attention.candidate_pairs`, the pairs of scGLUE's guidance graph).

    Highly variable genes: scanpy's ``seurat`` flavour (dispersion of log1p CP10k expression) on the raw counts of
    ``cells`` only (training and validation cells, never held-out ones). scGLUE's tutorial uses ``seurat_v3``,
    which needs scikit-misc, not installed in the compendium's environment; the set is the same for every method.

    Returns
    -------
    (genes, peaks): names, in the order of ``rna.var_names`` and ``atac.var_names``.
    """
    import scanpy as sc

    from .attention import candidate_pairs
    from .metrics import log_normalized

    fit = ad.AnnData(log_normalized(rna[cells].X), var=pd.DataFrame(index=rna.var_names.astype(str)))
    sc.pp.highly_variable_genes(fit, flavor="seurat")  # normalised dispersion; ties make its own cut inexact
    dispersion = fit.var["dispersions_norm"].fillna(-np.inf).to_numpy()
    top = np.sort(np.argsort(-dispersion, kind="stable")[:n_top_genes])
    hvg = rna.var.iloc[top]
    pairs = candidate_pairs(hvg, atac.var, window)
    genes = hvg.index[np.isin(np.arange(len(hvg)), pairs["gene_idx"].to_numpy())]
    peaks = atac.var_names[np.isin(np.arange(atac.n_vars), pairs["cre_idx"].to_numpy())]
    return genes, peaks


def _converged_fingerprint(method: str, rna: ad.AnnData, atac: ad.AnnData, train_cells, embed_cells,
                           seed: int) -> str:
    """Digest of what a converged peer's result depends on: method, seed, the environment's pinned packages, the
    training and embedded cells, the features and every count they hold."""
    import hashlib

    from .train import hash_matrix

    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([method, int(seed), INTEGRATION_REQUIREMENTS]).encode())
    for names in (train_cells, embed_cells, rna.var_names, atac.var_names):
        h.update("\n".join(map(str, names)).encode())
    for data in (rna, atac):
        for cells in (train_cells, embed_cells):
            hash_matrix(h, sp.csr_matrix(data[cells].X, dtype=np.float32))
    return h.hexdigest()


def converged_peer(method: str, rna: ad.AnnData, atac: ad.AnnData, train_cells, embed_cells, dataset: str,
                   seed: int = 0, rerun: bool = False, folder=None, threads: int = 1) -> dict | None:
    """MultiVI or scGLUE at its package defaults, trained until its own early stopping: read from its saved result,
    or run (hours on a CPU) when ``rerun``.

    The result (``FOLDER/DATASET_METHOD_seedSEED.npz``: the embedded cells' two embeddings and names; ``.json``: the
    record of :func:`run_multivi` / :func:`run_scglue`, the package versions and a fingerprint of the data, split,
    features, seed and pinned environment) is committed with the figures, so the notebook reads it instead of
    training for hours. A saved result whose fingerprint does not match the inputs is not used.

    Parameters
    ----------
    method
        ``"MultiVI"`` or ``"scGLUE"``.
    rna, atac, train_cells, embed_cells, seed, threads
        As in :func:`run_multivi`; no ``max_epochs``: the package's own limit and early stopping.
    dataset
        Name in the file names.
    rerun
        Train (and overwrite the saved result) instead of reading it.
    folder
        Where results are saved (default :data:`CONVERGED_DIR`, ``figures/attune/converged_peers``).

    Returns
    -------
    dict as :func:`run_multivi`'s (``rna``, ``atac``, ``epochs``, ``stopped``, ``seconds``, ...) plus ``versions``
    and ``fingerprint``; ``None`` (with a printed line saying why and how to run it) when no usable result is saved
    and ``rerun`` is False.
    """
    folder = Path(folder or CONVERGED_DIR)
    stem = folder / f"{dataset}_{method}_seed{seed}"
    key = _converged_fingerprint(method, rna, atac, train_cells, embed_cells, seed)
    if not rerun:
        if not stem.with_suffix(".json").exists():
            print(f"{method} (converged): no saved result {stem}.json; run it with rerun=True (hours on a CPU)")
            return None
        record = json.loads(stem.with_suffix(".json").read_text())
        if record["fingerprint"] != key:
            print(f"{method} (converged): {stem}.json was computed from other data, split, features or packages "
                  "(fingerprint differs); not used. Run it again with rerun=True")
            return None
        saved = np.load(stem.with_suffix(".npz"), allow_pickle=False)
        if not np.array_equal(saved["cells"], np.asarray(embed_cells, dtype=str)):
            raise ValueError(f"{stem}.npz: its embedded cells are not embed_cells (same fingerprint): the file is "
                             "damaged; run it again with rerun=True")
        return {"rna": saved["rna"], "atac": saved["atac"], **record}
    ensure_integration_env()
    result = CONVERGED_RUNNERS[method](rna, atac, train_cells, embed_cells, seed=seed, threads=threads)
    record = {k: v for k, v in result.items() if k not in ("rna", "atac")}
    record.update(method=method, dataset=dataset, seed=int(seed), versions=integration_versions(),
                  fingerprint=key, n_genes=int(rna.n_vars), n_peaks=int(atac.n_vars), n_train_cells=len(train_cells))
    from .data import write_atomic

    write_atomic(stem.with_suffix(".npz"), lambda tmp: np.savez_compressed(
        tmp, rna=result["rna"], atac=result["atac"], cells=np.asarray(embed_cells, dtype=str)))
    write_atomic(stem.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(record, indent=1, default=float)))
    return {"rna": result["rna"], "atac": result["atac"], **record}


def integration_versions() -> dict:
    """Versions of the integration environment's packages that train MultiVI and scGLUE."""
    probe = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
             "('scvi-tools', 'scglue', 'torch', 'lightning', 'pytorch-ignite')}))")
    return json.loads(subprocess.run([str(integration_python()), "-c", probe], capture_output=True, text=True,
                                     check=True).stdout)


def run_multivi(rna: ad.AnnData, atac: ad.AnnData, train_cells, embed_cells, seed: int = 0,
                time_budget_s: float | None = None, max_epochs: int | None = None, threads: int = 1,
                timeout_s: float | None = None) -> dict:
    """Train MultiVI (scvi-tools) on ``train_cells`` without labels; embed ``embed_cells`` per modality.

    Parameters
    ----------
    rna, atac
        Paired AnnData of raw counts (identical ``obs_names``); every gene and every peak is used.
    train_cells, embed_cells
        obs names (they may overlap). MultiVI holds out its own 10 % of ``train_cells`` for early stopping.
    seed
        ``scvi.settings.seed`` (Python, numpy, torch) and the driver's seeds.
    time_budget_s
        Wall-clock seconds of training; training stops at the end of the epoch that passes it (``None``: none).
    max_epochs
        Epoch limit (``None``: MultiVI's 500, with its early stopping, patience 50).
    threads
        torch / OpenMP / MKL threads of the subprocess.
    timeout_s
        Kill the subprocess after this many seconds (``None``: no limit).

    Returns
    -------
    dict with ``rna`` and ``atac`` (float32 [len(embed_cells), n_latent]: the means of MultiVI's expression and
    accessibility encoders, ``get_latent_representation(modality="expression" / "accessibility")``, in the order
    of ``embed_cells``), ``seconds`` (``model.train`` wall-clock), ``epochs``, ``stopped`` (``"time_budget"``,
    ``"early_stopping"`` or ``"max_epochs"``), ``max_epochs`` and ``wall_s`` (the whole subprocess).
    """
    config = {"seed": int(seed), "time_budget_s": None if time_budget_s is None else float(time_budget_s),
              "max_epochs": None if max_epochs is None else int(max_epochs)}
    return _run_integration("multivi", rna, atac, train_cells, embed_cells, config, threads=threads,
                            timeout_s=timeout_s)


def run_scglue(rna: ad.AnnData, atac: ad.AnnData, train_cells, embed_cells, seed: int = 0,
               time_budget_s: float | None = None, max_epochs: int | None = None, window: int = 150_000,
               n_top_genes: int = 2000, n_components: int = 100, threads: int = 1,
               timeout_s: float | None = None) -> dict:
    """Train scGLUE on ``train_cells`` as two unpaired datasets without labels; embed ``embed_cells`` per modality.

    Parameters
    ----------
    rna, atac
        Paired AnnData of raw counts (identical ``obs_names``); ``rna.var`` with ``chrom`` and ``tss`` (or
        ``start``/``end``/``strand``), ``atac.var`` with ``chrom``/``start``/``end``. scGLUE never sees the pairing.
    train_cells, embed_cells
        obs names (they may overlap). scGLUE holds out its own 10 % of ``train_cells`` for early stopping.
    seed
        scGLUE's ``random_seed`` (weights, data split, shuffling; the fine-tuning stage uses ``seed + 1`` for its
        data order, as scGLUE does) and the driver's numpy / torch seeds.
    time_budget_s
        Wall-clock seconds of ``fit_SCGLUE``: pretraining stops at the end of the epoch that passes half of it,
        fine-tuning at the end of the epoch that passes all of it (``None``: none).
    max_epochs
        Epoch limit of each stage (``None``: scGLUE's automatic limit, with its early stopping).
    window
        Gene-peak edges of the guidance graph: peak midpoint within ``window`` bp of the TSS
        (:func:`scglue_guidance_edges`).
    n_top_genes
        Highly variable genes (scanpy's ``seurat_v3`` on the training counts; every gene when there are fewer).
    n_components
        Dimensions of the RNA PCA and the ATAC LSI, the encoders' inputs (the scGLUE tutorial's 100).
    threads, timeout_s
        As in :func:`run_multivi`.

    Returns
    -------
    dict with ``rna`` and ``atac`` (float32 [len(embed_cells), 50]: ``encode_data`` of each modality, in the order
    of ``embed_cells``), ``seconds`` (``fit_SCGLUE`` wall-clock: both stages and the balancing weights), ``epochs``
    (both stages), ``stopped`` (fine-tuning's reason), ``epochs_pretrain`` / ``stopped_pretrain`` /
    ``seconds_pretrain`` / ``max_epochs_pretrain`` and the same for ``finetune``, ``preprocess_s`` (PCA and LSI),
    ``n_guidance_edges``, ``n_features_rna``, ``n_features_atac`` (the features decoded) and ``wall_s``.
    """
    for column in ("chrom", "start", "end"):
        if column not in atac.var:
            raise ValueError(f"atac.var['{column}'] is missing; scGLUE's guidance graph needs peak coordinates")
    edges = scglue_guidance_edges(rna.var, atac.var, window)
    config = {"seed": int(seed), "time_budget_s": None if time_budget_s is None else float(time_budget_s),
              "max_epochs": None if max_epochs is None else int(max_epochs), "n_top_genes": int(n_top_genes),
              "n_components": int(n_components)}
    return _run_integration("scglue", rna, atac, train_cells, embed_cells, config, edges=edges, threads=threads,
                            timeout_s=timeout_s)


CONVERGED_RUNNERS = {"MultiVI": run_multivi, "scGLUE": run_scglue}  # the peers of converged_peer
