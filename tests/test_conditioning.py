"""The shipped demo model follows the words: changing only one word of a caption changes the
image more than changing the noise z does (the shape word included, which the first demo
model ignored: its circles, squares and triangles were the same dome)."""
from pathlib import Path

import pytest
import torch

from stylegan_t2i.data.demo_scenes import ATTRIBUTES, caption_for
from stylegan_t2i.inference import load_sampler

DEMO = Path(__file__).resolve().parents[1] / "pretrained" / "demo-gan.pt"
BASE = [dict(shape="circle", colour="red", size="large", position="center", background="black"),
        dict(shape="square", colour="green", size="small", position="left", background="gray"),
        dict(shape="triangle", colour="yellow", size="large", position="right", background="white")]
SEEDS = list(range(12))


@pytest.fixture(scope="module")
def sampler():
    if not DEMO.is_file():
        pytest.skip(f"{DEMO} is not in this checkout")
    return load_sampler(DEMO, "cpu")


def _images(sampler, attrs: dict) -> torch.Tensor:
    caption = caption_for(attrs)
    return sampler.sample([caption] * len(SEEDS), SEEDS)            # [S, 3, R, R], seed i -> z_i


def word_effect(sampler, attribute: str) -> float:
    """Mean image change when one word changes (same z), relative to the mean change between
    two z for one caption; both as RMS pixel distances."""
    word, z_spread = [], []
    for base in BASE:
        img = _images(sampler, base)
        z_spread.append((img - img.roll(1, dims=0)).square().mean(dim=[1, 2, 3]).sqrt().mean())
        for value in ATTRIBUTES[attribute]:
            if value != base[attribute]:
                other = _images(sampler, {**base, attribute: value})
                word.append((img - other).square().mean(dim=[1, 2, 3]).sqrt().mean())
    return (torch.stack(word).mean() / torch.stack(z_spread).mean()).item()


@pytest.mark.parametrize("attribute", ["shape", "colour", "background"])
def test_one_word_moves_the_image_more_than_the_noise(sampler, attribute):
    assert word_effect(sampler, attribute) > 1.0
