"""One process of tests/test_multiprocess.py, started twice by ``python -m torch.distributed.run``.

First predicts with an untrained model before anything has joined the launcher's group (shared between the
processes, then on the main process alone); then trains both directions (quick profile, CPU, gloo), records which
training cells this process saw in each epoch, and predicts in memory and streamed to disk; writes everything to
``OUTDIR/rank<r>.pt``.
"""
import sys
from pathlib import Path

import numpy as np
import torch

from cisformer import predict, train
from cisformer.data import simulate
from cisformer.model import Cisformer, CisformerConfig
from cisformer.sampler import PairedCells

torch.set_num_threads(1)
out = Path(sys.argv[1])
seen = {}  # (dataset seed, epoch) -> training items drawn by this process; seed 0: training set, 1: validation
_getitem = PairedCells.__getitem__


def getitem(self, i):
    seen.setdefault((self.seed, self.epoch), []).append(int(i))
    return _getitem(self, i)


PairedCells.__getitem__ = getitem

rna, atac, _ = simulate.paired(n_cells=200, n_genes=40, n_cres=150, n_cell_types=3, seed=0)
# before anything else joins the launcher's group: prediction joins it by itself (an untrained model will do)
torch.manual_seed(0)
untrained = Cisformer(CisformerConfig.from_profile("rna2atac", "quick", rna.n_vars, atac.n_vars)).eval()
untrained.gene_names, untrained.cre_names = list(rna.var_names), list(atac.var_names)
shared = predict.rna_to_atac(untrained, rna[150:], chunk=64, batch_size=4).X  # split between the processes
rank = torch.distributed.get_rank()
alone = predict.rna_to_atac(untrained, rna[150:], chunk=64, batch_size=4, distributed=False).X if rank == 0 else None
if rank == 0:
    torch.save(untrained.checkpoint_dict(), out / "untrained.pt")
cells = np.arange(rna.n_obs)
result = {}
for direction in ("rna2atac", "atac2rna"):
    seen.clear()
    model, history = train.fit(rna, atac, direction, cells[:120], cells[150:200], profile="quick", epochs=2,
                               device="cpu", progress=False, batch_size=16, seed=0)
    result[direction] = {"seen": {e: items for (sd, e), items in seen.items() if sd == 0}, "state": model.state_dict(),
                         "history": history[["train_loss", "val_loss", "val_score"]].to_numpy()}
    if torch.distributed.get_rank() == 0:
        torch.save(model.checkpoint_dict(), out / f"{direction}.pt")
    if direction == "rna2atac":
        mem = predict.rna_to_atac(model, rna[150:], chunk=64, batch_size=4)
        streamed = predict.rna_to_atac(model, rna[150:], chunk=64, batch_size=4, out=out / "streamed.h5ad",
                                       dtype="float32", block_cells=7)
        result[direction].update(prob=mem.X, binary=mem.layers["binary"], streamed=streamed.X[:],
                                 streamed_binary=streamed.layers["binary"][:].toarray(),
                                 streamed_obs=list(streamed.obs_names))
        streamed.file.close()
    else:
        mem = predict.atac_to_rna(model, atac[150:], batch_size=4)
        result[direction].update(prob=np.stack([mem.layers[f"p_bin{j}"] for j in range(model.config.n_bins)], -1))
rank = torch.distributed.get_rank()
result["rank"], result["world"] = rank, torch.distributed.get_world_size()
result["predict_only"] = {"shared": shared, "alone": alone}
torch.save(result, out / f"rank{rank}.pt")
