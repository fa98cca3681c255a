"""The training loop shared by brief trial training, `nas finalize` and the teacher.

Batches come from a `BatchSource` (`nas.train.batches`): candidates train on crops at the pixel scale
they will run at, the teacher on whole frames. Image, ground truth and any extra aligned maps (the
cached teacher depth) are augmented identically and fed to a loss that sees the whole batch dict,
so distillation plugs in as one more term. Validation runs the model on whole frames of the split it
is given (for candidates: deployment resolution), the figure the pruner acts on.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from nas.config import Budget
from nas.data.dataset import DepthSplit
from nas.errors import StageError
from nas.metrics import mean_metrics
from nas.train.batches import Batch, BatchSource, WholeFrameBatches
from nas.train.losses import supervised_loss

LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]
# Called at each evaluation point with (step, validation si-RMSE); returning True stops training.
EvalCallback = Callable[[int, float], bool]


class TrainingDiverged(StageError):
    """The loss became NaN or infinite; the trial fails with this reason."""


@dataclass(frozen=True)
class StepOptions:
    """How a training step runs: bf16 autocast, channels-last tensors, batches prepared ahead on a thread.

    All three can only pay off on a GPU, where the CPU would otherwise leave it idle; `for_device` picks them.
    """

    bf16_autocast: bool = False
    channels_last: bool = False
    prefetch: bool = False

    @classmethod
    def for_device(cls, device: torch.device, compute_bound: bool = False) -> StepOptions:
        """The measured fastest options on CUDA that do not hurt si-RMSE; plain fp32 on the CPU.

        `compute_bound` is for a network that keeps the GPU busy by itself (the ResNet-50 teacher at
        480×360): only there did bf16 autocast pay off.
        """
        if device.type != "cuda":
            return cls()
        return cls(**(CUDA_COMPUTE_BOUND_DEFAULTS if compute_bound else CUDA_DEFAULTS))


# Measured by benchmarks/gpu_training.py on an H100 (2026-11-27, benchmarks/gpu_training.md): prefetching
# (1.48× over plain fp32, same batches) plus channels-last (1.83× in all, the fastest mode for every
# seed preset) with no si-RMSE change beyond run-to-run noise. bf16 autocast slowed the presets (they
# wait on kernel launches and data, not arithmetic) but sped the teacher a further 1.19× over
# channels-last (2.49× over fp32).
CUDA_DEFAULTS: dict[str, bool] = {"bf16_autocast": False, "channels_last": True, "prefetch": True}
CUDA_COMPUTE_BOUND_DEFAULTS: dict[str, bool] = {**CUDA_DEFAULTS, "bf16_autocast": True}


@contextlib.contextmanager
def batch_stream(source: BatchSource, generator: torch.Generator, prefetch: bool, pin: bool) -> Iterator[
        Callable[[], Batch]]:
    """Batches one after another; with `prefetch`, a thread prepares the next two while the GPU works.

    The thread draws from `generator` alone and in order, so the batches are the same either way.
    """
    def make() -> Batch:
        batch = source(generator)
        return {k: v.pin_memory() for k, v in batch.items()} if pin else batch

    if not prefetch:
        yield make
        return
    ready: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            try:
                item: Batch | BaseException = make()
            except BaseException as exc:  # handed to the consumer, which raises it
                item = exc
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def take() -> Batch:
        item = ready.get()
        if isinstance(item, BaseException):
            raise item
        return item

    worker = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    worker.start()
    try:
        yield take
    finally:
        stop.set()
        worker.join(timeout=5)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    val_si_rmse: float | None = None
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, val si-RMSE)
    stopped_early: bool = False
    data_wait_seconds: float = 0.0  # time the loop waited for batches: the GPU idles then


def default_device() -> torch.device:
    """CUDA when present (a user's GPU), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def supervised(pred: torch.Tensor, batch: Batch) -> torch.Tensor:
    return supervised_loss(pred, batch["depth"])


@torch.no_grad()
def validate(model: torch.nn.Module, split: DepthSplit, device: torch.device, batch_size: int = 4) -> float:
    """Mean per-image si-RMSE of the PyTorch model on `split` at the split's resolution."""
    model.eval()

    def predict(rgb: np.ndarray) -> np.ndarray:
        image = torch.from_numpy(np.array(rgb)).permute(0, 3, 1, 2).float().to(device)  # a writable copy
        return model(image).float().cpu().numpy()[:, 0] * 1000.0

    metrics, _ = mean_metrics(predict, split.rgb, split.depth_mm, batch_size, names=split.stems)
    return metrics.get("si_rmse", float("nan"))


def train(model: torch.nn.Module, data: DepthSplit | BatchSource, budget: Budget, *, val_split: DepthSplit | None = None,
          extra_maps: dict[str, np.ndarray] | None = None, loss_fn: LossFn = supervised, seed: int = 0,
          device: torch.device | None = None, lr: float | None = None, on_eval: EvalCallback | None = None,
          progress: Callable[[int, int, float], None] | None = None, options: StepOptions | None = None
          ) -> TrainResult:
    """Train `model` for `budget.steps` AdamW steps with a one-cycle schedule.

    `data` is a batch source, or a split held at the training resolution (whole frames); then
    `extra_maps` are (N, H, W) arrays aligned with it (e.g. "teacher" depth in metres) that enter
    each batch under their key, augmented like the ground truth. `options` default to
    `StepOptions.for_device(device)`.
    """
    batches = WholeFrameBatches(data, budget.batch_size, extra_maps) if isinstance(data, DepthSplit) else data
    device = device or default_device()
    options = options or StepOptions.for_device(device)
    memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format).train()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr or budget.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr or budget.lr, total_steps=max(budget.steps, 1),
                                                    pct_start=0.15)
    eval_steps = {max(1, round(budget.steps * (k + 1) / budget.eval_points)) for k in range(budget.eval_points)}
    result = TrainResult(steps=0, seconds=0.0, final_loss=float("nan"))
    start = time.perf_counter()
    with batch_stream(batches, generator, options.prefetch, pin=device.type == "cuda") as next_batch:
        for step in range(1, budget.steps + 1):
            waited = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in next_batch().items()}
            result.data_wait_seconds += time.perf_counter() - waited
            image = batch["image"].contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.bf16_autocast):
                pred = model(image)
            loss = loss_fn(pred.float(), batch)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            result.steps, result.final_loss = step, float(loss.item())
            if progress:
                progress(step, budget.steps, result.final_loss)
            if val_split is not None and step in eval_steps:
                score = validate(model, val_split, device)
                model.train()
                result.history.append((step, score))
                result.val_si_rmse = score
                if on_eval and on_eval(step, score):
                    result.stopped_early = True
                    break
    result.seconds = time.perf_counter() - start
    model.to(memory_format=torch.contiguous_format).eval()  # export wants plain layout
    if not math.isfinite(result.final_loss):
        raise TrainingDiverged("training produced no finite loss")
    return result
