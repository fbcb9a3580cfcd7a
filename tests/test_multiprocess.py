"""Many processes, one result: training and prediction under a 2-process CPU launch (torchrun, gloo).

tests/_multiprocess_worker.py runs in both processes: it trains both directions for 2 epochs on 120 cells (batch
16 per process: 8 batches, the last one short, so accelerate pads it) and predicts in memory and streamed to disk;
before that it predicts with an untrained model, which joins the launcher's group by itself.
tests/_stream_resume_worker.py streams a prediction in which one process is killed, then is run again to resume.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from cisformer import predict
from cisformer.data import simulate
from cisformer.model import Cisformer, CisformerConfig
from cisformer.sampler import make_loader

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(worker: str, *args) -> subprocess.CompletedProcess:
    """Run ``tests/<worker>`` in 2 CPU processes under torchrun (gloo)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(ROOT / "tests" / worker), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    run = _launch("_multiprocess_worker.py", out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


class _Positions(torch.utils.data.Dataset):
    def __len__(self):
        return 120

    def __getitem__(self, i):
        return {"cell": i}


@pytest.mark.parametrize("direction", ["rna2atac", "atac2rna"])
def test_processes_train_on_disjoint_cells_and_end_identical(two_processes, direction):
    _, (r0, r1) = two_processes
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    a, b = r0[direction], r1[direction]
    assert sorted(a["seen"]) == sorted(b["seen"]) == [0, 1]  # the training set's own epoch in every epoch
    for epoch in (0, 1):
        # the single-process epoch's batches: process 0 takes batches 0, 2, 4, 6 and process 1 batches 1, 3, 5, 7;
        # the 8th batch holds the last 8 samples and accelerate pads it with the epoch's first 8
        batches = [batch["cell"].tolist() for batch in make_loader(_Positions(), 16, shuffle=True, seed=0,
                                                                   epoch=epoch)]
        assert a["seen"][epoch] == sum(batches[0::2], [])
        assert b["seen"][epoch] == sum(batches[1::2], []) + batches[0][:8]
        overlap = set(a["seen"][epoch]) & set(b["seen"][epoch])
        assert overlap == set(batches[0][:8])  # disjoint but for the padding
        assert set(a["seen"][epoch]) | set(b["seen"][epoch]) == set(range(120))
    assert a["seen"][0] != a["seen"][1]  # reshuffled every epoch
    assert a["state"].keys() == b["state"].keys()
    for name in a["state"]:
        assert torch.equal(a["state"][name], b["state"][name]), name
    assert np.array_equal(a["history"], b["history"])  # losses reduced over both processes


def test_prediction_split_between_processes_equals_one_process(two_processes):
    out, (r0, r1) = two_processes
    rna, atac, _ = simulate.paired(n_cells=200, n_genes=40, n_cres=150, n_cell_types=3, seed=0)
    torch.set_num_threads(1)

    r2a = Cisformer.load(out / "rna2atac.pt").eval()
    for name, tensor in r2a.state_dict().items():
        assert torch.equal(tensor, r0["rna2atac"]["state"][name])
    one = predict.rna_to_atac(r2a, rna[150:], chunk=64, batch_size=4)  # no process group here: one process
    for r in (r0, r1):  # in memory: every process returns the whole, bit for bit
        assert np.array_equal(r["rna2atac"]["prob"], one.X)
        assert np.array_equal(r["rna2atac"]["binary"], one.layers["binary"])
    single = predict.rna_to_atac(r2a, rna[150:], chunk=64, batch_size=4, out=out / "single.h5ad",
                                 dtype="float32", block_cells=7)
    merged = ad.read_h5ad(out / "streamed.h5ad")
    assert list(merged.obs_names) == list(single.obs_names) == list(rna.obs_names[150:])
    assert np.array_equal(merged.X, single.X[:])
    assert np.array_equal(merged.layers["binary"].toarray(), single.layers["binary"][:].toarray())
    assert np.array_equal(r0["rna2atac"]["streamed"], single.X[:])
    single.file.close()
    assert not list(out.glob("streamed.h5ad.*"))  # shards and partial files are gone

    a2r = Cisformer.load(out / "atac2rna.pt").eval()
    one = predict.atac_to_rna(a2r, atac[150:], batch_size=4)
    expected = np.stack([one.layers[f"p_bin{j}"] for j in range(a2r.config.n_bins)], -1)
    for r in (r0, r1):
        assert np.array_equal(r["atac2rna"]["prob"], expected)


def test_a_script_that_only_predicts_shares_the_cells(two_processes):
    out, (r0, r1) = two_processes
    rna, _, _ = simulate.paired(n_cells=200, n_genes=40, n_cres=150, n_cell_types=3, seed=0)
    torch.set_num_threads(1)
    one = predict.rna_to_atac(Cisformer.load(out / "untrained.pt").eval(), rna[150:], chunk=64, batch_size=4).X
    assert one.std() > 0
    assert np.array_equal(r0["predict_only"]["shared"], one) and np.array_equal(r1["predict_only"]["shared"], one)
    assert np.array_equal(r0["predict_only"]["alone"], one)  # distributed=False on the main process alone


def test_a_killed_process_resumes_its_shard(tmp_path):
    """2 processes stream a prediction; process 1 is killed (SIGKILL) after 2 of its 5 blocks, which ends the
    launch; the same command again resumes process 1's shard at its 3rd block, and the merged file equals one
    process's prediction."""
    from cisformer.data.h5stream import partial_path

    rna, atac, _ = simulate.paired(n_cells=50, n_genes=40, n_cres=150, n_cell_types=3, seed=0)
    torch.manual_seed(0)
    model = Cisformer(CisformerConfig.from_profile("rna2atac", "quick", rna.n_vars, atac.n_vars)).eval()
    model.gene_names, model.cre_names = list(rna.var_names), list(atac.var_names)
    model.save(tmp_path / "model.pt")
    target = tmp_path / "streamed.h5ad"

    killed = _launch("_stream_resume_worker.py", tmp_path, "kill")
    assert killed.returncode != 0 and not target.exists()
    assert (tmp_path / "done1.txt").read_text().split() == ["5", "10"]
    assert partial_path(predict.shard_path(target, 1, 2)).exists()
    (tmp_path / "done1.txt").unlink()

    resumed = _launch("_stream_resume_worker.py", tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-6000:]
    assert (tmp_path / "done1.txt").read_text().split() == ["15", "20", "25"]  # blocks 3-5 of process 1 only
    one = predict.rna_to_atac(model, rna, chunk=64)
    merged = ad.read_h5ad(target)
    assert list(merged.obs_names) == list(rna.obs_names)
    np.testing.assert_array_equal(merged.X, one.X)
    np.testing.assert_array_equal(merged.layers["binary"].toarray(), one.layers["binary"])
    assert not list(tmp_path.glob("streamed.h5ad.*"))  # no shard or partial file left
