"""Resolution views, caption/flip randomness and resume, DataLoader collate, IndexOrder."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_t2i.data import ImageLabelDataset, IndexOrder

RES = 16


@pytest.fixture(scope="module")
def dataset_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """Six random-noise images (so flips and down-sampling are visible) with 1-3 captions each."""
    root = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(), (root / "txt").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
        (root / "txt" / f"{i}.txt").write_text("\n".join(f"caption {i}.{j}" for j in range(1 + i % 3)))
    return root / "imgs", root / "txt"


def _dataset(dirs, **kw) -> ImageLabelDataset:
    return ImageLabelDataset(dirs[0], dirs[1], RES, verbose=False, **kw)


def test_images_are_the_files(dataset_dirs):
    ds = _dataset(dataset_dirs)
    assert ds.names == [str(i) for i in range(6)] and ds.resolution == RES
    ref = np.array(Image.open(dataset_dirs[0] / "4.png")).transpose(2, 0, 1)
    assert ds.images.dtype == torch.uint8 and torch.equal(ds.images[4], torch.from_numpy(ref))
    img_u8, caption = ds[4]
    assert torch.equal(img_u8, ds.images[4]) and caption in ds.captions[4]


def test_view_is_area_downsampling(dataset_dirs):
    ds = _dataset(dataset_dirs)
    for res in (8, 4, 1):
        view = ds.view(res)
        f = RES // res  # independent reference: mean of each f x f block, in float64
        ref = ds.images.numpy().astype(np.float64).reshape(6, 3, res, f, res, f).mean(axis=(3, 5))
        assert len(view) == len(ds) and view.images.dtype == torch.uint8
        assert np.abs(view.images.numpy() - ref).max() <= 0.5 + 1e-6
        assert ds.view(res) is view  # computed once and kept
        img_u8, caption = view[2]
        assert img_u8.shape == (3, res, res) and caption in ds.captions[2]
    assert ds.view(RES).images is ds.images
    for bad in (3, 32):
        with pytest.raises(ValueError, match="power of 2"):
            ds.view(bad)


def test_captions_and_flips_follow_one_generator(dataset_dirs):
    ds = _dataset(dataset_dirs, xflip=True, seed=3)
    view = ds.view(8)
    state = ds.state_dict()
    draws = [(ds[i % 6], view[i % 6]) for i in range(60)]
    # Every caption of sample 5 (three of them) shows up, and both flip states occur.
    assert {c for (_, c), _ in draws[5::6]} == set(ds.captions[5])
    flipped = [not torch.equal(img, ds.images[i % 6]) for i, ((img, _), _) in enumerate(draws)]
    assert 15 < sum(flipped) < 45
    for i, ((img, _), _) in enumerate(draws):
        assert torch.equal(img, ds.images[i % 6]) or torch.equal(img, ds.images[i % 6].flip(-1))
    ds.load_state_dict(state)  # resume: the same draws again, bit for bit, views included
    again = [(ds[i % 6], view[i % 6]) for i in range(60)]
    for (a, va), (b, vb) in zip(draws, again):
        assert torch.equal(a[0], b[0]) and a[1] == b[1] and torch.equal(va[0], vb[0]) and va[1] == vb[1]
    other = _dataset(dataset_dirs, xflip=True, seed=4)
    assert [other[i % 6][1] for i in range(60)] != [d[0][1] for d in draws]


def test_dataloader_collate(dataset_dirs):
    ds = _dataset(dataset_dirs)
    loader = torch.utils.data.DataLoader(ds.view(8), batch_size=4, sampler=IndexOrder(len(ds), seed=1))
    img_u8, captions = next(iter(loader))
    assert img_u8.dtype == torch.uint8 and img_u8.shape == (4, 3, 8, 8)
    # torch's default_collate turns a column of str into a tuple (not a list): callers use list(captions).
    assert isinstance(captions, tuple) and len(captions) == 4 and all(isinstance(c, str) for c in captions)
    for img, caption in zip(img_u8, captions):
        i = int(caption.split()[1].split(".")[0])
        assert torch.equal(img, ds.view(8).images[i])


def _take(order: IndexOrder, n: int) -> list[int]:
    return list(itertools.islice(iter(order), n))


def test_order_epochs_are_permutations():
    s = IndexOrder(7, seed=5)
    stream = _take(s, 21)
    for e in range(3):
        epoch = stream[7 * e: 7 * e + 7]
        assert sorted(epoch) == list(range(7))
        assert epoch == torch.randperm(7, generator=torch.Generator().manual_seed(5 + e)).tolist()
    assert stream[:7] != stream[7:14]
    assert _take(IndexOrder(5, shuffle=False), 7) == [0, 1, 2, 3, 4, 0, 1]


def test_order_resume_continues_exactly():
    ref = _take(IndexOrder(5, seed=9), 12)
    s = IndexOrder(5, seed=9)
    head = _take(s, 7)
    state = s.state_dict()
    assert state == {"epoch": 1, "position": 2}
    resumed = IndexOrder(5, seed=9)
    resumed.load_state_dict(state)
    assert head + _take(resumed, 5) == ref
    with pytest.raises(ValueError):
        IndexOrder(0)
