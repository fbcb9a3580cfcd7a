"""The argument parser of ``cisformer``: one subparser per command, with the examples of ``cisformer --help``."""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from .commands import cmd_link, cmd_predict, cmd_preprocess, cmd_train
from .inputs import add_inputs

EXAMPLES = """\
examples (a complete run on the shipped 500-cell BMMC set, CPU, about a minute):
  cisformer preprocess --dataset bmmc --out work/bmmc --min-cells 5 --min-genes 1 --min-cres 1
  cisformer train   --data work/bmmc --direction rna2atac --profile quick --out work/r2a
  cisformer predict --model work/r2a/model.pt --data work/bmmc --cells test --out work/r2a/pred.h5ad
  cisformer train   --data work/bmmc --direction atac2rna --profile quick --out work/a2r
  cisformer predict --model work/a2r/model.pt --data work/bmmc --out work/a2r/pred.h5ad
  cisformer link    --data work/bmmc --out work/links.csv
  cisformer link    --scorer deletion --model work/a2r/model.pt --data work/bmmc --out work/a2r/links.csv

your own data: paired cells x genes / cells x peaks (.h5ad pair, one .h5mu, or a 10x .h5); RNA as raw counts in X,
layers['counts'] or .raw (log-normalised values: --recover-counts inverts them exactly or refuses); peaks named
chr1:100-200, chr1-100-200, chr1_100_200, 1-100-200 or with var columns chrom/start/end:
  cisformer preprocess --rna my_rna.h5ad --atac my_atac.h5ad --cre-vocabulary human --out work/mine
  cisformer preprocess --mudata my.h5mu --cre-vocabulary human --liftover hg19 --recover-counts --out work/mine
  cisformer preprocess --10x-h5 filtered_feature_bc_matrix.h5 --fragments atac_fragments.tsv.gz \\
      --cell-types labels.csv --cell-type-column cell_type --cre-vocabulary human --name pbmc10k --out work/pbmc10k
  cisformer train --dataset pbmc10k --data-dir work/pbmc10k --direction atac2rna --out work/pbmc10k_a2r
  ./run_all.sh --data work/pbmc10k --only links_gwas --param dataset=pbmc10k --out work/pbmc10k_figures
  cisformer train --data work/mine --direction rna2atac --profile paper --device cuda --out work/mine_r2a
  cisformer predict --model work/mine_r2a/model.pt --mudata my.h5mu --out my_with_prediction.h5mu
several GPUs or CPU processes (one process each; README, "Many processes"):
  python -m torch.distributed.run --nproc_per_node 4 -m cisformer train --data work/mine --direction rna2atac ...
  (on GPUs also: accelerate launch --multi_gpu --num_processes 4 -m cisformer train ...)
"""


def _add_preprocess(sub, fmt) -> None:
    p = sub.add_parser("preprocess", formatter_class=fmt, help="pair cells, map peaks to CREs, paper QC, write a data "
                                                              "folder",
                       description="Keep the cells present in both modalities, optionally map peaks onto a CRE "
                                   "vocabulary (>= 1 bp overlap), apply the paper's QC, write OUT/rna.h5ad and "
                                   "OUT/atac.h5ad; with --name NAME, a data folder instead: OUT/datasets/"
                                   "NAME_rna.h5ad, NAME_atac.h5ad and OUT/MANIFEST (sha256 of each), which "
                                   "`--dataset NAME --data-dir OUT`, cisformer.data.load(NAME, data_dir=OUT), the "
                                   "notebooks (data_dir) and ./run_all.sh --data OUT --param dataset=NAME read.",
                       epilog="example:\n  cisformer preprocess --rna rna.h5ad --atac atac.h5ad --cre-vocabulary "
                              "human --out work/mine")
    add_inputs(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--name", help="write OUT as a data folder holding data set NAME (OUT/datasets/NAME_rna.h5ad, "
                                  "NAME_atac.h5ad, lines added to OUT/MANIFEST; several data sets can share OUT)")
    p.add_argument("--licence", default="user data", help="licence column of the MANIFEST lines with --name "
                                                          "(default 'user data')")
    p.add_argument("--cell-type-column", metavar="COLUMN",
                   help="the column holding the cell types, copied into obs['cell_type'] of both modalities: a column "
                        "of --cell-types (10x input; default 'cell_type'), or an obs column of the --rna/--atac "
                        ".h5ad, --mudata .h5mu (global or per-modality obs) or --dataset input (default: "
                        "obs['cell_type'] when present, else 'unknown'); a missing column is an error listing the "
                        "columns there are")
    p.add_argument("--cre-vocabulary", help="'human', 'mouse' or a BED file of CREs (default: keep the peaks); the "
                                            "peaks' genome build and species are checked against it first")
    p.add_argument("--liftover", choices=["hg19", "hg38"],
                   help="the peaks' build, lifted with the shipped UCSC chain to the other one before mapping "
                        "(hg19 -> hg38 for the human vocabulary); reports how many peaks failed to lift")
    p.add_argument("--recover-counts", action="store_true",
                   help="RNA stored log1p-normalised (no layers['counts'] or .raw): invert it exactly to counts "
                        "(per cell expm1 / smallest value, accepted only if every value is then an integer), else "
                        "stop with an error")
    g = p.add_argument_group("10x Multiome download")
    g.add_argument("--10x-h5", dest="tenx_h5", type=Path,
                   help="filtered_feature_bc_matrix.h5 of Cell Ranger ARC (both modalities; an input on its own)")
    g.add_argument("--fragments", type=Path, help="atac_fragments.tsv.gz: count fragments per cell on the peaks")
    g.add_argument("--peaks", type=Path, help="BED of peaks for --fragments (default: the h5's peaks)")
    g.add_argument("--cell-types", type=Path, help="CSV/TSV of cell labels: barcodes in the first (or a 'barcode') "
                                                  "column, labels in --cell-type-column")
    p.add_argument("--genome", choices=["hg38", "mm10"],
                   help="annotate genes with the shipped gene table (coordinates for links; default hg38 with "
                        "--cre-vocabulary human)")
    p.add_argument("--min-cells", type=int, default=10, help="drop genes/CREs seen in fewer cells (default 10)")
    p.add_argument("--min-genes", type=int, default=200, help="min expressed genes per cell (default 200)")
    p.add_argument("--max-genes", type=int, default=20_000, help="max expressed genes per cell (default 20000)")
    p.add_argument("--min-cres", type=int, default=500, help="min open CREs per cell (default 500)")
    p.add_argument("--max-cres", type=int, default=50_000, help="max open CREs per cell (default 50000)")
    p.set_defaults(func=cmd_preprocess)
    p.epilog += ("\n\nchecks (each stops with one error line naming the file, the field and the fix): RNA raw counts "
                 "(X, layers['counts'], .raw, or --recover-counts), ATAC without NaN/inf/negative values (binarised "
                 "as > 0), peak names, duplicated names, shared cells, genome build and species against "
                 "--cre-vocabulary (--liftover hg19), and a QC table of what each threshold removes (warning when "
                 "more than half of the cells go; error when none is left)")


def _add_train(sub, fmt) -> None:
    p = sub.add_parser("train", formatter_class=fmt, help="train one direction (checkpointed, resumable)",
                       description="Split cells into train/val/test (cisformer.data.split_cells: random, by "
                                   "cell type, by batch, or an obs 'split' column), train with early stopping on a "
                                   "validation criterion that a depth-only model cannot pass (rna2atac: per-cell "
                                   "AUROC gain over each CRE's base rate; atac2rna: gene-wise Pearson), write "
                                   "OUT/model.pt, OUT/split.csv, OUT/history.csv and OUT/checkpoints/. Running "
                                   "the same command again loads the finished model or resumes an interrupted "
                                   "run.",
                       epilog="examples:\n  cisformer train --dataset snareseq --direction rna2atac --out work/r2a\n"
                              "  cisformer train --data work/mine --direction atac2rna --profile paper "
                              "--set batch_size=64 --out work/a2r\n"
                              "  cisformer train --rna big_rna.h5ad --atac big_atac.h5ad --backed --direction "
                              "rna2atac --out work/big")
    add_inputs(p)
    p.add_argument("--direction", choices=["rna2atac", "atac2rna"], required=True)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--profile", choices=["quick", "cpu", "paper"], default="cpu",
                   help="model and training sizes (default cpu; paper = the paper's, for GPUs)")
    p.add_argument("--arch", choices=["cisformer", "paper"], default="cisformer",
                   help="cisformer (default): this package's model, a cell state read for every output feature "
                        "plus the cross-attention path; paper: the paper's architecture (see cisformer.model)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: the profile's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--split", choices=["random", "cell_type", "batch", "predefined"],
                   help="how test cells are held out (default: predefined when obs has 'split', else random)")
    p.add_argument("--held-out", nargs="+", help="cell types or batches to hold out with --split cell_type|batch")
    p.add_argument("--val-fraction", type=float, default=0.1, help="of the non-test cells (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="with --split random (default 0.2)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a model/training setting, e.g. --set dim=96 --set lr=5e-4 (repeatable)")
    p.add_argument("--backed", action="store_true",
                   help="data larger than memory: read the .h5ad files of --data or --rna/--atac from disk "
                        "(anndata backed='r'), block by block, instead of loading them; memory then holds the "
                        "model and row pointers, not the cells. Needs raw counts in the RNA's X and CSR matrices")
    p.set_defaults(func=cmd_train)


def _add_predict(sub, fmt) -> None:
    p = sub.add_parser("predict", formatter_class=fmt, help="generate ATAC from RNA or RNA from ATAC",
                       description="The model's direction decides: rna2atac writes P(open) for every CRE "
                                   "(X) and a binary layer; atac2rna writes expected log1p expression of every "
                                   "gene (X), bins and bin probabilities, predicted from the open CREs alone.",
                       epilog="examples:\n  cisformer predict --model work/r2a/model.pt --dataset snareseq "
                              "--cells test --out r2a_test.h5ad\n"
                              "  cisformer predict --model work/a2r/model.pt --data work/mine --mask "
                              "--out a2r_masked.h5ad   # the paper's masked convention")
    add_inputs(p)
    p.add_argument("--model", type=Path, required=True, help="model.pt written by cisformer train")
    p.add_argument("--out", type=Path, required=True,
                   help="output .h5ad, or .h5mu: the prediction as modality atac_predicted / rna_predicted (added to "
                        "the --mudata input's modalities)")
    p.add_argument("--cells", default="all", help="all | train | val | test (from the model's split.csv) | a file "
                                                  "with one cell name per line (default all)")
    p.add_argument("--threshold", help="rna2atac binary layer: a probability (default 0.5, the paper's) or 'topk' "
                                       "(per cell, as many CREs as the training open fraction)")

    g = p.add_argument_group(
        "rna2atac output (.h5ad)", textwrap.fill(
        "rna2atac to .h5ad is always streamed: cells are predicted and written --block-cells at a time, so memory "
        "is set by the block, not by the number of cells (1,000 cells x 1,033,239 human cCREs are 4 GB as "
        "float32). The file is written as OUT.partial and renamed when complete; running the same command again "
        "after an interruption resumes at the first unwritten block (another model, input or setting is refused: "
        "use --restart). .h5mu output is built in memory.", 100))
    g.add_argument("--store", choices=["prob+binary", "prob", "binary", "topk"], default="prob+binary",
                   help="prob+binary (default): X = P(open), dense, and layers['binary'] (sparse, by --threshold); "
                        "prob: X only; binary: only the binary matrix, as a sparse X; topk: X = sparse, per cell "
                        "only the --top-k most probable CREs with their P(open) (the smallest file)")
    g.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                   help="P(open) storage: float16 (default, 2 bytes per value, ~3 decimal digits) or float32 "
                        "(4 bytes, the exact in-memory values)")
    g.add_argument("--top-k", type=int, help="--store topk: CREs kept per cell (default: as many as the training "
                                             "open fraction, as --threshold topk)")
    g.add_argument("--block-cells", type=int, help="cells predicted and written at once (default: ~33M values, "
                                                   "32 cells on the human vocabulary)")
    g.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip",
                   help="HDF5 compression of the matrices (default gzip; none is fastest)")
    g.add_argument("--restart", action="store_true", help="discard an interrupted OUT.partial and start over")
    p.add_argument("--mask", action="store_true",
                   help="atac2rna only: zero every gene not measured as expressed (the paper's convention; "
                        "reads the true RNA, so it is not a prediction from ATAC alone)")
    p.add_argument("--batch-size", type=int, default=1, help="cells per forward pass (default 1: fastest on CPU; "
                                                             "raise on a GPU)")
    p.add_argument("--direction", choices=["rna2atac", "atac2rna"],
                   help="the direction expected of --model (checked; default: the model's)")
    p.set_defaults(func=cmd_predict)


def _add_link(sub, fmt) -> None:
    p = sub.add_parser("link", formatter_class=fmt, help="CRE-gene links (regression, in-silico deletion or attention)",
                       description="Score CRE-gene pairs within a window of the TSS per cell type and write a table "
                                   "(cell_type, gene, cre, score, n_cells, rank, scorer). Default scorer: "
                                   "'regression' - within each cell type, per gene, ridge regression of expression on "
                                   "the accessibility of its window CREs; the score is the CRE's coefficient. It reads "
                                   "the data only (--model optional) and recovers planted links best or tied-best in "
                                   "most simulated settings (notebook 04). The model's readings: 'deletion' (atac2rna "
                                   "models: the drop in the gene's predicted expression when the CRE alone is removed, "
                                   "mean over the cells where it is open), 'attention' (the paper's reading: "
                                   "normalised cross-attention averaged over co-sampled cells) and 'attention-raw' "
                                   "(without the normalisation).",
                       epilog="examples:\n  cisformer link --dataset bmmc --out links.csv\n"
                              "  cisformer link --scorer deletion --model work/a2r/model.pt --dataset bmmc --out links.csv")
    add_inputs(p)
    p.add_argument("--model", type=Path, help="model.pt written by cisformer train (needed by every scorer but "
                                              "regression, which then scores the model's genes and CREs only)")
    p.add_argument("--out", type=Path, required=True, help="output .csv")
    p.add_argument("--cell-type-key", default="cell_type", help="obs column with cell types")
    p.add_argument("--cells-per-type", type=int, default=100, help="cells read per type (default 100)")
    p.add_argument("--window", type=int, default=250_000, help="max CRE-TSS distance in bp (default 250000)")
    p.add_argument("--scorer", choices=["regression", "deletion", "attention", "attention-raw"], default="regression",
                   help="link score (default: regression)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_link)


def build_parser() -> argparse.ArgumentParser:
    """The ``cisformer`` argument parser: one subparser per command, each with its own ``--help``."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="cisformer", formatter_class=fmt, epilog=EXAMPLES,
                                     description="Cisformer: generate scATAC from scRNA and scRNA from scATAC with a "
                                                 "cross-attention transformer, and read CRE-gene links from it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{preprocess,train,predict,link}")
    for add in (_add_preprocess, _add_train, _add_predict, _add_link):
        add(sub, fmt)
    return parser
