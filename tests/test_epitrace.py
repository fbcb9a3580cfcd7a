"""EpiTrace age (cisformer.tl.epitrace) on simulated cells with a planted age signal at clock loci."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats
from sklearn.metrics import roc_auc_score

from cisformer.tl import epitrace
from cisformer.data import InputError, downsample_atac, load_clock_loci


@pytest.fixture(scope="module")
def aged():
    atac, loci = epitrace.simulate_aged_cells(seed=0)
    epitrace.age(atac, loci)
    return atac, loci


def spearman(a, b):
    return stats.spearmanr(a, b)[0]


def test_age_recovers_planted_age(aged):
    atac, _ = aged
    est = atac.obs["epitrace_age"]
    assert est.notna().all() and est.min() == 0 and est.max() == 1
    rho = spearman(est, atac.obs["age"])
    assert rho > 0.8                                 # the bar; positive = older cells get higher ages
    # the diffusion does the work: far better than the raw accessible-locus count
    assert rho > spearman(atac.obs["epitrace_age_accessible_loci"], atac.obs["age"]) + 0.2
    assert atac.uns["epitrace_age"]["n_clock_peaks"] == int(atac.var["clock"].sum())


@pytest.mark.parametrize("seed", [1, 2])
def test_age_other_seeds_and_normalizations(seed):
    atac, loci = epitrace.simulate_aged_cells(n_cells=400, seed=seed)
    for method in epitrace.NORMALIZATIONS:
        age = epitrace.age(atac, loci, normalization=method, inplace=False)
        assert spearman(age, atac.obs["age"]) > 0.8, method


def test_orientation_falling_clock_and_orient_with():
    atac, loci = epitrace.simulate_aged_cells(n_cells=400, rising_fraction=0.2, seed=3)
    raw = epitrace.age(atac, loci, inplace=False)
    assert spearman(raw, atac.obs["age"]) < -0.8     # no hidden flip: more open clock loci -> higher
    epitrace.age(atac, loci, orient_with="age")
    assert atac.uns["epitrace_age"]["reversed"]
    assert spearman(atac.obs["epitrace_age"], atac.obs["age"]) > 0.8


def test_age_invariant_to_cell_order(aged):
    atac, loci = aged
    perm = np.random.default_rng(1).permutation(atac.n_obs)
    shuffled = epitrace.age(atac[perm].copy(), loci, inplace=False)
    diff = np.abs(shuffled.loc[atac.obs_names].to_numpy() - atac.obs["epitrace_age"].to_numpy())
    assert diff.max() <= 2.0 / (atac.n_obs - 1)      # at most a swap of near-tied ranks


def test_chunked_and_seeded():
    atac, loci = epitrace.simulate_aged_cells(n_cells=800, seed=4)
    a = epitrace.age(atac, loci, chunk_size=400, seed=0, inplace=False)
    b = epitrace.age(atac, loci, chunk_size=400, seed=0, inplace=False)
    assert np.array_equal(a.to_numpy(), b.to_numpy())
    assert spearman(a, atac.obs["age"]) > 0.8


def test_convergence_loop_adds_unlisted_age_peaks():
    atac, loci = epitrace.simulate_aged_cells(n_cells=400, n_other_peaks=1500, unlisted_age_peaks=60, seed=5)
    epitrace.age(atac, loci, iterations=4, z_cutoff=1.5)
    info = atac.uns["epitrace_age"]
    assert info["iterations"] > 1 and info["peaks_per_iteration"][-1] > info["peaks_per_iteration"][0]
    added = atac.var["epitrace_age_peak"] & ~atac.var["clock"]
    assert added.sum() >= 20 and (atac.var.loc[added, "age_sign"] != 0).mean() > 0.8
    assert spearman(atac.obs["epitrace_age"], atac.obs["age"]) > 0.8


def test_clock_matrix_and_wrong_build_error(aged):
    atac, loci = aged
    sub = epitrace.clock_matrix(atac, loci)
    assert sub.n_vars == int(atac.var["clock"].sum()) and sub.var["clock"].all()
    bare = loci.assign(chrom=loci["chrom"].str.replace("chr", "", regex=False))   # Ensembl names still match
    assert epitrace.clock_matrix(atac, bare).n_vars == sub.n_vars
    moved = loci.assign(chrom="chr19")                                            # another build / species
    with pytest.raises(InputError, match="none of the .* peaks overlaps any of the .* clock loci"):
        epitrace.clock_matrix(atac, moved)
    with pytest.raises(InputError):
        epitrace.age(atac, moved)


def test_real_mm10_clock_loci():
    clock = load_clock_loci("lifted")
    atac, _ = epitrace.simulate_aged_cells(n_cells=300, n_clock_peaks=300, n_other_peaks=300, clock_loci=clock, seed=6)
    assert atac.var_names.is_unique and atac.var["planned_clock"].sum() == 300
    epitrace.age(atac, clock)
    assert spearman(atac.obs["epitrace_age"], atac.obs["age"]) > 0.8


def test_normalize_properties():
    X = sp.csr_matrix(np.array([[0, 2, 1, 0], [0, 2, 0, 0], [0, 0, 3, 0], [0, 2, 1, 0]], dtype=np.float32))
    dense = X.toarray().astype(float)
    blank = epitrace.normalize(X, "blank")
    assert np.allclose(blank, np.log2(dense + 1))
    rnd = epitrace.normalize(X, "randomized")
    # peak 1: 3 cells, 6 counts -> factor 1/2; peak 2: 3 cells, 5 counts -> 3/5; all-zero peaks stay 0
    assert np.allclose(rnd[:, 1], np.log2(dense[:, 1] * 0.5 + 1)) and np.allclose(rnd[:, 2], np.log2(dense[:, 2] * 0.6 + 1))
    assert np.all(rnd[:, [0, 3]] == 0)
    census = epitrace.normalize(dense, "census")
    assert np.allclose(census[0], np.log2(dense[0] * 2 / 3 + 1))                  # cell 0: 2 peaks, 3 counts
    for out in (blank, rnd, census):                                             # zeros stay zeros, order kept
        assert out.shape == dense.shape and np.array_equal(out > 0, dense > 0)
    assert np.allclose(epitrace.normalize(np.ones((3, 2)), "randomized"), 1.0)   # binary data: log2(2)
    with pytest.raises(ValueError):
        epitrace.normalize(X, "tfidf")


def test_transition_matrix_and_diffusion():
    rng = np.random.default_rng(0)
    Xn = np.log2(rng.poisson(0.5, size=(50, 80)) + 1.0)
    W, usable = epitrace.transition_matrix(Xn, n_dispersed=40)
    assert usable.all() and np.all(np.diag(W) == 0) and np.all(W >= 0)
    rows = W.sum(axis=1)
    assert np.allclose(rows[rows > 0], 1)
    v0 = rng.uniform(size=50)
    v, steps = epitrace.diffuse(W, v0, restart=0.01, tol=1e-12)
    assert np.allclose(v, 0.99 * W @ v + 0.01 * v0, atol=1e-9) and steps < 50_000


def test_age_associated_cres_recover_planted_peaks(aged):
    atac, _ = aged
    res = epitrace.age_associated_cres(atac, "epitrace_age")
    assert list(res.columns) == ["correlation", "z", "p", "q", "direction"] and res["p"].is_monotonic_increasing
    truth = (atac.var["age_sign"] != 0).reindex(res.index)
    assert roc_auc_score(truth, res["correlation"].abs()) > 0.95                 # chance 0.5
    top = res.index[: int(truth.sum())]
    assert truth[top].mean() > 0.85                                             # chance 0.2
    sig = res[res["q"] < 0.05]
    planted = atac.var.loc[sig.index, "age_sign"]
    agree = (np.sign(sig["correlation"]) == planted)[planted != 0]
    assert agree.mean() > 0.95
    pearson = epitrace.age_associated_cres(atac, "age", method="pearson")        # on the known age too
    assert roc_auc_score((atac.var["age_sign"] != 0).reindex(pearson.index), pearson["correlation"].abs()) > 0.95


def test_trajectory_clusters_separate_rising_and_falling(aged):
    atac, _ = aged
    linked = atac.var_names[atac.var["age_sign"] != 0]
    tc = epitrace.trajectory_clusters(atac, linked, "epitrace_age", n_bins=10, k=2, seed=0)
    assert list(tc.columns[:10]) == [f"bin_{b}" for b in range(10)] and tc.index.equals(linked)
    rising = atac.var.loc[tc.index, "age_sign"].to_numpy() > 0
    assert (tc["cluster"].to_numpy() == rising).mean() > 0.95                   # 0 falls, 1 rises
    again = epitrace.trajectory_clusters(atac, linked, "epitrace_age", k=2, seed=0)
    assert again.equals(tc)
    k4 = epitrace.trajectory_clusters(atac, pd.DataFrame(index=linked), k=4)
    assert sorted(k4["cluster"].unique()) == [0, 1, 2, 3]
    with pytest.raises(KeyError):
        epitrace.trajectory_clusters(atac, ["chrZ:1-2"], k=1)


def test_generated_age_calls_topk_and_recovers_age(aged):
    atac, loci = aged
    rng = np.random.default_rng(7)
    probs = atac.X.toarray() / atac.X.max() * 0.9 + rng.uniform(0, 0.05, size=atac.shape)   # all above zero
    pred = atac.copy()
    pred.X = probs.astype(np.float32)
    open_fraction = float((atac.X > 0).mean())
    out = epitrace.generated_age(pred, loci, open_fraction)
    k = int(round(open_fraction * atac.n_vars))
    assert np.all(np.asarray(out.X.sum(axis=1)).ravel() == k) and out.obs_names.equals(atac.obs_names)
    assert spearman(out.obs["epitrace_age"], atac.obs["age"]) > 0.8
    # each open call is one read: the 10-read filter counts the clock CREs called open
    assert np.array_equal(out.obs["epitrace_age_clock_reads"], out.obs["epitrace_age_accessible_loci"])
    assert out.obs["epitrace_age_aged"].equals(out.obs["epitrace_age_clock_reads"] >= 10)
    flat = pred.copy()
    flat.X = np.tile(probs.mean(axis=0), (atac.n_obs, 1)).astype(np.float32)           # the floor: one row for all
    assert epitrace.generated_age(flat, loci, open_fraction).obs["epitrace_age"].nunique() == 1


def test_parse_ages_and_age_groups():
    parsed = epitrace.parse_ages(["3m", "18m", " 24 months", 5, 1.5e-3, "old", None])
    assert np.allclose(parsed[:5], [3, 18, 24, 5, 1.5e-3]) and np.isnan(parsed[5:]).all()
    few = epitrace.age_groups([30, 3, 3, 24, np.nan])
    assert list(few.cat.categories) == [3, 24, 30] and few.cat.ordered and few.isna().sum() == 1
    many = epitrace.age_groups(np.linspace(0, 1, 100), max_groups=5)
    assert many.nunique() == 5 and many.value_counts().min() == 20 and many.cat.ordered
    assert list(many.cat.categories) == ["0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1"]


def test_age_agreement_and_compare_ages():
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=200)
    groups = np.repeat(["a", "b", "c", "d"], 50)
    table = epitrace.age_agreement(truth ** 3, truth, groups=groups, min_cells=10)      # monotone: rho = 1
    assert list(table["group"]) == ["all", "a", "b", "c", "d"] and np.allclose(table["spearman"], 1)
    assert table["n_cells"].tolist() == [200, 50, 50, 50, 50]
    few = epitrace.age_agreement(truth, -truth, groups=groups, min_cells=60)
    assert few.loc[0, "spearman"] == pytest.approx(-1) and few["spearman"].iloc[1:].isna().all()
    with_nan = np.where(np.arange(200) < 20, np.nan, truth)
    assert epitrace.age_agreement(with_nan, truth).loc[0, "n_cells"] == 180
    offset = np.array([0.0, 0.3, 0.6, 0.9])[np.repeat(np.arange(4), 50)]              # group means follow truth's
    ages = pd.DataFrame({"measured": truth + offset, "same": truth + offset, "shuffled": rng.permutation(truth),
                         "constant": np.zeros(200), "group_only": offset})
    res = epitrace.compare_ages(ages, "measured", groups).set_index("method")
    assert list(res.index) == ["same", "shuffled", "constant", "group_only"]
    assert res.loc["same", "spearman_cells"] == pytest.approx(1) and res.loc["same", "n_groups"] == 4
    assert abs(res.loc["shuffled", "spearman_cells"]) < 0.2
    assert res.loc["constant", "n_distinct"] == 1 and np.isnan(res.loc["constant", "spearman_cells"])
    assert res.loc["group_only", "spearman_group_means"] == pytest.approx(1)


def test_cre_list_overlap():
    names = [f"chr1:{i * 1000}-{i * 1000 + 500}" for i in range(100)]

    def table(order, direction="up", untested=()):
        p = np.empty(100)
        p[order] = np.linspace(1e-6, 0.9, 100)
        p[list(untested)] = np.nan
        return pd.DataFrame({"p": p, "q": p * 2, "direction": direction}, index=names)

    order = np.arange(100)
    tables = {"measured": table(order), "same": table(order), "reversed": table(order[::-1]),
              "flipped": table(order, direction="down"), "partly_untested": table(order, untested=range(5))}
    res = epitrace.cre_list_overlap(tables, "measured", n_top=10).set_index("method")
    assert res.loc["same", "jaccard"] == 1 and res.loc["same", "same_direction"] == 1
    assert res.loc["same", "jaccard_random"] == pytest.approx(0.1 / 1.9) and res.loc["same", "p_overlap"] < 1e-10
    assert res.loc["reversed", "n_shared"] == 0 and res.loc["reversed", "p_overlap"] == 1
    assert res.loc["flipped", "same_direction"] == 0
    assert res.loc["partly_untested", ["n_tested", "n_common", "n_listed", "n_listed_reference", "n_shared"]].tolist() == \
        [95, 95, 10, 5, 5]
    assert res.loc["same", "n_significant"] == int((tables["same"]["q"] < 0.05).sum())


def test_age_cre_list():
    table = pd.DataFrame({"p": [0.5, np.nan, 0.01, 0.2]}, index=list("abcd"))
    assert list(epitrace.age_cre_list(table, 2)) == ["c", "d"]
    assert list(epitrace.age_cre_list(table, None)) == ["c", "d", "a"]


def test_age_by_depth_and_accessible_clock_loci(aged):
    atac, loci = aged
    per_cell = epitrace.accessible_clock_loci(atac, loci)
    assert np.array_equal(per_cell, atac.obs["epitrace_age_accessible_loci"].to_numpy())
    table = epitrace.age_by_depth(atac, loci, [1.0, 0.3, 0.005], seed=0)
    assert list(table["keep"]) == [1.0, 0.3, 0.005] and table["accessible_clock_loci"].is_monotonic_decreasing
    assert table.loc[0, "spearman"] > 0.8 and table.loc[0, "accessible_clock_loci"] == pytest.approx(per_cell.mean())
    assert table.loc[1, "spearman"] < table.loc[0, "spearman"]                   # shallower -> worse
    assert table.loc[2, "n_cells"] == 0 and np.isnan(table.loc[2, "spearman"])
    assert "min_clock_reads" in table.loc[2, "note"]                             # too few cells with 10 clock reads


def test_min_clock_reads_drops_exactly_the_shallow_cells():
    atac, loci = epitrace.simulate_aged_cells(n_cells=400, n_clock_peaks=100, depth_sd=0.6, seed=8)
    reads = np.asarray(atac.X[:, np.flatnonzero(atac.var["clock"])].sum(axis=1)).ravel()
    assert np.array_equal(epitrace.clock_reads(atac, loci), reads)
    shallow = reads < 10
    assert 50 < shallow.sum() < 350                                              # the filter has work to do
    epitrace.age(atac, loci)
    obs, info = atac.obs, atac.uns["epitrace_age"]
    assert np.array_equal(obs["epitrace_age_aged"].to_numpy(), ~shallow)          # exactly the cells under 10 reads
    assert obs.loc[shallow, "epitrace_age"].isna().all() and obs.loc[shallow, "epitrace_age_signal"].isna().all()
    assert info["n_cells_below_min_clock_reads"] == shallow.sum() and info["n_cells_aged"] == (~shallow).sum()
    assert np.array_equal(obs["epitrace_age_clock_reads"].to_numpy(), reads)
    # dropped cells take no part: the kept cells' ages are those of the kept cells aged alone
    alone = epitrace.age(atac[~shallow].copy(), loci, min_clock_reads=0, inplace=False)
    assert np.allclose(alone.to_numpy(), obs.loc[~shallow, "epitrace_age"].to_numpy())
    assert epitrace.age(atac, loci, min_clock_reads=0, inplace=False).notna().sum() > (~shallow).sum()
    with pytest.raises(ValueError, match="min_clock_reads"):
        epitrace.age(atac, loci, min_clock_reads=reads.max() + 1)


def test_split_half_ceiling_high_at_depth_lower_when_thinned(aged):
    atac, loci = aged
    full = epitrace.split_half_ceiling(atac, loci, seed=0, n_repeats=3)
    assert list(full["repeat"]) == [0, 1, 2] and (full["note"] == "").all()
    assert full["ceiling_full_depth"].min() > 0.75 and full["ceiling_full_depth_adjusted"].min() > 0.7
    r = full["spearman_half"]
    assert np.allclose(full["ceiling_full_depth"], 2 * r / (1 + r)) and (full["ceiling_full_depth"] > r).all()
    assert full["accessible_clock_loci_half"].mean() == pytest.approx(
        atac.obs["epitrace_age_accessible_loci"].mean() / 2, rel=0.1)            # each half holds half the reads
    assert epitrace.split_half_ceiling(atac, loci, seed=0, n_repeats=3).equals(full)   # seeded
    thin = epitrace.split_half_ceiling(downsample_atac(atac, 0.3, seed=0), loci, seed=0, n_repeats=3)
    assert thin["ceiling_full_depth"].mean() < full["ceiling_full_depth"].mean() - 0.3
    assert (thin["n_cells"] < thin["n_cells_split"]).all()                      # half-depth filter drops cells
    binary = atac.copy()
    binary.X = (binary.X > 0).astype(np.float32)
    halves = epitrace.split_half_ceiling(binary, loci, seed=0, n_repeats=1)     # each open entry to one half
    assert halves.loc[0, "ceiling_full_depth"] > 0.7
    halved = atac.copy()
    halved.X = halved.X * 0.5
    with pytest.raises(InputError, match="non-integer"):
        epitrace.split_half_ceiling(halved, loci)


def test_partial_spearman_removes_a_shared_covariate():
    rng = np.random.default_rng(0)
    z = rng.normal(size=500)
    x, y = z + 0.3 * rng.normal(size=500), z + 0.3 * rng.normal(size=500)
    raw = spearman(x, y)
    assert raw > 0.8 and abs(epitrace.partial_spearman(x, y, z)) < 0.1
    assert epitrace.partial_spearman(x, y, np.exp(z)) == pytest.approx(epitrace.partial_spearman(x, y, z))  # ranks
    assert epitrace.partial_spearman(x, y, rng.normal(size=500)) == pytest.approx(raw, abs=0.02)  # unrelated
    assert np.isnan(epitrace.partial_spearman(np.ones(500), y, z)) and np.isnan(epitrace.partial_spearman(z, y, z))
    x[:10] = np.nan
    assert np.isfinite(epitrace.partial_spearman(x, y, z))                      # incomplete cells left out
    ages = pd.DataFrame({"measured": y, "method": np.where(np.isnan(x), 0.0, x), "constant": np.zeros(500)})
    res = epitrace.compare_ages(ages, "measured", np.repeat(["a", "b"], 250), depth=np.exp(z)).set_index("method")
    assert res.columns.get_loc("spearman_cells_depth_adjusted") == res.columns.get_loc("p_cells") + 1
    assert res.loc["method", "spearman_cells"] > 0.8 and abs(res.loc["method", "spearman_cells_depth_adjusted"]) < 0.15
    assert np.isnan(res.loc["constant", "spearman_cells_depth_adjusted"])
    assert "spearman_cells_depth_adjusted" not in epitrace.compare_ages(ages, "measured", np.repeat(["a", "b"], 250))
