"""Motif scanning and motif enrichment on a synthetic genome with planted CTCF sites (known answer)."""
import gzip
import itertools

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cisformer import data
from cisformer.tl import enrichment, motifs

GC = 0.42
PLANTED = "MA0139.2"     # CTCF, 15 bp


def _random_bases(rng, n, gc=GC):
    return "".join(np.array(list("ACGT"))[rng.choice(4, size=n, p=motifs.gc_background(gc))])


def _reverse_complement(seq):
    return seq[::-1].translate(str.maketrans("ACGTN", "TGCAN"))


def _sample_site(rng, motif):
    freq = motif.counts / motif.counts.sum(0)
    return "".join("ACGT"[rng.choice(4, p=freq[:, j])] for j in range(motif.length))


@pytest.fixture(scope="module")
def jaspar():
    return motifs.read_jaspar()


@pytest.fixture(scope="module")
def genome(tmp_path_factory, jaspar):
    """chr1, chr2 (200 kb each, GC 0.42) as an indexed FASTA; 600 CREs of 300-500 bp; CTCF sites (sampled from
    the matrix, every other one reverse-complemented) planted in the 40 CREs of set 'planted' and in 6 others."""
    rng = np.random.default_rng(0)
    chroms = {c: list(_random_bases(rng, 200_000)) for c in ("chr1", "chr2")}
    slots = np.arange(300) * 650
    cres = pd.concat([pd.DataFrame({"chrom": c, "start": slots + rng.integers(0, 100, len(slots))})
                      for c in chroms], ignore_index=True)
    cres["end"] = cres["start"] + rng.integers(300, 501, len(cres))
    cres.index = [f"{c}:{s}-{e}" for c, s, e in zip(cres.chrom, cres.start, cres.end)]
    order = rng.permutation(len(cres))
    planted, decoys, control = order[:40], order[40:46], order[46:86]
    for n, i in enumerate(np.concatenate([planted, decoys])):
        site = _sample_site(rng, jaspar[PLANTED])
        site = _reverse_complement(site) if n % 2 else site
        at = cres.start.iloc[i] + rng.integers(0, cres.end.iloc[i] - cres.start.iloc[i] - len(site))
        chroms[cres.chrom.iloc[i]][at:at + len(site)] = site
    path = tmp_path_factory.mktemp("genome") / "genome.fa"
    with open(path, "w") as handle:
        for c, bases in chroms.items():
            seq = "".join(bases)
            handle.write(f">{c}\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n")
    sets = {"planted": list(cres.index[planted]), "control": list(cres.index[control])}
    return {"fasta": path, "cres": cres, "sets": sets, "chroms": chroms}


def test_read_jaspar_shipped_collection(jaspar):
    assert len(jaspar) == 879
    for motif_id, motif in jaspar.items():
        assert motif.id == motif_id and motif.counts.shape == (4, motif.length) and motif.length >= 5
        assert (motif.counts >= 0).all() and (motif.counts.sum(0) > 0).all()
    assert jaspar["MA0004.1"].label == "MA0004.1 Arnt"
    assert jaspar["MA0004.1"].counts[:, 0].tolist() == [4, 16, 0, 0]
    # symbols are compared case-insensitively; a dimer is found by either partner
    assert list(motifs.read_jaspar(names=["Pax5"])) == ["MA0014.4"]
    assert list(motifs.read_jaspar(names="SPI1")) == ["MA0080.7"]
    assert "MA0059.2" in motifs.read_jaspar(names=["myc"])      # MAX::MYC


def test_log_odds_pseudocount_and_background():
    counts = np.array([[10, 0], [0, 0], [0, 10], [0, 0]], dtype=float)
    pwm = motifs.log_odds(counts, pseudocount=0.8)
    assert pwm[0, 0] == pytest.approx(np.log2((10 + 0.2) / 10.8 / 0.25))
    assert pwm[1, 0] == pytest.approx(np.log2(0.2 / 10.8 / 0.25))
    bg = motifs.gc_background(GC)
    np.testing.assert_allclose(bg, [0.29, 0.21, 0.21, 0.29])
    np.testing.assert_allclose(motifs.log_odds(np.full((4, 3), 5.0) * bg[:, None], bg), 0, atol=1e-12)
    with pytest.raises(ValueError, match="4 x length"):
        motifs.log_odds(counts.T)


def test_score_threshold_matches_enumeration():
    rng = np.random.default_rng(3)
    bg = motifs.gc_background(GC)
    pwm = motifs.log_odds(rng.integers(0, 20, size=(4, 5)).astype(float), bg)
    rounded = np.round(pwm * motifs.SCALE).astype(int)
    words = np.array(list(itertools.product(range(4), repeat=5)))          # all 4^5 words
    scores = rounded[words, np.arange(5)].sum(1)
    probs = bg[words].prod(1)
    for pvalue in (0.2, 0.05, 1e-2, 3e-3, 1e-3):
        units = round(motifs.score_threshold(pwm, bg, pvalue) * motifs.SCALE)
        assert probs[scores >= units].sum() <= pvalue < probs[scores >= units - 1].sum()
    assert motifs.score_threshold(pwm, bg, probs.min() / 2) == np.inf       # rarer than the rarest word
    assert motifs.score_threshold(pwm, bg, 0.999) <= scores.min() / motifs.SCALE + 1


def test_scan_finds_sites_on_both_strands_not_across_n(jaspar):
    rng = np.random.default_rng(1)
    ctcf = jaspar[PLANTED]
    consensus = "".join("ACGT"[b] for b in ctcf.counts.argmax(0))
    flank = [_random_bases(rng, 60) for _ in range(4)]
    sequences = [flank[0] + consensus + flank[1], flank[2] + _reverse_complement(consensus) + flank[3],
                 flank[0] + consensus[:7] + "N" + consensus[8:] + flank[1], consensus.lower(), consensus[:-1], ""]
    hits = motifs.scan(sequences, [ctcf], background=motifs.gc_background(GC))
    assert hits[:, 0].tolist() == [True, True, False, True, False, False]
    np.testing.assert_array_equal(motifs.one_hot("ACgtN").argmax(1)[:4], [0, 1, 2, 3])
    assert motifs.one_hot("N").sum() == 0
    assert motifs.gc_content(["GGCA", "NNNN", "ATAT"])[[0, 2]].tolist() == [0.75, 0.0]
    assert np.isnan(motifs.gc_content(["NN"])[0])


def test_scan_agrees_with_position_by_position_scoring(jaspar):
    rng = np.random.default_rng(2)
    bg = motifs.gc_background(GC)
    chosen = [jaspar[k] for k in ("MA0139.2", "MA0080.7", "MA0014.4", "MA0059.2", "MA1930.2")]
    sequences = [_random_bases(rng, int(n)) for n in rng.integers(10, 300, 40)]
    sequences[0] = sequences[0][:5] + "NN" + sequences[0][7:]
    hits = motifs.scan(sequences, chosen, pvalue=2e-3, background=bg)
    for k, motif in enumerate(chosen):
        forward = np.round(motifs.log_odds(motif.counts, bg) * motifs.SCALE)
        for strand in (forward, forward[::-1, ::-1]):
            assert motifs.score_threshold(strand / motifs.SCALE, bg, 2e-3) == \
                motifs.score_threshold(forward / motifs.SCALE, bg, 2e-3)    # symmetric background
        units = motifs.score_threshold(forward / motifs.SCALE, bg, 2e-3) * motifs.SCALE - 1e-6
        for i, seq in enumerate(sequences):
            expected = False
            for at in range(len(seq) - motif.length + 1):
                word = seq[at:at + motif.length]
                if "N" in word:
                    continue
                idx = ["ACGT".index(c) for c in word]
                for strand in (forward, forward[::-1, ::-1]):
                    expected |= strand[idx, np.arange(motif.length)].sum() >= units
            assert hits[i, k] == expected, (i, motif.label)
    assert hits.any() and not hits.all()


def test_cre_sequences_and_planted_sites_found(genome, jaspar):
    cres = genome["cres"]
    sequences = motifs.cre_sequences(cres, genome["fasta"])
    first = cres.iloc[0]
    assert sequences[0] == "".join(genome["chroms"][first.chrom][first.start:first.end])
    assert [len(s) for s in sequences] == (cres.end - cres.start).tolist()
    assert abs(np.mean(motifs.gc_content(sequences)) - GC) < 0.01
    hits = pd.Series(motifs.scan(sequences, [jaspar[PLANTED]])[:, 0], index=cres.index)
    assert hits[genome["sets"]["planted"]].mean() >= 0.9            # sampled sites: ~97% pass p < 1e-4
    assert hits[genome["sets"]["control"]].mean() <= 0.25            # chance: ~2 x 400 x 1e-4 per CRE


def test_cre_sequences_errors_name_the_fix(genome, tmp_path):
    cres = genome["cres"]
    renamed = tmp_path / "ensembl.fa"
    renamed.write_text(open(genome["fasta"]).read().replace(">chr", ">"))
    with pytest.raises(data.InputError, match=r"chr1.*without the .chr. prefix"):
        motifs.cre_sequences(cres, renamed)
    other = cres.assign(chrom="chrX")
    with pytest.raises(data.InputError, match=r"chrX.*genome build"):
        motifs.cre_sequences(other, genome["fasta"])
    with pytest.raises(data.InputError, match="genome build"):
        motifs.cre_sequences(cres.assign(end=cres.end + 300_000), genome["fasta"])
    with pytest.raises(data.InputError, match="not found"):
        motifs.cre_sequences(cres, tmp_path / "missing.fa")
    gzipped = tmp_path / "plain_gzip.fa.gz"                               # gzip, not bgzip: cannot be indexed
    with gzip.open(gzipped, "wt") as handle:
        handle.write(">chr1\nACGT\n")
    with pytest.raises(data.InputError, match="samtools faidx"):
        motifs.cre_sequences(cres.iloc[:1], gzipped)


def test_motif_enrichment_finds_planted_motif_only(genome, jaspar):
    table = enrichment.motif_enrichment(genome["sets"], genome["cres"], genome["fasta"], motifs=jaspar)
    assert list(table.columns) == ["cre_set", "region_set", "n_set", "n_set_overlap", "n_background",
                                   "n_background_overlap", "frac_set", "frac_background", "odds_ratio", "pvalue",
                                   "qvalue"]
    assert len(table) == 2 * len(jaspar)
    hit = table.set_index(["cre_set", "region_set"])
    row = hit.loc[("planted", "MA0139.2 CTCF")]
    assert row["qvalue"] < 1e-3 and row["odds_ratio"] > 3 and row["n_set"] == 40
    planted = table[table.cre_set == "planted"]
    unrelated = planted[~planted.region_set.str.contains("CTCF")]
    assert (unrelated["qvalue"] > 0.05).mean() > 0.95
    assert (table.loc[table.cre_set == "control", "qvalue"] > 0.05).mean() > 0.95


def test_gc_matched_background_and_tf_enrichment(genome, jaspar):
    cres, fasta = genome["cres"], genome["fasta"]
    rng = np.random.default_rng(4)
    counts = sp.csr_matrix(rng.poisson(0.3, size=(50, len(cres))).astype(np.float32))
    atac = ad.AnnData(counts, var=cres.copy())
    cov = enrichment.matching_covariates(atac, genome_fasta=fasta)
    assert list(cov.columns) == ["accessibility", "width", "gc"]
    np.testing.assert_allclose(cov["gc"], motifs.gc_content(motifs.cre_sequences(cres, fasta)))
    plain = enrichment.matching_bins(cov["accessibility"], cov["width"], n_accessibility_bins=5)
    with_gc = enrichment.matching_bins(cov["accessibility"], cov["width"], n_accessibility_bins=5, gc=cov["gc"])
    assert with_gc.max() > plain.max() and np.bincount(with_gc).min() >= 20
    for label in np.unique(with_gc):    # GC bins refine the accessibility x width bins
        assert len(np.unique(plain[with_gc == label])) == 1
    chosen = {k: jaspar[k] for k in list(jaspar)[:40] + [PLANTED]}
    peaks = cres.loc[genome["sets"]["planted"][:20], ["chrom", "start", "end"]].reset_index(drop=True)
    table = enrichment.tf_enrichment(genome["sets"], cres, region_sets={"peaks": peaks}, genome_fasta=fasta,
                                     motifs=chosen, bins=with_gc)
    assert table.columns[0] == "annotation" and list(table.columns[1:]) == list(
        enrichment.region_set_enrichment(genome["sets"], {"peaks": peaks}, cres).columns)
    assert table["annotation"].value_counts().to_dict() == {"motif": 2 * len(chosen), "region set": 2}
    np.testing.assert_allclose(table["qvalue"], enrichment.bh_qvalues(table["pvalue"]))
    hit = table.set_index(["cre_set", "region_set"])
    assert hit.loc[("planted", "MA0139.2 CTCF"), "qvalue"] < 1e-3
    assert hit.loc[("planted", "peaks"), "qvalue"] < 1e-3
    assert hit.loc[("planted", "MA0139.2 CTCF"), "n_background"] < len(cres) - 40    # the matched background
    with pytest.raises(ValueError, match="genome_fasta"):
        enrichment.tf_enrichment(genome["sets"], cres, motifs=chosen)
