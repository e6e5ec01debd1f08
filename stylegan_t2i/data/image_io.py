"""Decode any image file to a square uint8 RGB array at one resolution (PIL only).

docs/architecture.md, "Data format": every mode (1, L, LA, P, PA, RGBA, CMYK, I;16, I, F, ...) becomes RGB
with alpha composited on white; non-square images are centre-cropped to their shorter side;
one anti-aliased resize (PIL LANCZOS) brings the crop to the target resolution.
"""
from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# What PIL raises for a file that is not a decodable image: UnidentifiedImageError and truncated
# data are OSErrors; plugins raise ValueError/SyntaxError/EOFError/struct.error on corrupt
# headers and KeyError/IndexError/TypeError on malformed EXIF or palettes; huge images raise
# DecompressionBombError. Our own bugs (AssertionError, NameError, ...) still propagate.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, KeyError, IndexError,
                 TypeError, Image.DecompressionBombError)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; transparency composited over white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16/32-bit grey: PIL's convert("L") would clip at 255 instead of rescaling. Integer
        # modes hold 16-bit samples (PNG/TIFF), so 65535 -> 255 is a division by 257.
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / 257.0 if img.mode != "F" else arr * (255.0 if arr.max(initial=0) <= 1 else 1.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path, resolution: int) -> tuple[np.ndarray, bool]:
    """Decode, convert to RGB, centre-crop and resize one image.

    Returns (img_u8 [3, resolution, resolution] uint8, upsampled) where `upsampled` says the
    shorter side was below `resolution`. Raises one of `DECODE_ERRORS` for a bad file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette/EXIF warnings on odd but valid files
        with Image.open(path) as img:
            img.load()  # decode now so that truncated data raises here, inside the caller's try
            img = ImageOps.exif_transpose(img)  # camera JPEGs: apply the stored rotation
            img = _to_rgb(img)
    w, h = img.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    # Crop first (resize's own `box` would let the filter read pixels outside the crop), then one
    # LANCZOS resize; `reducing_gap` first box-reduces very large images by an integer factor
    # (an exact area mean), which keeps the result alias-free at a fraction of the cost.
    img = img.crop(box).resize((resolution, resolution), Image.Resampling.LANCZOS, reducing_gap=3.0)
    img_u8 = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    assert img_u8.shape == (3, resolution, resolution), img_u8.shape
    return np.ascontiguousarray(img_u8), side < resolution
