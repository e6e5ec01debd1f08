"""Feature spaces for FD / KID / precision-recall, and batched extraction.

Two extractors, chosen by what the user has (docs/architecture.md "What is measured"):
- InceptionV3 pool3 features (2048-d) when a weights file is given: FD is then FID;
- otherwise the project's contrastive image encoder, pre-normalisation embedding
  (`bundle.model.image_encoder(img)`): FD/KID "in the encoder's space", comparable only
  with numbers from the same encoder checkpoint.

Following Clean-FID (Parmar et al. 2022): every image is quantised to 8 bits first, so
generated images are processed exactly like real images read from uint8 files, and any
resizing uses an anti-aliased filter.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..images import from_uint8
from .inception import load_inception


class FeatureExtractor(Protocol):
    name:           str     # "inception" or "encoder": label reported beside every number.

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """img: [N, 3, H, W] float in [-1, 1] on the extractor's device -> [N, D] float.

        InceptionV3 -> D = 2048 (pool3); the contrastive encoder -> its embedding width."""
        ...


@dataclass(frozen=True)
class ModuleExtractor:
    """A FeatureExtractor around a module, with an optional anti-aliased resize in front."""
    name:           str
    module:         Callable[[torch.Tensor], torch.Tensor]
    resolution:     int | None = None   # Resize to resolution^2 first; None: feed as is.

    @torch.no_grad()
    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        assert img.ndim == 4 and img.shape[1] == 3, img.shape
        if self.resolution is not None and tuple(img.shape[2:]) != (self.resolution,) * 2:
            img = resize_antialiased(img, self.resolution)
        feats = self.module(img)
        assert feats.ndim == 2 and feats.shape[0] == img.shape[0], (feats.shape, img.shape)
        return feats


def resize_antialiased(
    img:        torch.Tensor,   # [N, C, H, W] float.
    resolution: int,            # Output side.
) -> torch.Tensor:
    """Bilinear resize with an anti-aliasing prefilter when down-sampling (Clean-FID's point)."""
    return F.interpolate(img, size=(resolution, resolution), mode="bilinear",
                         align_corners=False, antialias=True)


def quantize_8bit(img: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] images to the 256 levels of uint8 and back (as saving a PNG would)."""
    return ((img.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def make_feature_extractor(
    inception_path: str | Path | None = None,   # pytorch-fid FID weights file -> InceptionV3.
    bundle:         Any = None,                 # TextEncoderBundle -> its image encoder.
    device:         torch.device | str = "cpu",
    resolution:     int | None = None,          # Encoder input side; None: images as given.
) -> ModuleExtractor:
    """InceptionV3 features when `inception_path` is given, else the contrastive encoder's.

    The encoder's module is switched to eval mode (evaluation must not update BatchNorm
    statistics or apply dropout). InceptionV3 resizes to 299x299 itself. `device` places
    InceptionV3; the encoder stays on the device the bundle was loaded to.
    """
    if inception_path is not None:
        model = load_inception(inception_path, device)
        return ModuleExtractor("inception", model)
    if bundle is None:
        raise ValueError("make_feature_extractor: give an InceptionV3 weights path or a "
                         "TextEncoderBundle (the contrastive image encoder)")
    return ModuleExtractor("encoder", bundle.model.image_encoder.eval(), resolution)


def extract_features(
    extractor:  FeatureExtractor,
    images:     Iterable[torch.Tensor],     # Chunks [n, 3, H, W]: float in [-1, 1] or uint8.
    batch:      int,                        # Images per forward pass.
    device:     torch.device | str,         # Where the extractor runs.
    progress:   bool = True,                # tqdm bar (images).
    quantize:   bool = True,                # Round float images to 8 bits first (Clean-FID).
    total:      int | None = None,          # Images in `images`, for the bar's percentage and ETA.
) -> torch.Tensor:
    """Run `extractor` over all images, re-batched to `batch`; return [N, D] float32 on CPU."""
    out: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []
    num_pending = 0
    with tqdm(total=total, desc=f"features ({extractor.name})", unit="img", disable=not progress) as bar:
        for chunk in images:
            assert chunk.ndim == 4 and chunk.shape[1] == 3, chunk.shape
            pending.append(chunk)
            num_pending += chunk.shape[0]
            while num_pending >= batch:
                x = torch.cat(pending)
                pending, num_pending = [x[batch:]], x.shape[0] - batch
                out.append(_run_batch(extractor, x[:batch], device, quantize))
                bar.update(batch)
        if num_pending:
            out.append(_run_batch(extractor, torch.cat(pending), device, quantize))
            bar.update(num_pending)
    if not out:
        raise ValueError("extract_features: no images")
    return torch.cat(out)


def _run_batch(
    extractor:  FeatureExtractor,
    x:          torch.Tensor,           # [n, 3, H, W] uint8 or float in [-1, 1].
    device:     torch.device | str,
    quantize:   bool,
) -> torch.Tensor:
    x = x.to(device)
    if x.dtype == torch.uint8:
        x = from_uint8(x)
    elif quantize:
        x = quantize_8bit(x.float())
    return extractor(x).float().cpu()
