"""ImageLabelDataset: pairing, image modes, bad-input report, cache (stylegan_t2i.data)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_t2i.data import DatasetError, ImageLabelDataset
from stylegan_t2i.data import cache as cache_mod
from stylegan_t2i.data.image_io import load_image

RES = 16


def _solid(path: Path, rgb=(10, 200, 30), size=(RES, RES), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, format=fmt, lossless=True)  # `lossless` is read by WebP only
    return path


def _caption(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _pixel(img_u8: np.ndarray) -> tuple[int, ...]:
    """The colour at the centre of a [3, R, R] array."""
    return tuple(int(v) for v in img_u8[:, RES // 2, RES // 2])


@pytest.mark.parametrize("mode, value, expected", [
    ("L", 77, (77, 77, 77)),
    ("1", 1, (255, 255, 255)),
    ("LA", (0, 0), (255, 255, 255)),                       # fully transparent black -> the white backdrop
    ("RGBA", (255, 0, 0, 128), (255, 127, 127)),           # 0 * a + 255 * (1 - a), a = 128/255
    ("RGBA", (0, 0, 255, 255), (0, 0, 255)),
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("I;16", 32896, (128, 128, 128)),                      # 16-bit: 32896 / 257 = 128, not clipped to 255
    ("I", 65535, (255, 255, 255)),
])
def test_modes_become_rgb(tmp_path, mode, value, expected):
    path = tmp_path / {"CMYK": "x.jpg", "I": "x.tif"}.get(mode, "x.png")  # PNG cannot hold CMYK or 32-bit I
    Image.new(mode, (RES, RES), value).save(path, **({"quality": 100} if mode == "CMYK" else {}))
    img_u8, upsampled = load_image(path, RES)
    assert img_u8.shape == (3, RES, RES) and img_u8.dtype == np.uint8 and not upsampled
    np.testing.assert_allclose(_pixel(img_u8), expected, atol=2 if mode == "CMYK" else 0)


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    img = Image.new("P", (RES, RES), 0)
    img.putpalette([200, 0, 0] + [0, 0, 0] * 255)
    img.save(tmp_path / "p.png", transparency=0)
    assert _pixel(load_image(tmp_path / "p.png", RES)[0]) == (255, 255, 255)


def test_centre_crop_and_resize(tmp_path):
    # Three vertical bands (red | green | blue), 3R x R: the centre crop is exactly the green band.
    arr = np.zeros((RES, 3 * RES, 3), np.uint8)
    arr[:, :RES, 0] = arr[:, RES:2 * RES, 1] = arr[:, 2 * RES:, 2] = 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    img_u8, up = load_image(tmp_path / "wide.png", RES)
    assert not up and (img_u8[1] == 255).all() and (img_u8[0] == 0).all() and (img_u8[2] == 0).all()
    # Tall 4R x 2R -> crop 2R x 2R around the middle -> resized to R: top/bottom quarters gone.
    arr = np.zeros((4 * RES, 2 * RES, 3), np.uint8)
    arr[RES:3 * RES] = 200
    Image.fromarray(arr).save(tmp_path / "tall.png")
    img_u8, up = load_image(tmp_path / "tall.png", RES)
    assert not up and (img_u8 == 200).all()  # nothing of the cropped-away black rows bleeds in


def _build_messy_tree(root: Path) -> tuple[Path, Path]:
    """One file for every bad-input kind, next to three good pairs."""
    imgs, txt = root / "imgs", root / "txt"
    _solid(imgs / "good1.png"); _caption(txt / "good1.txt", "a green square\n")
    _solid(imgs / "sub" / "good2.JPG", fmt="JPEG"); _caption(txt / "sub" / "good2.txt", "  first \n\n second\n \n")
    _solid(imgs / "good3.webp", (255, 0, 0)); _caption(txt / "good3.txt", "\ufeffwith bom")
    _caption(imgs / "garbage.png", b"not an image at all"); _caption(txt / "garbage.txt", "x")
    full = _solid(imgs / "truncated.png", size=(64, 64)).read_bytes()
    _caption(imgs / "truncated.png", full[: len(full) // 2]); _caption(txt / "truncated.txt", "x")
    _caption(imgs / "zero.png", b""); _caption(txt / "zero.txt", "x")
    _solid(imgs / "nocap.png")
    _caption(txt / "noimg.txt", "orphan caption")
    _solid(imgs / "blank.png"); _caption(txt / "blank.txt", " \n\t\n  ")
    _solid(imgs / "latin1.png"); _caption(txt / "latin1.txt", b"caf\xe9 au lait")
    _solid(imgs / "emptycap.png"); _caption(txt / "emptycap.txt", b"")
    _solid(imgs / "small.png", size=(RES // 2, RES // 2)); _caption(txt / "small.txt", "tiny")
    _solid(imgs / "dup.png"); _solid(imgs / "dup.jpg", fmt="JPEG"); _caption(txt / "dup.txt", "dup")
    _caption(imgs / ".DS_Store", b"\0\0"); _caption(imgs / "notes.md", "ignored")
    return imgs, txt


def test_bad_inputs_are_counted_not_fatal(tmp_path, capsys):
    imgs, txt = _build_messy_tree(tmp_path)
    ds = ImageLabelDataset(imgs, txt, RES, cache_dir=tmp_path / "cache", verbose=True)
    assert ds.report.counts == {"unreadable_image": 2, "zero_byte_image": 1, "duplicate_image": 1,
                                "missing_caption": 1, "missing_image": 1, "zero_byte_caption": 1,
                                "blank_caption": 1, "non_utf8_caption": 1, "upsampled": 1}
    assert ds.report.examples["unreadable_image"] == ["garbage", "truncated"]
    assert ds.report.examples["duplicate_image"] == ["dup.png"]  # sorted: dup.jpg is kept
    assert ds.names == ["dup", "good1", "good3", "small", "sub/good2"]
    assert ds.captions[ds.names.index("sub/good2")] == ["first", "second"]
    assert ds.captions[ds.names.index("good3")] == ["with bom"]
    assert len(ds) == ds.report.num_usable == 5 and ds.images.shape == (5, 3, RES, RES)
    assert _pixel(ds.images[ds.names.index("good3")].numpy()) == (255, 0, 0)
    out = capsys.readouterr().out
    assert ds.report.summary() in out
    for kind_text, name in (("not UTF-8", "latin1"), ("without a caption", "nocap"), ("up-sampled", "small")):
        assert any(kind_text in line and name in line for line in out.splitlines()), (kind_text, out)


def test_zero_usable_and_missing_dirs_raise_one_line(tmp_path):
    imgs, txt = tmp_path / "imgs", tmp_path / "txt"
    _caption(imgs / "a.png", b"garbage"); _caption(txt / "a.txt", "x")
    with pytest.raises(DatasetError) as err:
        ImageLabelDataset(imgs, txt, RES, cache_dir=tmp_path / "c", verbose=False)
    msg = str(err.value)
    assert "\n" not in msg and str(imgs) in msg and str(txt) in msg and "unreadable_image" in msg
    assert isinstance(err.value, ValueError)
    (tmp_path / "empty_i").mkdir(), (tmp_path / "empty_t").mkdir()
    with pytest.raises(DatasetError, match="no files found"):
        ImageLabelDataset(tmp_path / "empty_i", tmp_path / "empty_t", RES, cache_dir=tmp_path / "c2", verbose=False)
    assert not (tmp_path / "c2").exists()  # nothing to cache, nothing written
    with pytest.raises(DatasetError, match="nope"):
        ImageLabelDataset(tmp_path / "nope", txt, RES, verbose=False)
    with pytest.raises(DatasetError, match="missing_txt"):
        ImageLabelDataset(imgs, tmp_path / "missing_txt", RES, verbose=False)
    with pytest.raises(ValueError, match="power of 2"):
        ImageLabelDataset(imgs, txt, 24, verbose=False)


def test_cache_is_reused_and_rebuilt_on_change(tmp_path, monkeypatch):
    imgs, txt = tmp_path / "imgs", tmp_path / "txt"
    for i in range(3):
        _solid(imgs / f"{i}.png", (i * 50, 0, 0)); _caption(txt / f"{i}.txt", f"cap {i}")
    ds = ImageLabelDataset(imgs, txt, RES, verbose=False)  # default cache folder beside imgs
    cache_dir = tmp_path / ".stylegan_t2i_cache"
    assert len(list(cache_dir.glob("*.npy"))) == 1 and len(list(cache_dir.glob("*.json"))) == 1
    calls = []
    monkeypatch.setattr(cache_mod, "load_image", lambda *a: calls.append(a) or load_image(*a))
    again = ImageLabelDataset(imgs, txt, RES, verbose=False)
    assert calls == [] and torch.equal(again.images, ds.images)  # memory-mapped, nothing decoded
    _solid(imgs / "1.png", (0, 0, 250))
    os.utime(imgs / "1.png", ns=(1, 10**18))  # a distinct mtime even on coarse file-system clocks
    changed = ImageLabelDataset(imgs, txt, RES, verbose=False)
    assert len(calls) == 3 and _pixel(changed.images[1].numpy()) == (0, 0, 250)
    assert len(list(cache_dir.glob("*.npy"))) == 1  # the stale cache of this dataset was removed
    ImageLabelDataset(imgs, txt, RES // 2, verbose=False)
    assert len(list(cache_dir.glob("*.npy"))) == 2  # another resolution is another cache


def test_unwritable_cache_falls_back_to_memory(tmp_path, capsys):
    imgs, txt = tmp_path / "imgs", tmp_path / "txt"
    _solid(imgs / "a.png"); _caption(txt / "a.txt", "x")
    _caption(imgs / "b.png", b"broken"); _caption(txt / "b.txt", "y")
    blocker = _caption(tmp_path / "file", "a file where the cache folder would go")
    ds = ImageLabelDataset(imgs, txt, RES, cache_dir=blocker / "cache", verbose=True)
    assert "not writable" in capsys.readouterr().out
    assert ds.names == ["a"] and ds.images.shape == (1, 3, RES, RES) and ds.report.counts == {"unreadable_image": 1}
