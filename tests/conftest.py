import pytest
import torch


# One torch thread for the whole session, module-scoped fixtures included (a per-test fixture left them on the
# default threads, so a model predicted in a fixture and again in a test differed in float rounding): on 2 shared
# cores, thread spin-waits make tiny models slower, not faster, and results do not depend on the machine's cores.
torch.set_num_threads(1)


@pytest.fixture
def tenx_download(tmp_path):
    """A 10x Multiome download in miniature, made from shipped data: Signac's fragments (54 barcodes, chr1), BMMC RNA
    counts for those barcodes, peaks tiling chr1:0-1 Mb, written as a Cell Ranger ARC filtered_feature_bc_matrix.h5,
    and a labels CSV (column 'celltype'). Returns a dict of the paths (h5, fragments, labels) and the peaks."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from cisformer import data

    frags = data.reference_path("fragments_tiny")
    barcodes = pd.read_csv(frags, sep="\t", header=None)[3].unique()
    rna, _ = data.load("bmmc")
    rna = rna[: len(barcodes)].copy()
    rna.obs_names = barcodes
    starts = np.arange(0, 1_000_000, 5_000)
    peaks = pd.DataFrame({"chrom": "chr1", "start": starts, "end": starts + 5_000})
    atac = ad.AnnData(sp.csr_matrix((len(barcodes), len(peaks)), dtype=np.float32), obs=pd.DataFrame(index=barcodes),
                      var=pd.DataFrame(index=[f"chr1:{s}-{e}" for s, e in zip(peaks.start, peaks.end)]))
    folder = tmp_path / "download"
    folder.mkdir()
    data.write_10x_h5(folder / "filtered_feature_bc_matrix.h5", rna, atac)
    pd.DataFrame({"barcode": barcodes, "celltype": ["B"] * 20 + ["T"] * (len(barcodes) - 20)}).to_csv(
        folder / "labels.csv", index=False)
    return {"h5": folder / "filtered_feature_bc_matrix.h5", "fragments": frags, "labels": folder / "labels.csv",
            "peaks": peaks}
