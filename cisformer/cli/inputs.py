"""What a command reads: paired AnnData, MuData, a data folder or a shipped data set, the cells to use and a trained
model; bad input ends in one ``error: FILE: field 'FIELD': problem. Fix: ...`` line.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def process_rank() -> int:
    """This process's rank in a running multi-process group (``torchrun``); 0 without one."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def fail(err) -> SystemExit:
    """The one-line CLI error for an exception raised by the package (InputError, ValueError).

    Parameters
    ----------
    err
        The exception (or message); the line is ``error: {err}``.

    Returns
    -------
    SystemExit, for the caller to raise.
    """
    return SystemExit(f"error: {err}")


# --------------------------------------------------------------------------------------------------- inputs

def add_inputs(p: argparse.ArgumentParser) -> None:
    """Add the input options (``--dataset``, ``--data``, ``--rna``/``--atac``, ``--mudata``, ``--data-dir``); each is
    optional to argparse, :func:`load_inputs` checks that exactly one input is given.

    Parameters
    ----------
    p
        A command's subparser.
    """
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
    from .. import data

    if not path.exists():
        raise SystemExit(f"error: {what} file {path} does not exist")
    if path.suffix != ".h5ad":
        raise SystemExit(f"error: {what} file {path} must be an .h5ad file (AnnData); convert other formats with "
                         "scanpy (sc.read_10x_h5, sc.read_mtx) or cisformer.data first")
    try:
        return data.read_any(path, backed)  # empty, truncated or unreadable files -> InputError
    except data.InputError as err:
        raise fail(err)


def input_names(args) -> tuple[str, str]:
    """Names of the RNA and ATAC inputs, for messages.

    Parameters
    ----------
    args
        The parsed command line (``--10x-h5``, ``--dataset``, ``--mudata``, ``--data`` or ``--rna``/``--atac``).

    Returns
    -------
    ``(rna name, atac name)``: file paths, or the data set or MuData file with the modality.
    """
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
    read-only from disk instead of loaded.

    Parameters
    ----------
    args
        The parsed command line.
    need_rna, need_atac
        Whether the command needs the modality (an error line if it is not given).

    Returns
    -------
    ``(rna, atac)``: AnnData (in memory or backed), or None for a modality not needed and not given.
    """
    mudata_path = getattr(args, "mudata", None)
    backed = getattr(args, "backed", False)
    sources = [s for s in (args.dataset, args.data, args.rna or args.atac, mudata_path) if s]
    if len(sources) != 1:
        raise SystemExit("error: give exactly one input: --dataset NAME, --data DIR, --rna/--atac files or --mudata FILE")
    if backed and (args.dataset or mudata_path):
        raise SystemExit(f"error: --backed reads .h5ad files from disk, not {'--dataset' if args.dataset else '--mudata'}"
                         ". Fix: give --data DIR or --rna FILE --atac FILE, or drop --backed to load the data into "
                         "memory")
    from .. import data

    if args.dataset:
        try:
            return data.load(args.dataset, data_dir=args.data_dir)
        except (KeyError, data.InputError) as err:
            raise fail(err.args[0] if isinstance(err, KeyError) else err)
    if mudata_path:
        if not mudata_path.exists():
            raise SystemExit(f"error: MuData file {mudata_path} does not exist")
        try:
            return data.read_paired(mudata_path, genome=getattr(args, "genome", None),
                                    recover_counts=getattr(args, "recover_counts", False),
                                    cell_type_column=getattr(args, "cell_type_column", None))
        except data.InputError as err:
            raise fail(err)
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

def read_user_pair(args):
    """Files given with --10x-h5, --rna/--atac or --data, read through cisformer.data.read_10x / read_paired (counts
    found or recovered, peak names parsed, chromosome names normalised, labels attached).

    Parameters
    ----------
    args
        The parsed ``preprocess`` command line.

    Returns
    -------
    ``(rna, atac)`` AnnData.
    """
    from .. import data

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


def cre_vocabulary(name: str):
    """The CRE vocabulary of ``--cre-vocabulary``: a shipped one or the first three columns of a BED file.

    Parameters
    ----------
    name
        ``"human"``, ``"mouse"`` (:func:`cisformer.data.load_cre_vocabulary`) or the path of a tab-separated BED file.

    Returns
    -------
    DataFrame with columns ``chrom``, ``start``, ``end``.
    """
    import pandas as pd

    from .. import data

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


def select_cells(adata, cells: str, model_path: Path):
    """The cells of ``--cells``; one error line for a missing split file or cells not in the input.

    Parameters
    ----------
    adata
        The input AnnData.
    cells
        ``"all"``, ``"train"``, ``"val"``, ``"test"`` (read from ``split.csv`` beside the model) or a file of cell
        names, one a line.
    model_path
        The model file (its folder holds the ``split.csv`` that ``cisformer train`` wrote).

    Returns
    -------
    ``adata`` itself for ``"all"``, else a copy of the selected cells.
    """
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


def unreadable_checkpoint(err: Exception) -> bool:
    """Whether ``err`` is what torch.load raises on a truncated or corrupt file.

    Parameters
    ----------
    err
        The exception raised.

    Returns
    -------
    bool
    """
    import pickle
    import zipfile

    text = str(err)
    return isinstance(err, (EOFError, pickle.UnpicklingError, zipfile.BadZipFile)) or (
        isinstance(err, RuntimeError) and any(k in text for k in ("PytorchStreamReader", "zip archive", "pickle")))


def load_model(path: Path, direction: str | None = None):
    """A trained model from ``path``; one error line for a missing, truncated or corrupt file or a model of the
    other direction than ``direction``.

    Parameters
    ----------
    path
        The model file (``model.pt`` written by ``cisformer train``).
    direction
        ``"rna2atac"`` or ``"atac2rna"`` the model must have; None: either.

    Returns
    -------
    :class:`~cisformer.model.Cisformer`
    """
    from ..model import Cisformer

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
                         f"({DIRECTION_TEXT[model.config.direction]}), not {direction}. Fix: pass the model trained "
                         f"with cisformer train --direction {direction}, or drop --direction")
    return model


DIRECTION_TEXT = {"rna2atac": "predicts ATAC from RNA", "atac2rna": "predicts RNA from ATAC"}
