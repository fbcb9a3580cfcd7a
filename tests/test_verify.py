"""cisformer.utils.verify on small hand-made figure folders, and the determinism fix it relies on (exact kNN)."""
import numpy as np
import pandas as pd
import pytest

from cisformer.metrics import clustering
from cisformer.utils import verify

METRICS = pd.DataFrame({"dataset": ["a", "a", "b"], "method": ["cisformer", "kNN", "kNN"], "seed": [0, 0, 1],
                        "metric": ["AMI", "AMI", "pearson"], "value": [0.123456, np.nan, -0.5]})
RUNTIME = pd.DataFrame({"method": ["cisformer", "kNN"], "seed": [0, 0], "train_s": [12.5, 0.3],
                        "samples_per_s": [800.0, np.nan]})


def _write(root, tables):
    for name, table in tables.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False, float_format="%.6g")  # as pl.save_table writes
    return root


@pytest.fixture
def reference(tmp_path):
    return _write(tmp_path / "reference", {"bench/metrics.csv": METRICS, "bench/runtime.csv": RUNTIME})


def _compare(tmp_path, reference, tables, new="new"):
    return verify.compare_folders(_write(tmp_path / new, tables), reference)


def test_identical_folders_pass(tmp_path, reference):
    table = _compare(tmp_path, reference, {"bench/metrics.csv": METRICS, "bench/runtime.csv": RUNTIME})
    assert table["ok"].all()
    assert set(table["file"]) == {"bench/metrics.csv", "bench/runtime.csv"}
    assert verify.main([str(tmp_path / "new"), str(reference)]) == 0


def test_number_beyond_tolerance_fails_naming_the_column(tmp_path, reference):
    changed = METRICS.assign(value=[0.123456 + 1e-3, np.nan, -0.5])
    table = _compare(tmp_path, reference, {"bench/metrics.csv": changed, "bench/runtime.csv": RUNTIME})
    failed = table[~table["ok"]]
    assert failed[["file", "column"]].values.tolist() == [["bench/metrics.csv", "value"]]
    assert failed["max_abs_diff"].iloc[0] == pytest.approx(1e-3, rel=1e-3)
    assert verify.main([str(tmp_path / "new"), str(reference)]) == 1


def test_last_printed_digit_is_within_tolerance(tmp_path, reference):
    # one unit in the 6th significant digit: rounding of numbers that agree to ~1e-15 can flip it
    changed = METRICS.assign(value=[0.123457, np.nan, -0.5])
    table = _compare(tmp_path, reference, {"bench/metrics.csv": changed, "bench/runtime.csv": RUNTIME})
    assert table["ok"].all()
    assert table.loc[table["column"] == "value", "max_abs_diff"].iloc[0] > 0


def test_nan_against_a_number_fails(tmp_path, reference):
    changed = METRICS.assign(value=[0.123456, 0.0, -0.5])
    table = _compare(tmp_path, reference, {"bench/metrics.csv": changed, "bench/runtime.csv": RUNTIME})
    assert table.loc[~table["ok"], "column"].tolist() == ["value"]


def test_keys_and_counts_compare_exactly(tmp_path, reference):
    relabelled = METRICS.assign(method=["cisformer", "kNN", "floor"])
    reseeded = METRICS.assign(seed=[0, 0, 2])
    for changed, column in [(relabelled, "method"), (reseeded, "seed")]:
        table = _compare(tmp_path, reference, {"bench/metrics.csv": changed, "bench/runtime.csv": RUNTIME}, column)
        assert table.loc[~table["ok"], "column"].tolist() == [column]
        assert table.loc[~table["ok"], "tolerance"].tolist() == ["exact"]


def test_missing_file_fails(tmp_path, reference):
    table = _compare(tmp_path, reference, {"bench/metrics.csv": METRICS})
    failed = table[~table["ok"]]
    assert failed[["file", "column"]].values.tolist() == [["bench/runtime.csv", "(file)"]]


def test_extra_file_missing_columns_and_rows_fail(tmp_path, reference):
    table = _compare(tmp_path, reference, {"bench/metrics.csv": METRICS, "bench/runtime.csv": RUNTIME,
                                           "bench/new_table.csv": RUNTIME})
    assert table.loc[~table["ok"], "file"].tolist() == ["bench/new_table.csv"]
    table = _compare(tmp_path, reference, {"bench/metrics.csv": METRICS.drop(columns="seed"),
                                           "bench/runtime.csv": RUNTIME.iloc[:1]}, new="new2")
    assert table.loc[~table["ok"], "column"].tolist() == ["(columns)", "(rows)"]
    assert "only reference: 1 keys (method, seed) e.g. ('kNN', '0')" in table.loc[~table["ok"], "note"].iloc[1]


def test_timing_columns_are_ignored(tmp_path, reference):
    slower = RUNTIME.assign(train_s=[99.0, 7.0], samples_per_s=[1.0, 2.0])
    table = _compare(tmp_path, reference, {"bench/metrics.csv": METRICS, "bench/runtime.csv": slower})
    assert table["ok"].all()
    timing = table[table["file"] == "bench/runtime.csv"].set_index("column")["tolerance"]
    assert timing["train_s"] == timing["samples_per_s"] == "ignored (timing)"
    assert timing["seed"] == "exact"
    assert [c for c in ["train_s", "predict_s", "seconds", "samples_per_s", "time", "n_cells", "seed", "value"]
            if verify.is_timing_column(c)] == ["train_s", "predict_s", "seconds", "samples_per_s", "time"]


def test_missing_reference_folder_fails(tmp_path):
    new = _write(tmp_path / "new", {"bench/metrics.csv": METRICS})
    (tmp_path / "empty").mkdir()
    table = verify.compare_folders(new, tmp_path / "empty")
    assert not table["ok"].any() and table["column"].tolist() == ["(folder)"]


def test_knn_graph_ignores_thread_count_with_tied_cells():
    """Cells with identical predictions are equidistant; the brute-force search broke such ties differently
    with 1 and 2 OpenMP threads (it changed AMI by 0.017 on notebook 02's peak-to-gene predictions)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(30, 30))[rng.integers(0, 30, 300)].astype(np.float32)  # 30 groups of copies
    graphs = []
    for threads in (1, 2):
        with threadpool_limits(threads):
            graphs.append(clustering._knn_graph(embedding, 8).toarray())
    np.testing.assert_array_equal(graphs[0], graphs[1])
