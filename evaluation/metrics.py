"""Video metrics of the paper: PSNR, SSIM, LPIPS, FVD, SCuts and SRC; PSNR/SSIM over a dynamic region.

Videos are uint8 ``(T, H, W, 3)`` RGB arrays (numpy or torch). Learned metrics (FVD's I3D, LPIPS,
SRC's ResNet-18) never download weights: they load a file the user passes, and raise
:class:`MetricUnavailable` when none is given, so evaluation scripts can skip them with a clear message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scenedetect import FrameTimecode
from scenedetect.detectors import AdaptiveDetector
from scipy import linalg
from skimage.metrics import structural_similarity

VideoLike = np.ndarray | torch.Tensor
PathLike = str | os.PathLike
FeatureFn = Callable[[np.ndarray], Any]
"""Maps uint8 frames ``(N, H, W, 3)`` to features ``(N, D)`` (numpy or torch)."""

# Call convention of the widely used I3D TorchScript (StyleGAN-V / fvd-comparison `i3d_torchscript.pt`):
# input (N, 3, T, H, W) in [-1, 1], returns the 400-d logits-layer features.
I3D_KWARGS: dict[str, Any] = dict(rescale=False, resize=True, return_features=True)
_FPS = 10.0  # only converts frame numbers to timecodes for PySceneDetect
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MetricUnavailable(RuntimeError):
    """A learned metric whose weights were not supplied (we never download them)."""


# ----------------------------------------------------------------------------------------------
# Input checks


def as_video(video: VideoLike, name: str = "video") -> np.ndarray:
    """Validate a uint8 ``(T, H, W, 3)`` video and return it as a numpy array."""
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if not isinstance(video, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(video).__name__}")
    if video.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 in [0, 255], got dtype {video.dtype}")
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] == 0:
        raise ValueError(f"{name} must have shape (T, H, W, 3) with T >= 1, got {tuple(video.shape)}")
    return video


def _video_pair(a: VideoLike, b: VideoLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_video(a, "a"), as_video(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"videos must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def _video_batch(videos: VideoLike | Sequence[VideoLike], name: str) -> np.ndarray:
    """Stack a batch ``(N, T, H, W, 3)`` or a list of equally shaped videos."""
    if isinstance(videos, (np.ndarray, torch.Tensor)) and videos.ndim == 5:
        videos = list(videos)
    if isinstance(videos, (np.ndarray, torch.Tensor)) or len(videos) == 0:
        raise ValueError(f"{name} must be a non-empty list of videos or an (N, T, H, W, 3) array")
    clips = [as_video(v, f"{name}[{i}]") for i, v in enumerate(videos)]
    if len({c.shape for c in clips}) != 1:
        raise ValueError(f"{name} videos must share one shape, got {sorted({c.shape for c in clips})}")
    return np.stack(clips)


def _load_torchscript(path: PathLike | None, metric: str, flag: str) -> torch.jit.ScriptModule:
    hint = f"{metric} unavailable: pass {flag} PATH (a local TorchScript file; weights are never downloaded)"
    if path is None:
        raise MetricUnavailable(hint)
    if not os.path.isfile(path):
        raise MetricUnavailable(f"{hint}; no file at {os.fspath(path)!r}")
    return torch.jit.load(os.fspath(path), map_location="cpu").eval()


def _to_float(frames: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0


# ----------------------------------------------------------------------------------------------
# Pixel metrics


def psnr(a: VideoLike, b: VideoLike) -> float:
    """Mean over frames of the per-frame PSNR in dB; inf if any frame is identical, so score generated
    frames only (a copied context frame would make every video inf)."""
    a, b = _video_pair(a, b)
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        per_frame = 10.0 * np.log10(255.0**2 / mse)
    return float(per_frame.mean())


def ssim(a: VideoLike, b: VideoLike) -> float:
    """Mean over frames of scikit-image SSIM (in [-1, 1]; the paper reports it x100)."""
    a, b = _video_pair(a, b)
    if min(a.shape[1:3]) < 7:
        raise ValueError(f"SSIM needs frames of at least 7x7 pixels, got {a.shape[1:3]}")
    scores = [structural_similarity(x, y, channel_axis=-1, data_range=255) for x, y in zip(a, b)]
    return float(np.mean(scores))


DYNAMIC_THRESHOLD = 24
"""Dynamic region: a real pixel differs from the reference frame by more than this (of 255) in some channel."""


def dynamic_region(real: VideoLike, reference: VideoLike | np.ndarray, threshold: float = DYNAMIC_THRESHOLD) -> np.ndarray:
    """bool ``(T, H, W)``: the pixels of the real video whose value differs from the real ``reference`` by
    more than ``threshold`` (0-255) in any channel. ``reference``: one frame ``(H, W, 3)`` (e.g. the
    episode's start frame: what moved or changed, the arm, the cube, the drawer, not the static background)
    or a video of the same shape (frame by frame: where two real videos differ, as in the action test)."""
    real = as_video(real, "real")
    ref = np.asarray(reference.detach().cpu().numpy() if isinstance(reference, torch.Tensor) else reference)
    if ref.ndim == 4 and len(ref) == 1:
        ref = ref[0]
    if ref.shape not in (real.shape, real.shape[1:]):
        raise ValueError(f"reference must be a frame {real.shape[1:]} or a video {real.shape}, got {ref.shape}")
    diff = np.abs(real.astype(np.int16) - ref.astype(np.int16))
    return (diff > threshold).any(axis=-1)


def _region(mask: np.ndarray, video: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask)
    if mask.dtype != bool or mask.shape != video.shape[:3]:
        raise ValueError(f"mask must be bool (T, H, W) = {video.shape[:3]}, got {mask.dtype} {mask.shape}")
    return mask


def masked_psnr(a: VideoLike, b: VideoLike, mask: np.ndarray) -> float:
    """PSNR in dB over the pixels of ``mask`` (bool ``(T, H, W)``) only: per frame, the MSE over its masked
    pixels (all channels), then the mean over the frames with at least one masked pixel (as :func:`psnr`:
    inf if such a frame matches exactly); NaN when the mask is empty. An all-true mask gives :func:`psnr`."""
    a, b = _video_pair(a, b)
    mask = _region(mask, a)
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=-1)  # (T, H, W)
    count = mask.sum(axis=(1, 2))
    keep = count > 0
    if not keep.any():
        return float("nan")
    mse = (err * mask).sum(axis=(1, 2))[keep] / count[keep]
    with np.errstate(divide="ignore"):
        return float((10.0 * np.log10(255.0**2 / mse)).mean())


def masked_ssim(a: VideoLike, b: VideoLike, mask: np.ndarray) -> float:
    """SSIM over the pixels of ``mask`` (bool ``(T, H, W)``) only: per frame, scikit-image's SSIM map
    (7x7 windows, averaged over channels) averaged over the masked pixels, then the mean over the frames
    with at least one masked pixel; NaN when there is none. As scikit-image's mean SSIM, the 3-pixel border
    (where the window is padded) is left out, so an all-true mask gives :func:`ssim`."""
    a, b = _video_pair(a, b)
    mask = _region(mask, a)
    if min(a.shape[1:3]) < 7:
        raise ValueError(f"SSIM needs frames of at least 7x7 pixels, got {a.shape[1:3]}")
    pad = (7 - 1) // 2
    inner = np.zeros(a.shape[1:3], bool)
    inner[pad:-pad, pad:-pad] = True
    scores = []
    for x, y, m in zip(a, b, mask):
        m = m & inner
        if m.any():
            _, smap = structural_similarity(x, y, channel_axis=-1, data_range=255, full=True)
            scores.append(float(smap.mean(axis=-1)[m].mean()))
    return float(np.mean(scores)) if scores else float("nan")


# ----------------------------------------------------------------------------------------------
# SCuts


def scene_cuts(
    video: VideoLike,
    *,
    adaptive_threshold: float = 3.0,
    min_content_val: float = 15.0,
    window_width: int = 2,
    min_scene_len: int = 4,
) -> int:
    """Number of cuts PySceneDetect's AdaptiveDetector finds in a video (the paper's SCuts).

    Frames go straight into ``process_frame`` (BGR), no video file. The adaptive detector is used
    because the default ContentDetector misses cuts on 64x64 frames; ``min_scene_len`` (frames) is
    lowered from PySceneDetect's 15 so that short generated videos can register a cut at all.
    A cut needs ``window_width`` frames on each side to be seen (the frame rate plays no role).
    """
    frames = as_video(video)
    detector = AdaptiveDetector(
        adaptive_threshold=adaptive_threshold,
        min_scene_len=min_scene_len,
        window_width=window_width,
        min_content_val=min_content_val,
    )
    cuts = []
    for i, frame in enumerate(frames):
        bgr = np.ascontiguousarray(frame[..., ::-1])
        cuts += detector.process_frame(FrameTimecode(i, fps=_FPS), bgr)
    cuts += detector.post_process(FrameTimecode(len(frames) - 1, fps=_FPS))
    return len(cuts)


# ----------------------------------------------------------------------------------------------
# SRC


def pixel_features(frames: np.ndarray, size: int = 16, bins: int = 8, layout_weight: float = 0.75) -> np.ndarray:
    """Offline stand-in for ResNet-18 features: deterministic, weight-free, unit-norm ``(N, D)``.

    Two unit-norm blocks, scaled so that cosine = ``w * layout_corr + (1 - w) * hist_cos``:
    a ``size x size`` colour thumbnail with each channel's mean removed (layout, insensitive to a global
    brightness shift such as Crafter's daylight) and per-channel ``bins``-bin colour histograms (palette;
    never all-zero, so identical frames always score exactly the maximum).
    """
    frames = as_video(frames, "frames")
    thumb = F.adaptive_avg_pool2d(_to_float(frames, "cpu").double(), size).numpy()
    thumb = (thumb - thumb.mean(axis=(2, 3), keepdims=True)).reshape(len(frames), -1)
    pixels = frames.reshape(len(frames), -1, 3).astype(np.int64) * bins // 256  # (N, HW, 3) bin ids
    offsets = (np.arange(len(frames))[:, None] * 3 + np.arange(3)[None, :]) * bins  # (N, 3)
    counts = np.bincount((pixels + offsets[:, None, :]).ravel(), minlength=len(frames) * 3 * bins)
    hist = counts.reshape(len(frames), 3 * bins).astype(np.float64)
    return np.concatenate([np.sqrt(layout_weight) * _unit(thumb), np.sqrt(1.0 - layout_weight) * _unit(hist)], 1)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class TorchFeatures:
    """Image features from a torch model (e.g. ResNet-18 up to global pooling), ImageNet-normalised."""

    def __init__(self, model: torch.nn.Module, size: int | None = 224, device: torch.device | str = "cpu",
                 batch_size: int = 64):
        self.model, self.size, self.device, self.batch_size = model.eval().to(device), size, device, batch_size

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = as_video(frames, "frames")
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        out = []
        for start in range(0, len(frames), self.batch_size):
            x = _to_float(frames[start : start + self.batch_size], self.device)
            if self.size is not None:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            out.append(self.model((x - mean) / std).flatten(1).double().cpu())
        return torch.cat(out).numpy()


class _BasicBlock(torch.nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                  torch.nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + skip)


class ResNet18Features(torch.nn.Module):
    """ResNet-18 trunk with torchvision's parameter names, so its state dicts load without torchvision.

    Returns the 512-d globally pooled features (the paper's SRC features).
    """

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(64)
        widths = (64, 128, 256, 512)
        for i, width in enumerate(widths):
            cin, stride = (64, 1) if i == 0 else (widths[i - 1], 2)
            setattr(self, f"layer{i + 1}", torch.nn.Sequential(_BasicBlock(cin, width, stride),
                                                               _BasicBlock(width, width, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


def load_feature_model(path: PathLike, size: int | None = 224, device: torch.device | str = "cpu") -> TorchFeatures:
    """SRC features from a local file: a TorchScript image model, or a torchvision ResNet-18 state dict."""
    if not os.path.isfile(path):
        raise MetricUnavailable(f"SRC feature model unavailable: no file at {os.fspath(path)!r}")
    try:
        model: torch.nn.Module = torch.jit.load(os.fspath(path), map_location="cpu")
    except RuntimeError:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        model = ResNet18Features()
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    return TorchFeatures(model, size=size, device=device)


def scene_revisit_consistency(
    video: VideoLike, revisits: np.ndarray | Sequence[Sequence[int]], features: FeatureFn | PathLike | None = None
) -> float:
    """SRC: mean cosine similarity x100 between features of frames ``i`` and ``j`` of each revisit pair.

    ``features`` is a callable (frames -> (N, D)), a path for :func:`load_feature_model`, or None for
    :func:`pixel_features` (the offline default; the paper uses ResNet-18, so absolute values differ).
    """
    frames = as_video(video)
    pairs = np.asarray(revisits)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0 or not np.issubdtype(pairs.dtype, np.integer):
        raise ValueError(f"revisits must be a non-empty int array of shape (R, 2), got {pairs.dtype} {pairs.shape}")
    if pairs.min() < 0 or pairs.max() >= len(frames):
        raise ValueError(f"revisit indices must lie in [0, {len(frames)}), got [{pairs.min()}, {pairs.max()}]")
    if features is None:
        features = pixel_features
    elif not callable(features):
        features = load_feature_model(features)
    used, inverse = np.unique(pairs, return_inverse=True)
    feats = _unit(np.asarray(torch.as_tensor(features(frames[used])).double().cpu()).reshape(len(used), -1))
    feats = feats[inverse.reshape(pairs.shape)]  # (R, 2, D)
    cosine = np.clip((feats[:, 0] * feats[:, 1]).sum(-1), -1.0, 1.0)
    return float(100.0 * cosine.mean())


# ----------------------------------------------------------------------------------------------
# FVD and LPIPS


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``(N, D)`` features (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians: |mu1-mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: regularise as pytorch-fid does
        eps = 1e-6 * np.eye(len(sigma1))
        covmean = linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean), 0.0))


class FrechetVideoDistance:
    """FVD with an I3D TorchScript model from a local path (input (N, 3, T, H, W) in [-1, 1]).

    ``model_kwargs`` defaults to the call convention of the common ``i3d_torchscript.pt``; pass ``{}`` for
    a model with a plain ``forward(x)``. FVD needs at least two videos per set (covariance).
    """

    def __init__(self, i3d_path: PathLike | None, *, model_kwargs: dict[str, Any] | None = None,
                 batch_size: int = 8, device: torch.device | str = "cpu"):
        self.model = _load_torchscript(i3d_path, "FVD", "--i3d").to(device)
        self.model_kwargs = dict(I3D_KWARGS if model_kwargs is None else model_kwargs)
        self.batch_size, self.device = batch_size, device

    @torch.no_grad()
    def features(self, videos: VideoLike | Sequence[VideoLike]) -> np.ndarray:
        clips = _video_batch(videos, "videos")
        out = []
        for start in range(0, len(clips), self.batch_size):
            x = torch.from_numpy(clips[start : start + self.batch_size]).to(self.device)
            x = x.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
            out.append(self.model(x, **self.model_kwargs).flatten(1).double().cpu())
        return torch.cat(out).numpy()

    def __call__(self, real: VideoLike | Sequence[VideoLike], fake: VideoLike | Sequence[VideoLike]) -> float:
        return frechet_distance(*gaussian_statistics(self.features(real)), *gaussian_statistics(self.features(fake)))


class LPIPS:
    """LPIPS from a local TorchScript file: ``model(x, y)`` on (N, 3, H, W) in [-1, 1] -> N distances.

    Returns the mean over frames (the paper reports it x100).
    """

    def __init__(self, lpips_path: PathLike | None, *, batch_size: int = 64, device: torch.device | str = "cpu"):
        self.model = _load_torchscript(lpips_path, "LPIPS", "--lpips").to(device)
        self.batch_size, self.device = batch_size, device

    @torch.no_grad()
    def __call__(self, a: VideoLike, b: VideoLike) -> float:
        a, b = _video_pair(a, b)
        dists = []
        for start in range(0, len(a), self.batch_size):
            x, y = (_to_float(v[start : start + self.batch_size], self.device) * 2.0 - 1.0 for v in (a, b))
            dists.append(self.model(x, y).reshape(len(x), -1).mean(1).double().cpu())
        return float(torch.cat(dists).mean())
