"""Fuzzing what users hand us: dataset folders, caption text, tokenizer bytes (hypothesis).

- `ImageLabelDataset` on a folder of random files (valid, empty, random, truncated or mutated
  images, absurd declared sizes, under random unicode or non-UTF-8 names and any extension;
  captions of random bytes, invalid UTF-8, whitespace, very long lines) either builds, with every
  unusable file counted in its `SkipReport` exactly as docs/architecture.md "Data format" says, or raises
  `DatasetError` with a one-line message. Anything else is a bug.
- `Tokenizer.encode` on any text: ids inside the vocabulary laid out as bos, pieces, eos, pad.
- `Tokenizer.from_bytes` on random or damaged model bytes: ValueError / RuntimeError with a
  one-line message, or a tokenizer that still encodes inside its vocabulary.

Examples are derandomized (the same every run) and no example database is written.
"""
import io
import os
import struct
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from stylegan_t2i.data import DatasetError, ImageLabelDataset
from stylegan_t2i.data.demo_scenes import all_combinations, captions_for
from stylegan_t2i.data.scan import IMAGE_EXTENSIONS
from stylegan_t2i.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

RES = 8
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------------------- dataset folders

# Image-looking and ignored extensions (matching is case-insensitive; "" is a file without one).
IMAGE_EXTS = st.sampled_from([".png", ".PNG", ".jpg", ".jpeg", ".webp", ".bmp", ".Bmp", ".gif", ".txt", ""])
CAPTION_EXTS = st.sampled_from([".txt", ".TXT", ".text"])
# File names: any character a Linux file name may hold except '.' (so the suffix is the one we
# add, and no file name equals a folder name), optionally in a sub-folder, optionally with a
# byte that is not UTF-8.
NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00."), min_size=1, max_size=10)


def _encode_image(width: int, height: int, mode: str, fmt: str, seed: int) -> bytes:
    if fmt == "JPEG" and mode == "RGBA":
        mode = "RGB"                        # JPEG has no alpha
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, len(mode)), generator=g, dtype=torch.uint8).numpy()
    img = Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels)  # mode from the shape
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels but holds almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


VALID_IMAGES = st.builds(_encode_image, st.integers(1, 12), st.integers(1, 12),
                         st.sampled_from(["RGB", "L", "RGBA"]), st.sampled_from(["PNG", "JPEG", "BMP", "WEBP"]),
                         st.integers(0, 2 ** 16))


@st.composite
def damaged_images(draw) -> bytes:
    """A valid file cut short and/or with a few bytes overwritten."""
    data = bytearray(draw(VALID_IMAGES))
    data = data[:draw(st.integers(1, len(data)))]
    for pos, value in draw(st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=4)):
        data[pos % len(data)] = value
    return bytes(data)


# (kind, bytes): only "valid" images are known to decode.
IMAGES = st.one_of(VALID_IMAGES.map(lambda b: ("valid", b)),
                   st.just(("empty", b"")),
                   st.binary(min_size=1, max_size=64).map(lambda b: ("random", b)),
                   damaged_images().map(lambda b: ("damaged", b)),
                   st.sampled_from([65535, 1 << 20, 2 ** 31 - 1]).map(lambda n: ("huge", _png_header(n, n))))
CAPTIONS = st.one_of(
    st.binary(max_size=64),                                                     # mostly not UTF-8
    st.text(max_size=40).map(lambda t: t.encode("utf-8")),                      # control chars, emoji, ...
    st.text(" \t\r\n\x0b\x0c\x1c\x85\u2028\u3000", max_size=8).map(lambda t: t.encode("utf-8")),  # blank
    st.just("\ufeffa red circle\n\nred round thing\r\n".encode("utf-8")),      # BOM, CRLF, blank line
    st.integers(1, 3000).map(lambda n: ("a small red circle " * n).encode("utf-8")),  # very long line
)
ANY_SAMPLE = st.fixed_dictionaries({
    "name": NAMES, "folder": st.sampled_from(["", "sub.d/", "ü 1.d/"]), "raw": st.booleans(),
    "images": st.lists(st.tuples(IMAGE_EXTS, IMAGES), max_size=2),
    "caption": st.none() | st.tuples(CAPTION_EXTS, CAPTIONS),
})
# A usable pair among the bad ones, so that most folders build and get their counts checked.
GOOD_SAMPLE = st.fixed_dictionaries({
    "name": NAMES, "folder": st.sampled_from(["", "sub.d/"]), "raw": st.booleans(),
    "images": st.tuples(st.sampled_from(IMAGE_EXTENSIONS), VALID_IMAGES.map(lambda b: ("valid", b))).map(lambda t: [t]),
    "caption": st.tuples(st.just(".txt"), st.text(min_size=1, max_size=40).filter(str.strip).map(str.encode)),
})
SAMPLES = st.lists(st.one_of(ANY_SAMPLE, GOOD_SAMPLE), min_size=1, max_size=8)


def _write(root: Path, relative: bytes, data: bytes) -> str:
    """Write `data` to root/relative (bytes path: may be non-UTF-8); returns the name as Python
    lists it (non-UTF-8 bytes become surrogate escapes)."""
    path = os.fsencode(root) + b"/" + relative
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return os.fsdecode(relative)


def _caption_lines(data: bytes) -> tuple[list[str], str | None]:
    """What a caption file holds by docs/architecture.md: non-blank stripped lines, or why it is skipped."""
    if not data:
        return [], "zero_byte_caption"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], "non_utf8_caption"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines, (None if lines else "blank_caption")


def _write_folder(root: Path, samples: list[dict]) -> dict:
    """Write the samples under root/imgs and root/txt; returns the expected scan outcome:
    skip counts by kind, and the candidates (stem -> (image kind, captions)) that only decoding
    can still reject."""
    images, caption_stems = {}, set()   # stem -> {file name: (kind, bytes)}; stems with a caption file
    for s in samples:
        stem_bytes = (s["folder"] + s["name"]).encode("utf-8") + (b"\xff" if s["raw"] else b"")
        stem = os.fsdecode(stem_bytes)
        for ext, (kind, data) in s["images"]:
            name = _write(root / "imgs", stem_bytes + ext.encode(), data)
            if ext.lower() in IMAGE_EXTENSIONS:
                images.setdefault(stem, {})[name] = (kind, data)
        if s["caption"] is not None:
            ext, data = s["caption"]
            _write(root / "txt", stem_bytes + ext.encode(), data)
            if ext.lower() == ".txt":
                caption_stems.add(stem)     # ".txt" and ".TXT" are one stem: the first one sorted is read
    return _expected(images, caption_stems, root)


def _expected(images: dict, caption_stems: set, root: Path) -> dict:
    """docs/architecture.md "Data format" applied by hand, in scan.py's order of checks: extra images of a
    stem are duplicates; then a missing image, a missing caption, a zero-byte image, an unusable
    caption file; what remains is a candidate that decoding decides."""
    counts, candidates = {}, {}

    def count(kind, n=1):
        if n:
            counts[kind] = counts.get(kind, 0) + n

    for stem in set(images) | caption_stems:
        files = images.get(stem, {})
        count("duplicate_image", max(len(files) - 1, 0))
        if not files:
            count("missing_image")
            continue
        if stem not in caption_stems:
            count("missing_caption")
            continue
        kind, data = files[min(files)]      # the first image in sorted order is the one used
        if not data:
            count("zero_byte_image")
            continue
        lines, problem = _caption_lines(_read_first_caption(root / "txt", stem))
        if problem:
            count(problem)
            continue
        candidates[stem] = (kind, lines)
    return {"counts": counts, "candidates": candidates}


def _read_first_caption(label_dir: Path, stem: str) -> bytes:
    """The bytes of the stem's caption file (of NAME.txt and NAME.TXT, the first in sorted order)."""
    first = min(p for p in (label_dir / f"{stem}.txt", label_dir / f"{stem}.TXT") if p.is_file())
    return first.read_bytes()


def _check_dataset(ds: ImageLabelDataset, expected: dict) -> None:
    candidates = expected["candidates"]
    report = ds.report
    decode_only = {"unreadable_image", "upsampled"}
    assert {k: n for k, n in report.counts.items() if k not in decode_only} == expected["counts"]
    assert report.counts.get("unreadable_image", 0) + report.num_usable == len(candidates)
    assert len(ds) == report.num_usable > 0 and ds.images.shape == (len(ds), 3, RES, RES)
    must_decode = {stem for stem, (kind, _) in candidates.items() if kind == "valid"}
    assert must_decode <= set(ds.names) <= set(candidates)
    for i, name in enumerate(ds.names):
        assert ds.captions[i] == candidates[name][1]
        img_u8, caption = ds[i]
        assert img_u8.dtype == torch.uint8 and img_u8.shape == (3, RES, RES) and caption in ds.captions[i]


@settings(FUZZ, max_examples=200)
@given(SAMPLES)
def test_dataset_skips_and_counts_every_bad_file_or_says_why_in_one_line(samples):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "imgs").mkdir()
        (root / "txt").mkdir()
        expected = _write_folder(root, samples)
        builds = []
        for _ in range(2):      # decoded once, then read back from the cache
            try:
                builds.append(ImageLabelDataset(root / "imgs", root / "txt", RES, cache_dir=root / "cache",
                                                verbose=False))
            except DatasetError as e:
                assert not builds, "the cached build disagrees with the fresh one"
                assert "\n" not in str(e) and str(root / "imgs") in str(e)
                assert not any(kind == "valid" for kind, _ in expected["candidates"].values())
                event("DatasetError")
                return
        fresh, cached = builds
        skipped = any(k != "upsampled" for k in fresh.report.counts)
        event("built, some files skipped" if skipped else "built, nothing skipped")
        _check_dataset(fresh, expected)
        assert cached.names == fresh.names and cached.report == fresh.report
        assert torch.equal(cached.images, fresh.images)


def test_skip_summary_prints_a_non_utf8_file_name(tmp_path, monkeypatch):
    # What Python gives a terminal in a UTF-8 locale other than C.UTF-8: errors="strict".
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    _write(tmp_path / "imgs", b"bad\xff.png", b"not an image")
    _write(tmp_path / "txt", b"bad\xff.txt", b"a red circle")
    _write(tmp_path / "imgs", b"good.png", _encode_image(8, 8, "RGB", "PNG", 0))
    _write(tmp_path / "txt", b"good.txt", b"a red circle")
    ds = ImageLabelDataset(tmp_path / "imgs", tmp_path / "txt", RES, cache_dir=tmp_path / "cache", verbose=True)
    assert ds.names == ["good"] and ds.report.counts == {"unreadable_image": 1}


# ------------------------------------------------------------------------------------- tokenizer

MAX_LEN = 16


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """Trained on every demo caption (about 1000, 0.1 s)."""
    return Tokenizer.train([c for attrs in all_combinations(held_out=False) for c in captions_for(attrs)],
                           max_len=MAX_LEN)


def _check_layout(tok: Tokenizer, captions: list[str]) -> None:
    """Each row is [bos, pieces..., eos, pad...] with every id inside the vocabulary."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the truncation warning of long captions
        ids, mask = tok.encode(captions)
        rows = [tok.encode([c])[0][0] for c in captions]
    assert ids.shape == mask.shape == (len(captions), tok.max_len)
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool
    assert ((ids >= 0) & (ids < tok.vocab_size)).all()
    assert torch.equal(mask, ids != PAD_ID)
    for row, alone in zip(ids, rows):
        n = int(row.ne(PAD_ID).sum())
        assert n >= 2 and row[0] == BOS_ID and row[n - 1] == EOS_ID and (row[n:] == PAD_ID).all()
        assert not any(i in (PAD_ID, BOS_ID, EOS_ID) for i in row[1:n - 1].tolist())  # text never forges one
        assert torch.equal(row, alone)                          # a caption's ids do not depend on its batch
    assert len(tok.decode(ids)) == len(captions)


TEXT = st.one_of(st.text(max_size=60), st.text(min_size=1, max_size=4).map(lambda t: t * 500))


@settings(FUZZ, max_examples=300)
@given(st.lists(TEXT, min_size=1, max_size=6))
@example(["", " ", "<s>", "</s>", "<pad>", "<unk>", "\x00\x01\x7f", "\u2028\u0085", "▁"])
@example(["😀" * 300, "A SMALL RED CIRCLE", "a small red circle on the left on a black background"])
def test_tokenizer_encodes_any_text_inside_the_vocabulary(tokenizer, captions):
    _check_layout(tokenizer, captions)


@st.composite
def damaged_model(draw, model: bytes) -> bytes:
    """Model bytes cut short and/or with a few bytes overwritten."""
    data = bytearray(model[:draw(st.integers(0, len(model)))] if draw(st.booleans()) else model)
    for pos, value in draw(st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=4)):
        if data:
            data[pos % len(data)] = value
    return bytes(data)


@settings(FUZZ, max_examples=400)
@given(st.data())
def test_tokenizer_from_bytes_fails_cleanly_or_still_works(tokenizer, data):
    blob = data.draw(st.one_of(st.binary(max_size=300), damaged_model(tokenizer.to_bytes())))
    try:
        damaged = Tokenizer.from_bytes(blob, MAX_LEN)
    except (ValueError, RuntimeError) as e:     # ValueError: ours; RuntimeError: sentencepiece's parser
        assert str(e).strip() and "\n" not in str(e).strip()
        event(type(e).__name__)
        return
    event("loaded")
    _check_layout(damaged, ["a small red circle", "", "😀 <s>"])
