"""Arch serialisation, trial-param round trip, search-space files."""

import itertools
import json

import optuna
import pytest
from helpers.sampling import draws

from nas.arch import Arch, ArchError
from nas.errors import ConfigError
from nas.presets import PRESETS
from nas.space import load_space

SPACES = ["search_spaces/mai2021.yaml", "search_spaces/smoke.yaml"]


def test_json_and_params_round_trip():
    arch = PRESETS["airia_rfdb"]
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_params(arch.to_params()) == arch
    assert json.loads(arch.to_json())["blocks"] == list(arch.blocks)


def test_arch_id_is_stable_and_content_based():
    a = Arch(decoder_channels=(256, 128, 64, 32, 16))
    b = Arch.from_json(a.to_json())
    assert a.arch_id == b.arch_id
    assert a.arch_id != Arch(decoder_channels=(256, 128, 64, 32, 24)).arch_id


@pytest.mark.parametrize("kwargs, reason", [
    ({"blocks": ("rfdb", "conv", "conv", "conv", "conv"), "decoder_channels": (25, 16, 16, 16, 16)}, "even"),
    ({"skips": ("add",) * 5}, "last decoder stage"),
    ({"depth": 4}, "needs 4 entries"),
    ({"upsample": "cubic"}, "unknown upsampling"),
    ({"input_scale": "100x128"}, "multiple of 32"),
    ({"input_scale": "1.5"}, "must lie in"),
    ({"input_scale": "half"}, "neither a ratio"),
])
def test_invalid_arch_says_why(kwargs, reason):
    with pytest.raises(ArchError, match=reason):
        Arch(**kwargs)


def test_any_fixed_size_in_multiples_of_32_and_any_ratio_are_input_scales():
    assert Arch(input_scale="96x128").input_scale == "96x128"
    assert Arch(input_scale="0.125").input_scale == "0.125"


@pytest.mark.parametrize("space_file", SPACES)
def test_sampled_params_map_back_to_the_arch(space_file):
    space = load_space(space_file)
    for study, trial, arch in itertools.islice(draws(space, seed=3), 8):
        assert Arch.from_params(trial.params) == arch
        assert space.violations(arch) == []
        study.tell(trial, 0.0)


def test_presets_are_points_of_the_mission_space():
    space = load_space("search_spaces/mai2021.yaml")
    for name, arch in PRESETS.items():
        assert space.violations(arch) == [], name
    assert space.violations(Arch(backbone="resnet50")) != []


@pytest.mark.parametrize("text, message", [
    ("params: {backbone: {choices: [no_such_net]}}", "unknown timm backbone"),
    ("params: {colour: {choices: [red]}}", "unknown parameter"),
    ("params: {upsample: {choices: [cubic]}}", "invalid"),
    ("params: {head: {choices: [relu]}, max_depth: {choices: [10.0], when: {nothing: 1}}}", "not an earlier"),
    ("params: [1, 2]", "non-empty 'params'"),
    ("params: {backbone: {choices: [a}", "not valid YAML"),
    ("max_mmacs: 0\nparams: {head: {choices: [relu]}}", "max_mmacs must be a positive number"),
    ("max_mmacs: lots\nparams: {head: {choices: [relu]}}", "max_mmacs must be a positive number"),
])
def test_bad_space_file_names_file_and_problem(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_space(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("param", "words"), [
    ({"ffm": {"choices": [False, True], "log": "false"}}, "log must be true or false"),
    ({"depth": {"low": 2, "high": 7}}, "depth"),
    ({"decoder_channels": {"per_stage": True, "low": 1, "high": 64}}, "at least 4"),
    ({"head": {"low": 1, "high": 2}}, "only fits numeric arch fields"),
    ({"lr": {"low": 0.001, "high": 0.01}}, "unknown parameter"),
])
def test_space_files_with_bad_flags_ranges_or_unused_parameters_are_refused(tmp_path, param, words):
    import yaml

    from nas.errors import ConfigError
    from nas.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": {"backbone": {"choices": ["mobilenetv3_small_100"]}, **param}}))
    with pytest.raises(ConfigError, match=words) as info:
        load_space(path)
    assert str(path) in str(info.value)


def test_changed_choices_conflict_with_a_study_and_a_changed_range_does_not():
    space = load_space("search_spaces/smoke.yaml")
    old = optuna.distributions.CategoricalDistribution(["0.25", "0.5"])
    widths = optuna.distributions.CategoricalDistribution([16, 24])  # unchanged: decoder_channels_0
    lam = optuna.distributions.FloatDistribution(0.5, 4.0, log=True)  # not in the smoke space: ignored
    trial = optuna.trial.create_trial(params={"input_scale": "0.5", "decoder_channels_0": 24, "distill_lambda": 1.0},
                                      distributions={"input_scale": old, "decoder_channels_0": widths,
                                                     "distill_lambda": lam}, value=1.0)
    assert space.conflicts([trial]) == ["input_scale: choices [0.25, 0.5] in the study, choices [0.25] now"]
    mai = load_space("search_spaces/mai2021.yaml")
    narrower = optuna.distributions.FloatDistribution(0.5, 1.0, log=True)  # another range is fine for Optuna
    assert mai.conflicts([optuna.trial.create_trial(params={"distill_lambda": 0.7},
                                                    distributions={"distill_lambda": narrower}, value=1.0)]) == []
