"""Integration metrics (FOSCTTM, MAP, silhouettes, alignment, connectivity, conservation) on constructed embeddings
with known answers, Attune's overall score, and the PCA-CCA baseline on simulated data."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cisformer import data, metrics, pl
from cisformer.data import simulate
from cisformer.peers import baselines


def _clusters(n_per_type=50, n_types=3, dim=5, spread=0.01, seed=0):
    """Tight, far-apart cell-type clusters: [n, dim] points and their labels."""
    rng = np.random.default_rng(seed)
    centers = 10.0 * np.eye(n_types, dim)
    labels = np.repeat([f"type{t}" for t in range(n_types)], n_per_type)
    points = centers[np.repeat(np.arange(n_types), n_per_type)] + spread * rng.normal(size=(len(labels), dim))
    return points, labels


# ----------------------------------------------------------------------------------------------- FOSCTTM
def test_foscttm_identical_embeddings_is_zero():
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert metrics.foscttm(x, x) == 0.0


def test_foscttm_independent_embeddings_is_one_half():
    rng = np.random.default_rng(1)
    value = metrics.foscttm(rng.normal(size=(600, 10)), rng.normal(size=(600, 10)))
    assert abs(value - 0.5) < 0.03


def test_foscttm_hand_computed_case():
    # RNA at 0, 1, 3 and ATAC at 1, 0, 3: cells 0 and 1 each have one cell of the other modality closer than their
    # partner (in both directions), cell 2 none -> (1/3 + 1/3 + 0 + 1/3 + 1/3 + 0) / 6 = 2/9
    x_rna, x_atac = np.array([[0.0], [1.0], [3.0]]), np.array([[1.0], [0.0], [3.0]])
    assert metrics.foscttm(x_rna, x_atac) == pytest.approx(2 / 9)


def test_foscttm_does_not_depend_on_the_chunk_size():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(97, 4)), rng.normal(size=(97, 4))
    assert metrics.foscttm(x, y, chunk_size=7) == metrics.foscttm(x, y)


# ----------------------------------------------------------------------------------------------- single metrics
def test_mean_average_precision_hand_computed_case():
    labels = np.array(["a", "a", "b"])
    neighbors = np.array([[2, 1], [0, 2], [0, 1]])          # APs 1/2, 1, 0 (no neighbour of type b)
    assert metrics.mean_average_precision(neighbors, labels) == pytest.approx(0.5)


def test_seurat_alignment_score_extremes():
    batch = np.array(["rna", "rna", "atac", "atac"])
    assert metrics.seurat_alignment_score(np.array([[1], [0], [3], [2]]), batch) == 0.0   # own batch only
    assert metrics.seurat_alignment_score(np.array([[2], [3], [0], [1]]), batch) == 1.0   # capped at 1
    with pytest.raises(ValueError, match="equal size"):
        metrics.seurat_alignment_score(np.array([[1], [0], [1]]), np.array(["rna", "rna", "atac"]))


def test_neighbor_conservation_is_one_for_the_same_space_and_low_for_a_random_one():
    x, _ = _clusters(spread=1.0)
    assert metrics.neighbor_conservation(x, x, k=5) == 1.0
    other = np.random.default_rng(3).normal(size=x.shape)
    assert metrics.neighbor_conservation(x, other, k=5) < 0.1


# ----------------------------------------------------------------------------------------------- joint scores
def test_separated_types_and_perfectly_mixed_modalities():
    x, labels = _clusters()
    scores = metrics.integration_scores(x, x.copy(), labels, x_rna_own=x, x_atac_own=x)
    assert scores["foscttm"] == 0.0
    assert scores["map"] == 1.0
    assert scores["celltype_silhouette"] > 0.99
    assert scores["neighbor_conservation"] == 1.0
    assert scores["seurat_alignment_score"] == 1.0
    # identical modalities: within a type the other modality holds the cell's twin at distance 0 and the same
    # others, so the silhouette is exactly -1/(cells of the type) and the score 1 - 1/50
    assert scores["omics_silhouette"] == pytest.approx(1 - 1 / 50)
    assert scores["graph_connectivity"] == 1.0
    assert scores["n_cells"] == 150 and scores["k"] == 3


def test_separated_modalities_score_no_mixing():
    x, labels = _clusters()
    shifted = x + np.r_[np.zeros(4), 1000.0]               # ATAC far away from RNA along one axis
    scores = metrics.integration_scores(x, shifted, labels)
    assert scores["map"] == 1.0                            # types still separated within each modality
    assert scores["seurat_alignment_score"] == 0.0
    assert scores["omics_silhouette"] < 0.01
    assert scores["graph_connectivity"] == 0.5             # every type splits into its two modalities
    assert np.isnan(scores["neighbor_conservation"])       # no own spaces given


def test_labels_unrelated_to_the_embedding_score_no_bio_conservation():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 5))
    labels = rng.choice(["a", "b", "c"], size=300)
    scores = metrics.integration_scores(x, rng.normal(size=x.shape), labels)
    assert abs(scores["celltype_silhouette"] - 0.5) < 0.03
    assert scores["map"] < 0.5                             # chance: about a third of the neighbours match


# ----------------------------------------------------------------------------------------------- overall
def test_integration_overall_scales_per_dataset():
    table = pd.DataFrame({
        "dataset": ["d1"] * 3 + ["d2"] * 2,
        "method": ["best", "mid", "worst", "best", "worst"],
        "map": [0.9, 0.5, 0.1, 0.8, 0.7],
        "celltype_silhouette": [0.7, 0.6, 0.5, 0.6, 0.6],     # constant in d2: left out there
        "neighbor_conservation": [np.nan] * 5,               # not measured: left out
        "seurat_alignment_score": [1.0, 0.75, 0.5, 0.9, 0.1],
        "omics_silhouette": [0.9, 0.8, 0.7, 0.9, 0.8],
        "graph_connectivity": [1.0, 0.9, 0.8, 1.0, 0.9],
    })
    out = metrics.integration_overall(table)
    np.testing.assert_allclose(out["bio_conservation"], [1.0, 0.5, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(out["omics_mixing"], [1.0, 0.5, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(out["overall"], [1.0, 0.5, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(out["bio_conservation_raw"], [0.8, 0.55, 0.3, 0.7, 0.65])
    np.testing.assert_allclose(out["overall_raw"], 0.6 * out["bio_conservation_raw"] + 0.4 * out["omics_mixing_raw"])
    assert "overall" not in table.columns                  # a copy
    without = metrics.integration_overall(table.drop(columns="neighbor_conservation"))
    np.testing.assert_allclose(without["overall"], out["overall"])   # a metric not measured is left out


def test_integration_metrics_figure():
    table = pd.DataFrame({"dataset": ["d1", "d1", "d1"], "method": ["Attune", "Attune", "PCA-CCA"],
                          "foscttm": [0.1, 0.12, 0.3], "map": [0.8, 0.7, 0.4]})
    fig = pl.integration_metrics(table)
    assert len(fig.axes) == 1
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- PCA-CCA
def test_pca_cca_aligns_held_out_simulated_cells():
    rna, atac, _ = simulate.paired(n_cells=300, n_genes=60, n_cres=300, seed=0)
    train, val, test = data.split_cells(rna.obs, by="random", test_fraction=0.2, seed=0)
    fit_cells = np.concatenate([train, val])
    model = baselines.PcaCca(n_components=10).fit(rna[fit_cells], atac[fit_cells], seed=0)
    out = model.embed(rna, atac, test)
    assert out["rna"].shape == out["atac"].shape == (len(test), 10)
    assert out["seconds"] > 0
    assert np.all(np.diff(model.canonical_correlations) <= 1e-12) and model.canonical_correlations[0] <= 1 + 1e-9
    value = metrics.foscttm(out["rna"], out["atac"])
    assert value < 0.5
    again = baselines.PcaCca(n_components=10).fit(rna[fit_cells], atac[fit_cells], seed=0).embed(rna, atac, test)
    np.testing.assert_array_equal(again["rna"], out["rna"])
