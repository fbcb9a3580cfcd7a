"""The four commands: ``preprocess``, ``train``, ``predict`` and ``link``, each the Python function it mirrors
with its outputs written atomically.
"""
from __future__ import annotations

import json
import sys
import warnings

from ..utils.paths import write_atomic
from .inputs import (DIRECTION_TEXT, cre_vocabulary, fail, input_names, load_inputs, load_model, process_rank,
                     read_user_pair, select_cells, unreadable_checkpoint)


def cmd_preprocess(args) -> None:
    """``cisformer preprocess``: pair the cells, map peaks to CREs (``--cre-vocabulary``), apply QC and write
    ``rna.h5ad`` / ``atac.h5ad`` to ``--out``, or a named data set there (``--name``).

    Parameters
    ----------
    args
        The command's parsed ``argparse.Namespace`` (:func:`cisformer.cli.parser.build_parser`).
    """
    from .. import data
    from ..data import vocab

    rna_source, atac_source = input_names(args)
    notes = []
    if args.genome is None and args.cre_vocabulary == "human":
        args.genome = "hg38"
    try:
        if (args.dataset or args.mudata) and args.tenx_h5 is None:
            rna, atac = load_inputs(args)
            if args.dataset and args.cell_type_column is not None:
                data.use_cell_type_column(rna, atac, args.cell_type_column, f"dataset {args.dataset}")
        else:
            rna, atac = read_user_pair(args)
        notes += [n for n in (rna.uns.pop("counts_note", None), atac.uns.pop("chrom_note", None)) if n]
        rna, atac, note = data.pair_cells(rna, atac, rna_source, atac_source)
        notes.append(note)
        data.validate_pair(rna, atac, rna_source, atac_source, allow_empty_cells=True)
        notes.append(data.ATAC_RULE)
        if args.liftover:
            atac, note = data.lift_peaks(atac, args.liftover, atac_source)
            notes.append(note)
        if args.cre_vocabulary:
            cres = cre_vocabulary(args.cre_vocabulary)
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
        raise fail(err)
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
        raise fail(err)
    print(f"{counts}; wrote {written['rna']}, {written['atac']} and their lines in {args.out / 'MANIFEST'}\n"
          f"preprocess: read it with --dataset {args.name} --data-dir {args.out} (train / predict / link), "
          f"cisformer.data.load({args.name!r}, data_dir={str(args.out)!r}), or the notebooks: ./run_all.sh --data "
          f"{args.out} --param dataset={args.name}")


# --------------------------------------------------------------------------------------------------- train

def _rna_counts(rna, args):
    """RNA with raw counts in X (found in layers['counts'] / .raw when X holds other values), or one error line:
    log-normalised values are never floored into training or prediction. Inputs marked ``uns["counts"] = False``
    (a shipped set with normalised RNA) pass unchanged."""
    from .. import data

    if rna is None or rna.uns.get("counts", True) is False:
        return rna
    try:
        rna, note = data.find_counts(rna, input_names(args)[0])
    except data.InputError as err:
        raise fail(err)
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
    """``cisformer train``: split the cells (:func:`cisformer.data.split_cells`), train one direction
    (:func:`cisformer.train.fit`, checkpoints in ``--out/checkpoints``) and write ``model.pt``, ``split.csv`` and
    ``history.csv`` to ``--out``.

    Parameters
    ----------
    args
        The command's parsed ``argparse.Namespace`` (:func:`cisformer.cli.parser.build_parser`).
    """
    import pandas as pd

    from .. import data, train

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
        if unreadable_checkpoint(err):
            raise SystemExit(f"error: {args.out / 'checkpoints'}: field 'checkpoint': a saved checkpoint cannot be read, "
                             f"truncated or corrupt ({type(err).__name__}: {str(err)[:160]}). Fix: delete "
                             f"{args.out / 'checkpoints'} (training restarts from scratch) or restore it from a copy")
        raise
    if process_rank() != 0:  # several processes (torchrun): all hold the same model, the main one writes it
        return
    write_atomic(args.out / "model.pt", model.save)
    write_atomic(args.out / "history.csv", lambda tmp: history.to_csv(tmp, index=False))
    best = history.loc[history["val_score"].idxmax()]
    criterion = "AUROC gain over the floor" if args.direction == "rna2atac" else "gene-wise Pearson"
    print(f"train: best epoch {int(best['epoch'])}, validation {criterion} {best['val_score']:.4f} "
          f"(val loss {best['val_loss']:.4f}); wrote {args.out}/model.pt, split.csv, history.csv")


# --------------------------------------------------------------------------------------------------- predict

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
    """``cisformer predict``: the other modality from a trained model (:func:`cisformer.predict.rna_to_atac`,
    streamed to an .h5ad; :func:`~cisformer.predict.atac_to_rna`), written to ``--out`` (.h5ad or a modality of .h5mu).

    Parameters
    ----------
    args
        The command's parsed ``argparse.Namespace`` (:func:`cisformer.cli.parser.build_parser`).
    """
    from .. import data, predict

    model = load_model(args.model, args.direction)
    direction = model.config.direction
    if args.rna is not None and args.atac is None and direction == "atac2rna" or (
            args.atac is not None and args.rna is None and direction == "rna2atac"):
        given = "--rna" if args.rna is not None else "--atac"
        raise SystemExit(f"error: {args.model}: field 'direction': the model is {direction} "
                         f"({DIRECTION_TEXT[direction]}) but only {given} was given. Fix: give "
                         f"{'--rna' if direction == 'rna2atac' else '--atac'}, or use a model trained with "
                         f"--direction {'atac2rna' if direction == 'rna2atac' else 'rna2atac'}")
    rna, atac = load_inputs(args, need_rna=direction == "rna2atac",
                            need_atac=direction == "atac2rna" and not args.mask)
    if direction == "rna2atac":
        rna = _rna_counts(rna, args)
    rna_source, atac_source = input_names(args)
    try:
        if direction == "rna2atac":
            match = predict.feature_match(rna, model.gene_names, "genes", rna_source)
        else:
            match = predict.feature_match(atac, model.cre_names, "CREs", atac_source)
    except data.InputError as err:
        raise fail(err)
    print(f"predict: {match['note']}; absent ones are read as zero")
    if direction == "rna2atac":
        rna = select_cells(rna, args.cells, args.model)
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
                raise fail(err)
            shape = out.shape
            out.file.close()
            print(f"predict ({direction}): {shape[0]} cells x {shape[1]} features ({args.store}, {args.dtype}) "
                  f"-> {args.out}")
            return
        out = predict.rna_to_atac(model, rna, threshold=threshold, batch_size=args.batch_size)
    else:
        atac = select_cells(atac, args.cells, args.model)
        mask = None
        if args.mask:
            if rna is None:
                raise SystemExit("error: --mask reads the measured RNA: give it with --rna or --data")
            mask = rna[atac.obs_names]
        out = predict.atac_to_rna(model, atac, mask=mask, batch_size=args.batch_size)
    if process_rank() != 0:  # several processes (torchrun): each holds the whole result, the main one writes it
        return
    written = _write_prediction(out, args, direction)
    print(f"predict ({direction}): {out.n_obs} cells x {out.n_vars} features -> {written}")


# --------------------------------------------------------------------------------------------------- link

def cmd_link(args) -> None:
    """``cisformer link``: CRE-gene links scored per cell type (:func:`cisformer.tl.attention.links`), written as CSV
    to ``--out``.

    Parameters
    ----------
    args
        The command's parsed ``argparse.Namespace`` (:func:`cisformer.cli.parser.build_parser`).
    """
    try:
        from ..tl import attention
    except ImportError as err:  # built by the attention module's owner; absent in a partial checkout
        raise SystemExit(f"error: cisformer.tl.attention is not available ({err})")

    if args.model is None and args.scorer != "regression":
        raise SystemExit(f"error: --scorer {args.scorer} reads a trained model: pass --model MODEL.pt (only the "
                         "default scorer, regression, needs none)")
    model = load_model(args.model) if args.model is not None else None
    rna, atac = load_inputs(args)
    rna = _rna_counts(rna, args)
    if args.cell_type_key not in rna.obs:
        raise SystemExit(f"error: {input_names(args)[0]}: field 'obs[{args.cell_type_key!r}]': column missing (obs has "
                         f"{list(rna.obs.columns)[:8]}). Fix: pass --cell-type-key COLUMN")
    try:
        table = attention.links(model, rna, atac, args.scorer, cell_type_key=args.cell_type_key,
                                n_cells_per_type=args.cells_per_type, window=args.window, seed=args.seed)
    except ValueError as err:
        raise fail(err)
    write_atomic(args.out, lambda tmp: table.to_csv(tmp, index=False))
    print(f"link: {len(table)} CRE-gene links scored by {attention.SCORERS[args.scorer]} -> {args.out}")
    if table.empty:
        why = attention.explain_empty_links(model, rna, atac, args.window, args.cell_type_key, args.cells_per_type)
        print(f"link: no links because {why}", file=sys.stderr)


# --------------------------------------------------------------------------------------------------- parser
