"""Issue #28: the run says which teacher it distils from and why (a new one trained, or which one reused)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.teacher import tiny_data

from nas.config import BUDGETS, TeacherSetting
from nas.data.dataset import load_split
from nas.teacher.distill import prepare_distillation
from nas.teacher.training import DEFAULT_BACKBONES

SMALL = "tf_mobilenetv3_small_minimal_100"  # a light backbone for the self-managed teacher


@pytest.mark.slow
def test_the_teacher_line_says_which_teacher_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DEFAULT_BACKBONES, "smoke", SMALL)
    root = tiny_data(tmp_path / "data", train=4, val=1)
    setting = TeacherSetting(distill=True, teacher=None, results=tmp_path / "results", budget="smoke",
                             data_root=root, seed=0)
    split = load_split(root, "train", (128, 96))

    prepare_distillation(setting, split, BUDGETS["smoke"])
    first = " ".join(capsys.readouterr().err.split())
    assert (f"no teacher for budget smoke yet under {setting.folder}: training one ({SMALL}, about 10 steps at "
            "128×96); later runs of this budget reuse it") in first
    assert "(trained just now; its depth maps made now; validation si-RMSE" in first

    prepare_distillation(setting, split, BUDGETS["smoke"])
    second = " ".join(capsys.readouterr().err.split())
    assert "no teacher" not in second and "training" not in second
    assert (f"in {setting.folder} (reused: the teacher of budget smoke, trained earlier on the same data; its "
            "cached depth reused; validation si-RMSE") in second
