"""Everything the search can express must deploy: presets and a seeded sample of the mission space
convert to TFLite at 640×480 and match ONNX (max abs depth error under 1e-3 m)."""

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
import pytest
from helpers.sampling import draws

from nas.arch import BLOCK_TYPES, UPSAMPLE_TYPES
from nas.export.pipeline import export_arch
from nas.presets import PRESETS
from nas.space import load_space

TOLERANCE_M = 1e-3


def sampled_archs(count: int = 4, seed: int = 2021):
    """A seeded random sample of mai2021.yaml, grown until every block and upsampling type appears.

    Small on purpose: each conversion costs about a minute here, and coverage of every block,
    upsampling, FFM and scale-1 graph is what the sample is for (the presets add five more graphs).
    """
    archs, blocks, upsamples = [], set(), set()
    for study, trial, arch in draws(load_space("search_spaces/mai2021.yaml"), seed):
        if len(archs) >= count and blocks == set(BLOCK_TYPES) and upsamples == set(UPSAMPLE_TYPES):
            break
        study.tell(trial, 0.0)
        new = set(arch.blocks) - blocks or {arch.upsample} - upsamples
        if len(archs) < count or new:
            archs.append(arch)
            blocks |= set(arch.blocks)
            upsamples.add(arch.upsample)
    return archs


SAMPLE = sampled_archs()


def test_sample_covers_every_block_and_upsampling():
    assert len(SAMPLE) >= 4
    assert {b for a in SAMPLE for b in a.blocks} == set(BLOCK_TYPES)
    assert {a.upsample for a in SAMPLE} == set(UPSAMPLE_TYPES)
    assert any(a.ffm for a in SAMPLE) and any(a.input_scale == "1" for a in SAMPLE)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_converts_and_matches(name, tmp_path):
    report = export_arch(PRESETS[name], tmp_path, 480, 640, tolerance=TOLERANCE_M)
    assert report["max_abs_err_tflite_vs_onnx_m"] < TOLERANCE_M
    assert report["max_abs_err_onnx_vs_torch_m"] < TOLERANCE_M


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SAMPLE)))
def test_sampled_arch_converts_and_matches(index, tmp_path):
    report = export_arch(SAMPLE[index], tmp_path, 480, 640, tolerance=TOLERANCE_M)
    assert report["max_abs_err_tflite_vs_onnx_m"] < TOLERANCE_M
