import json

import matplotlib.pyplot as plt
import pandas as pd

from cisformer import pl
from cisformer.utils import provenance


def test_index_traces_figures_to_notebook_parameters_and_data(tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    out = figures / "demo"
    out.mkdir(parents=True)
    data_file = tmp_path / "counts.txt"
    data_file.write_text("1 2 3\n")
    monkeypatch.setenv(provenance.ENV_VAR, str(out / "provenance.jsonl"))
    (out / "params.json").write_text(json.dumps({"notebook": "notebooks/00_demo.ipynb",
                                                 "parameters": {"profile": "quick"}}))
    provenance.record_input(data_file)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png, pdf = pl.savefig(fig, "line", out)
    table = pl.save_table(pd.DataFrame({"x": [0.123456789]}), "line", out)
    plt.close(fig)
    assert png.exists() and pdf.exists() and table.read_text().splitlines()[1] == "0.123457"

    index = provenance.write_index(figures).read_text()
    assert "## demo" in index and "notebooks/00_demo.ipynb" in index and "profile='quick'" in index
    assert provenance.sha256(data_file) in index
    for path in (png, pdf, table):
        assert path.name in index


def test_nothing_recorded_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(provenance.ENV_VAR, raising=False)
    provenance.record_output(tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_summary_holds_what_the_notebook_printed(tmp_path):
    """SUMMARY.md: headings, printed lines (one block per cell), markdown displays and the tables of the folder;
    no warnings (stderr), no images; long outputs cut; INDEX.md links it."""
    folder = tmp_path / "bench"
    folder.mkdir()
    cells = [
        {"cell_type": "markdown", "source": ["# Fig 9: a benchmark\n", "prose that is not a heading"]},
        {"cell_type": "code", "source": "", "outputs": [
            {"output_type": "stream", "name": "stdout", "text": "seed 0: 0.5\n"},
            {"output_type": "stream", "name": "stderr", "text": "UserWarning: noisy\n"},
            {"output_type": "stream", "name": "stdout", "text": "seed 1: 0.6\n"}]},
        {"cell_type": "markdown", "source": "## What this run measured"},
        {"cell_type": "code", "source": "", "outputs": [
            {"output_type": "display_data", "data": {"text/markdown": "**cisformer wins** (+0.1)"}},
            {"output_type": "display_data", "data": {"image/png": "AAAA", "text/plain": "<Figure>"}},
            {"output_type": "stream", "name": "stdout",
             "text": "".join(f"row {i}\n" for i in range(provenance.SUMMARY_LINES_PER_OUTPUT + 5))}]},
    ]
    notebook = {"cells": cells, "metadata": {"papermill": {"parameters": {"profile": "cpu", "out_dir": "x"},
                                                           "end_time": "2026-12-07T10:00:00"}}}
    (folder / "09_bench.ipynb").write_text(json.dumps(notebook))
    (folder / "metrics.csv").write_text("a\n1\n")
    (folder / "provenance.jsonl").write_text("")
    text = provenance.write_summary(folder).read_text()
    assert "# Fig 9: a benchmark" in text and "## What this run measured" in text and "prose" not in text
    assert "seed 0: 0.5\nseed 1: 0.6" in text and "UserWarning" not in text and "<Figure>" not in text
    assert "**cisformer wins** (+0.1)" in text and "profile='cpu'" in text and "out_dir" not in text
    assert "row 0" in text and f"row {provenance.SUMMARY_LINES_PER_OUTPUT + 4}" not in text
    assert "[metrics.csv](metrics.csv)" in text
    assert "[bench/SUMMARY.md](bench/SUMMARY.md)" in provenance.write_index(tmp_path).read_text()
    assert provenance.write_summary(tmp_path) is None
    (folder / "09_bench.ipynb").unlink()  # a fresh clone: executed copies are not in git, SUMMARY.md is
    assert provenance.write_summary(folder) is None and (folder / "SUMMARY.md").read_text() == text
    assert "[bench/SUMMARY.md](bench/SUMMARY.md)" in provenance.write_index(tmp_path).read_text()
