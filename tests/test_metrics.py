"""Known-answer tests for the video metrics (issue 7, acceptance 1 and 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.metrics import (
    LPIPS,
    FrechetVideoDistance,
    MetricUnavailable,
    ResNet18Features,
    frechet_distance,
    gaussian_statistics,
    load_feature_model,
    psnr,
    scene_cuts,
    scene_revisit_consistency,
    ssim,
)

# torch 2.13 deprecates TorchScript, but the public I3D/LPIPS weights ship as TorchScript files.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
T = 32


def scene(seed: int, size: int = 128) -> np.ndarray:
    """A smooth random colour field (a 'place'), larger than a 64x64 frame so it can be panned."""
    coarse = torch.from_numpy(np.random.default_rng(seed).uniform(0, 255, (1, 3, 8, 8))).float()
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return field[0].permute(1, 2, 0).clamp(0, 255).numpy().astype(np.uint8)


def pan(image: np.ndarray, frames: int) -> np.ndarray:
    """A slow camera pan: one pixel per frame diagonally."""
    return np.stack([image[t : t + 64, t : t + 64] for t in range(frames)])


@pytest.fixture(scope="module")
def smooth() -> np.ndarray:
    return pan(scene(1), T)


def test_identical_videos_psnr_inf_ssim_one(smooth):
    assert psnr(smooth, smooth) == float("inf")
    assert ssim(smooth, smooth) == pytest.approx(1.0)
    assert psnr(torch.from_numpy(smooth), torch.from_numpy(smooth)) == float("inf")


def test_different_videos_score_lower(smooth):
    other = pan(scene(2), T)
    assert 0 < psnr(smooth, other) < 30
    assert ssim(smooth, other) < 0.9


def test_psnr_known_value(smooth):
    shifted = smooth.copy()
    shifted[..., 0] = np.where(smooth[..., 0] < 245, smooth[..., 0] + 10, smooth[..., 0] - 10)
    # Every pixel's red channel is off by 10: MSE = 100 / 3.
    assert psnr(smooth, shifted) == pytest.approx(10 * np.log10(255**2 / (100 / 3)))


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros((4, 64, 64, 3), np.uint8), np.zeros((5, 64, 64, 3), np.uint8), "same shape"),
        (np.zeros((4, 64, 64, 3), np.float32), np.zeros((4, 64, 64, 3), np.float32), "uint8"),
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8), "shape"),
        (np.zeros((4, 3, 64, 64), np.uint8), np.zeros((4, 3, 64, 64), np.uint8), "shape"),
        ([[0]], [[0]], "numpy array or torch tensor"),
    ],
)
def test_bad_input_is_a_value_error(a, b, match):
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match=match):
            metric(a, b)


def test_one_hard_cut_gives_one(smooth):
    video = np.concatenate([pan(scene(1), T // 2), pan(scene(2), T // 2)])
    assert scene_cuts(video) == 1
    assert scene_cuts(torch.from_numpy(video)) == 1


def test_static_shot_cut_gives_one():
    video = np.concatenate([np.repeat(scene(3)[None, :64, :64], 12, 0), np.repeat(scene(4)[None, :64, :64], 12, 0)])
    assert scene_cuts(video) == 1


def test_smooth_videos_give_no_cut(smooth):
    a, b = scene(1)[:64, :64].astype(np.float64), scene(2)[:64, :64].astype(np.float64)
    fade = np.stack([(1 - w) * a + w * b for w in np.linspace(0, 1, T)]).astype(np.uint8)
    assert scene_cuts(smooth) == 0
    assert scene_cuts(fade) == 0
    assert scene_cuts(np.repeat(smooth[:1], T, 0)) == 0


def test_revisit_of_identical_frame_is_max_and_new_scene_lower(smooth):
    video = np.concatenate([smooth[:8], pan(scene(5), 8), smooth[:8]])  # leave, go elsewhere, come back
    same = np.stack([np.arange(8), np.arange(16, 24)], 1)
    elsewhere = np.stack([np.arange(8), np.arange(8, 16)], 1)
    assert scene_revisit_consistency(video, same) == pytest.approx(100.0)
    assert scene_revisit_consistency(video, elsewhere) < 90.0


def test_src_bad_revisits(smooth):
    with pytest.raises(ValueError, match="revisit indices"):
        scene_revisit_consistency(smooth, [[0, T]])
    with pytest.raises(ValueError, match=r"\(R, 2\)"):
        scene_revisit_consistency(smooth, np.zeros((0, 2), np.int64))


def test_src_with_local_torchscript_features(tmp_path, smooth):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    path = tmp_path / "features.pt"
    torch.jit.trace(net, torch.zeros(1, 3, 32, 32)).save(str(path))
    video = np.concatenate([smooth[:4], smooth[:4]])
    assert scene_revisit_consistency(video, [[0, 4], [3, 7]], features=str(path)) == pytest.approx(100.0)


def test_resnet18_state_dict_matches_torchvision_layout(tmp_path, smooth):
    model = ResNet18Features()
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in the classifier we drop.
    assert sum(p.numel() for p in model.parameters()) == 11_689_512 - 513_000
    state = {**model.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv2.weight", "layer2.0.downsample.0.weight",
                "layer3.0.downsample.1.running_var", "layer4.1.bn2.bias"):
        assert key in state
    torch.save(state, tmp_path / "resnet18.pth")
    features = load_feature_model(tmp_path / "resnet18.pth", size=64)
    assert features(smooth[:2]).shape == (2, 512)


class TinyI3D(torch.nn.Module):
    """Stand-in with the I3D TorchScript call signature: per-channel mean of the input as features."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1, 1))

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3, 4))


@pytest.fixture
def tiny_i3d(tmp_path) -> str:
    path = tmp_path / "i3d.pt"
    torch.jit.script(TinyI3D()).save(str(path))
    return str(path)


def test_fvd_known_values(tiny_i3d):
    fvd = FrechetVideoDistance(tiny_i3d, batch_size=4)
    real = np.random.default_rng(0).integers(0, 200, (10, 4, 16, 16, 3), dtype=np.uint8)
    assert fvd(real, real) == pytest.approx(0.0, abs=1e-8)
    # A +40 brightness shift moves each feature by 40/127.5 and leaves the covariance unchanged.
    assert fvd(list(real), list(real + 40)) == pytest.approx(3 * (40 / 127.5) ** 2, rel=1e-6)


def test_frechet_distance_of_known_gaussians():
    mu1, mu2 = np.zeros(2), np.array([1.0, 2.0])
    # |mu1 - mu2|^2 = 5; tr(S1 + S2 - 2 sqrt(S1 S2)) = 10 - 2 * (2 + 2) = 2.
    assert frechet_distance(mu1, np.diag([1.0, 4.0]), mu2, np.diag([4.0, 1.0])) == pytest.approx(7.0)
    samples = np.random.default_rng(0).normal(size=(20000, 3))
    assert frechet_distance(*gaussian_statistics(samples), *gaussian_statistics(samples + 2.0)) == pytest.approx(
        12.0, rel=1e-6)


def test_lpips_code_path(tmp_path, smooth):
    class SquaredError(torch.nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return ((x - y) ** 2).mean(dim=(1, 2, 3))

    path = tmp_path / "lpips.pt"
    torch.jit.script(SquaredError()).save(str(path))
    metric = LPIPS(str(path))
    a = np.full((3, 16, 16, 3), 100, np.uint8)
    assert metric(a, a) == 0.0
    assert metric(a, a + 51) == pytest.approx((2 * 51 / 255) ** 2)


@pytest.mark.parametrize("metric, flag", [(FrechetVideoDistance, "--i3d"), (LPIPS, "--lpips")])
def test_missing_weights_say_how_to_supply_them(tmp_path, metric, flag):
    for path in (None, tmp_path / "missing.pt"):
        with pytest.raises(MetricUnavailable, match=f"unavailable: pass {flag} PATH"):
            metric(path)
    assert issubclass(MetricUnavailable, RuntimeError)


# ----------------------------------------------------------------------------------------------
# Dynamic region (issue 14): PSNR/SSIM over the pixels that change in the real video


def test_dynamic_region_threshold_any_channel():
    from evaluation.metrics import dynamic_region

    start = np.full((4, 4, 3), 100, np.uint8)
    real = np.repeat(start[None], 2, axis=0)
    real[0, 0, 0, 1] = 124  # 24 above: not more than the threshold
    real[0, 1, 1, 2] = 125  # 25 above in one channel only: dynamic
    real[1, 2, 3, 0] = 75  # 25 below: dynamic
    region = dynamic_region(real, start)
    expected = np.zeros((2, 4, 4), bool)
    expected[0, 1, 1] = expected[1, 2, 3] = True
    np.testing.assert_array_equal(region, expected)


def test_masked_psnr_hand_computed_and_needs_the_mask():
    from evaluation.metrics import masked_psnr

    real = np.zeros((1, 8, 8, 3), np.uint8)
    real[0, 2:4, 2:4] = 100  # the region: 4 pixels
    fake = np.full_like(real, 50)  # 50 off everywhere outside the region
    fake[0, 2:4, 2:4] = 90  # 10 off inside it
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 2:4, 2:4] = True
    expected = 10 * np.log10(255**2 / 100.0)  # MSE 10^2 over the region: 28.13 dB
    assert masked_psnr(fake, real, mask) == pytest.approx(expected)
    assert psnr(fake, real) < expected - 10  # whole frame: MSE (4*100 + 60*2500) / 64
    assert masked_psnr(fake, real, np.ones_like(mask)) == pytest.approx(psnr(fake, real))
    assert np.isnan(masked_psnr(fake, real, np.zeros_like(mask)))  # no dynamic pixel: no score


def test_masked_psnr_skips_frames_without_region():
    from evaluation.metrics import masked_psnr

    real = np.zeros((2, 8, 8, 3), np.uint8)
    fake = real.copy()
    fake[0] = 10  # frame 0: 10 off everywhere; frame 1 is exact but has no region
    mask = np.zeros((2, 8, 8), bool)
    mask[0, :2] = True
    assert masked_psnr(fake, real, mask) == pytest.approx(10 * np.log10(255**2 / 100.0))


def test_masked_ssim_hand_computed_and_needs_the_mask():
    """Constant 7x7 windows have zero variance and covariance, so their SSIM is the luminance term alone,
    (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with C1 = (0.01 * 255)^2; the region sees only such windows."""
    from evaluation.metrics import masked_ssim

    real = np.full((1, 24, 24, 3), 100, np.uint8)
    fake = np.full_like(real, 80)  # left half: constant 80 against 100
    fake[0, :, 12:] = np.random.default_rng(0).integers(0, 256, (24, 12, 3))  # right half: noise
    mask = np.zeros((1, 24, 24), bool)
    mask[0, 3:21, 3:9] = True  # its 7x7 windows stay in columns 0..11
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 80 + c1) / (100**2 + 80**2 + c1)
    assert masked_ssim(fake, real, mask) == pytest.approx(expected, abs=1e-6)
    assert ssim(fake, real) < expected - 0.2  # the noisy half pulls the whole frame down
    assert masked_ssim(fake, real, np.ones_like(mask)) == pytest.approx(ssim(fake, real))
    assert np.isnan(masked_ssim(fake, real, np.zeros_like(mask)))
