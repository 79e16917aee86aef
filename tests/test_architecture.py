"""The structure the package keeps: layers import only downwards, MLflow has one owner, results and reports are
torch-free, no import cycles, imports at module level, small files and functions, and DVC stages that depend
on exactly the code they run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "techbench"
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60
# Third-party packages imported where they are used: each costs seconds or is needed by one entry only.
LAZY_OK = {"mnist1d", "sklearn", "torchvision", "timm", "safetensors", "PIL", "peft"}  # peft imports transformers
# Modules that choose what to import per command, so `techbench report` runs without loading torch.
LAZY_MODULES = {"techbench.cli"}
TORCH_FREE = (
    "techbench.report",
    "techbench.analysis",
    "techbench.results",
    "techbench.records",
    "techbench.specs",
    "techbench.paths",
    "techbench.registry",
    "techbench.checks",
    "techbench.errors",
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) of every import statement of a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body} | {id(n) for s in tree.body if isinstance(s, ast.If) for n in s.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, id(node) in top))
            out += [
                (f"{node.module}.{a.name}", id(node) in top) for a in node.names if f"{node.module}.{a.name}" in MODULES
            ]
    return out


def _internal(module: str) -> list[str]:
    return sorted({m for m, _ in _imports(MODULES[module]) if m in MODULES and m != module})


def test_only_tracking_imports_mlflow():
    importers = {m for m, p in MODULES.items() for name, _ in _imports(p) if name.split(".")[0] == "mlflow"}
    assert importers == {"techbench.tracking"}


@pytest.mark.parametrize(
    "layer,forbidden",
    [
        ("techbench.techniques", ("techbench.training", "techbench.config", "techbench.tracking", "techbench.study")),
        ("techbench.workloads", ("techbench.techniques", "techbench.training", "techbench.config")),
        (
            "techbench.analysis",
            ("techbench.training", "techbench.tracking", "techbench.techniques", "techbench.workloads"),
        ),
        ("techbench.report", ("techbench.training", "techbench.tracking", "techbench.techniques", "techbench.probes")),
        ("techbench.training", ("techbench.config", "techbench.tracking", "techbench.study", "techbench.tuning")),
    ],
)
def test_layers_import_only_downwards(layer, forbidden):
    for module in (m for m in MODULES if m == layer or m.startswith(layer + ".")):
        bad = [m for m in _internal(module) if m.startswith(forbidden)]
        assert not bad, f"{module} imports {bad}"


def test_there_are_no_import_cycles():
    # A package that imports its own modules to register them (probes, report views) is not a cycle between
    # layers: edges from a module to a package above it are left out; every other edge counts.
    graph = {m: [d for d in _internal(m) if not m.startswith(d + ".")] for m in MODULES}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(d) :], d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


def test_imports_are_at_module_level():
    late = [
        (module, name)
        for module, path in MODULES.items()
        if module not in LAZY_MODULES
        for name, top in _imports(path)
        if not top and name.split(".")[0] not in LAZY_OK
    ]
    assert not late, f"imports inside functions (hide a cycle, or belong at the top): {late}"


def test_results_and_reports_load_without_torch():
    """Every module of the results, analysis and report layers (submodules included) imports without torch,
    Lightning or MLflow."""
    torch_free = [m for m in MODULES if m.startswith(TORCH_FREE)]
    code = (
        "import importlib, sys\n"
        f"for m in {torch_free!r}: importlib.import_module(m)\n"
        "bad = [m for m in ('torch', 'lightning', 'mlflow') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_files_and_functions_stay_small():
    long_files = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"
    long_functions = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{module}.{node.name} ({n})")
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_dvc_stages_depend_on_exactly_the_code_they_run():
    """The training stages depend on every part of the package but report/; the report stage on report/
    and what it imports, so a change to report code re-runs the report stage only."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    package = {f"src/techbench/{p.name}" for p in PACKAGE.iterdir() if p.name != "__pycache__" and p.name != "report"}
    for stage in ("pretrain", "study", "transfer", "tune"):
        deps = {d for d in stages[stage]["do"]["deps"] if d.startswith("src/")}
        assert deps == package, f"{stage}: missing {package - deps}, extra {deps - package}"
    report_deps = {d for d in stages["report"]["deps"] if d.startswith("src/")}
    assert "src/techbench/report" in report_deps and not report_deps & {
        "src/techbench/training",
        "src/techbench/techniques",
    }
    imported = {m for r in MODULES if r.startswith("techbench.report") for m in _internal(r)}
    imported |= {m for i in list(imported) for m in _internal(i)}  # one more step: what those import
    needed = {
        "src/" + "/".join(m.split(".")[:2]) + ("" if (PACKAGE / m.split(".")[1]).is_dir() else ".py")
        for m in imported
        if m.count(".") >= 1
    }
    assert needed <= report_deps, f"report stage misses {needed - report_deps}"


def test_paths_are_declared_once():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    dvc = (ROOT / "dvc.yaml").read_text()
    assert set(params["paths"]) == {"results", "reports", "benchmarks", "models"}
    assert "results/" not in dvc.replace("${paths.results}/", "") and "${paths.reports}" in dvc


def test_every_family_findings_hook_resolves():
    """A misspelled findings hook would fail only when the report renders, after all training."""
    from techbench.report.families import load
    from techbench.techniques import FAMILIES

    for family in FAMILIES:
        assert family.findings is None or callable(load(family.findings)), family.name
