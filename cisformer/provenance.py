"""Provenance log: which data files a run read and which figure / table files it wrote.

``run_all.sh`` sets ``CISFORMER_PROVENANCE`` to a JSON-lines file per notebook; data loaders call
:func:`record_input` and :func:`cisformer.plotting.savefig` / :func:`cisformer.plotting.save_table` call
:func:`record_output`. ``python -m cisformer.provenance figures`` then writes ``figures/INDEX.md``: each figure
file -> notebook -> parameters -> data files with their sha256. Without the variable nothing is recorded.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from .paths import REPO_ROOT

ENV_VAR = "CISFORMER_PROVENANCE"


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
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
    """Note that a data file was read (checksum computed when not given)."""
    _append({"input": _relative(path), "sha256": checksum or sha256(path)})


def record_output(path: str | os.PathLike) -> None:
    """Note that a figure or table file was written."""
    _append({"output": _relative(path)})


def write_index(figures_dir: str | os.PathLike) -> Path:
    """Collect every ``figures/*/provenance.jsonl`` (plus ``params.json`` beside it) into ``figures/INDEX.md``."""
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
