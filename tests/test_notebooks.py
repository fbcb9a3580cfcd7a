"""Every notebook is stored clean (no outputs, first code cell tagged `parameters`) and runs end to end with
the quick profile. Outputs go to a temporary folder, never over the committed cpu-profile figures."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
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


def test_data_overview_reads_a_user_data_folder(tmp_path: Path, tenx_download, monkeypatch: pytest.MonkeyPatch):
    """From a download to a notebook: the 10x fixture through `cisformer preprocess --name tenx --out DIR`, then
    notebook 00 with data_dir=DIR, datasets=["tenx"] (what `./run_all.sh --data DIR --param 'datasets=[tenx]'` passes)."""
    papermill = pytest.importorskip("papermill")
    from cisformer import cli

    folder = tmp_path / "tenx_folder"
    cli.main([str(a) for a in ("preprocess", "--10x-h5", tenx_download["h5"], "--fragments", tenx_download["fragments"],
                               "--cell-types", tenx_download["labels"], "--cell-type-column", "celltype", "--genome",
                               "hg38", "--name", "tenx", "--out", folder, "--min-cells", 0, "--min-genes", 1,
                               "--min-cres", 1)])  # --min-cells 0 keeps all 200 tiles (100 fragments) for the ATAC LSI
    out_dir = tmp_path / "figures"
    monkeypatch.setenv("CISFORMER_PROVENANCE", str(out_dir / "provenance.jsonl"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = ROOT / "notebooks" / "00_data_overview.ipynb"
    papermill.execute_notebook(
        str(notebook), str(tmp_path / notebook.name),
        parameters={"profile": "quick", "out_dir": str(out_dir), "data_dir": str(folder), "datasets": ["tenx"]},
        kernel_name="python3", cwd=str(ROOT / "notebooks"), progress_bar=False,
    )
    for name in ("qc_tenx.png", "qc_cells_tenx.csv", "umap_tenx.png", "umap_tenx.csv"):
        assert (out_dir / name).exists(), name
    composition = pd.read_csv(out_dir / "cell_type_composition.csv")
    assert set(composition["dataset"]) == {"tenx"} and dict(zip(composition.cell_type, composition.cells)) == {"T": 34, "B": 20}
    log = (out_dir / "provenance.jsonl").read_text()
    assert "tenx_folder/datasets/tenx_rna.h5ad" in log
