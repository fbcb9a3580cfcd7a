"""Driver for scButterfly, run by :mod:`cisformer.peers.external` inside scButterfly's own environment
(``ensure_scbutterfly_env``):
``python run_scbutterfly.py WORK THREADS`` reads ``WORK/config.json`` and the h5ad files there and writes its results
there. Runtime changes are documented in ``docs/external_peers.md``."""
import json, os, sys, time
import anndata as ad
import numpy as np
import torch

if not torch.cuda.is_available():
    # documented runtime patch (see cisformer.peers.external): route scButterfly's CUDA code path to the CPU
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
# preprocessing was done by cisformer.peers.external on the training cells only
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
