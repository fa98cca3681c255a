"""The training loop's step options: prefetched batches are the same batches, and every option trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.config import Budget
from nas.data.dataset import DepthSplit
from nas.models import DepthNet
from nas.presets import PRESETS
from nas.train.batches import PixelScaleBatches
from nas.train.loop import StepOptions, batch_stream, train


def _frames(n: int = 6, h: int = 48, w: int = 64) -> DepthSplit:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, size=(n, h, w, 3), dtype=np.uint8)
    depth = rng.integers(500, 9000, size=(n, h, w)).astype(np.uint16)
    return DepthSplit(rgb, depth, [f"f{i}" for i in range(n)])


def test_prefetching_thread_yields_the_same_batches_in_the_same_order():
    source = PixelScaleBatches(_frames(), batch_size=3, crop_hw=(32, 32))
    with batch_stream(source, torch.Generator().manual_seed(3), prefetch=False, pin=False) as plain:
        expected = [plain() for _ in range(5)]
    with batch_stream(source, torch.Generator().manual_seed(3), prefetch=True, pin=False) as ahead:
        got = [ahead() for _ in range(5)]
    for a, b in zip(expected, got):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_error_while_preparing_a_batch_reaches_the_training_loop():
    calls = []

    def failing(generator: torch.Generator) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("frame file vanished")
        return {"image": torch.zeros(1, 3, 4, 4)}

    with batch_stream(failing, torch.Generator(), prefetch=True, pin=False) as ahead:
        ahead()
        with pytest.raises(OSError, match="vanished"):
            ahead()


def test_cpu_trains_in_plain_fp32_and_every_option_still_trains():
    assert StepOptions.for_device(torch.device("cpu")) == StepOptions()
    assert StepOptions.for_device(torch.device("cpu"), compute_bound=True) == StepOptions()
    budget = Budget(name="t", train_height=32, train_width=32, steps=3, batch_size=2, eval_points=1)
    frames = _frames()
    for options in (StepOptions(), StepOptions(bf16_autocast=True, channels_last=True, prefetch=True)):
        model = DepthNet(PRESETS["litedepth"])
        before = [p.detach().clone() for p in model.parameters()]
        result = train(model, PixelScaleBatches(frames, 2, (32, 32)), budget, val_split=frames, seed=0,
                       device=torch.device("cpu"), options=options)
        assert result.steps == 3 and np.isfinite(result.final_loss) and np.isfinite(result.val_si_rmse)
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it learned something
        assert all(p.is_contiguous() for p in model.parameters())  # plain layout again, ready for export


def test_cuda_trains_channels_last_with_prefetch_and_the_teacher_adds_bf16():
    """The choices benchmarks/gpu_training.py measured on an H100 (no GPU needed to pick them)."""
    cuda = torch.device("cuda")
    assert StepOptions.for_device(cuda) == StepOptions(channels_last=True, prefetch=True)
    assert StepOptions.for_device(cuda, compute_bound=True) == StepOptions(bf16_autocast=True, channels_last=True,
                                                                            prefetch=True)
