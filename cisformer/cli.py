"""Command-line interface: ``cisformer preprocess | train | predict | link`` (also ``python -m cisformer``).

Every subcommand mirrors a Python function (``cisformer.train.fit``, ``cisformer.predict.rna_to_atac`` /
``atac_to_rna``, ``cisformer.tl.attention.links``) and reads paired AnnData files (``.h5ad``), one MuData file
(``.h5mu`` with modalities ``rna`` and ``atac``), a folder written by ``preprocess``, or a shipped data set by
name. Bad input ends in one ``error: FILE: field 'FIELD': problem. Fix: ...`` line, never a traceback, and outputs
are written under a temporary name and renamed, so an interrupted command leaves no partial file.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
import warnings
from pathlib import Path

from .utils.paths import write_atomic

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


def _process_rank() -> int:
    """This process's rank in a running multi-process group (``torchrun``); 0 without one."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _fail(err) -> SystemExit:
    """The one-line CLI error for an exception raised by the package (InputError, ValueError)."""
    return SystemExit(f"error: {err}")


# --------------------------------------------------------------------------------------------------- inputs

def _add_inputs(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("input (one of)")
    g.add_argument("--dataset", help="a data set by name: shipped (snareseq, snareseq_tiny, bmmc, pbmc_scarlink) or "
                                     "one written by preprocess --name NAME --out DIR (with --data-dir DIR)")
    g.add_argument("--data", type=Path, help="a folder with rna.h5ad and atac.h5ad (written by preprocess)")
    g.add_argument("--rna", type=Path, help="cells x genes .h5ad with raw counts (X, layers['counts'] or .raw)")
    g.add_argument("--atac", type=Path, help="cells x peaks .h5ad (counts, binary or normalised: open where > 0)")
    g.add_argument("--mudata", type=Path, help="one .h5mu (MuData) with modalities 'rna' and 'atac'")
    g.add_argument("--data-dir", type=Path, help="data folder of --dataset: the repo's data/ (default) or one written "
                                                 "by preprocess --name (shipped sets and references still found)")


def _read_h5ad(path: Path, what: str, backed: bool = False):
    from . import data

    if not path.exists():
        raise SystemExit(f"error: {what} file {path} does not exist")
    if path.suffix != ".h5ad":
        raise SystemExit(f"error: {what} file {path} must be an .h5ad file (AnnData); convert other formats with "
                         "scanpy (sc.read_10x_h5, sc.read_mtx) or cisformer.data first")
    try:
        return data.read_any(path, backed)  # empty, truncated or unreadable files -> InputError
    except data.InputError as err:
        raise _fail(err)


def _sources(args) -> tuple[str, str]:
    """Names of the RNA and ATAC inputs, for messages."""
    if getattr(args, "tenx_h5", None):
        return str(args.tenx_h5), str(args.fragments or args.tenx_h5)
    if args.dataset:
        return f"dataset {args.dataset} (RNA)", f"dataset {args.dataset} (ATAC)"
    if getattr(args, "mudata", None):
        return f"{args.mudata} (mod 'rna')", f"{args.mudata} (mod 'atac')"
    if args.data:
        return str(args.data / "rna.h5ad"), str(args.data / "atac.h5ad")
    return str(args.rna), str(args.atac)


def load_inputs(args, need_rna: bool = True, need_atac: bool = True):
    """(rna, atac) from ``--dataset``, ``--data``, ``--rna``/``--atac`` or ``--mudata``; a modality not needed may be
    None. With ``args.backed`` (train --backed), the .h5ad files of ``--data`` or ``--rna``/``--atac`` are opened
    read-only from disk instead of loaded."""
    mudata_path = getattr(args, "mudata", None)
    backed = getattr(args, "backed", False)
    sources = [s for s in (args.dataset, args.data, args.rna or args.atac, mudata_path) if s]
    if len(sources) != 1:
        raise SystemExit("error: give exactly one input: --dataset NAME, --data DIR, --rna/--atac files or --mudata FILE")
    if backed and (args.dataset or mudata_path):
        raise SystemExit(f"error: --backed reads .h5ad files from disk, not {'--dataset' if args.dataset else '--mudata'}"
                         ". Fix: give --data DIR or --rna FILE --atac FILE, or drop --backed to load the data into "
                         "memory")
    from . import data

    if args.dataset:
        try:
            return data.load(args.dataset, data_dir=args.data_dir)
        except (KeyError, data.InputError) as err:
            raise _fail(err.args[0] if isinstance(err, KeyError) else err)
    if mudata_path:
        if not mudata_path.exists():
            raise SystemExit(f"error: MuData file {mudata_path} does not exist")
        try:
            return data.read_paired(mudata_path, genome=getattr(args, "genome", None),
                                    recover_counts=getattr(args, "recover_counts", False),
                                    cell_type_column=getattr(args, "cell_type_column", None))
        except data.InputError as err:
            raise _fail(err)
    if args.data:
        rna_path, atac_path = args.data / "rna.h5ad", args.data / "atac.h5ad"
        if not rna_path.exists() and not atac_path.exists() and (args.data / "datasets").is_dir():
            names = sorted(p.name[: -len("_rna.h5ad")] for p in (args.data / "datasets").glob("*_rna.h5ad"))
            raise SystemExit(f"error: {args.data} is a data folder (data sets {names}), not a folder with rna.h5ad "
                             f"and atac.h5ad. Fix: pass --dataset NAME --data-dir {args.data}")
    else:
        rna_path, atac_path = args.rna, args.atac
    for needed, path, flag in ((need_rna, rna_path, "--rna"), (need_atac, atac_path, "--atac")):
        if needed and path is None:
            raise SystemExit(f"error: this command needs {flag}")
    rna = _read_h5ad(rna_path, "RNA", backed) if rna_path is not None and (need_rna or rna_path.exists()) else None
    atac = _read_h5ad(atac_path, "ATAC", backed) if atac_path is not None and (need_atac or atac_path.exists()) else None
    return rna, atac


# --------------------------------------------------------------------------------------------------- preprocess

def _read_user_pair(args):
    """Files given with --10x-h5, --rna/--atac or --data, read through cisformer.data.read_10x / read_paired (counts
    found or recovered, peak names parsed, chromosome names normalised, labels attached)."""
    from . import data

    if args.tenx_h5 is not None:
        if any(s is not None for s in (args.dataset, args.data, args.rna, args.atac, args.mudata)):
            raise SystemExit("error: give exactly one input: --10x-h5 FILE or --dataset / --data / --rna+--atac / --mudata")
        for path, flag in ((args.tenx_h5, "--10x-h5"), (args.fragments, "--fragments"), (args.peaks, "--peaks"),
                           (args.cell_types, "--cell-types")):
            if path is not None and not path.exists():
                raise SystemExit(f"error: {flag} {path} does not exist")
        if args.cell_type_column is not None and args.cell_types is None:
            raise SystemExit(f"error: {args.tenx_h5}: field 'cell types': a 10x h5 holds no cell labels, so "
                             f"--cell-type-column {args.cell_type_column} has nothing to read. Fix: add --cell-types "
                             "labels.csv (barcodes and a column of labels)")
        return data.read_10x(args.tenx_h5, args.fragments, args.peaks, args.cell_types,
                             args.cell_type_column or "cell_type", genome=args.genome,
                             recover_counts=args.recover_counts)
    if args.fragments is not None or args.cell_types is not None:
        raise SystemExit("error: --fragments and --cell-types go with --10x-h5 FILE")
    rna_path, atac_path = (args.data / "rna.h5ad", args.data / "atac.h5ad") if args.data else (args.rna, args.atac)
    for path, flag in ((rna_path, "--rna"), (atac_path, "--atac")):
        if path is None:
            raise SystemExit(f"error: preprocess needs {flag} (or --mudata FILE, --dataset NAME)")
    return data.read_paired(rna_path, atac_path, genome=args.genome, recover_counts=args.recover_counts,
                            cell_type_column=args.cell_type_column)


def _cre_vocabulary(name: str):
    import pandas as pd

    from . import data

    if name in ("human", "mouse"):
        return data.load_cre_vocabulary(name)
    path = Path(name)
    if not path.exists():
        raise SystemExit(f"error: --cre-vocabulary {name}: not 'human', 'mouse' or an existing BED file")
    try:
        return pd.read_csv(path, sep="\t", header=None, usecols=[0, 1, 2], names=["chrom", "start", "end"],
                           comment="#", dtype={"chrom": str, "start": "int64", "end": "int64"})
    except (ValueError, pd.errors.ParserError) as err:
        raise SystemExit(f"error: {path}: field 'BED columns 1-3': cannot be read as chrom, start, end ({err}). "
                         "Fix: pass a tab-separated BED file")


def cmd_preprocess(args) -> None:
    from .data import vocab
    from . import data

    rna_source, atac_source = _sources(args)
    notes = []
    if args.genome is None and args.cre_vocabulary == "human":
        args.genome = "hg38"
    try:
        if (args.dataset or args.mudata) and args.tenx_h5 is None:
            rna, atac = load_inputs(args)
            if args.dataset and args.cell_type_column is not None:
                data.use_cell_type_column(rna, atac, args.cell_type_column, f"dataset {args.dataset}")
        else:
            rna, atac = _read_user_pair(args)
        notes += [n for n in (rna.uns.pop("counts_note", None), atac.uns.pop("chrom_note", None)) if n]
        rna, atac, note = data.pair_cells(rna, atac, rna_source, atac_source)
        notes.append(note)
        data.validate_pair(rna, atac, rna_source, atac_source, allow_empty_cells=True)
        notes.append(data.ATAC_RULE)
        if args.liftover:
            atac, note = data.lift_peaks(atac, args.liftover, atac_source)
            notes.append(note)
        if args.cre_vocabulary:
            cres = _cre_vocabulary(args.cre_vocabulary)
            check = data.check_genome(atac, cres, atac_source)
            n_peaks = atac.n_vars
            atac = vocab.map_peaks_to_cres(atac, cres)
            notes.append(f"{atac.uns['n_peaks_mapped']} of {n_peaks} peaks overlap >= 1 CRE of the "
                         f"{cres.attrs.get('genome', args.cre_vocabulary)} vocabulary ({check['observed']:.0%} of "
                         f"peaks vs {check['null']:.0%} for shifted peaks: the build fits)")
        thresholds = dict(min_cells=args.min_cells, min_genes=args.min_genes, max_genes=args.max_genes,
                          min_peaks=args.min_cres, max_peaks=args.max_cres)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            report = data.qc_report(rna, atac, **thresholds, source=rna_source)
        n0 = (rna.n_obs, rna.n_vars, atac.n_vars)
        rna, atac, _ = data.qc(rna, atac, **thresholds)
    except data.InputError as err:
        raise _fail(err)
    for note in notes:
        print(f"preprocess: {note}")
    print("preprocess: QC, rules applied in this order (removed_alone: by the rule alone)\n"
          + report.to_string(index=False))
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    counts = (f"preprocess: {n0[0]} -> {rna.n_obs} cells, {n0[1]} -> {rna.n_vars} genes, {n0[2]} -> {atac.n_vars} "
              f"{'CREs' if args.cre_vocabulary else 'peaks'}")
    if args.name is None:
        for adata, name in ((rna, "rna.h5ad"), (atac, "atac.h5ad")):
            write_atomic(args.out / name, lambda tmp, a=adata: a.write_h5ad(tmp, compression="gzip"))
        print(f"{counts}; wrote {args.out}/rna.h5ad and atac.h5ad")
        return
    inputs = [str(p) for p in (args.tenx_h5, args.fragments, args.peaks, args.cell_types, args.rna, args.atac,
                               args.mudata, args.data) if p is not None] or [f"dataset {args.dataset}"]
    try:
        written = data.write_dataset(rna, atac, args.name, args.out, licence=args.licence,
                                     source=f"cisformer preprocess of {' + '.join(inputs)}")
    except ValueError as err:
        raise _fail(err)
    print(f"{counts}; wrote {written['rna']}, {written['atac']} and their lines in {args.out / 'MANIFEST'}\n"
          f"preprocess: read it with --dataset {args.name} --data-dir {args.out} (train / predict / link), "
          f"cisformer.data.load({args.name!r}, data_dir={str(args.out)!r}), or the notebooks: ./run_all.sh --data "
          f"{args.out} --param dataset={args.name}")


# --------------------------------------------------------------------------------------------------- train

def _rna_counts(rna, args):
    """RNA with raw counts in X (found in layers['counts'] / .raw when X holds other values), or one error line:
    log-normalised values are never floored into training or prediction. Inputs marked ``uns["counts"] = False``
    (a shipped set with normalised RNA) pass unchanged."""
    from . import data

    if rna is None or rna.uns.get("counts", True) is False:
        return rna
    try:
        rna, note = data.find_counts(rna, _sources(args)[0])
    except data.InputError as err:
        raise _fail(err)
    if note != "RNA raw counts found in X":
        print(f"{args.command}: {note}")
    return rna


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
    if not args.backed:  # a backed file is read as it is: train.fit checks its counts block by block
        rna = _rna_counts(rna, args)
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
    write_atomic(args.out / "split.csv",
                  lambda tmp: pd.DataFrame({"cell": labels.index, "split": labels.to_numpy()}).to_csv(tmp, index=False))
    try:
        model, history = train.fit(rna, atac, args.direction, train_cells, val_cells,
                                   profile=args.profile, seed=args.seed, checkpoint_dir=args.out / "checkpoints",
                                   device=args.device, epochs=args.epochs, arch=args.arch,
                                   **_parse_overrides(args.set))
    except (TypeError, ValueError) as err:
        raise SystemExit(f"error: {err}")
    except Exception as err:
        if _unreadable_checkpoint(err):
            raise SystemExit(f"error: {args.out / 'checkpoints'}: field 'checkpoint': a saved checkpoint cannot be read, "
                             f"truncated or corrupt ({type(err).__name__}: {str(err)[:160]}). Fix: delete "
                             f"{args.out / 'checkpoints'} (training restarts from scratch) or restore it from a copy")
        raise
    if _process_rank() != 0:  # several processes (torchrun): all hold the same model, the main one writes it
        return
    write_atomic(args.out / "model.pt", model.save)
    write_atomic(args.out / "history.csv", lambda tmp: history.to_csv(tmp, index=False))
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


def _unreadable_checkpoint(err: Exception) -> bool:
    """Whether ``err`` is what torch.load raises on a truncated or corrupt file."""
    import pickle
    import zipfile

    text = str(err)
    return isinstance(err, (EOFError, pickle.UnpicklingError, zipfile.BadZipFile)) or (
        isinstance(err, RuntimeError) and any(k in text for k in ("PytorchStreamReader", "zip archive", "pickle")))


def _load_model(path: Path, direction: str | None = None):
    """A trained model from ``path``; one error line for a missing, truncated or corrupt file or a model of the
    other direction than ``direction``."""
    from .model import Cisformer

    if not path.exists():
        raise SystemExit(f"error: model file {path} does not exist (cisformer train writes OUT/model.pt)")
    fix = "train it again (cisformer train ... --out DIR writes DIR/model.pt) or copy the file again"
    if path.stat().st_size == 0:
        raise SystemExit(f"error: {path}: field 'model file': is empty (0 bytes). Fix: {fix}")
    try:
        model = Cisformer.load(path)
    except Exception as err:
        raise SystemExit(f"error: {path}: field 'model file': cannot be read as a Cisformer model, truncated or "
                         f"corrupt ({type(err).__name__}: {str(err)[:160]}). Fix: {fix}")
    if direction is not None and model.config.direction != direction:
        raise SystemExit(f"error: {path}: field 'direction': the model is {model.config.direction} "
                         f"({_DIRECTION_TEXT[model.config.direction]}), not {direction}. Fix: pass the model trained "
                         f"with cisformer train --direction {direction}, or drop --direction")
    return model


_DIRECTION_TEXT = {"rna2atac": "predicts ATAC from RNA", "atac2rna": "predicts RNA from ATAC"}


def _write_prediction(out, args, direction: str) -> str:
    """Write the prediction to ``args.out`` (.h5ad, or a modality of .h5mu); returns what was written."""

    if args.out.suffix != ".h5mu":
        write_atomic(args.out, lambda tmp: out.write_h5ad(tmp, compression="gzip"))
        return str(args.out)
    import mudata

    name = f"{'atac' if direction == 'rna2atac' else 'rna'}_predicted"
    if args.mudata is not None:
        mdata = mudata.read_h5mu(args.mudata)
        mdata.mod[name] = out
        mdata.update()
    else:
        mdata = mudata.MuData({name: out})
    write_atomic(args.out, mdata.write)
    return f"{args.out} (modality '{name}' beside {sorted(m for m in mdata.mod if m != name)})"


def _progress(n_cells: int):
    """on_block callback: one line about every tenth of the cells (stderr)."""
    state = {"next": 0}

    def report(done, total):
        if done >= state["next"] or done == total:
            print(f"predict: {done}/{total} cells written", file=sys.stderr, flush=True)
            state["next"] = done + max(1, n_cells // 10)
    return report


def cmd_predict(args) -> None:
    from . import data, predict

    model = _load_model(args.model, args.direction)
    direction = model.config.direction
    if args.rna is not None and args.atac is None and direction == "atac2rna" or (
            args.atac is not None and args.rna is None and direction == "rna2atac"):
        given = "--rna" if args.rna is not None else "--atac"
        raise SystemExit(f"error: {args.model}: field 'direction': the model is {direction} "
                         f"({_DIRECTION_TEXT[direction]}) but only {given} was given. Fix: give "
                         f"{'--rna' if direction == 'rna2atac' else '--atac'}, or use a model trained with "
                         f"--direction {'atac2rna' if direction == 'rna2atac' else 'rna2atac'}")
    rna, atac = load_inputs(args, need_rna=direction == "rna2atac",
                            need_atac=direction == "atac2rna" and not args.mask)
    if direction == "rna2atac":
        rna = _rna_counts(rna, args)
    rna_source, atac_source = _sources(args)
    try:
        if direction == "rna2atac":
            match = predict.feature_match(rna, model.gene_names, "genes", rna_source)
        else:
            match = predict.feature_match(atac, model.cre_names, "CREs", atac_source)
    except data.InputError as err:
        raise _fail(err)
    print(f"predict: {match['note']}; absent ones are read as zero")
    if direction == "rna2atac":
        rna = _select_cells(rna, args.cells, args.model)
        threshold = None if args.threshold is None else (
            args.threshold if args.threshold == "topk" else float(args.threshold))
        if args.out.suffix != ".h5mu":  # streamed: memory set by --block-cells, resumable
            try:
                out = predict.rna_to_atac(model, rna, threshold=threshold, batch_size=args.batch_size, out=args.out,
                                          store=args.store, dtype=args.dtype, top_k=args.top_k,
                                          block_cells=args.block_cells,
                                          compression=None if args.compression == "none" else args.compression,
                                          resume=not args.restart, on_block=_progress(rna.n_obs))
            except ValueError as err:
                raise _fail(err)
            shape = out.shape
            out.file.close()
            print(f"predict ({direction}): {shape[0]} cells x {shape[1]} features ({args.store}, {args.dtype}) "
                  f"-> {args.out}")
            return
        out = predict.rna_to_atac(model, rna, threshold=threshold, batch_size=args.batch_size)
    else:
        atac = _select_cells(atac, args.cells, args.model)
        mask = None
        if args.mask:
            if rna is None:
                raise SystemExit("error: --mask reads the measured RNA: give it with --rna or --data")
            mask = rna[atac.obs_names]
        out = predict.atac_to_rna(model, atac, mask=mask, batch_size=args.batch_size)
    if _process_rank() != 0:  # several processes (torchrun): each holds the whole result, the main one writes it
        return
    written = _write_prediction(out, args, direction)
    print(f"predict ({direction}): {out.n_obs} cells x {out.n_vars} features -> {written}")


# --------------------------------------------------------------------------------------------------- link

def cmd_link(args) -> None:
    try:
        from .tl import attention
    except ImportError as err:  # built by the attention module's owner; absent in a partial checkout
        raise SystemExit(f"error: cisformer.tl.attention is not available ({err})")

    if args.model is None and args.scorer != "regression":
        raise SystemExit(f"error: --scorer {args.scorer} reads a trained model: pass --model MODEL.pt (only the "
                         "default scorer, regression, needs none)")
    model = _load_model(args.model) if args.model is not None else None
    rna, atac = load_inputs(args)
    rna = _rna_counts(rna, args)
    if args.cell_type_key not in rna.obs:
        raise SystemExit(f"error: {_sources(args)[0]}: field 'obs[{args.cell_type_key!r}]': column missing (obs has "
                         f"{list(rna.obs.columns)[:8]}). Fix: pass --cell-type-key COLUMN")
    try:
        table = attention.links(model, rna, atac, args.scorer, cell_type_key=args.cell_type_key,
                                n_cells_per_type=args.cells_per_type, window=args.window, seed=args.seed)
    except ValueError as err:
        raise _fail(err)
    write_atomic(args.out, lambda tmp: table.to_csv(tmp, index=False))
    print(f"link: {len(table)} CRE-gene links scored by {attention.SCORERS[args.scorer]} -> {args.out}")
    if table.empty:
        why = attention.explain_empty_links(model, rna, atac, args.window, args.cell_type_key, args.cells_per_type)
        print(f"link: no links because {why}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="cisformer", formatter_class=fmt, epilog=EXAMPLES,
                                     description="Cisformer: generate scATAC from scRNA and scRNA from scATAC with a "
                                                 "cross-attention transformer, and read CRE-gene links from it.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{preprocess,train,predict,link}")

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
    _add_inputs(p)
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
    p.add_argument("--backed", action="store_true",
                   help="data larger than memory: read the .h5ad files of --data or --rna/--atac from disk "
                        "(anndata backed='r'), block by block, instead of loading them; memory then holds the "
                        "model and row pointers, not the cells. Needs raw counts in the RNA's X and CSR matrices")
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
    _add_inputs(p)
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
    return parser


def main(argv=None) -> int:
    """Run the ``cisformer`` command line; returns 0, errors exit through SystemExit with one ``error: ...`` line.

    Parameters
    ----------
    argv
        The arguments without the program name (list of str); default None: ``sys.argv[1:]``.
    """
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
