"""Chromatin potential: gene-level residual, pseudotime and loess curves, cell-level arrows, transmitted states, on
constructed inputs with known answers."""
import matplotlib.pyplot as plt
import matplotlib.quiver
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import stats

from cisformer import pl
from cisformer.attune import potential


def _expression(x, genes=None):
    x = np.asarray(x, dtype=np.float32)
    genes = genes if genes is not None else [f"g{j}" for j in range(x.shape[1])]
    return AnnData(x, obs=pd.DataFrame(index=[f"c{i}" for i in range(x.shape[0])]), var=pd.DataFrame(index=genes))


# ----------------------------------------------------------------------------------------------- gene level
def test_gene_potential_range_and_sign():
    t = np.linspace(0, 1, 21)
    measured = np.stack([t, t, t, np.full_like(t, 2.0)], axis=1)
    pred = np.stack([t, t ** 2, 3 - t, t], axis=1)           # same, lagging (convex), reversed, vs a constant
    out = potential.gene_potential(_expression(pred), _expression(measured))
    r = out.X
    assert out.shape == (21, 4) and r.dtype == np.float32
    assert np.all(r >= -1) and np.all(r <= 1)
    np.testing.assert_allclose(r[:, 0], 0.0, atol=1e-6)              # prediction = measurement
    assert np.all(r[:, 1] <= 1e-6) and r[10, 1] < -0.2               # predicted below measured mid-way
    np.testing.assert_allclose(r[:, 2], 1 - 2 * t, atol=1e-6)        # full range, from +1 to -1
    np.testing.assert_allclose(r[:, 3], t, atol=1e-6)                # constant measured gene scales to 0
    np.testing.assert_allclose(out.layers["predicted_scaled"][:, 2], 1 - t, atol=1e-6)


def test_gene_potential_scales_over_the_given_cells_and_rejects_counts():
    t = np.linspace(0, 1, 10)
    measured, pred = _expression(np.c_[t, t]), _expression(np.c_[t, 1 - t])
    out = potential.gene_potential(pred, measured, cells=measured.obs_names[:5])
    assert out.n_obs == 5
    np.testing.assert_allclose(out.layers["measured_scaled"][:, 0], np.linspace(0, 1, 5), atol=1e-6)
    with pytest.raises(ValueError, match="raw counts"):
        potential.gene_potential(pred, _expression(np.c_[np.arange(10) * 10, np.arange(10)]))


def test_pseudotime_follows_a_line_from_the_root():
    rng = np.random.default_rng(0)
    s = np.sort(rng.random(200))
    points = np.c_[s, 0.3 * s ** 2] + 0.005 * rng.normal(size=(200, 2))
    time = potential.pseudotime(points, root=0, n_neighbors=10)
    assert time[0] == 0 and np.nanmax(time) == pytest.approx(1.0)
    assert stats.spearmanr(time, s)[0] > 0.95
    # a mask of candidate roots picks the extreme one: the same ordering
    by_mask = potential.pseudotime(points, root=s < 0.1, n_neighbors=10)
    assert stats.spearmanr(by_mask, s)[0] > 0.95


def test_smooth_along_recovers_a_quadratic_exactly_and_ranks_by_variability():
    rng = np.random.default_rng(1)
    t = rng.random(300)
    values = pd.DataFrame({"flat": np.full(300, 0.2), "quadratic": 1 + 2 * t - 3 * t ** 2,
                           "noisy": np.sin(6 * t) + 0.1 * rng.normal(size=300)})
    curves = potential.smooth_along(np.r_[t[:-1], np.nan], values, frac=0.3, n_points=40)
    assert curves.shape == (40, 3) and curves.index.name == "pseudotime"
    grid = curves.index.to_numpy()
    np.testing.assert_allclose(curves["quadratic"], 1 + 2 * grid - 3 * grid ** 2, atol=1e-8)  # local quadratic fit
    np.testing.assert_allclose(curves["flat"], 0.2, atol=1e-10)
    assert np.max(np.abs(curves["noisy"] - np.sin(6 * grid))) < 0.15
    ranking = potential.rank_by_variability(curves)
    assert list(ranking.index) == ["noisy", "quadratic", "flat"] and ranking.name == "curve_sd"


def test_residual_heatmap_figure():
    grid = np.linspace(0, 1, 20)
    curves = pd.DataFrame({"late": grid, "early": 1 - grid}, index=pd.Index(grid, name="pseudotime"))
    fig = pl.residual_heatmap(curves, top=2)
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert labels == ["early", "late"]                      # ordered by where the curve peaks
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- cell level
def test_cell_potential_points_along_the_trajectory():
    t = np.linspace(0, 1, 101)
    slopes = np.random.default_rng(2).uniform(0.5, 2.0, size=20)
    measured = _expression(1 + np.outer(t, slopes))
    pred = _expression(1 + np.outer(t + 0.1, slopes))        # chromatin 0.1 ahead along the line
    embedding = np.c_[t, np.zeros_like(t)]
    arrows = potential.cell_potential(pred, measured, embedding, n_neighbors=5)
    assert list(arrows.columns) == ["x", "y", "dx", "dy", "length"]
    assert list(arrows.index) == list(measured.obs_names)
    inner = t <= 0.85
    np.testing.assert_allclose(arrows["dx"][inner], 0.1, atol=1e-6)
    np.testing.assert_allclose(arrows["dy"], 0.0)
    assert np.all(arrows["dx"][t < 0.95] > 0)              # the last cells have no cells further on
    still = potential.cell_potential(measured, measured, embedding, n_neighbors=5)
    np.testing.assert_allclose(still["dx"][(t > 0.05) & (t < 0.95)], 0.0, atol=1e-6)   # no lag, no arrow
    shrunk = _expression(1 + np.outer(0.5 + 0.3 * (t - 0.5), slopes))  # a regression's shrinkage towards the mean
    np.testing.assert_allclose(potential.cell_potential(shrunk, measured, embedding, n_neighbors=5)["dx"][
        (t > 0.05) & (t < 0.95)], 0.0, atol=1e-6)                       # is not read as movement to the centre
    arrows.loc[arrows.index[0], ["dx", "dy"]] = [3.0, 0.0]  # one cell pointing far beyond the plot
    fig = pl.potential_arrows(arrows, labels=np.where(t < 0.5, "early", "late"), grid_size=5)
    quiver = next(c for c in fig.axes[0].collections if isinstance(c, matplotlib.quiver.Quiver))
    lengths = np.hypot(quiver.U, quiver.V)
    side = (t.max() - t.min()) / 5
    assert np.isclose(np.median(lengths), 0.8 * side) and np.isclose(lengths.max(), 1.5 * side)  # the far one cut
    assert np.all(quiver.U > 0) and np.allclose(quiver.V, 0)  # directions kept
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- transmitted states
def test_transmitted_states_and_similarity_matrix():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4))
    np.testing.assert_allclose(potential.transmitted_states(x, 2 * x), 1.0)
    np.testing.assert_allclose(potential.transmitted_states(x, -x), 0.0, atol=1e-12)
    np.testing.assert_allclose(potential.transmitted_states(np.eye(2), np.eye(2)[::-1]), 0.5)
    y = rng.normal(size=(6, 4))
    order = np.array([5, 3, 1, 0, 2, 4])
    matrix = potential.similarity_matrix(y, x, order)
    assert matrix.shape == (6, 6)
    np.testing.assert_allclose(np.diag(matrix), potential.transmitted_states(x, y)[order])
    np.testing.assert_allclose(potential.similarity_matrix(y, x)[order][:, order], matrix)
