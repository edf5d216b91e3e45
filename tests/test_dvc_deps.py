"""Every DVC stage depends on all the project code that its command can run, so `dvc repro` never
serves a result of code that has changed since."""

from __future__ import annotations

import re

import yaml

from .project_imports import REPO, closure

STAGE_MODULES = {"synth": "synth", "shard": "shard", "features": "features", "cluster": "cluster",
                 "pretrain": "pretrain", "evaluate": "evaluate", "report": "report", "pseudo-speakers": "speakers"}


def _expand(text: str, key: str, item) -> str:
    text = text.replace("${key}", key)
    if isinstance(item, dict):
        return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)
    return text.replace("${item}", str(item))


def dvc_stages() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (command, deps), foreach stages expanded."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            out[name] = (stage["cmd"], stage.get("deps", []))
            continue
        items = stage["foreach"]
        pairs = items.items() if isinstance(items, dict) else ((str(i), i) for i in items)
        for key, item in pairs:
            body = stage["do"]
            out[f"{name}@{key}"] = (_expand(body["cmd"], key, item), [_expand(d, key, item) for d in body.get("deps", [])])
    return out


def test_every_stage_depends_on_all_the_code_its_command_can_run():
    stages = dvc_stages()
    assert len(stages) >= 15
    for name, (cmd, deps) in stages.items():
        words = cmd.split()
        assert words[0] == "progre", f"{name}: {cmd}"
        entry = REPO / "stages" / f"{STAGE_MODULES[words[1]]}.py"
        code = closure(REPO / "progre" / "cli.py", entry)
        paths = [REPO / d for d in deps]
        uncovered = sorted(str(f.relative_to(REPO)) for f in code
                           if not any(f == p or p in f.parents for p in paths))
        assert not uncovered, f"stage {name} runs code it does not depend on: {uncovered}"


def test_the_import_reader_sees_imports_inside_functions():
    """progre/model/encoder.py imports the pitch code only inside a method: it still counts."""
    code = closure(REPO / "progre" / "model" / "encoder.py")
    assert REPO / "progre" / "features" / "pitch.py" in code
    assert REPO / "progre" / "features" / "__init__.py" in code
