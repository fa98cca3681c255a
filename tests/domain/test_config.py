"""The run configuration: settings grouped by concern in a file read the same as flat keys."""

from __future__ import annotations

import pytest
import yaml

from nas.config import SECTIONS, RunConfig, load_config
from nas.errors import ConfigError


def test_every_setting_belongs_to_exactly_one_section() -> None:
    keys = [key for section in SECTIONS.values() for key in section]
    assert sorted(keys) == sorted(RunConfig.model_fields)
    assert len(keys) == len(set(keys))


def test_grouped_and_flat_keys_read_the_same(tmp_path) -> None:
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text(yaml.safe_dump({"screen": {"bound_margin": 0.05, "latency_key": "file"},
                                       "score": {"score_c": 2.0}, "trials": 9, "workers": {"grace_s": 400}}))
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump({"bound_margin": 0.05, "latency_key": "file", "score_c": 2.0, "trials": 9,
                                    "grace_s": 400}))
    assert load_config(grouped) == load_config(flat)
    config = load_config(grouped, trials=3)  # a flag still wins over the file
    assert config.trials == 3 and config.score_rule.c == 2.0 and config.bound_margin == 0.05


@pytest.mark.parametrize(("content", "words"), [
    ({"screen": {"score_c": 2.0}}, "screen.score_c: not a setting of screen; it belongs under score"),
    ({"screen": {"no_such": 1}}, "screen.no_such: not a setting of screen"),
    ({"screen": 5}, "screen: expected a mapping of settings"),
    ({"bound_margin": 0.1, "screen": {"bound_margin": 0.2}}, "bound_margin is given twice"),
])
def test_a_key_under_the_wrong_section_is_bad_input_naming_the_file(tmp_path, content, words) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError, match=words) as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_max_screened_defaults_to_the_trial_count_rule_and_can_be_set() -> None:
    assert RunConfig(trials=2).screened_limit == 200
    assert RunConfig(trials=10).screened_limit == 400
    assert RunConfig(trials=10, max_screened=25).screened_limit == 25
