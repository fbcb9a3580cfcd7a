"""The benchmark harness as a new user runs it: the reference env's final check and the reference driver import
the reference package cisformer.M2Mmodel even from the repository root (where our cisformer/ would shadow it),
and the harness reads the CRE vocabulary the repository ships."""
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


@pytest.fixture
def fake_reference_env(tmp_path):
    """A venv whose site-packages hold stand-ins of torch, flash_attn, numpy and the reference cisformer.M2Mmodel."""
    env = tmp_path / ".env-reference"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    site = next(env.glob("lib/python*/site-packages"))
    for module, text in (("torch", "__version__ = 'fake'"), ("flash_attn", "__version__ = 'fake'"), ("numpy", "#"),
                         ("cisformer", ""), ("cisformer/M2Mmodel", ""), ("cisformer/M2Mmodel/M2M", "")):
        path = site / module
        if text == "" and not module.endswith("M2M"):
            path.mkdir(parents=True, exist_ok=True)
            (path / "__init__.py").write_text("")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            (site / f"{module}.py").write_text(text)
    return env


def final_check(script: str) -> str:
    """The setup script's final import check (the subshell from '(cd "$ENV"' to the closing ')')."""
    match = re.search(r'^\(cd "\$ENV".*?^\)$', script, flags=re.S | re.M)
    assert match, "final check not found in setup_reference_env.sh"
    return match.group(0)


def test_setup_final_check_imports_the_reference_from_the_repo_root(fake_reference_env):
    snippet = final_check((BENCH / "setup_reference_env.sh").read_text())
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # even with our checkout on PYTHONPATH
    run = subprocess.run(["bash", "-c", f'set -euo pipefail; ENV="{fake_reference_env}"\n{snippet}'], cwd=REPO,
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "reference env ready" in run.stdout and str(fake_reference_env) in run.stdout
    # the old check (python - from the repository root) is what failed: our cisformer has no M2Mmodel
    old = subprocess.run([str(fake_reference_env / "bin" / "python"), "-c", "import cisformer.M2Mmodel.M2M"],
                         cwd=REPO, capture_output=True, text=True)
    assert "No module named 'cisformer.M2Mmodel'" in old.stderr


def test_reference_driver_drops_our_checkout(fake_reference_env):
    """bench_common.use_reference_package (called by ref_driver.py) drops the repository root from sys.path."""
    code = ("import sys; sys.path.insert(0, ''); sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]);"
            "import bench_common as bc; bc.use_reference_package(); import cisformer.M2Mmodel.M2M as m; print(m.__file__)")
    run = subprocess.run([str(fake_reference_env / "bin" / "python"), "-c", code, str(REPO), str(BENCH)], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert str(fake_reference_env) in run.stdout
    text = (BENCH / "ref_driver.py").read_text()
    assert text.index("bc.use_reference_package()") < text.index("from cisformer")


def test_harness_reads_the_shipped_cre_vocabulary(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import run_benchmarks

    path = run_benchmarks.shipped_cre_bed()
    assert path == REPO / "data" / "reference" / "human_cCREs_hg38.bed.gz" and path.exists()
    source = (BENCH / "run_benchmarks.py").read_text()
    assert "../shared" not in source and '"shared"' not in source
