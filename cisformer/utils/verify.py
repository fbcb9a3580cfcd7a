"""Do regenerated tables match the committed ones? (``./run_all.sh --verify``)

``python -m cisformer.utils.verify NEW REFERENCE [--names NAME ...]`` compares every CSV of ``NEW/<name>/`` with the
same file in ``REFERENCE/<name>/`` (one folder per notebook, as ``figures/`` holds them): the same files, the
same columns, the same number of rows, equal text in every non-numeric column (the keys: dataset, method,
metric, gene, ...), equal integers (counts, seeds), and floats within the tolerance below. Rows are compared in
file order: the notebooks write them in a fixed order, so a reordering is a difference too. It prints one row
per compared column that is not identical (file, column, max abs difference, tolerance, ok) and returns
non-zero when anything fails.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# Tolerances, in one place.
#   * text and integer columns (keys, labels, counts, seeds, ranks; a column whose every cell reads as an
#     integer counts as one): exact.
#   * float columns: |new - reference| <= FLOAT_ATOL + FLOAT_RTOL * |reference|. pl.save_table writes 6
#     significant digits, so two runs that computed the same number can still differ by one unit in the last
#     printed digit (a relative 1e-5 at most) when a sum is rounded differently; anything larger is a real
#     change. FLOAT_ATOL only absorbs signed zeros and round-off around 0.
#   * timing columns (wall-clock seconds, throughput) are not compared: they measure the machine and its load,
#     not the method. A file made only of keys and timings (runtime.csv) is therefore compared on its keys.
#   * LOOSER: per (file, column) exceptions, each with the reason; empty while no documented, unavoidable source
#     of variation remains.
FLOAT_RTOL = 1e-5
FLOAT_ATOL = 1e-12
TIMING_COLUMN = re.compile(r"(^|_)(s|sec|secs|seconds|time|elapsed|wall|per_s)$", re.IGNORECASE)
LOOSER: dict[tuple[str, str], tuple[float, str]] = {}

_INTEGER_TEXT = re.compile(r"^[+-]?\d+$")
COLUMNS = ["file", "column", "max_abs_diff", "tolerance", "ok", "note"]


def is_timing_column(name: str) -> bool:
    """Whether a column holds wall-clock measurements (``train_s``, ``seconds``, ``samples_per_s`` ...).

    Parameters
    ----------
    name
        Column name (converted to str).

    Returns
    -------
    bool
        True when the name matches ``TIMING_COLUMN``.
    """
    return bool(TIMING_COLUMN.search(str(name)))


def _read(path: Path) -> pd.DataFrame:
    # all text, nothing guessed: "NA" stays a string, an empty cell is "" (compared as missing in number columns)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _as_numbers(text: pd.Series) -> pd.Series | None:
    """The column as floats (empty cells -> NaN), or None when some cell is not a number."""
    values = pd.to_numeric(text.where(text != "", "nan"), errors="coerce")
    bad = values.isna() & ~text.isin(["", "nan", "NaN"])
    return None if bad.any() else values.astype(float)


def _is_key(text: pd.Series) -> bool:
    """Text or integer columns: the keys and counts, compared exactly."""
    return _as_numbers(text) is None or bool(text.replace("", "0").str.match(_INTEGER_TEXT).all())


def _row(file, column, diff, tolerance, ok, note=""):
    return {"file": file, "column": column, "max_abs_diff": diff, "tolerance": tolerance, "ok": bool(ok),
            "note": note}


def compare_tables(new: pd.DataFrame, reference: pd.DataFrame, file: str = "") -> list[dict]:
    """Compare two tables read as text (``pd.read_csv(..., dtype=str, keep_default_na=False)``).

    Parameters
    ----------
    new, reference
        The regenerated and the reference table, all columns as text.
    file
        Label written in each row's ``file`` field (default ``""``).

    Returns
    -------
    list of dict
        One dict per column (see ``COLUMNS``), or a single failing one naming the problem when the columns
        or the number of rows differ (with the keys found on one side only).
    """
    if list(new.columns) != list(reference.columns):
        missing = [c for c in reference.columns if c not in new.columns]
        extra = [c for c in new.columns if c not in reference.columns]
        note = f"columns differ: missing {missing}, new {extra}" if missing or extra else "column order differs"
        return [_row(file, "(columns)", np.nan, "exact", False, note)]
    if len(new) != len(reference):
        note = f"{len(new)} rows, reference has {len(reference)}"
        keys = [c for c in reference.columns if not is_timing_column(c) and _is_key(reference[c])]
        if keys:
            ours, theirs = (set(map(tuple, t[keys].to_numpy())) for t in (new, reference))
            for label, extra in (("only new", ours - theirs), ("only reference", theirs - ours)):
                if extra:
                    note += f"; {label}: {len(extra)} keys ({', '.join(keys)}) e.g. {sorted(extra)[0]}"
        return [_row(file, "(rows)", np.nan, "exact", False, note)]
    rows = []
    for column in reference.columns:
        a, b = new[column], reference[column]
        if is_timing_column(column):
            rows.append(_row(file, column, np.nan, "ignored (timing)", True))
            continue
        x, y = _as_numbers(a), _as_numbers(b)
        if x is None or y is None or (_is_key(a) and _is_key(b)):
            unequal = (a.to_numpy() != b.to_numpy())
            diff = float(np.abs(x - y).max()) if x is not None and y is not None and len(x) else np.nan
            note = ""
            if unequal.any():
                i = int(np.flatnonzero(unequal)[0])
                note = f"{int(unequal.sum())} cells differ, first at data row {i + 1}: {a.iloc[i]!r} vs {b.iloc[i]!r}"
            rows.append(_row(file, column, diff, "exact", not unequal.any(), note))
            continue
        rtol, reason = LOOSER.get((file, column), (FLOAT_RTOL, ""))
        xv, yv = x.to_numpy(), y.to_numpy()
        same_missing = np.isnan(xv) == np.isnan(yv)
        finite = ~np.isnan(xv) & ~np.isnan(yv)
        with np.errstate(invalid="ignore"):
            delta = np.where(finite & (xv == yv), 0.0, np.abs(xv - yv))  # equal infinities -> 0
        bad = ~same_missing | (finite & ~(delta <= FLOAT_ATOL + rtol * np.abs(yv)))
        diff = float(np.nanmax(np.where(finite, delta, np.nan))) if finite.any() else 0.0
        note = reason
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            note = f"{int(bad.sum())} cells beyond tolerance, first at data row {i + 1}: {a.iloc[i]} vs {b.iloc[i]}"
            if not same_missing.all():
                note += f"; {int((~same_missing).sum())} cells missing in one file only"
        rows.append(_row(file, column, diff, f"rtol {rtol:g}", not bad.any(), note))
    return rows


def compare_folders(new: str | Path, reference: str | Path, names: list[str] | None = None) -> pd.DataFrame:
    """Compare the CSVs of ``new/<name>/`` with ``reference/<name>/`` for each name (default: every folder of
    ``new``, one per notebook run). A CSV present on one side only, or a missing reference folder, is a failure.

    Parameters
    ----------
    new, reference
        Folders of regenerated and of reference notebook folders.
    names
        Notebook folders to compare (default ``None``: every folder of ``new``).

    Returns
    -------
    DataFrame
        A table with ``COLUMNS`` (``file`` is ``<name>/<file>.csv``), one row per compared column or per problem.
    """
    new, reference = Path(new), Path(reference)
    if names is None:
        names = sorted(p.name for p in new.iterdir() if p.is_dir())
    rows = []
    for name in names:
        new_dir, ref_dir = new / name, reference / name
        if not ref_dir.is_dir():
            rows.append(_row(name, "(folder)", np.nan, "exact", False, f"no reference folder {ref_dir}"))
            continue
        new_files = {p.name for p in new_dir.glob("*.csv")} if new_dir.is_dir() else set()
        ref_files = {p.name for p in ref_dir.glob("*.csv")}
        for file in sorted(ref_files | new_files):
            label = f"{name}/{file}"
            if file not in new_files:
                rows.append(_row(label, "(file)", np.nan, "exact", False, "not written by the regenerated run"))
            elif file not in ref_files:
                rows.append(_row(label, "(file)", np.nan, "exact", False, "not in the reference folder"))
            else:
                rows += compare_tables(_read(new_dir / file), _read(ref_dir / file), label)
    return pd.DataFrame(rows, columns=COLUMNS)


def report(table: pd.DataFrame, show_all: bool = False) -> str:
    """The rows worth reading (failures and non-zero differences; every row with ``show_all``) and a summary.

    Parameters
    ----------
    table
        Output of :func:`compare_folders`.
    show_all
        Show every row, identical ones and timing columns too (default ``False``).

    Returns
    -------
    str
        An aligned text table (when any row is shown) followed by a one-line count of identical, within-tolerance and
        failed checks.
    """
    compared = table[table["tolerance"] != "ignored (timing)"]
    shown = table if show_all else compared[~compared["ok"] | (compared["max_abs_diff"].fillna(0) > 0)]
    lines = []
    if len(shown):
        cells = [COLUMNS] + [[str(r.file), str(r.column), "" if pd.isna(r.max_abs_diff) else f"{r.max_abs_diff:.3g}",
                              r.tolerance, "ok" if r.ok else "FAIL", r.note] for r in shown.itertuples()]
        widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS) - 1)]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in cells]
    files = table["file"].nunique()
    identical = int((compared["ok"] & (compared["max_abs_diff"].fillna(0) == 0)).sum())
    failed = int((~table["ok"]).sum())
    lines.append(f"{files} files, {len(compared)} checks (columns, or a file / its shape; "
                 f"{len(table) - len(compared)} timing columns ignored): {identical} identical, "
                 f"{len(compared) - identical - failed} within tolerance, {failed} failed")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: compare ``NEW`` with ``REFERENCE`` and print :func:`report`.

    Parameters
    ----------
    argv
        Command-line arguments (default ``None``: ``sys.argv[1:]``); see ``python -m cisformer.utils.verify -h``.

    Returns
    -------
    int
        Exit status: 0 when every check passed, 1 when any failed or no CSV was found under ``NEW``.
    """
    parser = argparse.ArgumentParser(prog="python -m cisformer.utils.verify", description=__doc__.splitlines()[0])
    parser.add_argument("new", help="folder of regenerated notebook folders (e.g. a --verify run's figures)")
    parser.add_argument("reference", help="folder of reference notebook folders (e.g. figures/)")
    parser.add_argument("--names", nargs="*", help="notebook folders to compare (default: every folder of NEW)")
    parser.add_argument("--all", action="store_true", help="print every compared column, identical ones too")
    args = parser.parse_args(argv)
    table = compare_folders(args.new, args.reference, args.names)
    if table.empty:
        print(f"nothing to compare: no CSV under {args.new}")
        return 1
    print(report(table, show_all=args.all))
    return 0 if table["ok"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
