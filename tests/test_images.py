"""stylegan_t2i.images: resizing for viewing, grid borders and caption bands."""
import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_t2i.images import BORDER, caption_band, make_grid, resize_batch, resize_image


def _images(n=4, res=8, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, res, res, 3), dtype=np.uint8))


def test_resize_nearest_is_repeat_interleave_blocks_and_lanczos_differs():
    img_u8 = _images(2)
    near, smooth = resize_batch(img_u8, 32), resize_batch(img_u8, 32, "lanczos")
    assert near.shape == smooth.shape == (2, 32, 32, 3)
    assert torch.equal(near, img_u8.repeat_interleave(4, 1).repeat_interleave(4, 2))
    assert not torch.equal(smooth, near)
    assert resize_batch(img_u8, 0) is img_u8 and resize_batch(img_u8, 5).shape == (2, 5, 5, 3)
    # The pipeline's upscale=k: (k W, k H), nearest.
    pil = Image.fromarray(img_u8[0].numpy())
    assert np.array_equal(np.asarray(resize_image(pil, (24, 24))), img_u8[0].repeat_interleave(3, 0)
                          .repeat_interleave(3, 1).numpy())


@pytest.mark.parametrize("size, resample, message", [(0, "nearest", ">= 1 pixel"), ((8, -1), "nearest", "8x-1"),
                                                     (16, "bicubic", "nearest, lanczos")])
def test_resize_image_rejects_bad_sizes_and_filters(size, resample, message):
    with pytest.raises(ValueError, match=message):
        resize_image(Image.new("RGB", (8, 8)), size, resample)


def test_grid_border_colour_is_a_parameter_light_gray_by_default():
    img_u8 = torch.full((4, 8, 8, 3), 255, dtype=torch.uint8)      # White images: the border still shows.
    grid = make_grid(img_u8, 2, 2)
    assert grid.shape == (22, 22, 3) and (grid[:2] == BORDER).all() and (grid[:, 10:12] == BORDER).all()
    assert BORDER != (255, 255, 255) and (grid[2:10, 2:10] == 255).all()
    red = make_grid(img_u8, 2, 2, border=(255, 0, 0))
    assert (red[:2] == (255, 0, 0)).all() and (red[-2:] == (255, 0, 0)).all()


def test_caption_rows_make_the_grid_taller_with_ink_in_each_band():
    img_u8 = _images()
    plain = make_grid(img_u8, 2, 2)
    cap = make_grid(img_u8, 2, 2, captions=["a red circle", "a blue square on a white background"])
    band = caption_band("x", 10).shape[0]
    assert cap.shape == (plain.shape[0] + 2 * (band + 2), plain.shape[1], 3)
    row_h = band + 2 + 8 + 2
    for r in range(2):
        assert (cap[2 + r * row_h:2 + r * row_h + band] != BORDER).any()
        top = 2 + r * row_h + band + 2
        assert np.array_equal(cap[top:top + 8, 2:10], img_u8[2 * r].numpy())


def test_caption_band_fits_long_and_non_latin_text():
    band = caption_band("a small red circle on the left on a black background " * 4, 60)
    assert band.shape == (12, 60, 3) and (band != BORDER).any()
    assert (caption_band("a red ☺", 60) != BORDER).any()
    assert caption_band("big", 60, scale=2).shape == (24, 60, 3)
