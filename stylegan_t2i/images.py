"""Image conversions, resizing for viewing, captioned grids and the geometric jitter of the
encoders' inputs, with PIL and plain torch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """img: [N, 3, H, W] float in [-1, 1] -> img_u8: [N, H, W, 3] uint8 (on CPU)."""
    assert img.ndim == 4 and img.shape[1] == 3, img.shape
    x = (img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def from_uint8(img_u8: torch.Tensor) -> torch.Tensor:
    """img_u8: [N, 3, H, W] uint8 -> img: float32 in [-1, 1]."""
    return img_u8.to(torch.float32) / 127.5 - 1


def zoom_and_shift(
    img:    torch.Tensor,               # [B, C, H, W]
    shift:  torch.Tensor,               # [B, 2] (dx, dy) as fractions of the side (drawn by the caller).
    zoom:   torch.Tensor | None = None, # [B] content scale about the centre (> 1 enlarges); None: 1.
) -> torch.Tensor:
    """Each image's content zoomed about the image centre, then shifted; bilinear, with the
    border colour repeated where the content leaves the frame (differentiable in img)."""
    assert shift.shape == (img.shape[0], 2), (img.shape, shift.shape)
    inv = torch.ones(img.shape[0], device=img.device, dtype=img.dtype) if zoom is None else 1 / zoom.to(img)
    # Output point u shows input point (u - 2 shift) / zoom: affine_grid spans [-1, 1], a side is 2 units.
    theta = torch.zeros([img.shape[0], 2, 3], device=img.device, dtype=img.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = inv
    theta[:, :, 2] = -2 * shift.to(img) * inv[:, None]
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


# How an image is resized for viewing (`resize_image`; generate.py --resample, the API's upscale).
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,    # Pixel-exact blocks when the new side is a multiple of the old.
    "lanczos": Image.Resampling.LANCZOS,    # Smooth; also the better filter for shrinking.
}
BORDER = (200, 200, 200)    # Grid border: light gray, so white-background images keep a visible edge.
CAPTION_INK = (0, 0, 0)     # Caption text colour (on the border colour).


def resize_image(
    img:        Image.Image,
    size:       int | tuple[int, int],  # Side of the square result, or (width, height); each >= 1.
    resample:   str = "nearest",        # A RESAMPLE key.
) -> Image.Image:
    """`img` resized to `size` for viewing (the pipeline's upscale=k is size (k W, k H),
    nearest): 'nearest' makes each pixel a k x k block when the side grows by an integer k;
    'lanczos' is smooth. A size that shrinks the image is allowed."""
    width, height = (size, size) if isinstance(size, int) else size
    if width < 1 or height < 1:
        raise ValueError(f"image size must be >= 1 pixel, got {width}x{height}")
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE)}, got {resample!r}")
    if img.size == (width, height):
        return img
    return img.resize((width, height), RESAMPLE[resample])


def resize_batch(img_u8: torch.Tensor, size: int, resample: str = "nearest") -> torch.Tensor:
    """img_u8: [N, H, W, 3] uint8 -> [N, size, size, 3] uint8 by `resize_image`; size 0: unchanged."""
    if size == 0 or img_u8.shape[1:3] == (size, size):
        return img_u8
    return torch.stack([torch.from_numpy(np.array(resize_image(Image.fromarray(a.numpy()), size, resample)))
                        for a in img_u8])


def _caption_font():
    """PIL's built-in bitmap font (about 6 x 11 px a character): no font file, nothing downloaded."""
    from PIL import ImageFont
    load = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)    # Pillow < 10.1: load_default.
    return load()


def caption_band(
    text:       str,
    width:      int,                    # Pixel width of the band.
    scale:      int = 1,                # Integer zoom of the glyphs (nearest: crisp blocks).
    background: tuple[int, int, int] = BORDER,
    ink:        tuple[int, int, int] = CAPTION_INK,
) -> np.ndarray:
    """One line of `text` in PIL's default bitmap font, left-aligned on a [h, width, 3] uint8
    band (h = 12 * scale); text too long for the width is cut to a prefix + '...', a character
    the font lacks (outside Latin-1) becomes '?'."""
    from PIL import ImageDraw
    font = _caption_font()
    text = text.encode("latin-1", "replace").decode("latin-1")
    line_h = 12
    fits = lambda t: font.getlength(t) * scale <= width     # noqa: E731
    if not fits(text):
        while text and not fits(text + "..."):
            text = text[:-1]
        text += "..."
    band = Image.new("RGB", (max(1, width // scale), line_h), background)
    ImageDraw.Draw(band).text((0, 0), text, fill=ink, font=font)
    band = band.resize((band.width * scale, line_h * scale), Image.Resampling.NEAREST)
    out = np.full((line_h * scale, width, 3), background, np.uint8)
    out[:, :band.width] = np.asarray(band)[:, :width]
    return out


def make_grid(
    img_u8:     torch.Tensor,           # [rows*cols, H, W, 3] uint8, row-major.
    rows:       int,
    cols:       int,
    pad:        int = 2,                # Border between and around the images, in pixels.
    border:     tuple[int, int, int] = BORDER,  # Border (and caption band) colour.
    captions:   list[str] | None = None,        # One per row: a line of text above its row (caption_band).
) -> np.ndarray:
    """The images in a rows x cols grid -> one [H', W', 3] uint8 array: H' = rows * (H + pad) + pad
    (+ one caption band a row), W' = cols * (W + pad) + pad."""
    n, h, w, c = img_u8.shape
    assert n == rows * cols, (n, rows, cols)
    assert captions is None or len(captions) == rows, (len(captions), rows)
    width = cols * (w + pad) + pad
    scale = max(1, h // 128)        # Larger glyphs over large cells: 2x at 256 px.
    bands = [caption_band(t, width - 2 * pad, scale, border) for t in captions] if captions else [None] * rows
    band_h = 0 if bands[0] is None else bands[0].shape[0] + pad
    grid = np.full((rows * (band_h + h + pad) + pad, width, c), border, np.uint8)
    arr = img_u8.numpy()
    for r in range(rows):
        top = pad + r * (band_h + h + pad)
        if bands[r] is not None:
            grid[top:top + bands[r].shape[0], pad:width - pad] = bands[r]
        for col in range(cols):
            x = pad + col * (w + pad)
            grid[top + band_h:top + band_h + h, x:x + w] = arr[r * cols + col]
    return grid


def save_png(path: str | Path, img_u8: np.ndarray) -> Path:
    """Write a [H, W, 3] uint8 array as PNG, making parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img_u8)).save(path)
    return path
