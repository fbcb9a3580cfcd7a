"""Attune's regulatory cross-attention (cisformer.attune.regulatory): the sparse computation against a dense reference,
memory at SNARE-seq size, hard negatives, training with resume, interaction scores and link recovery."""
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cisformer.attune import alignment, regulatory
from cisformer.data import simulate
from cisformer.tl import attention
from cisformer.attune.alignment import TeacherEncoder


@pytest.fixture(scope="module")
def sim():
    return simulate.paired(n_cells=300, n_genes=60, n_cres=300, seed=0)


def random_model(rna, atac, dim=16, seed=0, **overrides):
    """An untrained layer on random teachers (value scales from the data), with the data's window pairs."""
    torch.manual_seed(seed)
    inputs = alignment.attune_inputs(rna, atac, np.arange(rna.n_obs))
    teachers = [TeacherEncoder(rna.n_vars, dim), TeacherEncoder(atac.n_vars, dim)]
    teachers[0].value_scale.copy_(torch.from_numpy(inputs.rna_scale))
    teachers[1].value_scale.copy_(torch.from_numpy(inputs.atac_scale))
    pairs = attention.candidate_pairs(rna.var, atac.var, 1_200_000)
    config = regulatory.RegulatoryConfig.from_profile("quick", rna.n_vars, atac.n_vars, dim, **overrides)
    model = regulatory.RegulatoryAttention(config, pairs["gene_idx"], pairs["cre_idx"], *teachers).eval()
    model.gene_names, model.peak_names = list(rna.var_names), list(atac.var_names)
    return model, inputs, pairs


def test_segment_softmax_equals_dense_masked_softmax():
    """Random segments with random edges and two extras (one sometimes absent): the same weights as a dense
    softmax with -inf outside each segment; weights sum to 1 per segment."""
    g = torch.Generator().manual_seed(0)
    S, L = 6, 9  # segments, dense width
    dense = torch.randn(S, L, generator=g) * 3
    member = torch.rand(S, L, generator=g) < 0.5
    member[0] = False  # a segment with extras only
    extra = torch.randn(S, 2, generator=g)
    extra[::2, 1] = -math.inf  # absent pseudo-key
    segment, column = torch.nonzero(member, as_tuple=True)
    w_edge, w_extra = regulatory.segment_softmax(dense[segment, column], segment, extra)
    reference = torch.softmax(torch.cat([dense.masked_fill(~member, -math.inf), extra], dim=1), dim=1)
    torch.testing.assert_close(w_edge, reference[segment, column])
    torch.testing.assert_close(w_extra, reference[:, L:])
    assert (reference[:, :L][~member] == 0).all()
    totals = w_extra.sum(1).index_add(0, segment, w_edge)
    torch.testing.assert_close(totals, torch.ones(S))


def dense_layer(model, rna_x, atac_x):
    """The layer computed densely ([B, G + 1, P + 1] attention with the window mask; the gene CLS row over every
    peak, or over the cell's open peaks without ``cls_sees_closed``) from the teachers' dense weighted tokens:
    returns the cross-attention weights, the fused gene-CLS outputs and the mask [B, G + 1, P + 1]."""
    B, P, G = atac_x.shape[0], atac_x.shape[1], rna_x.shape[1]
    T_rna = model.rna_teacher.weighted_tokens(rna_x) * G  # [B, G, D]
    T_atac = model.atac_teacher.weighted_tokens(atac_x) * P  # [B, P, D]

    def pool(cls, ln, attn, tokens):
        keys = ln(torch.cat([cls.expand(len(tokens), 1, -1), tokens], dim=1))  # [B, 1 + F, D]
        q, k, v = attn.q(keys[:, :1]), attn.k(keys), attn.v(keys)
        w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)  # [B, 1, 1 + F]
        return cls + attn.out((w @ v)[:, 0])

    r = pool(model.gene_cls, model.ln_rna, model.rna_pool, T_rna)
    a = pool(model.peak_cls, model.ln_atac, model.atac_pool, T_atac)
    queries = model.ln_query(torch.cat([r[:, None], T_rna], dim=1))  # [B, 1 + G, D]
    kv = model.ln_key(torch.cat([a[:, None], T_atac], dim=1))  # [B, 1 + P, D]
    q, k, v = model.cross.q(queries), model.cross.k(kv), model.cross.v(kv)
    logits = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # [B, 1 + G, 1 + P]
    allowed = torch.zeros(B, 1 + G, 1 + P, dtype=torch.bool)
    allowed[:, 0, 1:] = True if model.config.cls_sees_closed else atac_x > 0
    allowed[:, :, 0] = True
    allowed[:, 1 + model.edge_gene, 1 + model.edge_peak] = True
    weights = torch.softmax(logits.masked_fill(~allowed, -math.inf), dim=-1)
    z = r + model.cross.out((weights @ v)[:, 0])
    fused = z + model.ffn(model.ln_ffn(z))
    return weights, fused, allowed


@pytest.mark.parametrize("cls_sees_closed", [True, False])
def test_sparse_layer_equals_dense_layer(sim, cls_sees_closed):
    """Weights of every window edge, the CLS rows and the fused gene-CLS output equal the dense computation;
    outside the window (and, for a gene CLS kept off closed peaks, on them) the dense weights are exactly 0 and
    each row sums to 1; interaction_scores equals the dense sums over the same cells."""
    rna, atac, _ = sim
    model, inputs, pairs = random_model(rna, atac, cls_sees_closed=cls_sees_closed)
    rows = np.arange(12)
    rna_x = alignment.rows_tensor(inputs.rna_log, rows, "cpu")
    atac_x = alignment.rows_tensor(inputs.atac_bin, rows, "cpu")
    with torch.no_grad():
        weights, fused, allowed = dense_layer(model, rna_x, atac_x)
        enc = model.encode(rna_x, atac_x)
        keys = model._keys(enc)
        w = model.gene_attention(enc, keys)
        cells = torch.arange(len(rows))
        fused_sparse = model.fused_cls(enc, keys, cells, cells)
    assert (weights[~allowed] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(rows), 1 + rna.n_vars))
    torch.testing.assert_close(fused_sparse, fused, atol=1e-5, rtol=1e-4)
    g, p = model.edge_gene, model.edge_peak
    direct = w["closed_each"][:, g].clone()  # [B, E]
    peaks = enc["peaks"]
    direct[peaks.rows[peaks.edge_entry], peaks.edge_id] = w["open_weight"]
    torch.testing.assert_close(direct, weights[:, 1 + g, 1 + p], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(w["to_cls"], weights[:, 1:, 0], atol=1e-6, rtol=1e-4)
    cls_row = w["cls_closed_each"][:, None].expand(-1, atac.n_vars).clone()  # [B, P]
    cls_row[peaks.rows, peaks.cols] = w["cls_open"]
    torch.testing.assert_close(cls_row, weights[:, 0, 1:], atol=1e-6, rtol=1e-4)

    scores = regulatory.interaction_scores(model, rna, atac, cells=rows, batch_size=5)
    assert len(scores) == len(pairs) and list(scores["gene"]) == list(pairs["gene"])
    np.testing.assert_allclose(scores["attention"], weights[:, 1 + g, 1 + p].sum(0).double().numpy(), rtol=1e-4)
    attune = (weights[:, 1 + g, 0] * weights[:, 0, 1 + p]).sum(0).double().numpy()
    np.testing.assert_allclose(scores["attune"], attune, rtol=1e-4)


class PeakNumel(TorchDispatchMode):
    """Records the largest tensor any torch operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_snareseq_sized_batch_never_allocates_dense_genes_by_peaks():
    """32 cells at SNARE-seq's size (1,677 genes, 25,734 peaks, ~62,000 window pairs, ~100 open peaks and ~100
    expressed genes per cell, dim 128): a training step (forward and backward) and the interaction weights
    never create a tensor of even 2 % of B x G x P elements."""
    B, G, P, D = 32, 1677, 25_734, 128
    g = torch.Generator().manual_seed(0)
    centre = torch.sort(torch.randint(0, P, (G,), generator=g)).values  # each gene's window: ~37 nearby peaks
    width = torch.randint(1, 75, (G,), generator=g)
    edge_gene = torch.repeat_interleave(torch.arange(G), width)
    edge_peak = (centre[edge_gene] + torch.cat([torch.arange(int(n)) for n in width]) - width[edge_gene] // 2)
    edge_gene, edge_peak = edge_gene[(edge_peak >= 0) & (edge_peak < P)], edge_peak[(edge_peak >= 0) & (edge_peak < P)]
    config = regulatory.RegulatoryConfig(n_genes=G, n_peaks=P, dim=D)
    torch.manual_seed(0)
    model = regulatory.RegulatoryAttention(config, edge_gene, edge_peak)
    rna_x = (torch.rand(B, G, generator=g) < 106 / G) * torch.rand(B, G, generator=g) * 3
    atac_x = (torch.rand(B, P, generator=g) < 100 / P).float()
    probe = PeakNumel()
    with probe:
        model.train()
        model(rna_x, atac_x)["loss"].backward()
        model.eval()
        with torch.no_grad():
            enc = model.encode(rna_x, atac_x)
            w = model.gene_attention(enc, model._keys(enc))
    assert len(edge_gene) > 55_000
    assert w["open_weight"].shape == enc["peaks"].edge_id.shape
    dense_batch_inputs = B * P  # the dense [B, P] input itself
    assert probe.largest <= max(dense_batch_inputs, B * G * D) < 0.02 * B * G * P


def test_hard_negatives_never_pick_the_diagonal():
    g = torch.Generator().manual_seed(0)
    for B in (2, 3, 16):
        sim = torch.randn(B, B, generator=g) * 0.1 + 5 * torch.eye(B)  # the diagonal by far the most similar
        for _ in range(50):
            atac_for_rna, rna_for_atac = regulatory.sample_hard_negatives(sim, 0.1, g)
            assert (atac_for_rna != torch.arange(B)).all() and (rna_for_atac != torch.arange(B)).all()
    sim = torch.full((4, 4), -1.0)
    sim[0, 3] = sim[2, 1] = 1.0  # row 0's hardest negative is 3; column 1's is 2
    picks = torch.stack([regulatory.sample_hard_negatives(sim, 0.1, g)[0][0] for _ in range(200)])
    assert (picks == 3).float().mean() > 0.9
    with pytest.raises(ValueError):
        regulatory.sample_hard_negatives(torch.ones(1, 1), 0.1)


def test_fit_resumes_and_scores_every_pair(sim, tmp_path, monkeypatch):
    """Quick profile on frozen quick teachers: an interrupted run resumes to the uninterrupted history and
    weights; a finished run is loaded; interaction scores are finite for every candidate pair (per cell type
    too) and link recovery is computed (the direct attention's AUROC above chance)."""
    rna, atac, truth = sim
    train, val = np.arange(200), np.arange(200, 250)
    aligner, _ = alignment.fit_alignment(rna, atac, train, val, profile="quick", epochs=5, progress=False,
                                           device="cpu")
    model, history = regulatory.fit_regulatory(aligner, rna, atac, train, val, profile="quick", progress=False,
                                               device="cpu", checkpoint_dir=tmp_path / "a")
    assert len(history) == 3 and np.isfinite(history[["train_loss", "val_loss"]].to_numpy()).all()
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]

    calls = {"n": 0}
    forward = regulatory.RegulatoryAttention.forward

    def interrupted(self, *args, **kwargs):  # dies in the second epoch (6 training steps per epoch)
        calls["n"] += 1
        if self.training and calls["n"] > 8 + 2:  # + the first epoch's 2 validation batches
            raise KeyboardInterrupt
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(regulatory.RegulatoryAttention, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        regulatory.fit_regulatory(aligner, rna, atac, train, val, profile="quick", progress=False, device="cpu",
                                  checkpoint_dir=tmp_path / "b")
    monkeypatch.setattr(regulatory.RegulatoryAttention, "forward", forward)
    resumed, history_b = regulatory.fit_regulatory(aligner, rna, atac, train, val, profile="quick",
                                                   progress=False, device="cpu", checkpoint_dir=tmp_path / "b")
    np.testing.assert_allclose(history_b["val_loss"], history["val_loss"], rtol=1e-5)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    loaded, _ = regulatory.fit_regulatory(aligner, rna, atac, train, val, profile="quick", progress=False,
                                          device="cpu", checkpoint_dir=tmp_path / "b")
    torch.testing.assert_close(loaded.match_head.weight, model.match_head.weight)

    scores = regulatory.interaction_scores(model, rna, atac, cells=np.arange(250), groupby="cell_type")
    pairs = attention.candidate_pairs(rna.var, atac.var, 1_200_000)
    assert len(scores) == len(pairs)
    assert (scores[["gene_idx", "cre_idx"]].to_numpy() == pairs[["gene_idx", "cre_idx"]].to_numpy()).all()
    groups = sorted(rna.obs["cell_type"].unique())
    columns = ["attune", "attention"] + [f"{s}:{t}" for t in groups for s in ("attune", "attention")]
    assert np.isfinite(scores[columns].to_numpy()).all() and (scores[columns].to_numpy() >= 0).all()
    np.testing.assert_allclose(scores[[f"attention:{t}" for t in groups]].sum(1), scores["attention"], rtol=1e-9)
    assert sum(scores.attrs["n_cells"].values()) == 250
    recovery = attention.link_recovery(scores, {"attune": scores["attune"], "attention": scores["attention"]}, truth)
    assert recovery.set_index("method").loc["attention", "auroc"] > 0.5


def test_matching_auroc_scores_true_pairs_against_uniform_and_hard_negatives(sim, monkeypatch):
    """matching_auroc: an AUROC per kind of negative in [0, 1]; a head that scores the cosine of the two
    summaries gets exactly the cosine's AUROC on the hard pairs, and on uniform negatives (other cell types, for
    the most part) a higher one; a constant head gets 0.5."""
    rna, atac, _ = sim
    aligner, _ = alignment.fit_alignment(rna, atac, np.arange(200), np.arange(200, 250), profile="quick",
                                           epochs=5, progress=False, device="cpu")
    model, _ = regulatory.fit_regulatory(aligner, rna, atac, np.arange(200), np.arange(200, 250), profile="quick",
                                         progress=False, device="cpu", epochs=1)
    found = regulatory.matching_auroc(model, rna, atac, np.arange(200, 250))
    assert set(found) == {"uniform", "hard", "hard_cosine", "cls_to_peak_cls", "cls_to_closed"}
    assert all(0 <= v <= 1 for v in found.values()) and found["cls_to_peak_cls"] + found["cls_to_closed"] <= 1

    def cosine_head(self, enc, keys, rna_idx, atac_idx):  # the head's input replaced by the summaries' cosine
        r, a = regulatory._standardise(enc["rna"]), regulatory._standardise(enc["atac"])
        return torch.nn.functional.cosine_similarity(r[rna_idx], a[atac_idx]).unsqueeze(1)

    monkeypatch.setattr(regulatory.RegulatoryAttention, "fused_cls", cosine_head)
    model.match_head = torch.nn.Identity()  # the model is this test's own
    cos = regulatory.matching_auroc(model, rna, atac, np.arange(200, 250))
    assert cos["hard"] == pytest.approx(cos["hard_cosine"], abs=1e-6)
    assert cos["uniform"] > cos["hard"]
    constant = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(constant.weight), torch.nn.init.zeros_(constant.bias)
    model.match_head = constant
    assert regulatory.matching_auroc(model, rna, atac, np.arange(200, 250))["uniform"] == 0.5
