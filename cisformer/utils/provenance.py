"""Provenance log: which data files a run read and which figure / table files it wrote.

``run_all.sh`` sets ``CISFORMER_PROVENANCE`` to a JSON-lines file per notebook; data loaders call
:func:`record_input` and :func:`cisformer.pl.savefig` / :func:`cisformer.pl.save_table` call
:func:`record_output`. ``python -m cisformer.utils.provenance figures`` then writes ``figures/INDEX.md``: each figure
file -> notebook -> parameters -> data files with their sha256, and ``figures/<name>/SUMMARY.md`` per notebook:
the sentences and tables the executed notebook printed (:func:`write_summary`), so that what a run measured can
be read without running it (executed notebooks stay out of git). Without the variable nothing is recorded.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from .paths import REPO_ROOT

ENV_VAR = "CISFORMER_PROVENANCE"


def sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """SHA-256 checksum of a file's bytes.

    Parameters
    ----------
    path
        The file.
    chunk
        Bytes read at a time (default 1 MiB).

    Returns
    -------
    str
        The hex digest (64 characters).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _append(record: dict) -> None:
    log = os.environ.get(ENV_VAR)
    if not log:
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _relative(path: str | os.PathLike, root: Path = REPO_ROOT) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def record_input(path: str | os.PathLike, checksum: str | None = None) -> None:
    """Note that a data file was read (checksum computed when not given).

    Nothing is recorded unless ``CISFORMER_PROVENANCE`` is set; the path is stored relative to the repository root
    when it lies under it.

    Parameters
    ----------
    path
        The data file.
    checksum
        Its hex SHA-256 when already known (default ``None``: computed with :func:`sha256`).
    """
    _append({"input": _relative(path), "sha256": checksum or sha256(path)})


def record_output(path: str | os.PathLike) -> None:
    """Note that a figure or table file was written.

    Nothing is recorded unless ``CISFORMER_PROVENANCE`` is set.

    Parameters
    ----------
    path
        The written file (stored relative to the repository root when under it).
    """
    _append({"output": _relative(path)})


# longer outputs are cut (the CSVs beside the summary hold the tables whole): printed sentences, displayed tables
SUMMARY_LINES_PER_OUTPUT = 150
SUMMARY_LINES_PER_TABLE = 40


def _output_text(output: dict) -> tuple[str, str] | None:
    """(kind, text) of one notebook output worth reading: printed lines (``text``), markdown, or a displayed
    table's plain text (``table``)."""
    if output.get("output_type") == "stream":
        return ("text", "".join(output.get("text", ""))) if output.get("name") == "stdout" else None
    data = output.get("data", {})
    if "text/markdown" in data:
        return "markdown", "".join(data["text/markdown"])
    if "text/plain" in data and "image/png" not in data and not "".join(data["text/plain"]).startswith("<"):
        return "table", "".join(data["text/plain"])
    return None


def write_summary(folder: str | os.PathLike) -> Path | None:
    """Write ``folder/SUMMARY.md`` from the executed notebook in ``folder`` (``NN_name.ipynb``, papermill's copy):
    its title, each section heading, and under it what the section printed (sentences generated from the tables,
    markdown, displayed tables as text); long outputs are cut (:data:`SUMMARY_LINES_PER_OUTPUT`,
    :data:`SUMMARY_LINES_PER_TABLE` lines).

    Parameters
    ----------
    folder
        A notebook's figure folder; with several executed notebooks, the last by name is read.

    Returns
    -------
    Path or None
        The path of ``SUMMARY.md``, or ``None`` when the folder holds no executed notebook.
    """
    folder = Path(folder)
    executed = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not executed:
        return None
    notebook = json.loads(executed[-1].read_text())
    run = notebook.get("metadata", {}).get("papermill", {})
    params = ", ".join(f"{k}={v!r}" for k, v in run.get("parameters", {}).items() if k != "out_dir")
    lines = [f"# {folder.name}: what the last run measured", "",
             f"Written by `./run_all.sh` from the executed `notebooks/{executed[-1].name}` ({params}; finished "
             f"{str(run.get('end_time', '?'))[:16].replace('T', ' ')} UTC). The sentences are the notebook's own, "
             "generated from the tables in this folder. Do not edit.", ""]
    for cell in notebook.get("cells", []):
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "markdown" and source.startswith("#"):
            heading = source.splitlines()[0].lstrip("#").strip()
            lines += [("# " if source.startswith("# ") else "## ") + heading, ""]
            continue
        blocks: list[list] = []  # consecutive printed outputs of a cell form one block
        for output in cell.get("outputs", []):
            found = _output_text(output)
            if found is None or not found[1].strip():
                continue
            if blocks and blocks[-1][0] == found[0] == "text":
                blocks[-1][1] += found[1] if blocks[-1][1].endswith("\n") else "\n" + found[1]
            else:
                blocks.append(list(found))
        for kind, text in blocks:
            text_lines = text.rstrip().splitlines()
            limit = SUMMARY_LINES_PER_TABLE if kind == "table" else SUMMARY_LINES_PER_OUTPUT
            if len(text_lines) > limit:
                text_lines = text_lines[:limit] + [f"... ({len(text_lines)} lines; see the CSVs)"]
            lines += (text_lines if kind == "markdown" else ["```", *text_lines, "```"]) + [""]
    tables = sorted(path.name for path in folder.glob("*.csv"))
    lines += ["## Tables in this folder", "", ", ".join(f"[{name}]({name})" for name in tables) or "(none)", ""]
    summary = folder / "SUMMARY.md"
    summary.write_text("\n".join(lines))
    return summary


def write_index(figures_dir: str | os.PathLike) -> Path:
    """Collect every ``figures/*/provenance.jsonl`` (plus ``params.json`` beside it) into ``figures/INDEX.md``.

    Also (re)writes each folder's ``SUMMARY.md`` (:func:`write_summary`).

    Parameters
    ----------
    figures_dir
        The figures folder (one sub-folder per notebook run).

    Returns
    -------
    Path
        The path of ``INDEX.md``.
    """
    figures_dir = Path(figures_dir).resolve()
    lines = [
        "# Figure index",
        "",
        "Written by `./run_all.sh` (do not edit). Each file -> the notebook that wrote it -> the parameters it ran",
        "with -> the data files it read (sha256).",
        "",
    ]
    for log in sorted(figures_dir.glob("*/provenance.jsonl")):
        folder = log.parent
        params_file = folder / "params.json"
        meta = json.loads(params_file.read_text()) if params_file.exists() else {}
        inputs: dict[str, str] = {}
        outputs: list[str] = []
        for raw in log.read_text().splitlines():
            record = json.loads(raw)
            if "input" in record:
                inputs[record["input"]] = record["sha256"]
            elif "output" in record and record["output"] not in outputs:
                outputs.append(record["output"])
        params = ", ".join(f"{k}={v!r}" for k, v in meta.get("parameters", {}).items())
        lines += [f"## {folder.name}", "", f"- notebook: `{meta.get('notebook', '?')}`", f"- parameters: {params}"]
        if write_summary(folder) is not None or (folder / "SUMMARY.md").exists():  # kept from an earlier run
            lines.append(f"- what it measured: [{folder.name}/SUMMARY.md]({folder.name}/SUMMARY.md)")
        lines.append("- data files:")
        lines += [f"  - `{name}` sha256 `{digest}`" for name, digest in sorted(inputs.items())] or ["  - (none)"]
        lines.append("- files written:")
        lines += [f"  - `{out}`" for out in outputs if (REPO_ROOT / out).exists()] or ["  - (none)"]
        lines.append("")
    index = figures_dir / "INDEX.md"
    index.write_text("\n".join(lines))
    return index


if __name__ == "__main__":
    print(write_index(sys.argv[1] if len(sys.argv) > 1 else "figures"))
