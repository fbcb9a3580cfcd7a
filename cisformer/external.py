"""Run external methods that live in their own Python environment: scButterfly (PyPI ``scButterfly``).

scButterfly pins old versions (``scipy==1.9.3``, ``scvi-tools==0.19.0``, ...) that cannot share the compendium's
environment, so it gets its own virtual environment under ``paths.cache_dir() / "env-scbutterfly"`` and runs in a
subprocess through a small driver script that this module writes to a temporary folder. Data travel as h5ad files.

What is installed (``ensure_scbutterfly_env``): ``torch==2.13.0`` (the CPU wheel, never the CUDA one), the
``scButterfly`` package itself without its pinned dependency list, and the packages its RNA<->ATAC code path
actually imports (scanpy, anndata, episcanpy, adjustText, seaborn, scikit-learn, leidenalg, POT, torchmetrics).
torchvision, torchaudio, scvi-tools and scvi-colab are left out: they are only used by the data augmentation
options and the package's own plotting, which the driver does not call.

Runtime patch (documented, no code copied): scButterfly only casts its batches to float32 on its CUDA code path
(on CPU it feeds float64 into float32 layers and fails) and its discriminator calls ``torch.tensor(...).cuda()``
unconditionally. On a CPU-only machine the driver therefore reports CUDA as available and replaces
``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` by functions that return the object unchanged (on the CPU). The ATAC matrix is handed to it dense (its TF-IDF code was written for
scipy 1.9's sparse/``numpy.matrix`` arithmetic and explodes in memory with current scipy on sparse input).
Nothing else in the package is changed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
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


_DRIVER = r'''
"""Driver for scButterfly written by cisformer.external (runs inside scButterfly's own environment)."""
import json, sys, time
import anndata as ad
import numpy as np
import torch

if not torch.cuda.is_available():
    # documented runtime patch (see cisformer.external): route scButterfly's CUDA code path to the CPU
    torch.cuda.is_available = lambda: True
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
torch.set_num_threads(int(sys.argv[2]))

work = sys.argv[1]
import os
os.makedirs(f"{work}/out", exist_ok=True)
cfg = json.load(open(f"{work}/config.json"))
from scButterfly.butterfly import Butterfly

rna = ad.read_h5ad(f"{work}/rna.h5ad")
atac = ad.read_h5ad(f"{work}/atac.h5ad")
# scButterfly's TF-IDF mixes scipy.sparse and numpy.matrix arithmetic written for scipy 1.9; with current scipy
# a sparse input blows up to tens of GB, so the (small) ATAC matrix is handed over dense.
atac.X = np.asarray(atac.X.toarray(), dtype=np.float32)
t0 = time.time()
butterfly = Butterfly()
butterfly.load_data(rna, atac, cfg["train_id"], cfg["test_id"], cfg["validation_id"])
butterfly.data_preprocessing(n_top_genes=cfg["n_top_genes"], fpeaks=None, filter_features=False)
chrom_list = list(cfg["chrom_counts"])
butterfly.construct_model(chrom_list=chrom_list)
butterfly.train_model(R2R_pretrain_epoch=cfg["pretrain_epochs"], A2A_pretrain_epoch=cfg["pretrain_epochs"],
                      translator_epoch=cfg["translator_epochs"], patience=cfg["patience"], seed=cfg["seed"],
                      R_pretrain_kl_warmup=max(1, cfg["pretrain_epochs"] // 2),
                      A_pretrain_kl_warmup=max(1, cfg["pretrain_epochs"] // 2),
                      translation_kl_warmup=max(1, cfg["translator_epochs"] // 2),
                      output_path=f"{work}/out")
train_s = time.time() - t0
t0 = time.time()
a2r, r2a = butterfly.test_model(output_path=f"{work}/out")
predict_s = time.time() - t0
r2a_x = r2a.X.toarray() if hasattr(r2a.X, "toarray") else r2a.X
np.save(f"{work}/r2a.npy", np.asarray(r2a_x, dtype=np.float32))
json.dump({"train_s": train_s, "predict_s": predict_s}, open(f"{work}/timing.json", "w"))
'''


def _sorted_by_chromosome(atac: ad.AnnData) -> tuple[np.ndarray, list[int]]:
    """Order of ATAC features grouped by chromosome (scButterfly's per-chromosome encoders) and group sizes."""
    chrom = atac.var["chrom"].astype(str).to_numpy()
    start = atac.var["start"].to_numpy()
    order = np.lexsort((start, chrom))
    _, counts = np.unique(chrom[order], return_counts=True)
    return order, counts.tolist()


def run_scbutterfly_rna2atac(rna: ad.AnnData, atac: ad.AnnData, train_cells, test_cells, seed: int = 0,
                             pretrain_epochs: int = 10, translator_epochs: int = 10, patience: int = 5,
                             n_top_genes: int = 3000, threads: int = 1, timeout_s: int = 1800):
    """Train scButterfly on ``train_cells`` and predict ATAC of ``test_cells`` from their RNA.

    Parameters
    ----------
    rna, atac
        Paired AnnData (raw counts, identical ``obs_names``); ``atac.var`` holds ``chrom``/``start``.
    train_cells, test_cells
        obs names. 20 % of the training cells are used for scButterfly's validation-based early stopping.
    pretrain_epochs, translator_epochs, patience
        scButterfly's epoch budget (its defaults are 100 / 200 / 50; the cpu profile uses far fewer).

    Returns
    -------
    (AnnData, dict)
        Predicted accessibility probabilities (test cells x ``atac.var_names``, same order as ``atac``) and
        ``{"train_s", "predict_s", "wall_s"}``.
    """
    python = scbutterfly_python()
    if not python.exists():
        raise RuntimeError("scButterfly's environment is missing; call ensure_scbutterfly_env() first")
    names = pd.Index(rna.obs_names)
    train_pos = names.get_indexer(pd.Index(train_cells))
    test_pos = names.get_indexer(pd.Index(test_cells))
    # CREs never open in a training cell have an infinite inverse document frequency in scButterfly's TF-IDF,
    # which turns its inputs (and then its BCE loss) into NaN; they are left out and predicted closed (0).
    seen = np.flatnonzero(np.asarray((atac.X[train_pos] > 0).sum(axis=0)).ravel() > 0)
    order, chrom_counts = _sorted_by_chromosome(atac[:, seen])
    order = seen[order]
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(train_pos)
    n_val = max(1, len(shuffled) // 5)
    with tempfile.TemporaryDirectory(prefix="scbutterfly_") as work:
        rna_out = ad.AnnData(sp.csr_matrix(rna.X, dtype=np.float32), obs=pd.DataFrame(
            {"cell_type": rna.obs.get("cell_type", "unknown").astype(str).to_numpy()}, index=rna.obs_names.astype(str)),
            var=pd.DataFrame(index=rna.var_names.astype(str)))
        atac_sorted = atac[:, order]
        atac_out = ad.AnnData(sp.csr_matrix(atac_sorted.X, dtype=np.float32), obs=rna_out.obs.copy(),
                              var=pd.DataFrame(index=atac_sorted.var_names.astype(str)))
        rna_out.write_h5ad(f"{work}/rna.h5ad")
        atac_out.write_h5ad(f"{work}/atac.h5ad")
        json.dump({
            "train_id": [int(i) for i in shuffled[n_val:]], "validation_id": [int(i) for i in shuffled[:n_val]],
            "test_id": [int(i) for i in test_pos], "chrom_counts": chrom_counts, "seed": int(seed),
            "pretrain_epochs": pretrain_epochs, "translator_epochs": translator_epochs, "patience": patience,
            "n_top_genes": int(min(n_top_genes, rna.n_vars)),
        }, open(f"{work}/config.json", "w"))
        Path(f"{work}/driver.py").write_text(_DRIVER)
        env = _child_env(threads)
        t0 = time.time()
        done = subprocess.run([str(python), f"{work}/driver.py", work, str(threads)], capture_output=True,
                              text=True, timeout=timeout_s, env=env, cwd=work)
        wall_s = time.time() - t0
        if done.returncode != 0:
            raise RuntimeError("scButterfly failed:\n" + "\n".join((done.stdout + done.stderr).splitlines()[-20:]))
        probs_sorted = np.load(f"{work}/r2a.npy")
        timing = json.load(open(f"{work}/timing.json"))
    probs = np.zeros((len(test_pos), atac.n_vars), dtype=np.float32)
    probs[:, order] = probs_sorted
    pred = ad.AnnData(probs, obs=atac.obs.iloc[test_pos].copy(), var=atac.var.copy())
    timing["wall_s"] = wall_s
    return pred, timing
