"""Driver for MultiVI / scGLUE, run by :mod:`cisformer.peers.external` inside the integration environment
(``ensure_integration_env``):
``python run_integration.py WORK THREADS`` reads ``WORK/config.json`` and the h5ad files there and writes its results
there. Runtime changes are documented in ``docs/external_peers.md``."""
import json, random, sys, time
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
snapshot_every = cfg.get("snapshot_every")  # embed the embedding cells every N epochs (None: only at the end)


def snapshot(epoch, embed_fn):
    """Save the embedding cells' two embeddings after ``epoch`` epochs (snapshot_EPOCH.npz) when a snapshot is due,
    leaving every random state as it was, so that the training run is the one without snapshots."""
    if not snapshot_every or epoch % snapshot_every:
        return
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    out = embed_fn()
    random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])
    np.savez(f"{work}/snapshot_{epoch}.npz", **{k: np.asarray(v, dtype=np.float32) for k, v in out.items()})


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

    def embedding():
        return {modality: model.get_latent_representation(embed, modality=key)
                for modality, key in (("rna", "expression"), ("atac", "accessibility"))}

    class Snapshots(pl.Callback):  # documented runtime addition: the embedding cells every snapshot_every epochs
        def on_train_epoch_end(self, trainer, module):
            def in_eval_mode():
                was_training, model.is_trained_ = model.module.training, True
                model.module.eval()
                try:
                    return embedding()
                finally:
                    model.module.train(was_training)
                    model.is_trained_ = False
            snapshot(trainer.current_epoch + 1, in_eval_mode)

    timer = TimeBudget()
    limits = {} if cfg["max_epochs"] is None else {"max_epochs": cfg["max_epochs"]}
    t0 = time.time()
    model.train(accelerator="cpu", devices=1, callbacks=[timer, Snapshots()], enable_progress_bar=False, **limits)
    train_s = time.time() - t0
    early = [c for c in model.trainer.callbacks if type(c).__name__ == "LoudEarlyStopping"]
    stopped = ("time_budget" if timer.stopped else
               "early_stopping" if early and early[0].early_stopping_reason is not None else "max_epochs")
    return embedding(), {"seconds": train_s, "epochs": int(model.trainer.current_epoch), "stopped": stopped,
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
    current = {}  # the SCGLUEModel being fitted (pretraining, then fine-tuning), for the snapshots

    def embedding():
        return {"rna": current["model"].encode_data("rna", rna_embed),
                "atac": current["model"].encode_data("atac", atac_embed)}

    class TimeBudget(glue_base.TrainingPlugin):
        def __init__(self, deadline):
            self.record = {"epochs": 0, "stopped": "max_epochs"}
            self.deadline = deadline

        def attach(self, net, trainer, train_engine, val_engine, train_loader, val_loader, directory):
            import ignite

            @train_engine.on(ignite.engine.Events.EPOCH_COMPLETED)
            def _(engine):
                self.record["epochs"] = engine.state.epoch
                snapshot(sum(s["epochs"] for s in stages) + engine.state.epoch, embedding)
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
    original_model_fit = scglue.models.scglue.SCGLUEModel.fit

    def recorded_model_fit(self, *args, **kwargs):
        current["model"] = self
        return original_model_fit(self, *args, **kwargs)

    scglue.models.scglue.SCGLUEModel.fit = recorded_model_fit
    fit_kws = {"directory": f"{work}/glue"} | ({} if cfg["max_epochs"] is None else {"max_epochs": cfg["max_epochs"]})
    model = scglue.models.fit_SCGLUE({"rna": rna, "atac": atac}, graph, init_kws={"random_seed": seed},
                                     fit_kws=fit_kws)
    train_s = time.time() - start
    current["model"] = model
    return embedding(), {
        "seconds": train_s, "epochs": sum(s["epochs"] for s in stages), "stopped": stages[-1]["stopped"],
        "preprocess_s": preprocess_s, "n_guidance_edges": graph.number_of_edges(),
        "n_features_rna": len(hvg), "n_features_atac": len(hv_peaks),
        **{f"{key}_{name}": s[key] for name, s in zip(("pretrain", "finetune"), stages) for key in s}}


out, record = {"multivi": multivi, "scglue": scglue_run}[cfg["method"]]()
np.save(f"{work}/rna_embedding.npy", np.asarray(out["rna"], dtype=np.float32))
np.save(f"{work}/atac_embedding.npy", np.asarray(out["atac"], dtype=np.float32))
json.dump(record, open(f"{work}/record.json", "w"))
