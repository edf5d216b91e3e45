"""The project's own modules a file can import, found by reading the code (every import statement,
also those inside functions), for checking that DVC stages depend on all the code they run."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("progre", "stages")


def module_file(name: str) -> Path | None:
    """progre.dsp.mfcc -> progre/dsp/mfcc.py (or the package's __init__.py); None if not ours."""
    parts = name.split(".")
    if parts[0] not in ROOTS:
        return None
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[Path]:
    """Files of our modules that `path` imports anywhere, with the packages that hold them."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found |= {f"{prefix}.{alias.name}" for alias in node.names}  # `from pkg import module`
    files = set()
    for name in found:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c imports a and a.b too
            file = module_file(".".join(parts[:i]))
            if file is not None:
                files.add(file)
    return files


def closure(*entry: Path) -> set[Path]:
    """Every file of ours that the entry files can import, transitively. The CLI reads each command's stage
    module by path (`progre.cli.load_stage`), which no import statement shows: give it as an entry."""
    seen: set[Path] = set()
    todo = list(entry)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imports_of(path) - seen)
    return seen
