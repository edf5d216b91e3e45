"""The offline GPU check's package lists are complete: every third-party package that `make gpu-check`
can import (bench/gpu_check.py, the CUDA tests it runs and all of our code they can import) is either
preinstalled on the GPU node (bench/gpu-node-packages.txt) or brought as a wheel (bench/gpu-wheels.txt,
`make wheels-gpu`), so `make gpu-check OFFLINE=1` never stops at a missing import on the node.

Two checks: the import statements of our code (read, like tests/test_dvc_deps.py reads the stages'
code), and a subprocess that imports all of it, and logs training metrics as a run does, with every
package outside the two lists hidden, which finds what those packages import in turn.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = ("progre", "stages", "bench", "tests")
# what `python -m bench.gpu_check` and its `pytest -m cuda tests/test_cuda.py` start from
ENTRY = ("bench/__init__.py", "bench/gpu_check.py", "tests/__init__.py", "tests/conftest.py", "tests/test_cuda.py")
# code that the check runs as `python -c`: file name -> its string constants that hold such a script
SCRIPTS = {"tests/test_cuda.py": ("RESUME_SCRIPT",)}
# import name -> the distribution that provides it, where the two differ
DISTRIBUTION = {"yaml": "PyYAML", "pyworld": "pyworld-prebuilt", "faiss": "faiss-cpu", "sklearn": "scikit-learn",
                "PIL": "pillow", "espeakng_loader": "espeakng-loader"}
# imports that the check's code holds but never runs, so they are not brought; each is imported inside a
# function only (checked below), so importing any module of ours does not need it
NEVER_RUN = {
    "pesq": "speech enhancement / voice conversion metrics; the check's downstream test runs sid (and pesq "
            "ships no wheel: it compiles C)",
    "pystoi": "speech enhancement / voice conversion metrics; the check's downstream test runs sid",
    "espeakng_loader": "the demo corpus's speech synthesis (`progre synth`), which the check never runs",
    "transformers": "the hf extra: `progre export --format transformers` and `hf:` upstreams, which the check "
                    "never runs (pretraining reaches `model.hf` only to read back a transformers export as init)",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def listed(path: str) -> set[str]:
    """The distribution names of a package list (one a line, `#` comments)."""
    lines = (line.split("#")[0].strip() for line in (REPO / path).read_text().splitlines())
    return {normalize(line) for line in lines if line}


def our_file(name: str) -> Path | None:
    """progre.cluster.kmeans -> progre/cluster/kmeans.py (or a package's __init__.py); None if not ours."""
    parts = name.split(".")
    if parts[0] not in OURS:
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_statements(path: Path) -> list[tuple[str, list[str], bool]]:
    """(module, names imported from it, inside a function) for every import statement of `path`,
    relative imports made absolute; with those of the scripts it runs in a subprocess (SCRIPTS)."""
    package = list(path.relative_to(REPO).parts[:-1])  # what `from . import` starts from
    tree = ast.parse(path.read_text())
    found: list[tuple[str, list[str], bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, [], in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package[:len(package) - child.level + 1] if child.level else []
                module = ".".join(base + ([child.module] if child.module else []))
                found.append((module, [alias.name for alias in child.names], in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    for node in tree.body:
        names = {getattr(target, "id", None) for target in node.targets} if isinstance(node, ast.Assign) else set()
        if names & set(SCRIPTS.get(str(path.relative_to(REPO)), ())):
            visit(ast.parse(node.value.value), False)
    return found


def check_code() -> tuple[set[Path], dict[str, dict[str, bool]]]:
    """Our files that the check can import (from ENTRY, transitively) and the third-party modules they
    import: {module: {file: imported at module level}}."""
    files: set[Path] = set()
    third_party: dict[str, dict[str, bool]] = {}
    todo = [REPO / entry for entry in ENTRY]
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.add(path)
        for module, names, lazy in import_statements(path):
            top = module.split(".")[0]
            if top in OURS:
                parts = module.split(".")
                candidates = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
                candidates += [f"{module}.{name}" for name in names]  # `from package import module`
                todo.extend(file for file in map(our_file, candidates) if file is not None and file not in files)
            elif top not in sys.stdlib_module_names and top != "__future__":
                where = third_party.setdefault(module, {})
                relative = str(path.relative_to(REPO))
                where[relative] = where.get(relative, False) or not lazy
    return files, third_party


def distribution(module: str) -> str:
    top = module.split(".")[0]
    return normalize(DISTRIBUTION.get(top, top))


def test_the_package_lists_are_what_make_wheels_gpu_and_the_node_need():
    node, wheels = listed("bench/gpu-node-packages.txt"), listed("bench/gpu-wheels.txt")
    pins = {normalize(line.split("==")[0]) for line in (REPO / "constraints.txt").read_text().split() if "==" in line}
    assert not node & wheels, f"both preinstalled and brought: {sorted(node & wheels)}"
    assert wheels <= pins, f"brought without a version in constraints.txt: {sorted(wheels - pins)}"
    assert "faiss-cpu" in wheels and not {"faiss-gpu", "faiss-gpu-cu12"} & (wheels | node)
    assert {"torch", "torchaudio", "numpy", "pytest"} <= node


def test_every_package_the_gpu_check_can_import_is_on_the_node_or_brought():
    files, third_party = check_code()
    assert REPO / "stages" / "pretrain.py" in files and REPO / "progre" / "train" / "metrics_log.py" in files
    available = listed("bench/gpu-node-packages.txt") | listed("bench/gpu-wheels.txt")
    missing = {}
    for module, where in sorted(third_party.items()):
        top = module.split(".")[0]
        if top in NEVER_RUN:
            continue
        if distribution(module) not in available:
            missing[module] = f"{distribution(module)} (imported by {', '.join(sorted(where))})"
        installed = [normalize(d) for d in metadata.packages_distributions().get(top, [])]
        if installed and top != "faiss":  # faiss-gpu stands in for faiss-cpu in a `make venv-gpu` venv
            assert distribution(module) in installed, f"`import {top}` comes from {installed}: fix DISTRIBUTION"
    assert not missing, ("the GPU check can import these, which the offline GPU node neither has "
                         "(bench/gpu-node-packages.txt) nor gets (bench/gpu-wheels.txt): " + json.dumps(missing))


def test_what_is_left_behind_is_imported_inside_functions_only():
    _, third_party = check_code()
    for top, why in NEVER_RUN.items():
        where = {file: eager for module, files in third_party.items() if module.split(".")[0] == top
                 for file, eager in files.items()}
        assert where, f"NEVER_RUN names {top}, which the check's code no longer imports: drop it"
        eager = sorted(file for file, at_module_level in where.items() if at_module_level)
        assert not eager, f"{eager} import {top} when imported ({why}): bring it (bench/gpu-wheels.txt)"


NODE_ONLY = r"""
import importlib, importlib.abc, importlib.metadata, json, re, sys, tempfile
from pathlib import Path

allowed, ours, modules, third_party = json.loads(sys.argv[1])
owners = importlib.metadata.packages_distributions()
hidden = set()


class NodeOnly(importlib.abc.MetaPathFinder):
    # hides every top-level module that an installed distribution outside the two lists provides
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if name != top or top in sys.stdlib_module_names or top in ours or top == "faiss":
            return None  # (faiss: checked by its name, as faiss-gpu may stand in for faiss-cpu)
        dists = owners.get(top)
        if dists is None or any(re.sub(r"[-_.]+", "-", d).lower() in allowed for d in dists):
            return None
        hidden.add(f"{top} ({', '.join(dists)})")
        raise ModuleNotFoundError(f"No module named {top!r} on the GPU node", name=top)


real_from_name = importlib.metadata.Distribution.from_name.__func__


def from_name(cls, name):
    # a package may look up another's metadata before importing it (torchmetrics asks for `regex`, which
    # transformers brings here): what the node lacks must be absent from the metadata too
    normal = re.sub(r"[-_.]+", "-", name).lower()
    if normal not in allowed and normal not in ("progre", "faiss-cpu", "faiss-gpu"):
        hidden.add(f"{name} (metadata)")
        raise importlib.metadata.PackageNotFoundError(name)
    return real_from_name(cls, name)


importlib.metadata.Distribution.from_name = classmethod(from_name)
sys.meta_path.insert(0, NodeOnly())
for name in modules + third_party:
    module = importlib.import_module(name)
from progre.train.metrics_log import MetricsLog  # training logs through dvclive, which opens the DVC repository

folder = Path(tempfile.mkdtemp()) / "dvclive"
MetricsLog(folder, resume=False).log(1, {"loss": 1.0})
MetricsLog(folder, resume=True).log(2, {"loss": 0.5})
print(json.dumps(sorted(hidden)))
"""


def test_the_gpu_check_imports_with_the_node_packages_and_the_brought_ones_alone(tmp_path):
    files, third_party = check_code()
    allowed = sorted(listed("bench/gpu-node-packages.txt") | listed("bench/gpu-wheels.txt"))
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in files)
    imports = sorted(m for m in third_party if m.split(".")[0] not in NEVER_RUN)
    done = subprocess.run([sys.executable, "-c", NODE_ONLY, json.dumps([allowed, list(OURS), modules, imports])],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, ("with only the node's packages and the brought wheels: " + done.stderr[-3000:])
    print("optional imports that the node does without:", done.stdout.strip())
