"""Every notebook is stored clean (no outputs, first code cell tagged `parameters`) and runs end to end with
the quick profile. Outputs go to a temporary folder, never over the committed cpu-profile figures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _code_cells(path: Path) -> list[dict]:
    return [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean(notebook: Path):
    cells = _code_cells(notebook)
    assert cells, f"{notebook.name} has no code cell"
    assert "parameters" in cells[0].get("metadata", {}).get("tags", []), \
        f"{notebook.name}: tag the first code cell 'parameters' (papermill injects parameters after it)"
    source = "".join(cells[0]["source"])
    for name in ("profile", "data_dir", "out_dir", "seed", "device"):
        assert f"{name} =" in source, f"{notebook.name}: parameters cell lacks `{name} = ...`"
    dirty = [i for i, cell in enumerate(cells) if cell.get("outputs") or cell.get("execution_count")]
    assert not dirty, f"{notebook.name}: code cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_quick(notebook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    papermill = pytest.importorskip("papermill")
    out_dir = tmp_path / "figures"
    monkeypatch.setenv("CISFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CISFORMER_PROVENANCE", str(out_dir / "provenance.jsonl"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    papermill.execute_notebook(
        str(notebook), str(tmp_path / notebook.name),
        parameters={"profile": "quick", "out_dir": str(out_dir)},
        kernel_name="python3", cwd=str(ROOT / "notebooks"), progress_bar=False,
    )
    figures = sorted(out_dir.glob("*.png"))
    assert figures, f"{notebook.name} (quick) wrote no figure to out_dir"
    for png in figures:
        assert png.with_suffix(".pdf").exists(), f"{png.name} has no PDF twin"
    log = (out_dir / "provenance.jsonl").read_text().splitlines()
    assert any('"output"' in line for line in log), "no figure recorded in the provenance log"
