"""TF motif scanning of CRE sequences: JASPAR matrices, log-odds PWMs, exact p-value thresholds, a vectorised scan.

::

    motifs = read_jaspar()                                      # the shipped JASPAR 2024 CORE vertebrates, 879
    sequences = cre_sequences(atac.var, "mm10.fa")              # one string per CRE, from an indexed FASTA
    hits = scan(sequences, motifs, pvalue=1e-4)                 # bool, CREs x motifs: >= 1 hit on either strand

* A motif is a JASPAR count matrix (:class:`Motif`, rows A, C, G, T). :func:`log_odds` turns it into a
  position weight matrix of log2 odds against an i.i.d. background, with a pseudocount spread over the bases in
  proportion to the background (0.8 and the same formula as TFBSTools' ``toPWM``, whose matrices chromVAR
  scans with motifmatchr).
* :func:`score_threshold` is the score a window reaches with probability <= ``pvalue`` under the background, by
  dynamic programming over scores rounded to 1/100 bit (as FIMO and MOODS compute p-values). The scan scores with
  the same rounded matrix, so the p-value of a hit is exact for the rounded scores.
* :func:`scan` scores both strands (the reverse-complemented matrix on the forward sequence) at every position
  where the whole motif fits; a window holding any base other than A/C/G/T (N, IUPAC codes) never matches.
  Motifs too short to reach ``pvalue`` never match either: under a uniform background a 6-bp motif's best word
  has probability 4^-6 = 2.4e-4, above the default 1e-4 (98 of the 879 shipped motifs, 5-6 bp, under a uniform
  background).

Speed (:func:`scan`): each window's scores for all motifs are one float32 matrix product (one-hot windows x
integer-valued weights, exact), motifs grouped by length. On one core (OpenBLAS), 10,000 sequences of 500 bp x
the 879 JASPAR motifs (5e6 positions, both strands) took 43 s, i.e. about 200,000 sequence-motif pairs per
second, plus about 1.5 s for the 1,758 thresholds.

Coordinates are 0-based half-open (``chrom``, ``start``, ``end``), as everywhere in cisformer.
"""
from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

BASES = "ACGT"
SCALE = 100                  # scores are rounded to 1 / SCALE bit, for the p-value dynamic programme and the scan
_OTHER = 4                   # code of any base other than A, C, G, T
_FORBIDDEN = -100_000        # weight of a non-ACGT base inside a motif window (in 1 / SCALE bit): never a hit
_CHUNK_POSITIONS = 32_768    # windows scored per matrix product (memory: this x 2 x motifs in a length group x 4 B)
_MIN_GROUP = 100             # motifs grouped by length into groups of at least this many (less zero padding)


# --------------------------------------------------------------------------------------------- matrices

@dataclass(frozen=True)
class Motif:
    """A JASPAR count matrix: ``counts`` is 4 x length, rows A, C, G, T.

    Parameters
    ----------
    id
        Matrix ID, e.g. ``"MA0080.7"``.
    name
        TF name, e.g. ``"Spi1"`` (``"MAX::MYC"`` for a heterodimer).
    counts
        float array, 4 x length: counts of each base (rows A, C, G, T) at each motif position.
    """

    id: str
    name: str
    counts: np.ndarray

    @property
    def label(self) -> str:
        """``"<id> <name>"``, e.g. ``"MA0080.7 Spi1"``."""
        return f"{self.id} {self.name}"

    @property
    def length(self) -> int:
        """Motif length (bp): the number of columns of ``counts``."""
        return self.counts.shape[1]


def read_jaspar(*, path=None, names=None) -> dict[str, Motif]:
    """Read count matrices in JASPAR format (``>MA0004.1 Arnt`` then the rows ``A [ ... ]``, C, G, T).

    Parameters
    ----------
    path
        A ``.jaspar`` file, gzipped or not (default: the shipped JASPAR 2024 CORE vertebrates non-redundant
        collection, 879 motifs, :func:`cisformer.data.reference_path` ``"jaspar_jaspar"``).
    names
        Keep only the motifs of these TF symbols, compared case-insensitively (``"Pax5"`` finds ``PAX5``); a
        heterodimer motif (``"MAX::MYC"``) is kept when either partner is named.

    Returns
    -------
    Motif ID -> :class:`Motif`, in file order.
    """
    if path is None:
        from ..data import reference_path

        path = reference_path("jaspar_jaspar")
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    wanted = None if names is None else {str(n).upper() for n in ([names] if isinstance(names, str) else names)}
    motifs, header, rows = {}, None, {}

    def finish():
        if header is None:
            return
        if sorted(rows) != sorted(BASES) or len({len(r) for r in rows.values()}) != 1:
            raise ValueError(f"{path}: motif {header[0]} needs rows A, C, G, T of one length (found {sorted(rows)})")
        motif_id, name = header
        if wanted is None or wanted & {name.upper(), *name.upper().split("::")}:
            counts = np.array([rows[b] for b in BASES], dtype=float)
            if (counts < 0).any() or (counts.sum(0) <= 0).any():
                raise ValueError(f"{path}: motif {motif_id} has negative counts or an empty column")
            motifs[motif_id] = Motif(motif_id, name, counts)

    with opener(path, "rt") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                finish()
                fields = line[1:].split(None, 1)
                header, rows = (fields[0], fields[1].strip() if len(fields) > 1 else fields[0]), {}
            elif header is not None and line[0] in BASES and "[" in line:
                rows[line[0]] = [float(v) for v in line[line.index("[") + 1:line.rindex("]")].split()]
            else:
                raise ValueError(f"{path}: not JASPAR format at line {line[:40]!r} (expected '>ID name' or "
                                 "'A [ counts ]')")
        finish()
    return motifs


def gc_background(gc: float) -> np.ndarray:
    """I.i.d. base probabilities (A, C, G, T) of a genome with G+C fraction ``gc``: ``((1-gc)/2, gc/2, gc/2,
    (1-gc)/2)``.

    Parameters
    ----------
    gc
        G+C fraction, in (0, 1).

    Returns
    -------
    float array of 4 probabilities, e.g. the ``background`` of :func:`log_odds`, :func:`score_threshold`, :func:`scan`.
    """
    if not 0 < gc < 1:
        raise ValueError(f"gc_background: gc must lie in (0, 1), got {gc}")
    return np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])


def _background(background) -> np.ndarray:
    bg = np.full(4, 0.25) if background is None else np.asarray(background, dtype=float)
    if bg.shape != (4,) or (bg <= 0).any() or not np.isclose(bg.sum(), 1):
        raise ValueError(f"background must be 4 positive probabilities of A, C, G, T summing to 1, got {background}")
    return bg / bg.sum()


def log_odds(counts, background=None, *, pseudocount: float = 0.8) -> np.ndarray:
    """Position weight matrix of log2 odds: ``log2(p / background)`` with
    ``p = (count + pseudocount * background) / (column total + pseudocount)``.

    Parameters
    ----------
    counts
        4 x length counts (rows A, C, G, T), e.g. :attr:`Motif.counts`.
    background
        Base probabilities (A, C, G, T); default uniform. :func:`gc_background` gives a genome's.
    pseudocount
        Pseudo-observations added to each column, spread over the bases as the background.

    Returns
    -------
    float array, 4 x length.
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != 4:
        raise ValueError(f"log_odds: counts must be 4 x length (rows A, C, G, T), got shape {counts.shape}")
    bg = _background(background)[:, None]
    p = (counts + pseudocount * bg) / (counts.sum(0, keepdims=True) + pseudocount)
    return np.log2(p / bg)


def _rounded(pwm) -> np.ndarray:
    """The scan's integer score matrix: the PWM in units of 1 / SCALE bit."""
    return np.round(np.asarray(pwm, dtype=float) * SCALE).astype(np.int64)


def _threshold_units(scores: np.ndarray, bg: np.ndarray, pvalue: float) -> int | None:
    """Smallest integer score whose upper tail under ``bg`` is <= ``pvalue`` (None: no score is that rare)."""
    low = scores.min(0)
    shifted = scores - low                       # >= 0 per column
    dist = np.ones(1)                            # probability of each shifted total score so far
    for col in shifted.T:
        new = np.zeros(len(dist) + col.max())
        for b in range(4):
            new[col[b]:col[b] + len(dist)] += bg[b] * dist
        dist = new
    tail = np.cumsum(dist[::-1])[::-1]           # P(total >= s), non-increasing; small terms summed first
    first = int(np.count_nonzero(tail > pvalue))  # the first s with P(total >= s) <= pvalue
    return None if first == len(tail) else first + int(low.sum())


def score_threshold(pwm, background=None, pvalue: float = 1e-4) -> float:
    """Score (bits) that a window of i.i.d. background bases reaches with probability <= ``pvalue``.

    The PWM is rounded to 1/100 bit and the distribution of window scores is computed exactly by dynamic
    programming over the columns (as FIMO and MOODS do); the threshold is the smallest rounded score whose upper
    tail probability is <= ``pvalue``. :func:`scan` calls a window a hit when its rounded score reaches it.

    Parameters
    ----------
    pwm
        4 x length log-odds matrix (:func:`log_odds`).
    background
        Base probabilities (A, C, G, T) of the i.i.d. null; default uniform.
    pvalue
        Largest probability of a hit at one position of one strand.

    Returns
    -------
    The threshold in bits (a multiple of 1/100); ``inf`` when even the best word is more probable than
    ``pvalue`` (the motif can never match).
    """
    if not 0 < pvalue < 1:
        raise ValueError(f"score_threshold: pvalue must lie in (0, 1), got {pvalue}")
    units = _threshold_units(_rounded(pwm), _background(background), pvalue)
    return np.inf if units is None else units / SCALE


# --------------------------------------------------------------------------------------------- sequences

_CODE = np.full(256, _OTHER, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = _i


def _codes(seq: str) -> np.ndarray:
    """0..3 for A, C, G, T (either case), 4 for anything else."""
    return _CODE[np.frombuffer(seq.encode("ascii", "replace"), dtype=np.uint8)]


def one_hot(seq: str) -> np.ndarray:
    """Length x 4 float32 one-hot encoding (columns A, C, G, T, either case); other bases (N, ...) are all-zero
    rows.

    Parameters
    ----------
    seq
        DNA sequence.

    Returns
    -------
    float32 array, ``len(seq)`` x 4.
    """
    return np.eye(5, 4, dtype=np.float32)[_codes(seq)]


def gc_content(sequences) -> np.ndarray:
    """G+C fraction of the A/C/G/T bases of each sequence (other bases ignored; NaN when it holds none).

    Parameters
    ----------
    sequences
        DNA strings (e.g. :func:`cre_sequences`).

    Returns
    -------
    float array, one fraction per sequence.
    """
    out = np.full(len(sequences), np.nan)
    for i, seq in enumerate(sequences):
        counts = np.bincount(_codes(seq), minlength=5)[:4]
        if counts.sum():
            out[i] = (counts[1] + counts[2]) / counts.sum()
    return out


def base_composition(sequences) -> np.ndarray:
    """Strand-symmetric base probabilities (A, C, G, T) of the A/C/G/T bases of ``sequences``: A = T, C = G.

    Parameters
    ----------
    sequences
        DNA strings (e.g. :func:`cre_sequences`); bases other than A/C/G/T are ignored (ValueError when none is).

    Returns
    -------
    float array of 4 probabilities (A, C, G, T) summing to 1.
    """
    counts = np.zeros(5)
    for seq in sequences:
        counts += np.bincount(_codes(seq), minlength=5)
    counts = counts[:4] + counts[:4][::-1]
    if not counts.sum():
        raise ValueError("base_composition: the sequences hold no A, C, G or T")
    return counts / counts.sum()


def cre_sequences(cre_var: pd.DataFrame, fasta) -> list[str]:
    """Upper-case sequence of each CRE from an indexed genome FASTA (pyfaidx; a ``.fai`` index is built next to
    the file when missing).

    Parameters
    ----------
    cre_var
        DataFrame with ``chrom``, ``start``, ``end`` (0-based half-open), e.g. ``atac.var``.
    fasta
        Path of the genome FASTA of the CREs' build, uncompressed (bgzip-compressed needs Biopython).

    Returns
    -------
    One string per row of ``cre_var``, in order.

    Raises
    ------
    cisformer.data.InputError
        The FASTA is missing or cannot be indexed, lacks a chromosome of the CREs (e.g. ``chr1`` vs ``1``
        naming), or a CRE runs past its chromosome's end (another genome build).
    """
    import pyfaidx

    from ..data import input_error

    for field in ("chrom", "start", "end"):
        if field not in cre_var:
            raise ValueError(f"cre_sequences: cre_var lacks '{field}' (pass atac.var with chrom/start/end)")
    path = Path(fasta)
    if not path.is_file():
        raise input_error(path, "file", "genome FASTA not found",
                     "download the genome of the CREs' build (e.g. UCSC hg38.fa / mm10.fa) and pass its path")
    try:
        genome = pyfaidx.Fasta(str(path), as_raw=True, sequence_always_upper=True)
    except Exception as exc:  # pyfaidx raises several types (indexing, compression, permission)
        raise input_error(path, "index", f"cannot read or index the FASTA ({type(exc).__name__}: {exc})",
                     "pass an uncompressed FASTA (gunzip it) in a folder you can write to, where its .fai index "
                     "is built, or index it first with `samtools faidx FILE`") from exc
    with genome:
        lengths = {name: len(genome[name]) for name in genome.keys()}
        chroms = cre_var["chrom"].astype(str).to_numpy()
        missing = sorted(set(chroms) - set(lengths))
        if missing:
            have = sorted(lengths)[:5]
            renamed = {c: c[3:] if c.startswith("chr") else "chr" + c for c in missing}
            same = [(c, r) for c, r in renamed.items() if r in lengths]
            if same:
                c, r = same[0]
                hint = (f"the FASTA names chromosomes {'without' if c.startswith('chr') else 'with'} the 'chr' "
                        f"prefix ('{r}' for '{c}'): rename the CREs' chromosomes or use a FASTA named like them "
                        "(UCSC names chr1.., Ensembl 1..)")
            else:
                hint = "use the FASTA of the genome build the CREs are on (e.g. hg38 / mm10)"
            raise input_error(path, "chrom", f"no sequence for chromosome(s) {missing[:5]} of the CREs (FASTA has "
                         f"{have}{' ...' if len(lengths) > 5 else ''})", hint)
        starts = pd.to_numeric(cre_var["start"]).to_numpy(dtype=np.int64)
        ends = pd.to_numeric(cre_var["end"]).to_numpy(dtype=np.int64)
        limit = np.array([lengths[c] for c in chroms], dtype=np.int64)
        bad = np.flatnonzero((starts < 0) | (ends < starts) | (ends > limit))
        if len(bad):
            i = bad[0]
            raise input_error(path, "end", f"{len(bad)} CREs lie outside their chromosome, e.g. {chroms[i]}:{starts[i]}-"
                         f"{ends[i]} (length {limit[i]})",
                         "use the FASTA of the genome build the CREs are on (e.g. hg38 vs hg19, mm10 vs mm39)")
        return [genome[c][int(s):int(e)] for c, s, e in zip(chroms, starts, ends)]


# --------------------------------------------------------------------------------------------- scan

def _length_groups(lengths: np.ndarray) -> list[np.ndarray]:
    """Motif positions grouped by increasing length, each group (but maybe the last) of >= _MIN_GROUP motifs."""
    order = np.argsort(lengths, kind="stable")
    groups, current = [], []
    for length in np.unique(lengths):
        current.extend(order[lengths[order] == length])
        if len(current) >= _MIN_GROUP:
            groups.append(np.array(current))
            current = []
    if current:
        groups.append(np.array(current))
    return groups


def scan(sequences, motifs, pvalue: float = 1e-4, *, background=None) -> np.ndarray:
    """Which sequences hold at least one hit of each motif, on either strand.

    A hit is a window (the motif's length, fully inside the sequence, only A/C/G/T bases) whose rounded log-odds
    score reaches :func:`score_threshold` at ``pvalue``, for the motif or its reverse complement.

    Parameters
    ----------
    sequences
        Strings (e.g. :func:`cre_sequences`), any length and case.
    motifs
        :class:`Motif` objects, or the dict :func:`read_jaspar` returns.
    pvalue
        Per-position, per-strand p-value of a hit under the background.
    background
        Base probabilities (A, C, G, T) of the PWMs and of the p-value null; default the strand-symmetric
        composition of ``sequences`` (:func:`base_composition`), as motifmatchr's ``bg="subject"``.

    Returns
    -------
    bool array, sequences x motifs (in the order of ``motifs``).

    Notes
    -----
    About 200,000 sequence-motif pairs of 500 bp per second on one core (see the module notes). Memory stays
    below ~0.2 GB whatever the number of sequences, as long as none is longer than ~30 kb (a chunk holds at
    least one whole sequence).
    """
    motifs = list(motifs.values()) if isinstance(motifs, Mapping) else list(motifs)
    sequences = list(sequences)
    if not 0 < pvalue < 1:
        raise ValueError(f"scan: pvalue must lie in (0, 1), got {pvalue}")
    bg = base_composition(sequences) if background is None else _background(background)
    hits = np.zeros((len(sequences), len(motifs)), dtype=bool)
    # rounded weights and thresholds of every motif on each strand; motifs that cannot reach pvalue are left out
    weights, kept = [], []
    for k, motif in enumerate(motifs):
        forward = _rounded(log_odds(motif.counts, bg))
        reverse = forward[::-1, ::-1]            # the reverse complement, read on the forward strand
        pair = [(w, _threshold_units(w, bg, pvalue)) for w in (forward, reverse)]
        if all(t is not None for _, t in pair):
            weights.append(pair)
            kept.append(k)
    if not kept or not sequences:
        return hits
    lengths = np.array([w[0][0].shape[1] for w in weights])
    width = int(lengths.max())
    plans = []   # per length group: motif columns, (5 * group width) x (2 * motifs) weights, thresholds
    for group in _length_groups(lengths):
        group_width = int(lengths[group].max())
        weight = np.zeros((group_width, 5, 2, len(group)), dtype=np.float32)   # window position, base, strand
        threshold = np.zeros((2, len(group)), dtype=np.float32)
        for j, m in enumerate(group):
            for strand, (w, t) in enumerate(weights[m]):
                weight[:w.shape[1], :4, strand, j] = w.T
                weight[:w.shape[1], 4, strand, j] = _FORBIDDEN
                threshold[strand, j] = t
        plans.append((np.asarray(kept)[group], weight.reshape(group_width * 5, 2 * len(group)), threshold.ravel()))
    # sequences in order of length, in chunks of about _CHUNK_POSITIONS windows; padding is non-ACGT
    codes = [_codes(s) for s in sequences]
    seq_lengths = np.array([len(c) for c in codes])
    order = np.argsort(seq_lengths, kind="stable")
    eye = np.eye(5, dtype=np.float32)
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * seq_lengths[order[stop]] <= _CHUNK_POSITIONS:
            stop += 1
        rows = order[start:stop]
        n_pos = max(1, int(seq_lengths[rows[-1]]))                        # the longest of the chunk
        padded = np.full((len(rows), n_pos + width - 1), _OTHER, dtype=np.uint8)
        for i, r in enumerate(rows):
            padded[i, :seq_lengths[r]] = codes[r]
        windows = sliding_window_view(eye[padded], width, axis=1)          # (seqs, positions, 5, width)
        X = np.ascontiguousarray(windows.transpose(0, 1, 3, 2)).reshape(len(rows) * n_pos, width * 5)
        for columns, weight, threshold in plans:
            best = (X[:, :weight.shape[0]] @ weight).reshape(len(rows), n_pos, -1).max(1)   # per sequence
            strand_hit = (best >= threshold).reshape(len(rows), 2, -1)
            hits[np.ix_(rows, columns)] = strand_hit.any(1)
        start = stop
    return hits
