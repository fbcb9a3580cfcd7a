"""Command-line interface: ``cisformer preprocess | train | predict | link`` (also ``python -m cisformer``).

Every subcommand mirrors a Python function (``cisformer.train.fit``, ``cisformer.predict.rna_to_atac`` /
``atac_to_rna``, ``cisformer.attention.links``) and reads paired AnnData files (``.h5ad``), a folder written by
``preprocess``, or a shipped data set by name.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = """\
examples (a complete run on the tiny shipped data set, CPU, about a minute):
  cisformer preprocess --dataset snareseq_tiny --out work/tiny --min-cells 1 --min-genes 1 --min-cres 1
  cisformer train   --data work/tiny --direction rna2atac --profile quick --out work/r2a
  cisformer predict --model work/r2a/model.pt --data work/tiny --cells test --out work/r2a/pred.h5ad
  cisformer train   --data work/tiny --direction atac2rna --profile quick --out work/a2r
  cisformer predict --model work/a2r/model.pt --data work/tiny --out work/a2r/pred.h5ad
  cisformer link    --model work/r2a/model.pt --data work/tiny --out work/r2a/links.csv

your own data: any paired cells x genes / cells x peaks AnnData with raw counts and identical obs_names:
  cisformer preprocess --rna my_rna.h5ad --atac my_atac.h5ad --cre-vocabulary human --out work/mine
  cisformer train --data work/mine --direction rna2atac --profile paper --device cuda --out work/mine_r2a
multi-GPU: accelerate launch -m cisformer train ...
"""


# --------------------------------------------------------------------------------------------------- inputs

def _add_inputs(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("input (one of)")
    g.add_argument("--dataset", help="a shipped data set by name, e.g. snareseq, snareseq_tiny, bmmc")
    g.add_argument("--data", type=Path, help="a folder with rna.h5ad and atac.h5ad (written by preprocess)")
    g.add_argument("--rna", type=Path, help="cells x genes .h5ad with raw counts")
    g.add_argument("--atac", type=Path, help="cells x peaks .h5ad (counts or binary)")
    g.add_argument("--data-dir", type=Path, help="where shipped data sets live (default: the repo's data/)")


def _read_h5ad(path: Path, what: str):
    import anndata as ad

    if not path.exists():
        raise SystemExit(f"error: {what} file {path} does not exist")
    if path.suffix != ".h5ad":
        raise SystemExit(f"error: {what} file {path} must be an .h5ad file (AnnData); convert other formats with "
                         "scanpy (sc.read_10x_h5, sc.read_mtx) or cisformer.data first")
    return ad.read_h5ad(path)


def load_inputs(args, need_rna: bool = True, need_atac: bool = True):
    """(rna, atac) from ``--dataset``, ``--data`` or ``--rna``/``--atac``; a modality not needed may be None."""
    sources = [s for s in (args.dataset, args.data, args.rna or args.atac) if s]
    if len(sources) != 1:
        raise SystemExit("error: give exactly one input: --dataset NAME, --data DIR, or --rna/--atac files")
    if args.dataset:
        from . import data

        return data.load(args.dataset, data_dir=args.data_dir)
    if args.data:
        rna_path, atac_path = args.data / "rna.h5ad", args.data / "atac.h5ad"
    else:
        rna_path, atac_path = args.rna, args.atac
    for needed, path, flag in ((need_rna, rna_path, "--rna"), (need_atac, atac_path, "--atac")):
        if needed and path is None:
            raise SystemExit(f"error: this command needs {flag}")
    rna = _read_h5ad(rna_path, "RNA") if rna_path is not None and (need_rna or rna_path.exists()) else None
    atac = _read_h5ad(atac_path, "ATAC") if atac_path is not None and (need_atac or atac_path.exists()) else None
    return rna, atac


# --------------------------------------------------------------------------------------------------- preprocess

def cmd_preprocess(args) -> None:
    rna, atac = load_inputs(args)
    common = rna.obs_names.intersection(atac.obs_names)
    if len(common) == 0:
        raise SystemExit("error: RNA and ATAC share no cell names (obs_names); they must be the same cells")
    rna, atac = rna[common].copy(), atac[common].copy()
    if args.cre_vocabulary:
        import pandas as pd

        from . import data, vocab

        if args.cre_vocabulary in ("human", "mouse"):
            cres = data.load_cre_vocabulary(args.cre_vocabulary)
        else:
            cres = pd.read_csv(args.cre_vocabulary, sep="\t", header=None, usecols=[0, 1, 2],
                               names=["chrom", "start", "end"], comment="#")
        atac = vocab.map_peaks_to_cres(atac, cres)
    n0 = (rna.n_obs, rna.n_vars, atac.n_vars)
    from . import data

    rna, atac, _ = data.qc(rna, atac, args.min_cells, args.min_genes, args.max_genes, args.min_cres, args.max_cres)
    if rna.n_obs == 0:
        raise SystemExit("error: no cell passed QC; lower --min-genes / --min-cres for small or sparse data")
    args.out.mkdir(parents=True, exist_ok=True)
    rna.write_h5ad(args.out / "rna.h5ad", compression="gzip")
    atac.write_h5ad(args.out / "atac.h5ad", compression="gzip")
    print(f"preprocess: {n0[0]} -> {rna.n_obs} cells, {n0[1]} -> {rna.n_vars} genes, {n0[2]} -> {atac.n_vars} "
          f"CREs; wrote {args.out}/rna.h5ad and atac.h5ad")


# --------------------------------------------------------------------------------------------------- train

def _parse_overrides(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: --set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)  # numbers, true/false
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_train(args) -> None:
    import pandas as pd

    from . import data, train

    rna, atac = load_inputs(args)
    by = args.split or ("predefined" if "split" in rna.obs else "random")
    try:
        train_cells, val_cells, test_cells = data.split_cells(rna.obs, by=by, test_fraction=args.test_fraction,
                                                              seed=args.seed, held_out=args.held_out,
                                                              val_fraction=args.val_fraction)
    except ValueError as err:
        raise SystemExit(f"error: {err}")
    labels = pd.Series("train", index=rna.obs_names.astype(str))
    labels[val_cells], labels[test_cells] = "val", "test"
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"cell": labels.index, "split": labels.to_numpy()}).to_csv(args.out / "split.csv", index=False)
    try:
        model, history = train.fit(rna, atac, args.direction, train_cells, val_cells,
                                   profile=args.profile, seed=args.seed, checkpoint_dir=args.out / "checkpoints",
                                   device=args.device, epochs=args.epochs, arch=args.arch,
                                   **_parse_overrides(args.set))
    except (TypeError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    model.save(args.out / "model.pt")
    history.to_csv(args.out / "history.csv", index=False)
    best = history.loc[history["val_score"].idxmax()]
    criterion = "AUROC gain over the floor" if args.direction == "rna2atac" else "gene-wise Pearson"
    print(f"train: best epoch {int(best['epoch'])}, validation {criterion} {best['val_score']:.4f} "
          f"(val loss {best['val_loss']:.4f}); wrote {args.out}/model.pt, split.csv, history.csv")


# --------------------------------------------------------------------------------------------------- predict

def _select_cells(adata, cells: str, model_path: Path):
    if cells == "all":
        return adata
    if cells in ("train", "val", "test"):
        split_file = model_path.parent / "split.csv"
        if not split_file.exists():
            raise SystemExit(f"error: --cells {cells} needs {split_file} (written by cisformer train)")
        import pandas as pd

        split = pd.read_csv(split_file)
        names = split.loc[split["split"] == cells, "cell"].astype(str)
    else:
        path = Path(cells)
        if not path.exists():
            raise SystemExit(f"error: --cells must be all, train, val, test or a file of cell names; {cells} "
                             "does not exist")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    missing = [n for n in names if n not in adata.obs_names]
    if missing:
        raise SystemExit(f"error: {len(missing)} selected cells are not in the input, e.g. {missing[:3]}")
    return adata[list(names)].copy()


def _load_model(path: Path):
    from .model import Cisformer

    if not path.exists():
        raise SystemExit(f"error: model file {path} does not exist (cisformer train writes OUT/model.pt)")
    return Cisformer.load(path)


def cmd_predict(args) -> None:
    from . import predict

    model = _load_model(args.model)
    direction = model.config.direction
    rna, atac = load_inputs(args, need_rna=direction == "rna2atac",
                            need_atac=direction == "atac2rna" and not args.mask)
    if direction == "rna2atac":
        rna = _select_cells(rna, args.cells, args.model)
        threshold = None if args.threshold is None else (
            args.threshold if args.threshold == "topk" else float(args.threshold))
        out = predict.rna_to_atac(model, rna, threshold=threshold, batch_size=args.batch_size)
    else:
        atac = _select_cells(atac, args.cells, args.model)
        mask = None
        if args.mask:
            if rna is None:
                raise SystemExit("error: --mask reads the measured RNA: give it with --rna or --data")
            mask = rna[atac.obs_names]
        out = predict.atac_to_rna(model, atac, mask=mask, batch_size=args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(args.out, compression="gzip")
    print(f"predict ({direction}): {out.n_obs} cells x {out.n_vars} features -> {args.out}")


# --------------------------------------------------------------------------------------------------- link

def cmd_link(args) -> None:
    try:
        from . import attention
    except ImportError as err:  # built by the attention module's owner; absent in a partial checkout
        raise SystemExit(f"error: cisformer.attention is not available ({err})")
    model = _load_model(args.model)
    rna, atac = load_inputs(args)
    table = attention.links(model, rna, atac, cell_type_key=args.cell_type_key,
                            n_cells_per_type=args.cells_per_type, window=args.window, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"link: {len(table)} CRE-gene links -> {args.out}")


# --------------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="cisformer", formatter_class=fmt, epilog=EXAMPLES,
                                     description="Cisformer: generate scATAC from scRNA and scRNA from scATAC with a "
                                                 "cross-attention transformer, and read CRE-gene links from it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{preprocess,train,predict,link}")

    p = sub.add_parser("preprocess", formatter_class=fmt, help="pair cells, map peaks to CREs, paper QC",
                       description="Keep the cells present in both modalities, optionally map peaks onto a CRE "
                                   "vocabulary (>= 1 bp overlap), apply the paper's QC, write OUT/rna.h5ad and "
                                   "OUT/atac.h5ad.",
                       epilog="example:\n  cisformer preprocess --rna rna.h5ad --atac atac.h5ad --cre-vocabulary "
                              "human --out work/mine")
    _add_inputs(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--cre-vocabulary", help="'human', 'mouse' or a BED file of CREs (default: keep the peaks)")
    p.add_argument("--min-cells", type=int, default=10, help="drop genes/CREs seen in fewer cells (default 10)")
    p.add_argument("--min-genes", type=int, default=200, help="min expressed genes per cell (default 200)")
    p.add_argument("--max-genes", type=int, default=20_000, help="max expressed genes per cell (default 20000)")
    p.add_argument("--min-cres", type=int, default=500, help="min open CREs per cell (default 500)")
    p.add_argument("--max-cres", type=int, default=50_000, help="max open CREs per cell (default 50000)")
    p.set_defaults(func=cmd_preprocess)

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
                              "--set batch_size=64 --out work/a2r")
    _add_inputs(p)
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
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", formatter_class=fmt, help="generate ATAC from RNA or RNA from ATAC",
                       description="The model's direction decides: rna2atac writes P(open) for every CRE "
                                   "(X) and a binary layer; atac2rna writes expected log1p expression of every "
                                   "gene (X), bins and bin probabilities, predicted from the open CREs alone.",
                       epilog="examples:\n  cisformer predict --model work/r2a/model.pt --dataset snareseq "
                              "--cells test --out r2a_test.h5ad\n"
                              "  cisformer predict --model work/a2r/model.pt --data work/mine --mask "
                              "--out a2r_masked.h5ad   # the paper's masked convention")
    _add_inputs(p)
    p.add_argument("--model", type=Path, required=True, help="model.pt written by cisformer train")
    p.add_argument("--out", type=Path, required=True, help="output .h5ad")
    p.add_argument("--cells", default="all", help="all | train | val | test (from the model's split.csv) | a file "
                                                  "with one cell name per line (default all)")
    p.add_argument("--threshold", help="rna2atac binary layer: a probability (default 0.5, the paper's) or 'topk' "
                                       "(per cell, as many CREs as the training open fraction)")
    p.add_argument("--mask", action="store_true",
                   help="atac2rna only: zero every gene not measured as expressed (the paper's convention; "
                        "reads the true RNA, so it is not a prediction from ATAC alone)")
    p.add_argument("--batch-size", type=int, default=1, help="cells per forward pass (default 1: fastest on CPU; "
                                                             "raise on a GPU)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("link", formatter_class=fmt, help="CRE-gene links from cross-attention",
                       description="Average the model's head-averaged cross-attention over cells of each cell "
                                   "type, for CRE-gene pairs within a window of the TSS, and write a table "
                                   "(cell_type, gene, cre, score, n_cells, rank).",
                       epilog="example:\n  cisformer link --model work/r2a/model.pt --dataset bmmc --out links.csv")
    _add_inputs(p)
    p.add_argument("--model", type=Path, required=True, help="model.pt written by cisformer train")
    p.add_argument("--out", type=Path, required=True, help="output .csv")
    p.add_argument("--cell-type-key", default="cell_type", help="obs column with cell types")
    p.add_argument("--cells-per-type", type=int, default=100, help="cells read per type (default 100)")
    p.add_argument("--window", type=int, default=250_000, help="max CRE-TSS distance in bp (default 250000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_link)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
