import json

import matplotlib.pyplot as plt
import pandas as pd

from cisformer import plotting, provenance


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
    png, pdf = plotting.savefig(fig, "line", out)
    table = plotting.save_table(pd.DataFrame({"x": [0.123456789]}), "line", out)
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
