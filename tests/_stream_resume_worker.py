"""One process of tests/test_multiprocess.py's resume test, started twice by ``python -m torch.distributed.run``.

Streams the prediction of ``OUTDIR/model.pt`` for 50 simulated cells to ``OUTDIR/streamed.h5ad`` in blocks of 5
cells, appending each block's count of this process's cells done to ``OUTDIR/done<rank>.txt``; with ``kill`` as
the second argument, process 1 kills itself (SIGKILL, nothing cleaned up) once it has written 2 blocks.
"""
import os
import signal
import sys
from pathlib import Path

import torch

from cisformer import predict
from cisformer.data import simulate
from cisformer.model import Cisformer

torch.set_num_threads(1)
out, kill = Path(sys.argv[1]), sys.argv[2:] == ["kill"]
rna, _, _ = simulate.paired(n_cells=50, n_genes=40, n_cres=150, n_cell_types=3, seed=0)
model = Cisformer.load(out / "model.pt").eval()


def on_block(done, total):
    rank = torch.distributed.get_rank()
    with open(out / f"done{rank}.txt", "a") as f:
        f.write(f"{done}\n")
    if kill and rank == 1 and done >= 10:
        os.kill(os.getpid(), signal.SIGKILL)


predict.rna_to_atac(model, rna, chunk=64, out=out / "streamed.h5ad", block_cells=5, dtype="float32",
                    on_block=on_block).file.close()
