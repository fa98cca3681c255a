"""DepthNet output shapes, including sizes that do not halve evenly, and model figures."""

import pytest
import torch

from nas.arch import Arch
from nas.models import DepthNet, count_macs, count_params
from nas.models.upsample import resize_to
from nas.presets import PRESETS

SMALL = dict(backbone="tf_mobilenetv3_small_minimal_100", decoder_channels=(32, 24, 16, 16, 8))


@pytest.mark.parametrize("upsample", ["nearest", "bilinear", "pixelshuffle", "transpose"])
@pytest.mark.parametrize("hw", [(480, 640), (240, 320), (100, 130)])
def test_output_matches_input_size(upsample, hw):
    arch = Arch(**SMALL, upsample=upsample, skips=("add", "concat", "add", "concat", "none"),
                blocks=("conv", "dws5", "srb", "rfdb", "conv"), ffm=True, input_scale="0.5")
    with torch.no_grad():
        y = DepthNet(arch).eval()(torch.rand(1, 3, *hw) * 255)
    assert y.shape == (1, 1, *hw)
    assert torch.isfinite(y).all() and (y > 0).all()


@pytest.mark.parametrize("head", ["relu", "softplus", "sigmoid"])
def test_heads_give_positive_metres(head):
    model = DepthNet(Arch(**SMALL, head=head, input_scale="128x160", max_depth=20.0))
    torch.nn.init.normal_(model.head.conv.weight, std=1.0)
    with torch.no_grad():
        y = model.eval()(torch.rand(2, 3, 96, 128) * 255)
    assert (y > 0).all()
    if head == "sigmoid":
        assert y.max() <= 20.0 + 0.1 + 1e-5


def test_internal_scale_cuts_macs():
    full = DepthNet(Arch(**SMALL, input_scale="1"))
    quarter = DepthNet(Arch(**SMALL, input_scale="0.25"))
    assert count_params(full) == count_params(quarter)
    assert count_macs(quarter, 480, 640) < count_macs(full, 480, 640) / 8


def test_presets_build_at_deployment_resolution():
    for name, arch in PRESETS.items():
        with torch.no_grad():
            y = DepthNet(arch).eval()(torch.zeros(1, 3, 480, 640))
        assert y.shape == (1, 1, 480, 640), name


@pytest.mark.parametrize("scale", ["0.25", "96x128"])
def test_normalising_after_the_resize_gives_the_same_depth(scale):
    """The graph resizes before normalising (cheaper on the device); bilinear resizing is linear with
    weights summing to one, so this must equal normalising the full image first."""
    model = DepthNet(Arch(**SMALL, input_scale=scale)).eval()
    torch.nn.init.normal_(model.head.conv.weight, std=0.05)
    image = torch.rand(1, 3, 120, 160) * 255
    with torch.no_grad():
        x = resize_to((image - model.mean) * model.inv_std, (30, 40) if scale == "0.25" else (96, 128), "bilinear")
        reference = resize_to(model.head(model.decoder(model.encoder(x), tuple(x.shape[2:]))), (120, 160), "bilinear")
        assert torch.allclose(model(image), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (5, 7), (12, 16)])
def test_esa_pool_border_replication_is_exactly_the_padded_max_pool(hw):
    """ESA pads its max-pool by replicating the border (a float32-lowest pad breaks int8 calibration in
    onnx2tf, blocks/esa.py); for its 3×3 stride-2 window that must equal PyTorch's -inf padding."""
    import torch.nn.functional as F

    from nas.models.upsample import edge_pad

    x = torch.randn(2, 4, *hw) - 3.0  # mostly negative: a zero pad would show at the border
    replicated = F.max_pool2d(edge_pad(x), kernel_size=3, stride=2)
    assert torch.equal(replicated, F.max_pool2d(x, kernel_size=3, stride=2, padding=1))


@pytest.mark.parametrize("hw, size", [((48, 64), (480, 640)), ((96, 128), (480, 640)), ((60, 80), (480, 640)),
                                      ((5, 7), (10, 14)), ((128, 160), (480, 640)), ((7, 9), (20, 26))])
def test_the_depth_maps_upsampling_is_bilinear_whatever_its_lowering(hw, size):
    """By a whole factor it is a convolution + depth-to-space (fewer device milliseconds), otherwise a resize:
    either way PyTorch's bilinear upsampling, so a trained network's output does not depend on the lowering."""
    import torch.nn.functional as F

    from nas.models.upsample import edge_pad, upsample_bilinear

    x = torch.rand(2, 1, *hw) * 40.0
    reference = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    assert torch.allclose(upsample_bilinear(x, size), reference, rtol=1e-5, atol=5e-4)  # float32 rounding: 0.5 mm
    assert torch.equal(edge_pad(x), F.pad(x, (1, 1, 1, 1), mode="replicate"))


def test_a_candidate_starts_from_the_same_weights_whenever_it_is_built_with_its_seed():
    from nas.trial.pipeline import initial_network

    arch = Arch(**SMALL, input_scale="0.25")
    first = initial_network(arch, None, 7).state_dict()
    torch.rand(1000)  # whatever ran in between (another trial's training) does not matter
    again, other = (initial_network(arch, None, seed).state_dict() for seed in (7, 8))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
