"""The package's layout rules (issue "a house a newcomer walks in one pass"): subpackages by role, short modules,
no import cycles, no use of another module's underscore names, driver code in real files, public names that
resolve."""
import ast
import importlib
from pathlib import Path

import pytest

import cisformer

ROOT = Path(cisformer.__file__).parent
MAX_MODULE_LINES = 700
MAX_STRING_LINES = 40


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package) for every module of the package (driver scripts excluded: they run in
    other environments and are not imported)."""
    found = {}
    for path in ROOT.rglob("*.py"):
        if "drivers" in path.relative_to(ROOT).parts:
            continue
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(name: str, path: Path, is_package: bool, known) -> list[tuple[str, str]]:
    """(imported module, imported name) of every ``import`` / ``from ... import`` of the package in ``path``,
    module-level and inside functions alike; a name that is itself a module counts as that module."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "cisformer":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "") if sub in known else (target, alias.name))
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name in known]
    return found


def test_subpackages_by_role():
    packages = {name for name, (_, is_package) in modules().items() if is_package and name != "cisformer"}
    assert {"cisformer.data", "cisformer.tl", "cisformer.metrics", "cisformer.attune", "cisformer.peers"} <= packages


def test_no_long_modules():
    long = {name: n for name, (path, _) in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_import_cycles_and_no_private_imports():
    known = modules()
    graph = {name: set() for name in known}
    private = []
    for name, (path, is_package) in known.items():
        for target, imported in imports(name, path, is_package, known):
            if target != name and target in known:
                graph[name].add(target)
            if imported.startswith("_") and target != name:
                private.append(f"{name} imports {target}.{imported}")
    assert not private, private

    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(trail[trail.index(nxt):] + [nxt])}")
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])


# layers, lowest first: a module imports only from its own layer or lower ones
LAYERS = {"utils": 0, "profiles": 0, "data": 1, "model": 2, "sampler": 2, "protocol": 2, "runs": 2, "train": 2,
          "predict": 2, "metrics": 2, "tl": 3, "attune": 3, "peers": 3, "pl": 4, "cli": 4, "__main__": 4}


def test_no_layer_imports_upwards():
    known = modules()
    upward = []
    for name, (path, is_package) in known.items():
        if name == "cisformer":
            continue
        for target, _ in imports(name, path, is_package, known):
            if target != "cisformer" and LAYERS[target.split(".")[1]] > LAYERS[name.split(".")[1]]:
                upward.append(f"{name} imports {target}")
    assert not upward, upward


def test_helpers_written_once():
    sources = {name: path.read_text() for name, (path, _) in modules().items()}
    assert sum(source.count("def _dense(") + source.count("def dense(") for source in sources.values()) == 1
    assert sum(source.count("def write_atomic(") for source in sources.values()) == 1
    # one fingerprint: every digest of code, settings and data goes through runs.Fingerprint
    assert {name for name, source in sources.items() if "blake2b(" in source} == {"cisformer.runs"}
    assert sum(line.startswith("PROFILES = ") for source in sources.values() for line in source.splitlines()) == 1


def test_external_drivers_are_real_files():
    external = ROOT / "peers" / "external"
    for path in external.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # docstrings included: no code hides in a string
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                lines = node.value.count("\n") + 1
                assert lines <= MAX_STRING_LINES, f"{path.name}: a {lines}-line string"
    drivers = sorted(p.name for p in (external / "drivers").glob("*.py"))
    assert drivers == ["run_integration.py", "run_scbutterfly.py"]
    for name in drivers:  # they parse, and they are what the runners start
        ast.parse((external / "drivers" / name).read_text())
        assert any(f'"{name}"' in p.read_text() for p in external.glob("*.py"))


@pytest.mark.parametrize("name", sorted(n for n, (_, is_package) in modules().items() if is_package))
def test_public_names_resolve(name):
    """Every name a package lists in ``__all__`` and every lazily imported submodule exists."""
    package = importlib.import_module(name)
    for attribute in getattr(package, "__all__", []):
        assert hasattr(package, attribute), f"{name}.__all__ lists {attribute!r}, which is not there"
    for module in dir(package):
        getattr(package, module)
