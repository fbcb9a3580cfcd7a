"""Benchmark driver for the REFERENCE Cisformer (PyPI ``cisformer==1.1.2``), run with
``benchmarks/.env-reference/bin/python`` by run_benchmarks.py, one task per fresh process.

The reference's code is imported and run, never copied: its model class ``M2M_rna2atac``, its paper-profile
config written by its own ``generate_default_config``, its prediction dataset ``Rna2atacDataset`` and its
preprocessing ``map_rna_atac.main``. The glue below mirrors the loop bodies of its ``rna2atac_train.py``
(training step) and ``rna2atac_predict.py`` (prediction) line for line, without Accelerate (a no-op on one CPU).
flash-attn is the fp32 stand-in from benchmarks/flash_attn_standin.

Tasks: ``train``, ``predict``, ``preprocess``. Prints ``BENCH_RESULT {json}``.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
bc.use_reference_package()  # see bench_common: which cisformer package is imported

warnings.filterwarnings("ignore")


def reference_config() -> dict:
    """The reference's own rna2atac config (paper profile), written by its generate_default_config."""
    import yaml
    from cisformer import generate_default_config
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            generate_default_config.main(species="human", download_genome_annotation=False)
            with open(os.path.join("cisformer_config", "rna2atac_config.yaml")) as f:
                return yaml.safe_load(f)
        finally:
            os.chdir(cwd)


def build_model(config: dict):
    """M2M_rna2atac exactly as rna2atac_train.py / rna2atac_predict.py construct it."""
    from cisformer.M2Mmodel.M2M import M2M_rna2atac
    m = config["model"]
    return M2M_rna2atac(
        dim=m.get("dim"),
        enc_num_gene_tokens=m.get("total_gene") + 1,
        enc_num_value_tokens=m.get("max_express") + 1,
        enc_depth=0,
        enc_heads=m.get("dec_heads"), enc_ff_mult=m.get("dec_ff_mult"), enc_dim_head=m.get("dec_dim_head"),
        enc_emb_dropout=m.get("dec_emb_dropout"), enc_ff_dropout=m.get("dec_ff_dropout"),
        enc_attn_dropout=m.get("dec_attn_dropout"),
        dec_depth=m.get("dec_depth"), dec_heads=m.get("dec_heads"), dec_ff_mult=m.get("dec_ff_mult"),
        dec_dim_head=m.get("dec_dim_head"), dec_emb_dropout=m.get("dec_emb_dropout"),
        dec_ff_dropout=m.get("dec_ff_dropout"), dec_attn_dropout=m.get("dec_attn_dropout"),
    )


def shape_info(config: dict) -> dict:
    m, d = config["model"], config["datapreprocess"]
    return dict(dim=m["dim"], n_layers=m["dec_depth"], n_heads=m["dec_heads"], head_dim=m["dec_dim_head"],
                ff_mult=m["dec_ff_mult"], gene_len=d["enc_max_len"], cre_len=d["dec_max_len"],
                batch_size=config["training"]["batch_size"], n_genes=m["total_gene"])


def reference_model(args):
    """Threads, config, shapes and the reference's model built from its config with its seed."""
    from cisformer.M2Mmodel.utils import setup_seed

    threads = bc.set_threads(args.threads)
    config = reference_config()
    setup_seed(config["training"]["SEED"])
    return threads, config, shape_info(config), build_model(config)


def task_train(args) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torch.optim as optim
    from cisformer.M2Mmodel.utils import list_digit

    threads, config, info, model = reference_model(args)
    optimizer = optim.Adam(model.parameters(), lr=float(config["training"]["lr"]), amsgrad=True)
    b = bc.synthetic_rna2atac_batch(info["batch_size"], info["gene_len"], info["cre_len"], info["n_genes"],
                                    bc.N_HUMAN_CRES, seed=args.seed)
    # the tensors PairDataset / PreDataset hand to the loop: genes shifted by one (0 = <PAD>), CRE digits
    rna_sequence = torch.from_numpy(b["gene_idx"] + 1)
    rna_value = torch.from_numpy(b["gene_value"])
    atac_sequence = torch.from_numpy(np.array([[list_digit(c) for c in row] for row in b["cre_idx"]]))
    tgt = torch.from_numpy(b["target"])
    enc_pad_mask = rna_value != 0
    model.train()

    def step(n):  # body of rna2atac_train.py's training loop (its per-step AUROC/AUPRC aside)
        optimizer.zero_grad()
        logist = model(rna_sequence[:n], atac_sequence[:n], rna_value[:n], enc_mask=enc_pad_mask[:n])
        logist_hat = torch.sigmoid(logist)
        loss = F.binary_cross_entropy(logist_hat, tgt[:n].float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1)
        optimizer.step()
        return loss.item()

    times, cpu = bc.timed_steps(step, args.warmup, args.steps, info["batch_size"])
    res = {"task": "train", "impl": "reference", "threads": threads, "step_s": times, "step_cpu_s": cpu,
           "samples_per_s": info["batch_size"] / bc.median(times) if times else None, "shapes": info}
    if args.profile:
        res["profile"] = bc.profile_ops(lambda: step(args.profile_batch))
    return res


def task_predict(args) -> dict:
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    threads, config, info, model = reference_model(args)
    model.eval()
    n_cres = args.n_cres
    genes, counts = bc.synthetic_cell(args.n_expressed, info["n_genes"], seed=args.seed)
    # the "previously mapped" RNA AnnData rna2atac_predict.py builds: one cell x the reference gene vocabulary
    X = sp.csr_matrix((counts, genes, [0, len(genes)]), shape=(1, info["n_genes"]))
    rna_new = ad.AnnData(X, obs=pd.DataFrame(index=["cell0"]))
    bed_chrom, bed_start, bed_end = bc.read_cre_bed(args.cre_bed)
    peak_list_str = [f"{c}:{s}-{e}" for c, s, e in zip(bed_chrom[:n_cres], bed_start[:n_cres], bed_end[:n_cres])]
    atac_sequence_idx = np.array(range(n_cres))
    rss_before = bc.current_rss_mb()

    def run():
        return predict(model, rna_new, info, config, atac_sequence_idx, peak_list_str)

    t0, c0 = time.perf_counter(), time.process_time()
    t_model = run()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    res = {"task": "predict", "impl": "reference", "threads": threads, "n_cres": n_cres, "seconds": seconds,
           "cpu_seconds": cpu_seconds, "model_seconds": t_model, "rss_before_mb": rss_before, "peak_rss_mb": bc.peak_rss_mb(),
           "n_keys": info["gene_len"], "shapes": info}
    if args.profile:
        res["profile"] = bc.profile_ops(run)
    return res


def predict(model, rna_new, info, config, atac_sequence_idx, peak_list_str) -> float:
    """rna2atac_predict.py's dataset, loader, loop body and assembly; returns the model's seconds."""
    import anndata as ad
    import torch
    from scipy.sparse import csr_matrix, vstack
    from cisformer.M2Mmodel.utils import Rna2atacDataset

    output = []
    with torch.no_grad():  # rna2atac_predict.py: dataset, loader, loop body, assembly
        test_dataset = Rna2atacDataset(rna_new, info["gene_len"], atac_sequence_idx,
                                       max_express=config["model"]["max_express"])
        test_loader = torch.utils.data.DataLoader(test_dataset, batch_size=1, shuffle=False, num_workers=0)
        for rna_sequence, rna_value, atac_sequence, enc_pad_mask in test_loader:
            t_model = time.perf_counter()
            logist = model(rna_sequence, atac_sequence, rna_value, enc_mask=enc_pad_mask)
            logist_hat = torch.sigmoid(logist)
            t_model = time.perf_counter() - t_model
            y_hat_out = logist_hat.to("cpu")
            y_hat_out = (y_hat_out >= 0.5).int()
            if y_hat_out.dim() == 1:  # .squeeze() in AtacLM drops the batch axis for one cell
                y_hat_out = y_hat_out[None]
            output.append(csr_matrix(y_hat_out))
    output = vstack(output)
    output = ad.AnnData(output, obs=rna_new.obs)
    output.var_names = peak_list_str
    return t_model


def task_preprocess(args) -> dict:
    """map_rna_atac.main (the reference's peak -> cCRE mapping, dense cells x 1.03M matrices) on a subset."""
    import shutil
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from importlib.resources import files as rfiles
    from cisformer import map_rna_atac

    if shutil.which("bedtools") is None:
        raise RuntimeError("bedtools binary not installed (apt-get install -y bedtools)")
    sim = np.load(args.peaks_npz)
    n = args.n_cells
    indptr = sim["indptr"][: n + 1]
    X = sp.csr_matrix((sim["data"][: indptr[-1]], sim["indices"][: indptr[-1]], indptr),
                      shape=(n, len(sim["start"])))
    var_names = [f"{c}:{s}-{e}" for c, s, e in zip(sim["chrom"], sim["start"], sim["end"])]
    cells = [f"cell{i}" for i in range(n)]
    genes = pd.read_table(rfiles("cisformer.resource") / "human_genes.tsv", names=["gene_ids", "gene_name"])
    rng = np.random.default_rng(0)
    rna_X = sp.random(n, 3000, density=0.3, format="csr", dtype=np.float32, random_state=0)
    rna_X.data = np.ceil(rna_X.data * 5)
    rna_var = pd.DataFrame(index=rng.choice(genes["gene_name"].unique(), 3000, replace=False))
    with tempfile.TemporaryDirectory() as tmp:
        rna_file, atac_file = os.path.join(tmp, "rna.h5ad"), os.path.join(tmp, "atac.h5ad")
        ad.AnnData(rna_X, obs=pd.DataFrame(index=cells), var=rna_var).write_h5ad(rna_file)
        ad.AnnData(X, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=var_names)).write_h5ad(atac_file)
        rss_before = bc.current_rss_mb()
        t0 = time.perf_counter()
        map_rna_atac.main(rna_file, atac_file, save_dir=tmp, divide=False, species="human")
        seconds = time.perf_counter() - t0
    return {"task": "preprocess", "impl": "reference", "n_cells": n, "n_peaks": int(X.shape[1]),
            "nnz": int(X.nnz), "seconds": seconds, "rss_before_mb": rss_before, "peak_rss_mb": bc.peak_rss_mb()}


def main():
    tasks = {"train": task_train, "predict": task_predict, "preprocess": task_preprocess}
    p = bc.driver_parser(__doc__, tasks)
    p.add_argument("--n-cells", type=int, default=200)
    bc.run_task(tasks, p.parse_args())


if __name__ == "__main__":
    main()
