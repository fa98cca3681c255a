"""Pretrained encoders: weights resolved and checked once, loaded exactly, recorded; never a download.

Weight files are made here from timm models with random weights (seeded), so the tests need no hub.
The Hugging Face cache is an empty temporary folder (or one laid out here) and the hub is offline.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import timm
import torch
from helpers import REPO
from safetensors.torch import save_file

from nas.arch import Arch
from nas.config import load_config
from nas.errors import ConfigError
from nas.hardware.meter import LatencyResult
from nas.infra.files import sha256_file
from nas.models import DepthNet
from nas.models.pretrained import RANDOM, WeightSource, fallback_line, resolve_weights
from nas.trial.record import TrialRecord

MINIMAL = "tf_mobilenetv3_small_minimal_100"  # MobileNetV3Features: timm loads it non-strictly
SMALL = "mobilenetv3_small_100"
GHOST = "ghostnet_100"  # FeatureListNet: the features model renames its modules (blocks.1 -> blocks_1)


def full_state(backbone: str, seed: int) -> dict[str, torch.Tensor]:
    """A classification model's state dict with seeded random weights: what the hub ships, but made here."""
    torch.manual_seed(seed)
    return timm.create_model(backbone, pretrained=False).state_dict()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """One file per backbone: safetensors for two, a torch.save'd .pth for the third."""
    folder = tmp_path_factory.mktemp("weights")
    save_file(full_state(MINIMAL, 1), folder / f"{MINIMAL}.safetensors")
    save_file(full_state(SMALL, 2), folder / f"{SMALL}.safetensors")
    torch.save(full_state(GHOST, 3), folder / f"{GHOST}.pth")
    return folder


@pytest.fixture(autouse=True)
def offline_empty_cache(tmp_path, monkeypatch):
    """No network and an empty Hugging Face cache, whatever the machine holds."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def encoder_state(backbone: str, weights: WeightSource, depth: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = DepthNet(Arch(backbone=backbone, depth=depth, decoder_channels=(32, 24, 16, 16)[:depth],
                          skips=("concat",) * (depth - 1) + ("none",), blocks=("conv",) * depth), weights.file)
    return model.encoder.model.state_dict()


def test_folder_weights_are_loaded_bit_for_bit(weights_dir):
    sources = resolve_weights(weights_dir, [MINIMAL, SMALL])
    assert sources[MINIMAL].kind == "folder" and sources[MINIMAL].file == weights_dir / f"{MINIMAL}.safetensors"
    assert sources[MINIMAL].sha256 == sha256_file(weights_dir / f"{MINIMAL}.safetensors")
    file = full_state(MINIMAL, 1)
    loaded, random = encoder_state(MINIMAL, sources[MINIMAL]), encoder_state(MINIMAL, RANDOM)
    assert set(loaded) <= set(file)  # features keep the classifier's names here
    for key in loaded:  # every tensor of the encoder, not just a few, is exactly the file's
        assert torch.equal(loaded[key], file[key]), key
    assert not torch.equal(random["conv_stem.weight"], file["conv_stem.weight"])  # the test could fail


def test_a_pth_file_loads_into_an_encoder_whose_modules_timm_renames(weights_dir):
    source = resolve_weights(weights_dir, [GHOST])[GHOST]
    assert source.file.suffix == ".pth"
    file, loaded = full_state(GHOST, 3), encoder_state(GHOST, source)
    for features_key, file_key in [("conv_stem.weight", "conv_stem.weight"),
                                   ("blocks_1.0.conv_dw.weight", "blocks.1.0.conv_dw.weight"),
                                   ("blocks_3.0.ghost1.primary_conv.1.running_var",
                                    "blocks.3.0.ghost1.primary_conv.1.running_var")]:
        assert torch.equal(loaded[features_key], file[file_key]), features_key


def test_missing_backbones_are_listed_at_once(weights_dir):
    with pytest.raises(ConfigError) as info:
        resolve_weights(weights_dir, [MINIMAL, "mobilenetv2_100", "efficientnet_b0"])
    assert info.value.path == weights_dir
    assert "mobilenetv2_100.safetensors" in str(info.value) and "efficientnet_b0.safetensors" in str(info.value)


def test_a_file_of_another_architecture_is_named(tmp_path):
    path = tmp_path / f"{MINIMAL}.safetensors"
    save_file(full_state(SMALL, 0), path)  # the right name, the wrong network
    with pytest.raises(ConfigError, match=f"not weights of timm's {MINIMAL}.*another shape") as info:
        resolve_weights(tmp_path, [MINIMAL])
    assert info.value.path == path


def test_an_encoder_only_state_dict_is_refused_with_what_is_missing(tmp_path):
    # A features_only state dict of ghostnet would load nothing into timm's renamed modules, silently.
    torch.manual_seed(0)
    path = tmp_path / f"{GHOST}.pth"
    torch.save(timm.create_model(GHOST, features_only=True).state_dict(), path)
    with pytest.raises(ConfigError, match="tensors missing") as info:
        resolve_weights(tmp_path, [GHOST])
    assert info.value.path == path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_corrupt_file_is_named(tmp_path, suffix):
    path = tmp_path / f"{MINIMAL}{suffix}"
    good = tmp_path / "good.safetensors"
    save_file(full_state(MINIMAL, 0), good)
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # truncated mid-file
    with pytest.raises(ConfigError, match="cannot read weights") as info:
        resolve_weights(tmp_path, [MINIMAL])
    assert info.value.path == path


def test_a_folder_that_does_not_exist_is_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="existing folder") as info:
        resolve_weights(tmp_path / "nowhere", [MINIMAL])
    assert info.value.path == tmp_path / "nowhere"


def test_auto_without_cache_falls_back_in_one_line_and_never_downloads(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("auto must not reach for the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    sources = resolve_weights("auto", [MINIMAL, SMALL])
    assert all(s.file is None and s.record() == {"source": "none"} for s in sources.values())
    line = fallback_line("auto", sources)
    assert "\n" not in line and line.startswith("encoders start from random weights (ImageNet weights not in")
    assert fallback_line("none", resolve_weights("none", [MINIMAL])) is None  # asked for random: nothing to say


def test_imagenet_requested_offline_falls_back_in_one_line():
    sources = resolve_weights("imagenet", [MINIMAL])
    assert sources[MINIMAL].file is None
    line = fallback_line("imagenet", sources)
    assert "\n" not in line and line.startswith("encoders start from random weights (the Hugging Face hub is")


def fake_hub_cache(cache: Path, backbone: str, state: dict[str, torch.Tensor]) -> Path:
    """The layout huggingface_hub leaves after a download of timm's default weights for `backbone`."""
    repo = timm.models.get_pretrained_cfg(backbone).hf_hub_id
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(state, snapshot / "model.safetensors")
    return snapshot / "model.safetensors"


def test_auto_uses_imagenet_weights_the_cache_holds(offline_empty_cache):
    cached = fake_hub_cache(offline_empty_cache, MINIMAL, full_state(MINIMAL, 7))
    sources = resolve_weights("auto", [MINIMAL, SMALL])
    assert sources[MINIMAL].record() == {"source": "imagenet", "file": str(cached), "sha256": sha256_file(cached)}
    assert sources[SMALL].file is None
    assert fallback_line("auto", sources).startswith(f"encoders of {SMALL} start")
    loaded = encoder_state(MINIMAL, sources[MINIMAL])
    assert torch.equal(loaded["blocks.1.0.conv_pw.weight"], full_state(MINIMAL, 7)["blocks.1.0.conv_pw.weight"])


def test_config_and_space_give_the_setting_and_the_backbones(tmp_path):
    from nas.space import load_space

    assert load_config(None).pretrained == "auto"
    assert load_config(None, pretrained="imagenet").pretrained == "imagenet"
    assert load_config(None, pretrained=str(tmp_path)).pretrained == tmp_path
    space = load_space(REPO / "search_spaces" / "smoke.yaml")
    assert space.backbones() == (MINIMAL, SMALL)


def test_the_record_says_which_weights_the_encoder_started_from(tmp_path, weights_dir):
    source = resolve_weights(weights_dir, [MINIMAL])[MINIMAL]
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"tflite")
    latency = LatencyResult(device="local", threads=4, runtime="ai_edge_litert", runtime_version="2", median_ms=5.0,
                            p90_ms=6.0, min_ms=4.5, std_ms=0.5, runs=30, cpu="x", temperature_c=None, throttled=None,
                            measure_start="a", measure_end="b", tflite_sha256="0" * 64)
    deployed = SimpleNamespace(metrics={"si_rmse": 0.2, "rmse": 1.0, "log10": 0.1, "rel": 0.1}, latency=latency,
                               tflite_path=tflite, parity={}, score=1.0, fp32_metrics=None, int8_worst_layer=None)
    arch = Arch(backbone=MINIMAL)
    record = TrialRecord.build(arch, {"params": 1, "macs": 2, "activations": 3}, deployed, {"train": 1.0},
                               source.record())
    assert record.as_attrs()["encoder_weights"] == {"source": "folder", "file": str(source.file),
                                                    "sha256": source.sha256}


def test_a_trial_carries_its_encoder_weights_before_training(tmp_path, weights_dir):
    import optuna

    from nas.data.synth import synthesize
    from nas.hardware import load_hardware
    from nas.space import load_space
    from nas.trial.objective import TrialObjective
    from nas.trial.session import prepare_context

    space_file = tmp_path / "space.yaml"
    space_file.write_text(f"params:\n  backbone: {{choices: [{MINIMAL}]}}\n  depth: {{choices: [4]}}\n")
    synthesize(tmp_path / "data", {"train": 4, "validation": 1}, seed=0, width=128, height=96)
    config = load_config(None, data=tmp_path / "data", results=tmp_path / "results", budget="smoke",
                         space=space_file, distill=False, deploy_height=96, deploy_width=128,
                         pretrained=str(weights_dir))
    weights = resolve_weights(config.pretrained, [MINIMAL])
    ctx = prepare_context(config, load_space(space_file), load_hardware(config.hardware), weights=weights)
    study = optuna.create_study(direction="maximize")
    for i in range(4):  # an incumbent no candidate can reach: the trial is screened before training
        study.add_trial(optuna.trial.create_trial(
            value=1e6, user_attrs={"macs": 1e7 * (i + 1), "activations": 1e6 * (i + 1),
                                   "latency_ms": 1.0 + i, "precision": "fp32", "si_rmse": 0.2}))
    study.optimize(TrialObjective(ctx, store=None), n_trials=1)
    trial = study.trials[-1]
    assert trial.user_attrs["pruned_before_training"]
    assert trial.user_attrs["encoder_weights"] == weights[MINIMAL].record()
    assert trial.user_attrs["encoder_weights"]["source"] == "folder"
    ctx.meter.close()


def test_the_teacher_starts_from_folder_weights_and_says_so(tmp_path, weights_dir):
    from nas.data.synth import synthesize
    from nas.teacher import train_teacher

    synthesize(tmp_path / "data", {"train": 4, "validation": 1}, seed=0, width=128, height=96)
    spec = train_teacher(tmp_path / "data", tmp_path / "teacher", "smoke", backbone=MINIMAL, steps=1,
                         pretrained=weights_dir)
    source = resolve_weights(weights_dir, [MINIMAL])[MINIMAL]
    assert spec.encoder_weights == source.record()
    trained = torch.load(tmp_path / "teacher" / "teacher.pt", weights_only=True)["encoder.model.conv_stem.weight"]
    assert torch.allclose(trained, full_state(MINIMAL, 1)["conv_stem.weight"], atol=1e-2)  # one small step away


def test_nas_run_refuses_a_bad_weights_folder_before_any_work(tmp_path, weights_dir):
    from typer.testing import CliRunner

    from nas.cli import app

    smoke = REPO / "search_spaces" / "smoke.yaml"
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / f"{MINIMAL}.safetensors").write_bytes((weights_dir / f"{MINIMAL}.safetensors").read_bytes())
    result = CliRunner().invoke(app, ["run", "--space", str(smoke), "--results", str(tmp_path / "results"),
                                      "--pretrained", str(folder)])
    assert result.exit_code == 2
    assert f"{folder}: no weights for 1 backbone(s): {SMALL}.safetensors" in result.output
    assert not (tmp_path / "results").exists()  # nothing was started


def test_finalize_starts_from_the_weights_its_trial_started_from_unless_told_otherwise(tmp_path):
    import optuna

    from nas.config import load_config
    from nas.trial.pipeline import trial_weights_setting

    def trial(record):
        return optuna.trial.create_trial(value=1.0, user_attrs={"encoder_weights": record} if record else {})

    default = load_config(None)
    folder = {"source": "folder", "file": str(tmp_path / "w" / "mobilenetv3_large_100.safetensors"), "sha256": "ab"}
    assert trial_weights_setting(default, trial(folder)) == tmp_path / "w"
    assert trial_weights_setting(default, trial({"source": "imagenet", "file": "x", "sha256": "cd"})) == "imagenet"
    assert trial_weights_setting(default, trial({"source": "none"})) == "none"
    assert trial_weights_setting(default, trial(None)) == "auto"  # an older study: the user's setting
    assert trial_weights_setting(load_config(None, pretrained="none"), trial(folder)) == "none"  # the flag wins
