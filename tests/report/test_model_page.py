"""`nas finalize`'s page and its previews, built from a record dict and a numpy predictor (no conversion)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas.report.depth_previews import UNKNOWN_COLOUR, depth_previews
from nas.report.model_page import search_figures, write_model_page

UNKNOWN_RGB = tuple(round(c * 255) for c in UNKNOWN_COLOUR)


def scenes(count: int, unknown_columns: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reddish images (never grey) and depth ramps 0.5–6 m whose first `unknown_columns` columns are unknown."""
    h, w = 24, 32
    rgb = np.zeros((count, h, w, 3), np.uint8)
    rgb[..., 0] = 210
    rgb[..., 2] = np.arange(w, dtype=np.uint8) * 6
    depth = np.tile(np.linspace(500, 6000, w), (count, h, 1)).astype(np.uint16)
    depth[:, :, :unknown_columns] = 0
    return rgb, depth


def constant_two_metres(image: np.ndarray) -> np.ndarray:
    return np.full(image.shape[:2], 2.0, np.float32)


def unknown_pixels(png: Path) -> int:
    image = np.asarray(Image.open(png).convert("RGB"))
    return int(np.all(image == UNKNOWN_RGB, axis=-1).sum())


def test_previews_draw_every_image_and_unknown_ground_truth_in_grey(tmp_path):
    rgb, depth = scenes(2, unknown_columns=16)
    seen = []
    path = depth_previews(tmp_path / "previews.png", rgb, depth,
                          lambda x: seen.append(x.shape) or constant_two_metres(x), names=["a", "b"])
    assert seen == [(24, 32, 3)] * 2  # the predictor sees each image once, as (H, W, 3)
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > height > 300  # four panels side by side, two rows

    with Image.open(depth_previews(tmp_path / "one.png", rgb[:1], depth[:1], constant_two_metres)) as one:
        assert one.size[0] == width and one.size[1] < height  # a row per image

    quarter = depth_previews(tmp_path / "quarter.png", *scenes(2, unknown_columns=8), predict=constant_two_metres)
    assert unknown_pixels(quarter) > 5000
    # Unknown pixels are grey in the ground truth and the error map: twice the unknown area, twice the grey.
    assert unknown_pixels(path) == pytest.approx(2 * unknown_pixels(quarter), rel=0.1)
    full = depth_previews(tmp_path / "known.png", *scenes(2), predict=constant_two_metres)
    assert unknown_pixels(full) < 0.01 * unknown_pixels(quarter)  # all known: grey only in antialiased edges


def test_previews_refuse_mismatched_inputs(tmp_path):
    rgb, depth = scenes(2)
    with pytest.raises(ValueError, match="as many images"):
        depth_previews(tmp_path / "x.png", rgb, depth[:1], constant_two_metres)


def record(precision: str = "int8") -> dict:
    search = {"final_score": 4.1234, "si_rmse": 0.2871, "rmse": 0.911, "log10": 0.0712, "rel": 0.1433,
              "latency_ms": 31.4, "latency_p90_ms": 33.9, "device": "local-cpu", "threads": 4, "precision": precision,
              "params": 412_345, "macs": 356_000_000, "tflite_bytes": 1_650_000,
              "stage_seconds": {"train": 95.0, "export": 20.0}, "preview": "ignored"}
    parity = {"onnx_vs_torch": 3.1e-6, "tflite_vs_onnx": 4.2e-5}
    if precision == "int8":
        parity["int8_vs_onnx"] = {"max_abs_err_m": 0.0871, "median_rel_err": 0.0123, "si_rmse": 0.0456}
    return {"study": "demo<&>", "trial": 7, "arch": {"backbone": "mobilenetv3_large_100", "depth": 4},
            "precision": precision, "si_rmse": 0.2514, "rmse": 0.8322, "log10": 0.0655, "rel": 0.1298,
            "latency_ms": 30.9, "latency_p90_ms": 32.2, "device": "local-cpu", "threads": 4, "params": 412_345,
            "macs": 356_000_000, "tflite_bytes": 1_640_000, "final_score": 5.4321, "parity": parity,
            "stage_seconds": {"train": 2400.0, "export": 21.0, "evaluate": 9.0, "measure": 8.0},
            "score_c": 1.0, "budget": "full", "train_steps": 4000, "train_seconds": 2400.0, "val_images": 16,
            "resolution": "640×480", "search_score": 4.1234, "search_si_rmse": 0.2871,
            "search_trial": search_figures(search), "distill_lambda": 0.5, "created": "2025-01-01T00:00:00+00:00"}


def test_page_compares_search_and_final_and_shows_parity(tmp_path):
    rgb, depth = scenes(3, unknown_columns=4)
    depth_previews(tmp_path / "previews.png", rgb, depth, constant_two_metres)
    (tmp_path / "model.tflite").write_bytes(b"tflite")
    (tmp_path / "metrics.json").write_text("{}")
    page = write_model_page(tmp_path, record(), "previews.png", "3 test image(s): input | ground truth | ...")
    html = page.read_text()

    for figure in ("0.2871", "0.911", "0.0712", "0.1433", "31.4", "33.9", "4.1234"):  # the search trial's
        assert f"<td>{figure}</td>" in html, figure
    for figure in ("0.2514", "0.832", "0.0655", "0.1298", "30.9", "32.2", "5.4321"):  # the final model's
        assert f"<td><strong>{figure}</strong></td>" in html, figure
    assert "<td>412,345</td><td><strong>412,345</strong></td>" in html and "356" in html
    assert "search trial 7" in html and "4,000 steps" in html and "budget <strong>full</strong>" in html
    assert "<td>95</td><td><strong>2,400</strong></td>" in html  # training time, search against final
    assert "ONNX against PyTorch" in html and "3.1e-06 m" in html
    assert "TFLite (float32 model) against ONNX" in html and "4.2e-05 m" in html
    assert "int8 TFLite against ONNX" in html and "0.0871 m" in html and "si-RMSE 0.0456" in html
    assert "demo&lt;&amp;&gt;" in html and "demo<&>" not in html  # study names are escaped

    referenced = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert {"previews.png", "model.tflite", "metrics.json"} <= set(referenced)
    assert "model.onnx" not in referenced  # only files in the folder are linked
    for name in referenced:
        assert (tmp_path / name).is_file(), name
    assert '<img class="figure" src="previews.png"' in html


def test_page_of_an_fp32_model_without_previews_says_why(tmp_path):
    html = write_model_page(tmp_path, record("fp32"), None, "no test or validation image").read_text()
    assert "int8 TFLite against ONNX" not in html and "TFLite (float32 model) against ONNX" in html
    assert "<img" not in html and "no test or validation image" in html


def test_previews_use_the_test_split_or_say_they_fall_back_to_validation(tmp_path):
    from nas.commands.finalize.release import PREVIEW_IMAGES, preview_split
    from nas.config import load_config
    from nas.data.synth import synthesize

    with_test, without_test = tmp_path / "with", tmp_path / "without"
    synthesize(with_test, {"validation": 1, "test": PREVIEW_IMAGES + 2}, width=64, height=48)
    synthesize(without_test, {"validation": 2}, width=64, height=48)
    config = load_config(None, results=tmp_path / "results", data=with_test, deploy_width=64, deploy_height=48)
    split, name = preview_split(config)
    assert name == "test" and len(split) == PREVIEW_IMAGES and split.rgb.shape[1:] == (48, 64, 3)
    split, name = preview_split(config.model_copy(update={"data": without_test}))
    assert name.startswith("validation") and "test split is empty" in name and len(split) == 2


def test_page_shows_where_an_int8_model_lost_accuracy_only_when_it_did(tmp_path):
    drift = {"si_rmse_int8": 0.31, "si_rmse_fp32": 0.25, "gap": 0.06, "margin": 0.01,
             "worst": [{"layer": "decoder/conv_3", "op": "CONV_2D", "rel_rmse": 0.2143, "growth": 0.1871,
                        "shape": [1, 60, 80, 16]}],
             "layers": [], "calibration": [{"images": 8, "si_rmse": 0.33}, {"images": 32, "si_rmse": 0.31}]}
    without = write_model_page(tmp_path, record(), None, "no previews").read_text()
    assert "int8 accuracy loss" not in without
    html = write_model_page(tmp_path, {**record(), "int8_drift": drift}, None, "no previews").read_text()
    assert "int8 accuracy loss" in html and "decoder/conv_3" in html and "+0.1871" in html
    assert "8 images: 0.3300, 32 images: 0.3100" in html


def loaded_run(slowdown: float = 1.02, throttled_end: str | None = None) -> dict:
    """A runner `sustained` object of 10 s: samples [seconds, °C, kHz, median ms], warming from 48.5 to 61.0 °C."""
    samples = [[0.0, 48.5, 1500000, None]] + [[float(t), 48.5 + 1.25 * t, 1500000, 11.2 + 0.02 * t]
                                               for t in range(1, 11)]
    return {"seconds": 10, "invokes": 880, "stretch_s": 1.0, "first_median_ms": 11.2,
            "last_median_ms": round(11.2 * slowdown, 4), "slowdown": slowdown, "median_ms": 11.3,
            "samples": samples, "throttled_start": None, "throttled_end": throttled_end,
            "device": "local-cpu", "kind": "local", "threads": 2, "cpu_governor": "ondemand"}


def test_page_shows_the_thread_curve_the_clock_and_the_sustained_load(tmp_path):
    from nas.report.figures import sustained_figure

    assert sustained_figure(loaded_run(), tmp_path / "sustained.png")
    with Image.open(tmp_path / "sustained.png") as image:
        assert image.format == "PNG" and image.size[0] > 500
    latency = {"threads_curve": {"1": 40.5, "2": 30.9, "4": 33.0}, "cpu_governor": "ondemand",
               "cpu_cur_freq_khz": 600000, "cpu_max_freq_khz": 1800000, "cpu": "Cortex-A72"}
    rec = {**record(), "threads": 2, "threads_fixed": None, "latency": latency, "sustained": loaded_run()}
    html = write_model_page(tmp_path, rec, None, "no previews").read_text()
    assert "On the device" in html
    assert "<tr><td>2</td><td><strong>30.90</strong></td><td class=\"text\">shipped for</td></tr>" in html
    assert "<tr><td>4</td><td>33.00</td>" in html and "it was the fastest count timed" in html
    assert "CPU governor <strong>ondemand</strong>" in html and "600 MHz of at most 1,800 MHz" in html
    assert "10 s of sustained load, 880 invokes: median 11.20 ms in the first 1 s, 11.42 ms in the last" in html
    assert "48.5 → 61.0 °C" in html and "Under load:" not in html  # 2 % slower: no warning
    assert '<img class="figure" src="sustained.png"' in html and 'href="sustained.png"' in html

    fixed = {**rec, "threads": 4, "threads_fixed": 4, "latency": {**latency, "cpu_governor": "unknown",
                                                                  "cpu_cur_freq_khz": None, "cpu_max_freq_khz": None}}
    html = write_model_page(tmp_path, {**fixed, "sustained": loaded_run(1.25)}, None, "no previews").read_text()
    assert "<tr><td>4</td><td><strong>33.00</strong></td><td class=\"text\">shipped for</td></tr>" in html
    assert "the profile fixes it (<code>threads_fixed: 4</code>)" in html
    assert "CPU governor <strong>unknown</strong>" in html and "clock after timing unknown of at most unknown" in html
    assert "Under load:" in html and "ran 25% slower than the first" in html
    throttled = write_model_page(tmp_path, {**rec, "sustained": loaded_run(1.0, "0x4")}, None, "x").read_text()
    assert "throttled at the end of 10 s of sustained load" in throttled


def test_page_of_an_older_release_without_device_figures_still_renders(tmp_path):
    old = record()  # no latency record, no sustained run, no threads_fixed
    html = write_model_page(tmp_path, old, None, "no previews").read_text()
    assert "Final model: trial 7" in html and "Timed at 4 threads only" in html
    assert "sustained.png" not in html and "Not timed under sustained load" in html
    bare = {k: v for k, v in old.items() if k != "threads"}
    assert "On the device" not in write_model_page(tmp_path, bare, None, "no previews").read_text()
