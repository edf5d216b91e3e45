"""Every DVC stage depends on all the project code that its command can run, so `dvc repro` never
serves a result of code that has changed since."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .project_imports import REPO, closure

STAGE_MODULES = {"synth": "synth", "shard": "shard", "cluster": "cluster", "pretrain": "pretrain",
                 "evaluate": "evaluate", "report": "report", "pseudo-speakers": "speakers"}
FEATURE_MODULES = {"pitch": "pitch", "mfcc": "mfcc", "layer": "layer"}
"""`progre features --kind K` runs the stage module of its kind only."""


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


def stage_module(cmd: str) -> Path:
    """The file of the stage module a `progre` command runs."""
    words = cmd.split()
    assert words[0] == "progre", cmd
    if words[1] == "features":
        return REPO / "stages" / f"{FEATURE_MODULES[words[words.index('--kind') + 1]]}.py"
    return REPO / "stages" / f"{STAGE_MODULES[words[1]]}.py"


def stage_code(cmd: str) -> set[Path]:
    """Every file of ours that a `progre` command can run."""
    return closure(REPO / "progre" / "cli.py", stage_module(cmd))


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == REPO / d or REPO / d in path.parents for d in deps)


def test_every_stage_depends_on_all_the_code_its_command_can_run():
    stages = dvc_stages()
    assert len(stages) >= 15
    for name, (cmd, deps) in stages.items():
        uncovered = sorted(str(f.relative_to(REPO)) for f in stage_code(cmd) if not covered(f, deps))
        assert not uncovered, f"stage {name} runs code it does not depend on: {uncovered}"


def test_every_feature_kind_runs_its_own_stage_module():
    """The CLI's `features` command loads one stage module per --kind (`load_stage(kind)`, by path, which no
    import statement shows): the import reader is given the right one."""
    from progre.cli import FeatureKind, load_stage

    assert set(FEATURE_MODULES) == {kind.value for kind in FeatureKind}
    assert 'stage = load_stage(kind.value)' in (REPO / "progre" / "cli.py").read_text()
    for kind, module in FEATURE_MODULES.items():
        assert Path(load_stage(kind).__file__) == REPO / "stages" / f"{module}.py"


def test_editing_the_model_cannot_invalidate_the_pitch_or_mfcc_stage():
    """progre/model/transformer.py is neither a dep of the pitch and mfcc stages nor code they can run,
    so `dvc repro` after an edit of the Transformer does not recompute WORLD DIO or MFCC."""
    stages = dvc_stages()
    transformer = REPO / "progre" / "model" / "transformer.py"
    assert transformer.is_file()
    for name in ("pitch", "mfcc"):
        cmd, deps = stages[name]
        assert not covered(transformer, deps), f"stage {name} depends on {transformer.relative_to(REPO)}"
        code = stage_code(cmd)
        assert not any(REPO / "progre" / "model" in f.parents for f in code), f"stage {name} runs model code"
        assert REPO / "progre" / "dsp" / ("pitch.py" if name == "pitch" else "mfcc.py") in code
    assert covered(transformer, stages["layer_iter1"][1])  # the layer stage runs the model: it depends on it


def test_the_import_reader_sees_imports_inside_functions():
    """progre/model/encoder.py imports the pitch code only inside a method: it still counts."""
    code = closure(REPO / "progre" / "model" / "encoder.py")
    assert REPO / "progre" / "dsp" / "pitch.py" in code
    assert REPO / "progre" / "dsp" / "__init__.py" in code
