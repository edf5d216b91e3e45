"""Typed parameters: params.yaml sections, iteration overlays, --set overrides, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from progre import config
from progre.config import ClusterParams, PretrainParams, SynthParams, load_params
from progre.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_the_repository_params_file_loads_for_every_stage_and_iteration():
    for cls in config.all_sections().values():
        for iteration in (None, 1, 2):
            load_params(cls, REPO / "params.yaml", iteration)
    assert load_params(ClusterParams, REPO / "params.yaml", 1).n_clusters == 100
    assert load_params(PretrainParams, REPO / "params.yaml", 1).model == "hubert"


def test_iteration_overlay_and_overrides_apply_in_order(tmp_path):
    path = write(tmp_path, "pretrain:\n  lr: 1.0e-3\n  max_steps: 10\npretrain_iter2:\n  max_steps: 20\n")
    assert load_params(PretrainParams, path).max_steps == 10
    p = load_params(PretrainParams, path, iteration=2, overrides=["lr=2e-3", "betas=[0.9, 0.99]"])
    assert (p.max_steps, p.lr, p.betas) == (20, 2e-3, [0.9, 0.99])
    assert load_params(PretrainParams, None).lr == 5e-4  # defaults without a file


@pytest.mark.parametrize("text, message", [
    ("pretrain:\n  lrr: 1\n", r"pretrain\.lrr: unknown key \(did you mean lr\?\)"),
    ("pretrain:\n  lr: fast\n", r"pretrain\.lr: expected a number, got 'fast'"),
    ("pretrain:\n  max_steps: 1.5\n", r"pretrain\.max_steps: expected an integer"),
    ("pretrain:\n  model: wav2vec\n", r"'wav2vec' is not one of progre, hubert"),
    ("pretrain:\n  mask_prob: 1.5\n", r"above the maximum 1.0"),
    ("pretrain:\n  crop_min_seconds: 9\n  crop_max_seconds: 2\n", r"crop_min_seconds \(9.0\) is above"),
    ("pretrain: [1, 2]\n", r"section pretrain must be a mapping"),
    ("pretrain:\n  lr: [\n", r"not valid YAML"),
])
def test_bad_params_end_in_one_line_naming_the_key(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as info:
        load_params(PretrainParams, write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_every_top_level_name_is_a_section_or_its_overlay(tmp_path):
    path = write(tmp_path, "shard:\n  workers: 1\nsahrd:\n  workers: 2\n")
    with pytest.raises(UserError, match=r"params.yaml: unknown section sahrd \(did you mean shard\?\)"):
        load_params(ClusterParams, path)
    path = write(tmp_path, "cluster_iter3:\n  n_clusters: 7\nreport: {}\n")  # any section's overlay, any N
    assert load_params(ClusterParams, path, iteration=3).n_clusters == 7
    path.write_bytes("cluster:\n  n_clusters: 7  # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"params.yaml is not UTF-8 text \(byte 0xe9"):
        load_params(ClusterParams, path)


def test_bad_overrides(tmp_path):
    with pytest.raises(UserError, match="--set nope: unknown key"):
        load_params(SynthParams, None, overrides=["nope=1"])
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        load_params(SynthParams, None, overrides=["preset"])
    with pytest.raises(UserError, match="does not exist"):
        load_params(SynthParams, tmp_path / "missing.yaml")


def test_booleans_and_nulls(tmp_path):
    p = load_params(PretrainParams, None, overrides=["speaker_grad_through=yes", "speaker_layer=null"])
    assert p.speaker_grad_through is True and p.speaker_layer is None
    with pytest.raises(UserError, match="expected true or false"):
        load_params(PretrainParams, None, overrides=["speaker_grad_through=maybe"])


def test_synth_presets_resolve():
    from progre.data.synth import SynthSettings

    assert SynthSettings(preset="tiny").counts()["n_speakers"] == 4
    assert SynthSettings(preset="demo", n_speakers=5).counts()["n_speakers"] == 5


def test_describe_lists_every_parameter_with_help():
    text = PretrainParams.describe()
    assert "lr: float = 0.0005. peak learning rate" in text
    import dataclasses

    assert len(text.splitlines()) == len(dataclasses.fields(PretrainParams))


def test_every_parameter_dvc_tracks_is_in_params_yaml():
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in stages.items():
        for key in stage.get("do", stage).get("params", []):
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"stage {name} tracks {key}, absent from params.yaml"
                node = node[part]


# --------------------------------------------------------------------------- params -> library settings


def _settings_pairs():
    from progre.cluster.labelling import ClusterSettings
    from progre.cluster.speakers import SpeakerSettings
    from progre.data.sharding import ShardSettings
    from progre.data.synth import SynthSettings
    from progre.downstream.evaluation import EvaluationSettings
    from progre.features.writing import FeatureSettings
    from progre.report import ReportSettings
    from progre.train.batches import PlanSettings
    from progre.train.launch import LaunchSettings
    from progre.train.loop import RunControl, TrainRecipe
    from progre.train.run import ModelChoice

    return {
        config.SynthParams: [SynthSettings], config.ShardParams: [ShardSettings],
        config.FeaturesParams: [FeatureSettings], config.ClusterParams: [ClusterSettings],
        config.SpeakersParams: [SpeakerSettings],
        config.PretrainParams: [ModelChoice, PlanSettings, TrainRecipe, RunControl, LaunchSettings],
        config.EvaluateParams: [EvaluationSettings], config.ReportParams: [ReportSettings],
    }


# parameters the stage resolves itself (declared by the CLI's params, handed to the library resolved)
STAGE_LEVEL = {"features": {"device"}, "cluster": {"device"}, "evaluate": {"device"}, "speakers": {"device"}}


def test_every_parameter_is_the_library_setting_of_the_same_name_with_its_declaration():
    """The params sections are built from the library's settings: the same names, defaults, allowed
    values and help texts, each declared once (by one settings class, or by the CLI for a device)."""
    import dataclasses

    from progre.settings import default_of

    for params, settings in _settings_pairs().items():
        assert set(params.SETTINGS) == set(settings)
        fields = {f.name: f for f in dataclasses.fields(params)}
        owners: dict[str, str] = {}
        for cls in settings:
            for f in dataclasses.fields(cls):
                assert f.name not in owners, f"{f.name} declared by {owners[f.name]} and {cls.__name__}"
                owners[f.name] = cls.__name__
                assert f.name in fields, f"{cls.__name__}.{f.name} is not a {params.SECTION} parameter"
                assert default_of(fields[f.name]) == default_of(f), f"{params.SECTION}.{f.name}: default differs"
                assert dict(fields[f.name].metadata) == dict(f.metadata), f"{params.SECTION}.{f.name}: declaration differs"
                assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
        assert set(fields) - set(owners) == STAGE_LEVEL.get(params.SECTION, set())


def test_params_sections_build_the_library_settings_and_their_cross_field_rules():
    from progre.train.batches import PlanSettings

    p = load_params(PretrainParams, None, overrides=["crop_min_seconds=0.5", "crop_max_seconds=3"])
    assert p.to(PlanSettings) == PlanSettings(crop_min_seconds=0.5, crop_max_seconds=3.0)
    with pytest.raises(UserError, match=r"--set crop_min_seconds \(9.0\) is above crop_max_seconds"):
        load_params(PretrainParams, None, overrides=["crop_min_seconds=9", "crop_max_seconds=2"])


def test_params_to_settings_copies_values_by_name():
    from progre.train.loop import RunControl, TrainRecipe

    p = PretrainParams(lr=2e-3, betas=[0.8, 0.9], max_steps=7)
    s = p.to(TrainRecipe)
    assert (s.lr, s.betas, s.seed, p.to(RunControl).max_steps) == (2e-3, [0.8, 0.9], p.seed, 7)
    assert p.to(TrainRecipe, lr=1.0).lr == 1.0


def test_the_library_never_imports_the_cli_parameters():
    """Every module of the library imports without progre.config (only cli.py and config.py may)."""
    import subprocess
    import sys

    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "progre").rglob("*.py")
                     if p.name != "__init__.py" and p.stem not in ("cli", "config"))
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print('progre.config' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
