"""RNA -> ATAC baselines: the floor, the cell-type mean (a reference), kNN transfer (both directions), ridge on
RNA PCA and a BABEL-style network (see :mod:`cisformer.peers.baselines`).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData
from torch import nn

from ...data.preprocess import true_expression
from ...metrics import auroc_gain, exact_neighbors
from ...protocol import cre_base_rate_logits, scored_validation_cells
from ...utils.matrix import binary_csr, dense
from .common import (AtacLSI, RnaPCA, atac_prediction, check_paired, epoch_batches, open_frequency, rna_prediction,
                     shrink_to_floor)


class Floor:
    """Each CRE's open frequency in the training cells, predicted for every cell (the floor any model must beat)."""

    name = "floor"

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0) -> "Floor":
        """Take each CRE's open frequency in the training cells (the interface of :mod:`cisformer.peers.baselines`).

        Parameters
        ----------
        rna_train, atac_train
            Paired training cells (raw counts); only ``atac_train`` is read.
        seed
            Unused (deterministic).

        Returns
        -------
        The fitted object itself.
        """
        self.var = atac_train.var.copy()
        self.frequency = open_frequency(binary_csr(atac_train))
        return self

    def predict_atac(self, rna: AnnData) -> AnnData:
        """The training open frequencies for every cell of ``rna``.

        Parameters
        ----------
        rna
            Cells to predict; only their number and ``obs`` are read.

        Returns
        -------
        AnnData cells x training CREs (:func:`atac_prediction`: ``X`` probabilities, ``layers["binary"]``).
        """
        return atac_prediction(np.tile(self.frequency, (rna.n_obs, 1)), rna.obs, self.var, self.name)


class CellTypeMean:
    """Open frequency per CRE in the training cells of each annotated cell type, predicted from the test cell's
    own label in ``obs[key]`` (cell types absent from training get the floor). A reference that reads labels.

    Each type's frequency is shrunk towards the floor by counting the floor as ``prior_cells`` extra cells,
    ``(open in type + prior_cells * floor) / (cells of type + prior_cells)``: without it, the many CREs never seen
    open in a small type all tie at 0 and lose the floor's ranking, which understates what the label is worth.

    Parameters
    ----------
    key
        ``obs`` column of the cell-type labels, read in the training and in the predicted cells.
    prior_cells
        Weight of the floor in each type's frequency, in cells (0: the plain frequency).
    """

    name = "cell-type mean"

    def __init__(self, key: str = "cell_type", prior_cells: float = 10.0):
        self.key, self.prior_cells = key, float(prior_cells)

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0) -> "CellTypeMean":
        """Take each cell type's shrunk open frequencies (the interface of :mod:`cisformer.peers.baselines`).

        Parameters
        ----------
        rna_train, atac_train
            Paired training cells; only ``atac_train`` (its counts and ``obs[key]``) is read. ``KeyError`` without
            the labels.
        seed
            Unused (deterministic).

        Returns
        -------
        The fitted object itself.
        """
        if self.key not in atac_train.obs:
            raise KeyError(f"CellTypeMean needs cell-type labels in obs[{self.key!r}]")
        self.var = atac_train.var.copy()
        binary, labels = binary_csr(atac_train), atac_train.obs[self.key].astype(str).to_numpy()
        self.floor = open_frequency(binary)
        self.frequency = {}
        for t in np.unique(labels):
            in_type = binary[labels == t]
            self.frequency[t] = shrink_to_floor(np.asarray(in_type.sum(axis=0)).ravel(), in_type.shape[0],
                                                 self.floor, self.prior_cells)
        return self

    def predict_atac(self, rna: AnnData) -> AnnData:
        """Each cell's own type's frequencies (the floor for types unseen in training).

        Parameters
        ----------
        rna
            Cells to predict; only ``obs[key]`` is read (``KeyError`` without it).

        Returns
        -------
        AnnData cells x training CREs (:func:`atac_prediction`: ``X`` probabilities, ``layers["binary"]``).
        """
        if self.key not in rna.obs:
            raise KeyError(f"CellTypeMean predicts from the cells' labels in obs[{self.key!r}]")
        probs = np.vstack([self.frequency.get(t, self.floor) for t in rna.obs[self.key].astype(str)])
        return atac_prediction(probs, rna.obs, self.var, self.name)


class KNNTransfer:
    """kNN transfer between modalities through an embedding of the input modality fitted on training cells.

    RNA -> ATAC: RNA PCA space; each CRE's open frequency among the ``n_neighbors`` nearest training cells,
    shrunk towards the floor exactly like ``CellTypeMean`` (the floor counted as ``prior_cells`` extra cells,
    ``(open among neighbours + prior_cells * floor) / (n_neighbors + prior_cells)``), so that CREs closed in
    every neighbour keep the floor's ranking instead of tying at 0. ``prior_cells=0`` is the plain average.
    ATAC -> RNA: ATAC LSI space, average of the neighbours' log-normalised RNA (not shrunk).

    Parameters
    ----------
    n_neighbors
        Training cells averaged per predicted cell (at most the number of training cells).
    n_comps
        Components of the RNA PCA (:class:`RnaPCA`) and of the ATAC LSI (:class:`AtacLSI`).
    n_top_genes
        Highest-variance genes of the RNA PCA.
    prior_cells
        Weight of the floor, in cells (RNA -> ATAC only; 0: the plain average).
    """

    name = "kNN"

    def __init__(self, n_neighbors: int = 20, n_comps: int = 30, n_top_genes: int = 2000,
                 prior_cells: float = 10.0):
        self.n_neighbors, self.n_comps, self.n_top_genes = n_neighbors, n_comps, n_top_genes
        self.prior_cells = float(prior_cells)

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0) -> "KNNTransfer":
        """Fit both embeddings and neighbour indices on the training cells; serves both directions.

        The interface of :mod:`cisformer.peers.baselines`.

        Parameters
        ----------
        rna_train, atac_train
            Paired training cells (raw counts, identical ``obs_names``).
        seed
            ``random_state`` of the PCA and the SVD.

        Returns
        -------
        The fitted object itself.
        """
        check_paired(rna_train, atac_train)
        k = min(self.n_neighbors, rna_train.n_obs)
        self.rna_space = RnaPCA(self.n_top_genes, self.n_comps).fit(rna_train, seed)
        self.atac_space = AtacLSI(self.n_comps).fit(atac_train, seed)
        self.rna_nn = exact_neighbors(self.rna_space.train_embedding, k)
        self.atac_nn = exact_neighbors(self.atac_space.train_embedding, k)
        self.train_atac, self.atac_var = binary_csr(atac_train), atac_train.var.copy()
        self.floor = open_frequency(self.train_atac)
        self.train_rna_log, self.rna_var = true_expression(rna_train), rna_train.var.copy()
        return self

    def predict_atac(self, rna: AnnData) -> AnnData:
        """RNA -> ATAC: shrunk open frequencies among each cell's nearest training cells in RNA PCA space.

        Parameters
        ----------
        rna
            Cells to predict (raw counts), holding the PCA's genes.

        Returns
        -------
        AnnData cells x training CREs (:func:`atac_prediction`: ``X`` probabilities, ``layers["binary"]``).
        """
        idx = self.rna_nn.kneighbors(np.asarray(self.rna_space.transform(rna), dtype=np.float64), return_distance=False)
        n_test, k = idx.shape
        neighbours = sp.csr_matrix((np.ones(idx.size, dtype=np.float32), idx.ravel(), np.arange(0, idx.size + 1, k)),
                                   shape=(n_test, self.train_atac.shape[0]))
        open_counts = dense(neighbours @ self.train_atac)
        probs = shrink_to_floor(open_counts, k, self.floor, self.prior_cells)
        return atac_prediction(probs, rna.obs, self.atac_var, self.name)

    def predict_rna(self, atac: AnnData) -> AnnData:
        """ATAC -> RNA: mean log-normalised expression of each cell's nearest training cells in ATAC LSI space.

        Parameters
        ----------
        atac
            Cells to predict, with the training CREs in the training order.

        Returns
        -------
        AnnData cells x training genes (:func:`rna_prediction`, log1p(normalised to 10,000) scale).
        """
        idx = self.atac_nn.kneighbors(np.asarray(self.atac_space.transform(atac), dtype=np.float64), return_distance=False)
        return rna_prediction(self.train_rna_log[idx].mean(axis=1), atac.obs, self.rna_var, self.name)


class RidgeRNA:
    """Ridge regression of every CRE's open state on the cell's RNA, from the floor.

    Inputs: the cell's RNA PCA (:class:`RnaPCA`, fitted on the training cells) with every component scaled to
    unit variance; target: the binary open state minus the floor; prediction: the floor plus the fitted
    deviation, clipped to [1e-4, 1]. ``alpha`` is the L2 penalty (tuned on validation cells by
    :mod:`cisformer.peers.benchmark`). A linear model of the same cell state kNN and the learned methods read: what
    a method must add beyond a linear map of RNA PCA.

    Parameters
    ----------
    alpha
        L2 penalty on the standardised components.
    n_comps, n_top_genes
        Components and highest-variance genes of the RNA PCA (:class:`RnaPCA`).
    """

    name = "ridge"

    def __init__(self, alpha: float = 1e3, n_comps: int = 50, n_top_genes: int = 2000):
        self.alpha, self.n_comps, self.n_top_genes = float(alpha), n_comps, n_top_genes

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0) -> "RidgeRNA":
        """Fit the PCA and solve the ridge regression for every CRE (the interface of :mod:`cisformer.peers.baselines`).

        Parameters
        ----------
        rna_train, atac_train
            Paired training cells (raw counts, identical ``obs_names``).
        seed
            ``random_state`` of the PCA.

        Returns
        -------
        The fitted object itself.
        """
        check_paired(rna_train, atac_train)
        self.space = RnaPCA(self.n_top_genes, self.n_comps).fit(rna_train, seed)
        z = self.space.train_embedding.astype(np.float64)
        self.z_mean, self.z_sd = z.mean(axis=0), z.std(axis=0) + 1e-6
        z = (z - self.z_mean) / self.z_sd
        binary, self.var = binary_csr(atac_train), atac_train.var.copy()
        self.floor = open_frequency(binary).astype(np.float64)
        cross = np.asarray((binary.T @ z).T) - np.outer(z.sum(axis=0), self.floor)  # z' (Y - floor), (comps, CREs)
        gram = z.T @ z
        gram[np.diag_indices_from(gram)] += self.alpha
        self.coef = np.linalg.solve(gram, cross)
        return self

    def predict_atac(self, rna: AnnData) -> AnnData:
        """The floor plus the fitted deviation, clipped to [1e-4, 1].

        Parameters
        ----------
        rna
            Cells to predict (raw counts), holding the PCA's genes.

        Returns
        -------
        AnnData cells x training CREs (:func:`atac_prediction`: ``X`` probabilities, ``layers["binary"]``).
        """
        z = (self.space.transform(rna) - self.z_mean) / self.z_sd
        return atac_prediction(np.clip(self.floor + z @ self.coef, 1e-4, 1.0), rna.obs, self.var, self.name)


class _BabelNet(nn.Module):
    """Shared-latent autoencoder pair: RNA <-> latent <-> per-chromosome ATAC (BABEL's architecture)."""

    def __init__(self, n_genes: int, chrom_sizes: list[int], hidden: int = 64, per_chrom: int = 16,
                 latent: int = 16):
        super().__init__()
        self.chrom_sizes = chrom_sizes
        self.rna_encoder = nn.Sequential(nn.Linear(n_genes, hidden), nn.PReLU(), nn.Linear(hidden, latent))
        self.rna_decoder = nn.Sequential(nn.Linear(latent, hidden), nn.PReLU())
        self.rna_mean = nn.Linear(hidden, n_genes)          # NB mean (softmax over genes x library size)
        self.rna_log_theta = nn.Linear(hidden, n_genes)     # NB inverse dispersion
        self.atac_chrom_encoders = nn.ModuleList(nn.Sequential(nn.Linear(n, per_chrom), nn.PReLU())
                                                 for n in chrom_sizes)
        self.atac_encoder = nn.Sequential(nn.Linear(per_chrom * len(chrom_sizes), hidden), nn.PReLU(),
                                          nn.Linear(hidden, latent))
        self.atac_decoder = nn.Sequential(nn.Linear(latent, per_chrom * len(chrom_sizes)), nn.PReLU())
        self.atac_chrom_decoders = nn.ModuleList(nn.Linear(per_chrom, n) for n in chrom_sizes)
        self.per_chrom = per_chrom

    @torch.no_grad()
    def start_from_base_rates(self, cre_logits: np.ndarray, gene_log_share: np.ndarray) -> None:
        """Output layers start at the training base rates: zero weights, biases = ``cre_logits`` (CREs in the
        decoder's chromosome order) and ``gene_log_share`` (softmax of it = each gene's share of the library), so
        the untrained network predicts the floor for every cell and training learns only the deviations.

        Parameters
        ----------
        cre_logits
            Base-rate logit of each CRE (:func:`cre_base_rate_logits`), (CREs,) in chromosome order.
        gene_log_share
            Log of each gene's share of the training counts, (genes,).
        """
        for dec, logits in zip(self.atac_chrom_decoders, torch.split(torch.as_tensor(cre_logits), self.chrom_sizes)):
            dec.weight.zero_()
            dec.bias.copy_(logits)
        self.rna_mean.weight.zero_()
        self.rna_mean.bias.copy_(torch.as_tensor(gene_log_share))

    def encode_atac(self, atac):                 # atac: (B, n_cres) grouped by chromosome
        """Latent (B, latent) of binary ATAC ``atac`` (B, CREs), CREs grouped by chromosome in ``chrom_sizes``."""
        parts = torch.split(atac, self.chrom_sizes, dim=1)
        return self.atac_encoder(torch.cat([enc(p) for enc, p in zip(self.atac_chrom_encoders, parts)], dim=1))

    def decode_atac(self, z):                    # -> logits (B, n_cres)
        """Open logits (B, CREs), chromosome order, of latents ``z`` (B, latent)."""
        h = torch.split(self.atac_decoder(z), self.per_chrom, dim=1)
        return torch.cat([dec(p) for dec, p in zip(self.atac_chrom_decoders, h)], dim=1)

    def decode_rna(self, z, library):            # -> NB mean (B, n_genes), theta (B, n_genes)
        """Negative-binomial mean and inverse dispersion (each (B, genes)) of latents ``z`` (B, latent), the mean
        scaled to each cell's total count ``library`` (B, 1)."""
        h = self.rna_decoder(z)
        # clamp before exp: exp overflowing to inf, then clamped, gives 0 * inf = NaN gradients
        log_theta = self.rna_log_theta(h).clamp(np.log(1e-4), np.log(1e4))
        return torch.softmax(self.rna_mean(h), dim=1) * library, torch.exp(log_theta)


def _nb_nll(counts, mean, theta):
    """Negative-binomial negative log-likelihood (mean / inverse-dispersion parameterisation), per element mean."""
    eps = 1e-8
    log_theta_mu = torch.log(theta + mean + eps)
    ll = (theta * (torch.log(theta + eps) - log_theta_mu) + counts * (torch.log(mean + eps) - log_theta_mu)
          + torch.lgamma(counts + theta) - torch.lgamma(theta) - torch.lgamma(counts + 1))
    return -ll.mean()


class BabelStyle:
    """BABEL-style translator (see :mod:`cisformer.peers.baselines`); trained on all four paths, predicts RNA -> ATAC.

    Starts from the base rates of the training cells, like Cisformer: the ATAC decoder's output biases are
    :func:`cre_base_rate_logits` and the RNA decoder's mean-layer biases are the log of each gene's share of all
    training counts (one pseudocount per gene) - the intercept-only Poisson fit of the softmax-times-library mean,
    the RNA equivalent of the CRE base rate. Their weights start at zero, so with ``epochs=0`` every cell gets
    the floor's probabilities (the floor's ranking of CREs, smoothed by one pseudocount per outcome).
    An epoch shows at least ``min_epoch_samples`` cells (:func:`epoch_repeats`, the rule Cisformer trains by).

    Given validation cells (``fit(..., validation=(rna_val, atac_val))``) it selects its epoch as Cisformer does
    (:func:`cisformer.train.fit`): after each epoch the RNA -> ATAC path is scored on ``scored_val_cells`` of them
    (:func:`scored_validation_cells`, the same draw) by the AUROC gain over the base rate
    (:func:`cisformer.metrics.auroc_gain`), training stops after ``patience`` epochs without improvement and the
    best epoch's weights are kept. Without validation cells it trains ``epochs`` epochs.

    Parameters
    ----------
    epochs
        Maximum epochs.
    batch_size
        Cells per Adam step.
    lr
        Adam's learning rate.
    hidden, latent
        Width of the hidden layers and of the shared latent (each chromosome's ATAC layer is 16 wide).
    n_top_genes
        RNA input and output: the genes with the highest variance of log-normalised expression in training.
    min_epoch_samples
        Least number of cells an epoch shows.
    patience
        Epochs without a better validation score before training stops (with validation cells only).
    scored_val_cells
        Validation cells scored after each epoch (all when fewer).
    """

    name = "BABEL-style"

    def __init__(self, epochs: int = 20, batch_size: int = 128, lr: float = 1e-3, hidden: int = 64,
                 latent: int = 16, n_top_genes: int = 2000, min_epoch_samples: int = 6400, patience: int = 3,
                 scored_val_cells: int = 256):
        self.epochs, self.batch_size, self.lr, self.min_epoch_samples = epochs, batch_size, lr, min_epoch_samples
        self.hidden, self.latent, self.n_top_genes = hidden, latent, n_top_genes
        self.patience, self.scored_val_cells = patience, scored_val_cells

    def _rna_input(self, rna: AnnData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        counts = dense(rna[:, self.genes].X)
        library = counts.sum(axis=1, keepdims=True)
        log_norm = np.log1p(counts / np.maximum(library, 1.0) * 1e4)
        return torch.from_numpy(log_norm), torch.from_numpy(counts), torch.from_numpy(np.maximum(library, 1.0))

    @torch.no_grad()
    def _atac_logits(self, rna_in: torch.Tensor) -> np.ndarray:
        """RNA -> ATAC logits in the training CRE order (self.order)."""
        self.net.eval()
        return self.net.decode_atac(self.net.rna_encoder(rna_in)).numpy()

    def fit(self, rna_train: AnnData, atac_train: AnnData, seed: int = 0,
            validation: tuple[AnnData, AnnData] | None = None) -> "BabelStyle":
        """Train on all four paths, selecting the epoch on ``validation`` when given.

        The interface of :mod:`cisformer.peers.baselines`.

        Parameters
        ----------
        rna_train, atac_train
            Paired training cells (raw counts, identical ``obs_names``); ``atac_train.var`` with ``chrom``/``start``.
        seed
            Seeds the weights (torch), the batch order and the draw of scored validation cells.
        validation
            ``(rna_val, atac_val)``: paired validation cells holding the training genes and CREs; ``None`` trains
            ``epochs`` epochs.

        Returns
        -------
        The fitted object itself; ``history`` holds one dict per epoch (``epoch``, ``loss``, ``samples`` and,
        with validation cells, ``val_score``).
        """
        check_paired(rna_train, atac_train)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        log_all = true_expression(rna_train)
        self.genes = rna_train.var_names[np.sort(np.argsort(-log_all.var(axis=0))[: min(self.n_top_genes,
                                                                                         rna_train.n_vars)])]
        chrom = atac_train.var["chrom"].astype(str).to_numpy()
        self.order = np.lexsort((atac_train.var["start"].to_numpy(), chrom))
        _, sizes = np.unique(chrom[self.order], return_counts=True)
        self.var = atac_train.var.copy()
        rna_in, rna_counts, library = self._rna_input(rna_train)
        binary = binary_csr(atac_train)[:, self.order]
        atac = torch.from_numpy(dense(binary))
        self.net = _BabelNet(len(self.genes), sizes.tolist(), self.hidden, latent=self.latent)
        gene_totals = rna_counts.sum(dim=0).double().numpy()
        prior = cre_base_rate_logits(binary)
        self.net.start_from_base_rates(prior, np.log((gene_totals + 1.0) / (gene_totals.sum() + len(gene_totals))))
        if validation is not None:
            rna_val, atac_val = validation
            check_paired(rna_val, atac_val)
            scored = scored_validation_cells(np.arange(rna_val.n_obs), self.scored_val_cells, seed)
            val_in = self._rna_input(rna_val[scored])[0]
            val_truth = dense(binary_csr(atac_val[scored][:, atac_train.var_names])[:, self.order]) > 0
        optim = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        bce = nn.BCEWithLogitsLoss()
        self.history = []
        best_score, bad_epochs, best_state = -np.inf, 0, None
        for epoch in range(self.epochs):
            if bad_epochs >= self.patience:
                break
            self.net.train()
            total, n_seen = 0.0, 0
            for batch in epoch_batches(rng, rna_train.n_obs, self.batch_size, self.min_epoch_samples):
                b = torch.from_numpy(batch)
                z_rna, z_atac = self.net.rna_encoder(rna_in[b]), self.net.encode_atac(atac[b])
                loss = 0.0
                for z in (z_rna, z_atac):      # RNA->RNA, ATAC->RNA, RNA->ATAC, ATAC->ATAC
                    mean, theta = self.net.decode_rna(z, library[b])
                    loss = loss + _nb_nll(rna_counts[b], mean, theta) + bce(self.net.decode_atac(z), atac[b])
                optim.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                optim.step()
                total, n_seen = total + float(loss.detach()) * len(batch), n_seen + len(batch)
            row = {"epoch": epoch + 1, "loss": total / n_seen, "samples": n_seen}
            if validation is not None:
                row["val_score"] = auroc_gain(self._atac_logits(val_in), val_truth, prior)
                if row["val_score"] > best_score:
                    best_score, bad_epochs = row["val_score"], 0
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
                else:
                    bad_epochs += 1
            self.history.append(row)
        if best_state is not None:
            self.net.load_state_dict(best_state)
        return self

    def predict_atac(self, rna: AnnData) -> AnnData:
        """Open probabilities through the RNA -> ATAC path.

        Parameters
        ----------
        rna
            Cells to predict (raw counts), holding the training's selected genes.

        Returns
        -------
        AnnData cells x training CREs (:func:`atac_prediction`: ``X`` probabilities, ``layers["binary"]``).
        """
        probs_sorted = torch.sigmoid(torch.from_numpy(self._atac_logits(self._rna_input(rna)[0]))).numpy()
        probs = np.empty_like(probs_sorted)
        probs[:, self.order] = probs_sorted
        return atac_prediction(probs, rna.obs, self.var, self.name)
