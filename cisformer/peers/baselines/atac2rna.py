"""ATAC -> RNA baselines: the gene mean (floor), depth only, ridge on scaled ATAC, ArchR's gene score, ArchR's
peak-to-gene links and a SCARlink-style regression (see :mod:`cisformer.peers.baselines`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from ...data.preprocess import true_expression
from ...data.vocab import gene_cre_pairs
from ...metrics import exact_neighbors
from ...utils.matrix import binary_csr, dense
from .common import AtacLSI, check_paired, epoch_batches, rna_prediction


class GeneMean:
    """The ATAC -> RNA floor: each gene's mean log-normalised expression (``data.true_expression``) over the
    training cells, predicted for every cell. Reads no ATAC; any method that learns must beat it."""

    name = "floor"

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0) -> "GeneMean":
        """Take each gene's mean log-normalised expression in the training cells.

        The interface of :mod:`cisformer.peers.baselines`.

        Parameters
        ----------
        rna_train, atac_train
            Paired training cells (raw counts); only ``rna_train`` is read.
        seed
            Unused (deterministic).

        Returns
        -------
        The fitted object itself.
        """
        self.var = rna_train.var.copy()
        self.mean = true_expression(rna_train).mean(axis=0)
        return self

    def predict_rna(self, atac: AnnData) -> AnnData:
        """The training means for every cell of ``atac``.

        Parameters
        ----------
        atac
            Cells to predict; only their number and ``obs`` are read.

        Returns
        -------
        AnnData cells x training genes (:func:`rna_prediction`, log1p(normalised to 10,000) scale).
        """
        return rna_prediction(np.tile(self.mean, (atac.n_obs, 1)), atac.obs, self.var, self.name)


def log_open(atac: AnnData) -> np.ndarray:
    """log(number of open CREs) per cell (at least 1), float64 (cells,).

    Parameters
    ----------
    atac
        Cells' ATAC (``X > 0`` is open).

    Returns
    -------
    float64 array (cells,).
    """
    return np.log(np.maximum(np.diff(binary_csr(atac).indptr), 1)).astype(np.float64)


class DepthOnly:
    """A depth-aware floor: per gene, a least-squares line of log-normalised expression on the cell's log number
    of open CREs, fitted on the training cells. It reads nothing of *which* CREs are open, only how many (the
    sequencing depth of the ATAC library, which correlates with the RNA library's quality): a method whose
    gene-wise correlation does not clear it has learned nothing of chromatin."""

    name = "depth only"

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0) -> "DepthOnly":
        """Fit each gene's line on the training cells' log number of open CREs.

        The interface of :mod:`cisformer.peers.baselines`.

        Parameters
        ----------
        rna_train, atac_train
            Paired training cells (raw counts, identical ``obs_names``).
        seed
            Unused (deterministic).

        Returns
        -------
        The fitted object itself.
        """
        check_paired(rna_train, atac_train)
        self.var = rna_train.var.copy()
        depth, y = log_open(atac_train), true_expression(rna_train).astype(np.float64)
        self.depth_mean, self.mean = depth.mean(), y.mean(axis=0)
        centred = depth - self.depth_mean
        self.slope = centred @ (y - self.mean) / max(centred @ centred, 1e-12)
        return self

    def predict_rna(self, atac: AnnData) -> AnnData:
        """Each gene's line at the cell's log number of open CREs.

        Parameters
        ----------
        atac
            Cells to predict; only how many CREs are open in each is read.

        Returns
        -------
        AnnData cells x training genes (:func:`rna_prediction`, log1p(normalised to 10,000) scale).
        """
        pred = self.mean + np.outer(log_open(atac) - self.depth_mean, self.slope)
        return rna_prediction(pred, atac.obs, self.var, self.name)


class RidgeATAC:
    """Ridge regression of every gene's log-normalised expression on the cell's open CREs and its log depth.

    Inputs: each CRE's open state scaled to unit root-mean-square over the training cells (1 / sqrt(open
    share), so rare CREs are not drowned by common ones; Attune's value scale) and the standardised log number of
    open CREs; intercepts are the training means. ``alpha`` is the L2 penalty on the centred inputs (tune it on
    validation cells by :mod:`cisformer.peers.benchmark`). One linear solve for all genes: ``(X'X + alpha I) W = X'Y``.

    Parameters
    ----------
    alpha
        L2 penalty on the centred inputs.
    """

    name = "ridge"

    def __init__(self, alpha: float = 100.0):
        self.alpha = float(alpha)

    def _inputs(self, atac: AnnData) -> np.ndarray:
        x = dense(binary_csr(atac)).astype(np.float64) * self.scale
        depth = (log_open(atac) - self.depth_mean) / self.depth_sd
        return np.column_stack([x, depth])

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0) -> "RidgeATAC":
        """Fit the input scaling and solve the ridge regression for every gene.

        The interface of :mod:`cisformer.peers.baselines`.

        Parameters
        ----------
        rna_train, atac_train
            Paired training cells (raw counts, identical ``obs_names``).
        seed
            Unused (deterministic).

        Returns
        -------
        The fitted object itself.
        """
        check_paired(rna_train, atac_train)
        self.var = rna_train.var.copy()
        share = np.asarray(binary_csr(atac_train).mean(axis=0), dtype=np.float64).ravel()
        self.scale = np.where(share > 0, 1.0 / np.sqrt(np.maximum(share, 1e-12)), 0.0)
        depth = log_open(atac_train)
        self.depth_mean, self.depth_sd = depth.mean(), max(depth.std(), 1e-3)
        x, y = self._inputs(atac_train), true_expression(rna_train).astype(np.float64)
        self.x_mean, self.y_mean = x.mean(axis=0), y.mean(axis=0)
        x, y = x - self.x_mean, y - self.y_mean
        gram = x.T @ x
        gram[np.diag_indices_from(gram)] += self.alpha
        self.coef = np.linalg.solve(gram, x.T @ y)  # (CREs + 1, genes)
        return self

    def predict_rna(self, atac: AnnData) -> AnnData:
        """The fitted linear prediction of every gene.

        Parameters
        ----------
        atac
            Cells to predict, with the training CREs in the training order.

        Returns
        -------
        AnnData cells x training genes (:func:`rna_prediction`, log1p(normalised to 10,000) scale).
        """
        pred = (self._inputs(atac) - self.x_mean) @ self.coef + self.y_mean
        return rna_prediction(pred, atac.obs, self.var, self.name)


class ArchRGeneScore:
    """ArchR-style gene activity score (see :mod:`cisformer.peers.baselines`). Unsupervised; ``fit`` reads
    coordinates only.

    ArchR scores 500-bp genome tiles; this sums the features in ``atac.var``. With called peaks (SNARE-seq,
    BMMC) many genes have no feature in their window and score 0 in every cell: after ``fit``,
    ``genes_without_cres`` lists them and ``coverage`` is the fraction of genes with at least one. Given tiles
    (``cisformer.data.load("pbmc_scarlink")``, whose ``atac.var`` holds 500-bp tiles around its genes) it is
    ArchR's tile-based score.

    Parameters
    ----------
    gene_upstream
        bp by which the gene body is extended upstream (strand-aware).
    extend
        bp beyond the extended body within which features count (each side).
    scale_factor
        Upper end of the inverse-gene-length weight, which runs from 1 (longest gene) to ``scale_factor``.
    scale_to
        Total score of each cell before log1p (the depth normalisation).
    """

    name = "ArchR gene score"

    def __init__(self, gene_upstream: float = 5000, extend: float = 100_000, scale_factor: float = 5.0,
                 scale_to: float = 1e4):
        self.gene_upstream, self.extend, self.scale_factor, self.scale_to = gene_upstream, extend, scale_factor, scale_to

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0) -> "ArchRGeneScore":
        """Build the feature -> gene weights from coordinates; no counts are read.

        The interface of :mod:`cisformer.peers.baselines`.

        Parameters
        ----------
        rna_train, atac_train
            Training cells; only ``rna_train.var`` (``chrom``/``start``/``end``, ``strand`` optional) and
            ``atac_train.var`` (``chrom``/``start``/``end``) are read.
        seed
            Unused (deterministic).

        Returns
        -------
        The fitted object itself.
        """
        genes = rna_train.var.copy()
        minus = genes.get("strand", pd.Series("+", index=genes.index)).astype(str).to_numpy() == "-"
        start = pd.to_numeric(genes["start"], errors="coerce").to_numpy(dtype=float)
        end = pd.to_numeric(genes["end"], errors="coerce").to_numpy(dtype=float)
        genes["start"] = np.where(minus, start, start - self.gene_upstream)     # body extended 5 kb upstream
        genes["end"] = np.where(minus, end + self.gene_upstream, end)
        pairs = gene_cre_pairs(genes, atac_train.var, self.extend, self.extend, anchor="body")
        weight = np.exp(-np.abs(pairs["distance"].to_numpy()) / 5000.0) + np.exp(-1.0)
        inv_len = 1.0 / np.maximum(genes["end"].to_numpy(dtype=float) - genes["start"].to_numpy(dtype=float), 1.0)
        inv_len = np.nan_to_num(inv_len, nan=np.nanmin(inv_len) if np.isfinite(inv_len).any() else 1.0)
        span = inv_len.max() - inv_len.min()
        gene_weight = 1 + (inv_len - inv_len.min()) * (self.scale_factor - 1) / (span if span > 0 else 1.0)
        weight = weight * gene_weight[pairs["gene_idx"].to_numpy()]
        self.weights = sp.csr_matrix((weight, (pairs["cre_idx"].to_numpy(), pairs["gene_idx"].to_numpy())),
                                     shape=(atac_train.n_vars, rna_train.n_vars))
        self.cre_names, self.var = atac_train.var_names, rna_train.var.copy()
        covered = np.zeros(rna_train.n_vars, dtype=bool)
        covered[pairs["gene_idx"].to_numpy(dtype=int)] = True
        self.genes_without_cres = list(rna_train.var_names[~covered])
        self.coverage = float(covered.mean()) if covered.size else 0.0
        return self

    def predict_rna(self, atac: AnnData) -> AnnData:
        """Gene scores from the cells' counts (capped at 4), depth-normalised to ``scale_to``, log1p.

        Parameters
        ----------
        atac
            Cells to predict (counts), holding the training features (selected by name).

        Returns
        -------
        AnnData cells x training genes (:func:`rna_prediction`, log1p(normalised to 10,000) scale).
        """
        x = sp.csr_matrix(atac[:, self.cre_names].X).minimum(4)              # ArchR caps insertion counts at 4
        score = dense(x @ self.weights)
        totals = np.maximum(score.sum(axis=1, keepdims=True), 1e-12)
        return rna_prediction(np.log1p(score / totals * self.scale_to), atac.obs, self.var, self.name)


class PeakToGene:
    """ArchR-style peak-to-gene links + per-gene linear prediction (see :mod:`cisformer.peers.baselines`).

    Parameters
    ----------
    window
        bp either side of the TSS within which a CRE's midpoint may link.
    n_metacells
        Metacells (at most ``max(10, training cells // 5)``), each around a random seed cell.
    metacell_size
        Training cells per metacell: the seed cell's nearest neighbours in ATAC LSI space.
    min_corr
        A CRE links when its metacell Pearson r with the gene is above this.
    max_links
        At most this many linked CREs (the most correlated) per gene.
    ridge
        L2 penalty of each gene's regression on its linked CREs.
    """

    name = "peak-to-gene"

    def __init__(self, window: float = 250_000, n_metacells: int = 500, metacell_size: int = 50,
                 min_corr: float = 0.2, max_links: int = 20, ridge: float = 1.0):
        self.window, self.n_metacells, self.metacell_size = window, n_metacells, metacell_size
        self.min_corr, self.max_links, self.ridge = min_corr, max_links, ridge

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0) -> "PeakToGene":
        """Build metacells, link CREs to genes and fit each linked gene's regression.

        The interface of :mod:`cisformer.peers.baselines`.

        Parameters
        ----------
        rna_train, atac_train
            Paired training cells (raw counts, identical ``obs_names``). ``var`` with coordinates.
        seed
            Draws the metacells' seed cells; ``random_state`` of the LSI.

        Returns
        -------
        The fitted object itself; ``links`` lists the kept (``gene``, ``cre``) pairs.
        """
        check_paired(rna_train, atac_train)
        rng = np.random.default_rng(seed)
        lsi = AtacLSI().fit(atac_train, seed)
        n_meta = min(self.n_metacells, max(10, rna_train.n_obs // 5))
        k = min(self.metacell_size, rna_train.n_obs)
        seeds = rng.choice(rna_train.n_obs, size=n_meta, replace=False)
        members = exact_neighbors(lsi.train_embedding, k).kneighbors(
            lsi.train_embedding[seeds], return_distance=False)
        agg = sp.csr_matrix((np.full(members.size, 1.0 / k), (np.repeat(np.arange(n_meta), k), members.ravel())),
                            shape=(n_meta, rna_train.n_obs))
        meta_atac = dense(agg @ binary_csr(atac_train))                         # (n_meta, n_cres)
        meta_rna = dense(agg @ true_expression(rna_train))                   # (n_meta, n_genes)
        pairs = gene_cre_pairs(rna_train.var, atac_train.var, self.window, self.window, anchor="tss")
        self.models, self.var, self.cre_names = {}, rna_train.var.copy(), atac_train.var_names
        self.mean_expr = meta_rna.mean(axis=0)
        for g, group in pairs.groupby("gene_idx"):
            cres = group["cre_idx"].to_numpy()
            a, y = meta_atac[:, cres], meta_rna[:, g]
            ac, yc = a - a.mean(axis=0), y - y.mean()
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.nan_to_num((ac * yc[:, None]).sum(0) / np.sqrt((ac ** 2).sum(0) * (yc ** 2).sum()))
            keep = np.flatnonzero(r > self.min_corr)
            if keep.size == 0:
                continue
            keep = keep[np.argsort(-r[keep])[: self.max_links]]
            x = ac[:, keep]
            coef = np.linalg.solve(x.T @ x + self.ridge * np.eye(len(keep)), x.T @ yc)
            self.models[g] = (cres[keep], a[:, keep].mean(axis=0), coef, y.mean())
        self.links = pd.DataFrame([(self.var.index[g], self.cre_names[c]) for g, (cs, *_rest) in self.models.items()
                                   for c in cs], columns=["gene", "cre"])
        return self

    def predict_rna(self, atac: AnnData) -> AnnData:
        """Each linked gene from its CREs' open states (the metacell mean for unlinked genes), clipped at 0.

        Parameters
        ----------
        atac
            Cells to predict, holding the training CREs (selected by name).

        Returns
        -------
        AnnData cells x training genes (:func:`rna_prediction`, log1p(normalised to 10,000) scale).
        """
        x = binary_csr(atac[:, self.cre_names])
        out = np.tile(self.mean_expr, (atac.n_obs, 1)).astype(np.float32)
        for g, (cres, centre, coef, intercept) in self.models.items():
            out[:, g] = intercept + (dense(x[:, cres]) - centre) @ coef
        return rna_prediction(np.maximum(out, 0.0), atac.obs, self.var, self.name)


class ScarlinkStyle:
    """SCARlink-style non-negative Poisson regression per gene (see :mod:`cisformer.peers.baselines`); an epoch
    shows at least ``min_epoch_samples`` cells (:func:`epoch_repeats`).

    Parameters
    ----------
    window
        bp either side of the TSS within which a CRE's midpoint enters the gene's regression.
    l2
        L2 penalty on the coefficients (per gene).
    epochs
        Training epochs (no early stopping).
    lr, batch_size
        Adam's learning rate and the cells per step.
    min_epoch_samples
        Least number of cells an epoch shows.
    """

    name = "SCARlink-style"

    def __init__(self, window: float = 250_000, l2: float = 1e-3, epochs: int = 30, lr: float = 0.05,
                 batch_size: int = 512, min_epoch_samples: int = 6400):
        self.window, self.l2, self.epochs, self.lr, self.batch_size = window, l2, epochs, lr, batch_size
        self.min_epoch_samples = min_epoch_samples

    def _inputs(self, atac: AnnData) -> sp.csr_matrix:
        x = sp.csr_matrix(atac[:, self.cre_names].X, dtype=np.float32)
        depth = np.maximum(np.asarray(x.sum(axis=1)).ravel(), 1.0)
        return sp.csr_matrix(sp.diags(self.median_depth / depth) @ x)[:, self.used_cres]  # depth-normalised

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0) -> "ScarlinkStyle":
        """Fit every gene's non-negative Poisson regression on depth-normalised CRE counts.

        The interface of :mod:`cisformer.peers.baselines`.

        Parameters
        ----------
        rna_train, atac_train
            Paired training cells (raw counts, identical ``obs_names``). ``var`` with coordinates.
        seed
            Seeds torch and the batch order.

        Returns
        -------
        The fitted object itself.
        """
        check_paired(rna_train, atac_train)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        pairs = gene_cre_pairs(rna_train.var, atac_train.var, self.window, self.window, anchor="tss")
        self.cre_names, self.var = atac_train.var_names, rna_train.var.copy()
        self.used_cres, local = np.unique(pairs["cre_idx"].to_numpy(dtype=int), return_inverse=True)
        self.pair_cre = torch.from_numpy(local.astype(np.int64))
        self.pair_gene = torch.from_numpy(pairs["gene_idx"].to_numpy(dtype=np.int64))
        depth = np.asarray(sp.csr_matrix(atac_train.X).sum(axis=1)).ravel()
        self.median_depth = float(np.median(depth[depth > 0])) if (depth > 0).any() else 1.0
        x = self._inputs(atac_train)
        y = np.expm1(true_expression(rna_train))                          # normalised expression (Poisson rate)
        n_genes = rna_train.n_vars
        self.weight = torch.zeros(len(self.pair_gene), requires_grad=True)
        self.bias = torch.tensor(np.log(y.mean(axis=0) + 1e-3), dtype=torch.float32, requires_grad=True)
        optim = torch.optim.Adam([self.weight, self.bias], lr=self.lr)
        y_t = torch.from_numpy(y)
        for _ in range(self.epochs):
            for batch in epoch_batches(rng, rna_train.n_obs, self.batch_size, self.min_epoch_samples):
                eta = self._linear(x[batch], n_genes)
                loss = (torch.exp(eta) - y_t[batch] * eta).mean() + self.l2 * (self.weight ** 2).sum() / n_genes
                optim.zero_grad()
                loss.backward()
                optim.step()
                with torch.no_grad():
                    self.weight.clamp_(min=0.0)                           # non-negative coefficients
        return self

    def _linear(self, x: sp.csr_matrix, n_genes: int) -> torch.Tensor:
        xb = torch.from_numpy(dense(x))                                  # (B, n_used_cres)
        contrib = xb[:, self.pair_cre] * self.weight                      # (B, n_pairs)
        eta = torch.zeros(xb.shape[0], n_genes).index_add_(1, self.pair_gene, contrib)
        return (eta + self.bias).clamp(max=20.0)

    @torch.no_grad()
    def predict_rna(self, atac: AnnData) -> AnnData:
        """log1p of the predicted Poisson rate of every gene.

        Parameters
        ----------
        atac
            Cells to predict (counts), holding the training CREs (selected by name).

        Returns
        -------
        AnnData cells x training genes (:func:`rna_prediction`, log1p(normalised to 10,000) scale).
        """
        x = self._inputs(atac)
        rate = torch.cat([torch.exp(self._linear(x[i:i + 2048], len(self.var)))
                          for i in range(0, atac.n_obs, 2048)]).numpy()
        return rna_prediction(np.log1p(rate), atac.obs, self.var, self.name)

    @property
    def coefficients(self) -> pd.DataFrame:
        """Fitted non-negative CRE -> gene coefficients (gene, cre, weight)."""
        return pd.DataFrame({"gene": self.var.index[self.pair_gene.numpy()],
                             "cre": self.cre_names[self.used_cres[self.pair_cre.numpy()]],
                             "weight": self.weight.detach().numpy()})

