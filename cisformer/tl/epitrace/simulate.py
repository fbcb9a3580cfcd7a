"""Simulated cells with an age signal planted at clock peaks: the truth the tests and notebook 07 check against."""

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...data import vocab
from .clock import coordinates


# --------------------------------------------------------------------------------------------- simulation
def simulate_aged_cells(*, n_cells: int = 600, n_cell_types: int = 3, n_clock_peaks: int = 400,
                        n_other_peaks: int = 800, age_linked_fraction: float = 0.6, rising_fraction: float = 0.8,
                        age_effect: float = 2.5, depth_sd: float = 0.3, unlisted_age_peaks: int = 0,
                        clock_loci: pd.DataFrame | None = None, seed: int = 0) -> tuple[ad.AnnData, pd.DataFrame]:
    """Simulated scATAC with a planted age signal at clock peaks (the truth for :func:`age`).

    Each cell has a cell type and an age ``~ Uniform[0, 1]`` (``obs["age"]``). Each peak has a cell-type baseline
    open rate (non-clock peaks follow cell-type programs: high in one type, low elsewhere; clock peaks have
    milder type differences). A fraction ``age_linked_fraction`` of the clock peaks is age-linked: on the logit
    scale its rate moves by ``age_effect * sign * (age - 0.5)``, ``sign = +1`` (opens with age) for a fraction
    ``rising_fraction`` of them, -1 for the rest. A per-cell depth factor (log-normal, sd ``depth_sd``)
    multiplies every rate; counts are Poisson of the rate (mostly 0/1, as scATAC). ``unlisted_age_peaks`` of the
    non-clock peaks also open with age (age-linked peaks missing from the clock, for the convergence loop).

    Parameters
    ----------
    clock_loci
        None: synthetic loci, one 2-bp locus in the middle of each clock peak on chromosomes ``chr1``-``chr3``.
        A frame of real loci (e.g. the shipped mm10 clock): clock peaks are 500 bp centred on a random sample of
        them and non-clock peaks sit 20 kb further (any that happens to overlap a locus is counted as clock).

    Returns
    -------
    (atac, clock_loci): ``atac`` follows the data contract (CSR float32 counts, ``var`` chrom/start/end,
    ``obs`` cell_type / age, ``uns["genome"]``) with truth in ``var``: ``clock`` (overlaps a locus),
    ``age_sign`` (+1 / -1 planted, 0 none), ``planned_clock`` (placed on a locus); the loci used.
    """
    rng = np.random.default_rng(seed)
    n_peaks = n_clock_peaks + n_other_peaks
    cell_type = rng.integers(n_cell_types, size=n_cells)
    ages = rng.uniform(0, 1, size=n_cells)
    depth = np.exp(rng.normal(0, depth_sd, size=n_cells))

    # peak coordinates and loci
    if clock_loci is None:
        centres = (np.arange(n_peaks) + 1) * 5_000
        chrom = np.array([f"chr{1 + i % 3}" for i in range(n_peaks)], dtype=object)
        start = centres - 250
        peaks = pd.DataFrame({"chrom": chrom, "start": start, "end": start + 500})
        loci = pd.DataFrame({"chrom": chrom[:n_clock_peaks], "start": centres[:n_clock_peaks],
                             "end": centres[:n_clock_peaks] + 2})
    else:
        loci_all = coordinates(clock_loci)
        pick = np.sort(rng.choice(len(loci_all), size=n_clock_peaks, replace=False))
        loci = loci_all.iloc[pick].reset_index(drop=True)
        rest = np.setdiff1d(np.arange(len(loci_all)), pick)
        other = loci_all.iloc[np.sort(rng.choice(rest, size=n_other_peaks, replace=len(rest) < n_other_peaks))]
        centres = np.concatenate([loci["start"].to_numpy(), other["start"].to_numpy() + 20_000])
        chrom = np.concatenate([loci["chrom"].to_numpy(), other["chrom"].to_numpy()]).astype(object)
        peaks = pd.DataFrame({"chrom": chrom, "start": centres - 250, "end": centres + 250})
        loci = loci_all
    is_clock_planned = np.arange(n_peaks) < n_clock_peaks

    # rates: logit baseline per (type, peak)
    logit = np.empty((n_cell_types, n_peaks))
    base_clock = rng.normal(-2.0, 0.5, size=n_clock_peaks)
    logit[:, :n_clock_peaks] = base_clock + rng.normal(0, 0.4, size=(n_cell_types, n_clock_peaks))
    home = rng.integers(n_cell_types, size=n_other_peaks)
    logit[:, n_clock_peaks:] = -3.0
    logit[home, n_clock_peaks + np.arange(n_other_peaks)] = -0.5
    sign = np.zeros(n_peaks, dtype=int)
    linked = np.flatnonzero(rng.uniform(size=n_clock_peaks) < age_linked_fraction)
    sign[linked] = np.where(rng.uniform(size=len(linked)) < rising_fraction, 1, -1)
    sign[n_clock_peaks:n_clock_peaks + unlisted_age_peaks] = 1
    eta = logit[cell_type] + age_effect * sign[None, :] * (ages[:, None] - 0.5)
    rate = depth[:, None] / (1 + np.exp(-eta))
    counts = rng.poisson(rate).astype(np.float32)

    qi, _ = vocab.overlap_index(peaks, loci)
    clock = np.zeros(n_peaks, dtype=bool)
    clock[qi] = True
    var = peaks.copy()
    var["clock"] = clock
    var["age_sign"] = sign
    var["planned_clock"] = is_clock_planned
    var.index = vocab.peak_names(peaks)
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{t}" for t in cell_type]), "age": ages,
                        "depth": depth, "batch": pd.Categorical(["b0"] * n_cells)},
                       index=[f"cell{i}" for i in range(n_cells)])
    atac = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=var)
    atac.uns["genome"] = "mm10" if clock_loci is not None else "synthetic"
    atac.uns["counts"] = True
    return atac, loci.reset_index(drop=True)
