"""Image conversions and grids with PIL and plain torch (no torchvision)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """img: [N, 3, H, W] float in [-1, 1] -> img_u8: [N, H, W, 3] uint8 (on CPU)."""
    assert img.ndim == 4 and img.shape[1] == 3, img.shape
    x = (img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def from_uint8(img_u8: torch.Tensor) -> torch.Tensor:
    """img_u8: [N, 3, H, W] uint8 -> img: float32 in [-1, 1]."""
    return img_u8.to(torch.float32) / 127.5 - 1


def make_grid(img_u8: torch.Tensor, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """img_u8: [rows*cols, H, W, 3] uint8, row-major -> one [H', W', 3] uint8 grid."""
    n, h, w, c = img_u8.shape
    assert n == rows * cols, (n, rows, cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    arr = img_u8.numpy()
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = arr[i]
    return grid


def save_png(path: str | Path, img_u8: np.ndarray) -> Path:
    """Write a [H, W, 3] uint8 array as PNG, making parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img_u8)).save(path)
    return path
