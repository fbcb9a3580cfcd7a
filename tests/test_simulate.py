import numpy as np
import pytest
import scipy.sparse as sp

from cisformer.data import simulate


def test_paired_follows_data_contract():
    rna, atac, truth = simulate.paired(n_cells=120, n_genes=40, n_cres=300, n_cell_types=3, seed=1)
    assert rna.shape == (120, 40) and atac.shape == (120, 300)
    assert list(rna.obs_names) == list(atac.obs_names)
    for a in (rna, atac):
        assert sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32
        assert np.all(a.X.data == np.round(a.X.data))
        assert {"cell_type", "batch"} <= set(a.obs.columns)
        assert a.uns["genome"] == "sim"
    assert {"chrom", "start", "end"} <= set(atac.var.columns)
    assert {"chrom", "start", "end", "tss", "strand", "gene_id"} <= set(rna.var.columns)
    assert atac.var_names.is_unique and rna.var_names.is_unique
    assert set(truth.columns) == {"gene", "cre", "weight", "cell_types"}
    assert set(truth.gene) <= set(rna.var_names) and set(truth.cre) <= set(atac.var_names)


def test_links_are_local_and_drive_expression():
    rna, atac, truth = simulate.paired(n_cells=400, n_genes=60, n_cres=600, seed=0)
    tss = rna.var.loc[truth.gene, "tss"].to_numpy()
    mid = ((atac.var.loc[truth.cre, "start"] + atac.var.loc[truth.cre, "end"]) // 2).to_numpy()
    same_chrom = rna.var.loc[truth.gene, "chrom"].to_numpy() == atac.var.loc[truth.cre, "chrom"].to_numpy()
    assert same_chrom.all() and np.all(np.abs(tss - mid) <= simulate.WINDOW)
    # linked CRE accessibility correlates with its gene's expression more than random pairs do
    X = np.log1p(rna.X.toarray())
    A = (atac.X.toarray() > 0).astype(float)
    g = rna.var_names.get_indexer(truth.gene)
    c = atac.var_names.get_indexer(truth.cre)

    def corr(gi, ci):
        x, y = X[:, gi] - X[:, gi].mean(0), A[:, ci] - A[:, ci].mean(0)
        return (x * y).sum(0) / np.sqrt((x ** 2).sum(0) * (y ** 2).sum(0) + 1e-12)

    rng = np.random.default_rng(0)
    assert corr(g, c).mean() > corr(g, rng.permutation(c)).mean() + 0.1


def test_seeded_and_validates():
    a = simulate.paired(n_cells=30, n_genes=10, n_cres=50, seed=3)
    b = simulate.paired(n_cells=30, n_genes=10, n_cres=50, seed=3)
    assert (a[0].X != b[0].X).nnz == 0 and a[2].equals(b[2])
    with pytest.raises(ValueError, match="n_cres"):
        simulate.paired(n_genes=10, n_cres=5)


def _fingerprint(rna, atac, truth) -> str:
    """sha256 of everything the default output held before the options existed (matrices, obs, var, links)."""
    import hashlib

    import pandas as pd

    h = hashlib.sha256()
    for a in (rna, atac):
        for arr in (a.X.indptr, a.X.indices, a.X.data):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(pd.util.hash_pandas_object(a.var, index=True).to_numpy().tobytes())
        h.update(pd.util.hash_pandas_object(a.obs, index=True).to_numpy().tobytes())
    h.update(pd.util.hash_pandas_object(truth[["gene", "cre", "weight"]], index=True).to_numpy().tobytes())
    return h.hexdigest()


def test_default_output_unchanged_by_the_options():
    # digests of simulate.paired before the link-setting options were added (commit a83161c)
    assert _fingerprint(*simulate.paired(seed=0)) == \
        "1a33217e3a76d4521a32527b9b4cd1f86cd15ded5e8d34a8696dff071c62096c"
    assert _fingerprint(*simulate.paired(n_cells=300, n_genes=40, n_cres=300, n_cell_types=3, seed=0)) == \
        "628ceb4d969ec6d919e85dfd6654af5c7bbbd444e824c73fbabaea8dfd331b34"
    rna, atac, truth = simulate.paired(**SMALL, **simulate.LINK_SETTINGS["easy"])
    assert (truth["cell_types"] == "all").all()
    assert truth.attrs["confounders"] == {} and truth.attrs["interactions"] == []


SMALL = dict(n_cells=400, n_genes=40, n_cres=400, n_cell_types=3, seed=0)


def _windows_per_cre(rna, atac):
    from cisformer.tl.attention import candidate_pairs

    pairs = candidate_pairs(rna.var, atac.var)
    return pairs, pairs.groupby("cre").size().reindex(atac.var_names, fill_value=0)


def test_shared_windows_put_cres_in_several_windows_and_links_across_genes():
    rna, atac, truth = simulate.paired(**SMALL)
    assert _windows_per_cre(rna, atac)[1].max() == 1  # the default layout: one window per CRE
    rna, atac, truth = simulate.paired(**SMALL, **simulate.LINK_SETTINGS["shared windows"])
    pairs, n_windows = _windows_per_cre(rna, atac)
    assert (n_windows >= 2).mean() > 0.5
    key = set(zip(pairs["gene"], pairs["cre"]))
    assert all(pair in key for pair in zip(truth["gene"], truth["cre"]))  # every link stays scorable
    assert truth["cre"].value_counts().max() >= 2  # some CRE drives two genes


def _log_expression(rna):
    from cisformer.data import true_expression

    return true_expression(rna)


def test_confounders_are_co_accessible_with_a_causal_cre_but_not_links():
    rna, atac, truth = simulate.paired(**SMALL, confounders=2, co_open=0.9)  # full capture: the true states
    confounder_of = truth.attrs["confounders"]
    assert len(confounder_of) >= len(set(truth["cre"]))  # most causal CREs got two, none fewer than zero
    assert not set(confounder_of) & set(truth["cre"])
    A = atac.X.toarray() > 0
    col = atac.var_names.get_indexer
    f, c = col(list(confounder_of)), col(list(confounder_of.values()))
    agree = (A[:, f] == A[:, c]).mean(0)
    assert agree.min() >= 0.85  # 90% copied, the rest drawn from the same program
    pairs, _ = _windows_per_cre(rna, atac)
    windows = set(zip(pairs["gene"], pairs["cre"]))
    gene_of = truth.drop_duplicates("cre").set_index("cre")["gene"]
    assert all((gene_of[cause], conf) in windows for conf, cause in confounder_of.items())
    # without the option, a non-causal CRE of the same window agrees with a causal one far less often
    rna0, atac0, truth0 = simulate.paired(**SMALL)
    A0 = atac0.X.toarray() > 0
    other = np.setdiff1d(np.arange(atac0.n_vars), atac0.var_names.get_indexer(truth0["cre"]))
    causal0 = atac0.var_names.get_indexer(truth0["cre"])
    assert (A0[:, other[:len(causal0)]] == A0[:, causal0[:len(other)]]).mean() < agree.mean() - 0.15


@pytest.mark.parametrize("kind", ["and", "or"])
def test_interacting_links_act_together(kind):
    rna, atac, truth = simulate.paired(n_cells=3000, n_genes=40, n_cres=400, n_cell_types=3, seed=0,
                                       interaction=kind, interaction_fraction=1.0)
    groups = truth.attrs["interactions"]
    assert groups and all(g["kind"] == kind and len(g["cres"]) == 2 for g in groups)
    n_links = truth.groupby("gene").size()
    counts, A = rna.X.toarray(), atac.X.toarray() > 0
    gains = []  # genes whose only links are the pair: log fold change of the mean count over cells with neither open
    for group in groups:
        if n_links[group["gene"]] != 2:
            continue
        y = counts[:, rna.var_names.get_loc(group["gene"])]  # raw counts: the library size is independent of ATAC
        a, b = (A[:, atac.var_names.get_loc(c)] for c in group["cres"])
        neither = y[~a & ~b].mean()
        gains.append((np.log(y[a ^ b].mean() / neither), np.log(y[a & b].mean() / neither)))
    gains = np.array(gains)
    assert len(gains) >= 5
    one, both = gains.mean(0)
    if kind == "and":  # one open CRE does nothing, both together do
        assert abs(one) < 0.1 and both > 1.0
    else:  # either CRE alone does almost all of it (redundant enhancers)
        assert one > 0.5 and both - one < 0.5 * one


def test_celltype_specific_links_act_only_in_their_types():
    rna, atac, truth = simulate.paired(n_cells=3000, n_genes=40, n_cres=400, n_cell_types=3, seed=0,
                                       celltype_specific=0.6)
    specific = truth[truth["cell_types"] != "all"]
    assert len(specific) > 10 and set(truth["cell_types"]) != {"all"}
    X, A = _log_expression(rna), atac.X.toarray() > 0
    labels = rna.obs["cell_type"].astype(str).to_numpy()
    inside, outside = [], []
    for _, link in specific.iterrows():
        y = X[:, rna.var_names.get_loc(link["gene"])]
        a = A[:, atac.var_names.get_loc(link["cre"])]
        acting = set(link["cell_types"].split(","))
        assert acting < set(labels)  # some but not all types
        for t in np.unique(labels):  # open vs closed within one type: other CREs are independent of this one
            cells = labels == t
            if a[cells].sum() >= 20 and (~a[cells]).sum() >= 20:
                diff = y[cells & a].mean() - y[cells & ~a].mean()
                (inside if t in acting else outside).append(diff)
    assert np.mean(inside) > 0.5
    # outside the acting types only noise is left (and the shared per-cell depth that opens CREs together)
    assert abs(np.mean(outside)) < 0.1 * np.mean(inside)


def test_shallow_capture_and_rna_depth_thin_the_data():
    rna, atac, _ = simulate.paired(**SMALL)
    rna_s, atac_s, _ = simulate.paired(**SMALL, **simulate.LINK_SETTINGS["shallow"])
    open_fraction = (atac_s.X > 0).mean()
    assert 0.005 <= open_fraction <= 0.05 and open_fraction < 0.2 * (atac.X > 0).mean()
    assert rna_s.X.sum() < 0.35 * rna.X.sum()


def test_regression_can_be_told_no():
    """Plain per-gene regression recovers the easy links almost perfectly, but not the confounded ones: the
    simulation can say no to the scorer that the easy setting was built for."""
    from cisformer.tl.attention import candidate_pairs, link_recovery, regression_coefficients

    sizes = dict(n_cells=1000, n_genes=30, n_cres=300, n_cell_types=3, seed=0)
    auroc = {}
    for setting in ("easy", "confounded"):
        rna, atac, truth = simulate.paired(**sizes, **simulate.LINK_SETTINGS[setting])
        pairs = candidate_pairs(rna.var, atac.var)
        table = link_recovery(pairs, {"regression": regression_coefficients(rna, atac, pairs)}, truth)
        auroc[setting] = table["auroc"].iloc[0]
    assert auroc["easy"] > 0.98
    assert auroc["confounded"] < 0.95


def test_options_validate():
    for bad, match in [(dict(gene_spacing=0), "gene_spacing"), (dict(shared_links=1.5), "shared_links"),
                       (dict(confounders=-1), "confounders"), (dict(interaction="nand"), "interaction"),
                       (dict(atac_capture=0.0), "atac_capture"), (dict(rna_depth=0), "rna_depth"),
                       (dict(celltype_specific=0.5, n_cell_types=1), "n_cell_types")]:
        with pytest.raises(ValueError, match=match):
            simulate.paired(**{**dict(n_cells=20, n_genes=5, n_cres=20), **bad})
    for name, options in simulate.LINK_SETTINGS.items():
        assert name in simulate.LINK_SETTING_NOTES
        simulate.paired(n_cells=30, n_genes=10, n_cres=60, seed=0, **options)


def test_trans_regulated_genes_follow_cell_type_not_their_window():
    """trans_genes: those genes have no planted link; their expression differs between cell types (as their
    window's openness does) but, within a cell type, does not follow the cell's own window CREs."""
    rna, atac, truth = simulate.paired(n_cells=1500, n_genes=40, n_cres=400, n_cell_types=3, seed=2, trans_genes=0.5)
    trans = truth.attrs["trans_genes"]
    assert trans and not truth["gene"].isin(trans).any()
    log_expr = np.log1p(rna[:, trans].X.toarray())
    types = rna.obs["cell_type"].to_numpy()
    type_means = np.array([log_expr[types == t].mean(0) for t in np.unique(types)])
    assert np.median(type_means.std(0)) > 0.1  # expression follows the cell type
    pairs = _window_pairs(rna, atac, trans)
    within = []
    for t in np.unique(types):
        cells = types == t
        x = atac.X[cells].toarray() > 0
        y = np.log1p(rna[cells].X.toarray())
        for g, c in pairs:
            if x[:, c].std() > 0 and y[:, g].std() > 0:
                within.append(np.corrcoef(x[:, c], y[:, g])[0, 1])
    assert abs(np.mean(within)) < 0.02  # ... but not the cell's own window CREs


def _window_pairs(rna, atac, genes):
    from cisformer.tl.attention import candidate_pairs

    pairs = candidate_pairs(rna.var, atac.var)
    pairs = pairs[pairs["gene"].isin(genes)]
    return list(zip(pairs["gene_idx"], pairs["cre_idx"]))


def test_xor_pairs_have_no_marginal_effect():
    """An XOR pair moves its gene (exactly one partner open vs none or both) while neither CRE alone does: the
    correlation of a partner's open state with the gene's expression is near 0, that of the pair's XOR is not."""
    import numpy as np
    from cisformer.data import simulate

    rna, atac, truth = simulate.paired(n_cells=3000, n_genes=60, n_cres=600, n_cell_types=4, seed=0,
                                       interaction="xor", interaction_fraction=1.0)
    pairs = truth.attrs["interactions"]
    assert pairs and {p["kind"] for p in pairs} == {"xor"}
    expr = np.log1p(rna.X.toarray() / rna.X.toarray().sum(1, keepdims=True) * 1e4)
    marginal, joint = [], []
    for p in pairs:
        y = expr[:, rna.var_names.get_loc(p["gene"])]
        a, b = (atac[:, c].X.toarray().ravel() > 0 for c in p["cres"])
        marginal += [abs(np.corrcoef(a, y)[0, 1]), abs(np.corrcoef(b, y)[0, 1])]
        joint.append(np.corrcoef(a ^ b, y)[0, 1])
    assert np.median(marginal) < 0.1 and np.median(joint) > 3 * np.median(marginal)
