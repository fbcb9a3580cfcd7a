import pytest
import torch

from cisformer.model import ARCHS, Cisformer, CisformerConfig, cre_digits


def _cfg(direction, arch="paper", **kw):
    base = dict(n_genes=50, n_cres=700, dim=24, n_layers=2, n_heads=2, head_dim=8, dropout=0.0, n_digits=3,
                gene_len=16, cre_len=32, rank=8, hidden=16, input_dropout=0.0)
    base.update(kw)
    return CisformerConfig(direction=direction, arch=arch, **base)


def _model(direction, arch="paper", **kw):
    """A model whose every path matters: the attention readout (zero at initialisation) is randomised."""
    torch.manual_seed(0)
    model = Cisformer(_cfg(direction, arch, **kw)).eval()
    if arch == "cisformer":
        with torch.no_grad():
            model.path.readout.weight.normal_()
    return model


def _rna2atac_batch(n_keys=(5, 9), lq=12, seed=0, pad_to=None):
    g = torch.Generator().manual_seed(seed)
    lk = pad_to or max(n_keys)
    B = len(n_keys)
    gene_idx = torch.randint(0, 50, (B, lk), generator=g)
    gene_value = torch.randint(1, 65, (B, lk), generator=g)
    gene_pad = torch.arange(lk)[None, :] >= torch.tensor(n_keys)[:, None]
    gene_idx[gene_pad], gene_value[gene_pad] = 0, 0
    return {"gene_idx": gene_idx, "gene_value": gene_value, "gene_pad": gene_pad,
            "expr": torch.rand(B, 50, generator=g),
            "cre_idx": torch.randint(0, 700, (B, lq), generator=g), "cre_pad": torch.zeros(B, lq, dtype=torch.bool),
            "target": torch.randint(0, 2, (B, lq), generator=g).float()}


def _batch(direction):
    """Two cells, 12 query tokens each, 5 / 9 (rna2atac) or 4 / 9 (atac2rna) keys."""
    if direction == "rna2atac":
        return _rna2atac_batch()
    return {"cre_idx": torch.randint(0, 700, (2, 9)), "cre_pad": torch.arange(9)[None] >= torch.tensor([[4], [9]]),
            "gene_idx": torch.randint(0, 50, (2, 12)), "gene_pad": torch.zeros(2, 12, dtype=torch.bool),
            "target": torch.randint(0, 8, (2, 12))}


@pytest.mark.parametrize("direction", ["rna2atac", "atac2rna"])
@pytest.mark.parametrize("profile", ["quick", "cpu", "paper"])
@pytest.mark.parametrize("arch", ARCHS)
def test_profiles_build(direction, profile, arch):
    cfg = CisformerConfig.from_profile(direction, profile, n_genes=1677, n_cres=25_734, arch=arch)
    assert cfg.arch == arch
    if arch == "paper":
        assert cfg.dim % cfg.n_digits == 0 and 10 ** cfg.n_digits >= cfg.n_cres
    if arch == "paper" and profile == "paper":
        expect = (6, 210, 6, 2048, 2048) if direction == "rna2atac" else (4, 280, 7, 3000, 10_000)
        assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.gene_len, cfg.cre_len) == expect
    elif profile != "paper":
        Cisformer(cfg)


def test_digit_encoding_unique_per_cre():
    torch.manual_seed(0)
    cfg = _cfg("rna2atac", "paper", n_cres=1000)
    model = Cisformer(cfg)
    idx = torch.arange(cfg.n_cres)
    assert cre_digits(torch.tensor([407]), 3).tolist() == [[4, 0, 7]]
    emb = model.cre_enc(idx[None])[0]  # (n_cres, dim)
    assert emb.shape == (1000, cfg.dim)
    assert torch.unique(emb, dim=0).shape[0] == cfg.n_cres
    # one digit table shared by all positions: the same digit gives the same sub-vector at every position
    e = model.cre_enc(torch.tensor([[111]]))[0, 0].view(3, -1)
    assert torch.equal(e[0], e[1]) and torch.equal(e[1], e[2])


@pytest.mark.parametrize("direction", ["rna2atac", "atac2rna"])
@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_attention(direction, arch):
    model = _model(direction, arch)
    batch = _batch(direction)
    logits, attn = model(batch, return_attention=True)
    assert logits.shape == ((2, 12) if direction == "rna2atac" else (2, 12, 8))
    assert len(attn) == 2 and attn[0].shape == (2, 12, 9)
    key_pad = batch["gene_pad"] if direction == "rna2atac" else batch["cre_pad"]
    for a in attn:
        assert torch.all(a[key_pad[:, None, :].expand_as(a)] == 0)  # padded keys: exactly zero mass
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 12))
    # the explicit-attention path and the fused kernel compute the same logits
    torch.testing.assert_close(model(batch), logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_invariance(arch):
    """A cell's outputs do not depend on how far its key list is padded."""
    model = _model("rna2atac", arch)
    short = _rna2atac_batch(n_keys=(5, 9), pad_to=9)
    long = {k: v.clone() for k, v in short.items()}
    extra = 20
    long["gene_idx"] = torch.cat([short["gene_idx"], torch.randint(0, 50, (2, extra))], 1)  # junk in the padding
    long["gene_value"] = torch.cat([short["gene_value"], torch.randint(1, 65, (2, extra))], 1)
    long["gene_pad"] = torch.cat([short["gene_pad"], torch.ones(2, extra, dtype=torch.bool)], 1)
    torch.testing.assert_close(model(short), model(long), rtol=1e-5, atol=1e-6)
    a_short = model(short, return_attention=True)[1][-1]
    a_long = model(long, return_attention=True)[1][-1]
    torch.testing.assert_close(a_long[..., :9], a_short)
    assert torch.all(a_long[..., 9:] == 0)


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_value_padding_would_leak(arch):
    """Why masks matter: zeroing padded values (the reference's approach) changes the output, masking does not."""
    model = _model("rna2atac", arch)
    batch = _rna2atac_batch(n_keys=(5, 5), pad_to=5)
    keys = model.encode_keys(batch)
    padded = {k: torch.cat([v, v[:, :3]], 1) if k in ("gene_idx", "gene_value") else v for k, v in batch.items()}
    padded["gene_pad"] = torch.cat([batch["gene_pad"], torch.ones(2, 3, dtype=torch.bool)], 1)
    keys_pad = model.encode_keys(padded)
    ref = model.decode(batch["cre_idx"], keys)
    torch.testing.assert_close(model.decode(batch["cre_idx"], keys_pad), ref)
    # reference-style: keep the padded keys in the softmax with zeroed values
    zeroed = [(k, v.masked_fill(padded["gene_pad"][:, None, :, None], 0.0)) for k, v in keys_pad.kv]
    keys_pad.kv, keys_pad.pad = zeroed, torch.zeros_like(padded["gene_pad"])
    assert not torch.allclose(model.decode(batch["cre_idx"], keys_pad), ref, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_once_decode_chunks_matches_forward(arch):
    model = _model("rna2atac", arch)
    batch = _rna2atac_batch(lq=30)
    full = model(batch)
    keys = model.encode_keys(batch)
    parts = [model.decode(batch["cre_idx"][:, lo:lo + 7], keys) for lo in range(0, 30, 7)]
    torch.testing.assert_close(torch.cat(parts, 1), full)


@pytest.mark.parametrize("arch", ARCHS)
def test_cell_without_keys_is_finite(arch):
    model = _model("rna2atac", arch)
    batch = _rna2atac_batch(n_keys=(0, 4), pad_to=4)
    logits, attn = model(batch, return_attention=True)
    assert torch.isfinite(logits).all() and torch.isfinite(model(batch)).all()
    assert torch.all(attn[0][0] == 0)


def test_config_errors():
    with pytest.raises(ValueError, match="direction"):
        CisformerConfig(direction="rna2dna", n_genes=5, n_cres=5)
    with pytest.raises(ValueError, match="arch"):
        CisformerConfig(direction="rna2atac", n_genes=5, n_cres=5, arch="bert")
    with pytest.raises(ValueError, match="divisible"):
        CisformerConfig(direction="rna2atac", n_genes=5, n_cres=5, dim=50, n_digits=7, arch="paper")
    with pytest.raises(ValueError, match="digits"):
        CisformerConfig(direction="rna2atac", n_genes=5, n_cres=5000, dim=30, n_digits=3, arch="paper")
    with pytest.raises(ValueError, match="profile"):
        CisformerConfig.from_profile("rna2atac", "gpu", 5, 5)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_roundtrip(tmp_path, arch):
    model = _model("atac2rna", arch)
    model.gene_names = [f"g{i}" for i in range(50)]
    model.cre_names = [f"c{i}" for i in range(700)]
    model.bin_edges.copy_(torch.linspace(0, 3, 8))
    model.save(tmp_path / "m.pt")
    back = Cisformer.load(tmp_path / "m.pt")
    assert back.gene_names == model.gene_names and torch.equal(back.bin_edges, model.bin_edges)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_flash_varlen_packing_matches_sdpa(monkeypatch):
    """The flash-attn path packs the non-padded keys; check the packing with a CPU stand-in for the kernel."""
    import torch.nn.functional as F

    from cisformer import model as M

    def fake_varlen(q, k, v, cu_q, cu_k, max_q, max_k):  # (total, H, Dh) each, like flash_attn_varlen_func
        outs = []
        for i in range(len(cu_q) - 1):
            qi, ki, vi = (t.transpose(0, 1)[None].float() for t in (q[cu_q[i]:cu_q[i + 1]],
                                                                 k[cu_k[i]:cu_k[i + 1]], v[cu_k[i]:cu_k[i + 1]]))
            outs.append(F.scaled_dot_product_attention(qi, ki, vi)[0].transpose(0, 1))
        return torch.cat(outs).to(q.dtype)

    monkeypatch.setattr(M, "flash_attn_varlen_func", fake_varlen)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, n, 8, generator=g) for n in (5, 7, 7))
    key_pad = torch.arange(7)[None] >= torch.tensor([[3], [7], [5]])
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=~key_pad[:, None, None, :])
    out = M._flash_attention(q, k, v, key_pad)  # computes in bf16 like the kernel
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("direction", ["rna2atac", "atac2rna"])
@pytest.mark.parametrize("arch", ARCHS)
def test_query_prior_is_an_additive_offset(direction, arch):
    model = _model(direction, arch)
    batch = _batch(direction)
    before = model(batch)
    model.query_prior.normal_()
    query = batch["cre_idx"] if direction == "rna2atac" else batch["gene_idx"]
    torch.testing.assert_close(model(batch), before + model.query_prior[query])


@pytest.mark.parametrize("direction", ["rna2atac", "atac2rna"])
def test_cisformer_logit_is_factorised_plus_attention_path(direction):
    """logit = factorised term of every feature (one matmul) + attention path; ablate_attention drops the path."""
    model = _model(direction, "cisformer")
    batch = _batch(direction)
    query = batch["cre_idx"] if direction == "rna2atac" else batch["gene_idx"]
    keys = model.encode_keys(batch)
    factorised = model._gather(keys.factorised, query)
    full = model.decode(query, keys)
    assert not torch.allclose(full, factorised)
    model.ablate_attention = True
    torch.testing.assert_close(model.decode(query, keys), factorised)
    # the factorised term is computed for every output feature: a query reads its own row
    n_out = 700 if direction == "rna2atac" else 50
    assert keys.factorised.shape[:2] == (2, n_out)


def test_cisformer_depth_offset_known_in_training_predicted_otherwise():
    model = _model("rna2atac", "cisformer")
    batch = _batch("rna2atac")
    predicted = model(batch)
    shifted = model(dict(batch, depth=torch.tensor([1.0, -2.0])))
    predicted_depth = model.depth_head(model.encoder(batch)).squeeze(-1)
    torch.testing.assert_close(shifted - predicted, (torch.tensor([1.0, -2.0]) - predicted_depth)[:, None].expand(2, 12))


@pytest.mark.parametrize("direction", ["rna2atac", "atac2rna"])
def test_cisformer_drawn_loss_trains_the_attention_path_only(direction):
    """The factorised term and the cell encoder learn from the all-feature loss only: their gradients are the
    same whether the attention path is used or not, while the path itself gets a gradient."""
    batch = _batch(direction)
    if direction == "rna2atac":
        batch.update(open_all=(torch.rand(2, 700) < 0.1).float(), depth=torch.zeros(2), draw_offset=torch.ones(2))
    else:
        batch.update(open_all=(torch.rand(2, 700) < 0.1).float(), bins_all=torch.randint(0, 8, (2, 50)),
                     expr=torch.rand(2, 50))
    grads = []
    for ablate in (False, True):
        model = _model(direction, "cisformer")
        model.train()
        model.ablate_attention = ablate
        loss, _ = model(batch, return_loss=True)
        assert torch.isfinite(loss)
        loss.backward()
        grads.append((model.out_factor.weight.grad.clone(), model.encoder.mlp[-1].weight.grad.clone(),
                      model.path.readout.weight.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert grads[0][2].abs().sum() > 0


def test_cis_window_keeps_each_gene_to_its_own_cres():
    """atac2rna with a cis window: a gene attends only to open CREs within the window on its chromosome; a gene
    with none attends nowhere (its attention path reads nothing)."""
    model = _model("atac2rna", "cisformer", cis_window=1000)
    with torch.no_grad():
        model.gene_position[:, 0], model.gene_position[:, 1] = 0, torch.arange(50) * 10_000  # genes 10 kb apart
        model.cre_position[:, 0], model.cre_position[:, 1] = 0, torch.arange(700) * 1_000
        model.cre_position[600:, 0] = 1                                                    # another chromosome
    batch = {"cre_idx": torch.tensor([[10, 11, 30, 650], [0, 1, 2, 3]]), "cre_pad": torch.zeros(2, 4, dtype=torch.bool),
             "gene_idx": torch.tensor([[1, 3, 0], [1, 3, 0]]), "gene_pad": torch.zeros(2, 3, dtype=torch.bool)}
    _, attn = model(batch, return_attention=True)
    a = attn[0]
    # cell 0: gene 1 (TSS 10 kb) may read CREs 10 and 11 (10 and 11 kb), gene 3 (30 kb) CRE 30, gene 0 none
    assert torch.all(a[0, 0, 2:] == 0) and torch.isclose(a[0, 0, :2].sum(), torch.tensor(1.0))
    assert torch.isclose(a[0, 1, 2], torch.tensor(1.0))
    assert torch.all(a[0, 2] == 0) and torch.all(a[1, :2] == 0)       # gene 0 reads CREs 0-1 in cell 1 only
    assert torch.isclose(a[1, 2, :2].sum(), torch.tensor(1.0))
    model.gene_position.fill_(-1)                                       # unknown positions: no window
    _, attn = model(batch, return_attention=True)
    torch.testing.assert_close(attn[0].sum(-1), torch.ones(2, 3))


def test_atac2rna_encoder_reads_depth_and_weighs_rare_cres():
    """The atac2rna cell state reads the standardised open state of every CRE (a weighted embedding bag) and the
    log depth: without ``log_open`` in the batch the depth is the keys' own count; a cell whose 4 keys stand for
    40 open CREs gets the 40-CRE state; a CRE open in 1 % of training cells weighs ~5x one open in half."""
    import numpy as np
    import scipy.sparse as sp
    model = _model("atac2rna", "cisformer")
    share = np.full(700, 0.5)
    share[:10] = 0.01
    atac = sp.csr_matrix((np.random.default_rng(0).random((2000, 700)) < share).astype(np.float32))
    model.encoder.set_input_scale(np.asarray((atac > 0).mean(axis=0)).ravel(), np.log(np.diff(atac.indptr)))
    weight = model.encoder.cre_weight.numpy()
    assert weight[0] / weight[500] == pytest.approx(np.sqrt(0.5 * 0.51 / (0.01 * 1.0)), rel=0.35)
    batch = _batch("atac2rna")
    n_keys = (~batch["cre_pad"]).sum(1).float()
    same = model.encoder(dict(batch, log_open=n_keys.log()))
    torch.testing.assert_close(model.encoder(batch), same)
    deeper = model.encoder(dict(batch, log_open=(10 * n_keys).log()))
    assert not torch.allclose(deeper, same)
    keep = ~batch["cre_pad"]
    by_hand = (model.encoder.input(batch["cre_idx"]) * (keep * model.encoder.cre_weight[batch["cre_idx"]] * 10)
               .unsqueeze(-1)).sum(1)
    depth = ((10 * n_keys).log() - model.encoder.depth_mean) / model.encoder.depth_std
    torch.testing.assert_close(deeper, model.encoder.mlp(by_hand + model.encoder.depth_input(depth[:, None])))
