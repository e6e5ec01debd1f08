"""datasets/twemoji.py on tiny npm tarballs made here, laid out like emoji-datasource-twitter and
emojibase-data (no network)."""
from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from stylegan_t2i.data import ImageLabelDataset
from stylegan_t2i.data.converters import twemoji

RED, GOLD, GREEN = (221, 46, 68), (255, 172, 51), (92, 145, 59)  # Twemoji's red, star gold, tree green


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _rgba_heart() -> Image.Image:
    """Opaque red in the middle, fully transparent (but blue) border: compositing must hide the blue."""
    a = np.zeros((64, 64, 4), np.uint8)
    a[...] = (0, 0, 255, 0)
    a[8:56, 8:56] = (*RED, 255)
    return Image.fromarray(a, "RGBA")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _entry(name, image, category="Symbols", **extra):
    return {"name": name, "unified": image[:-4].upper(), "image": image, "short_name": name.lower(),
            "short_names": [name.lower()], "category": category, **extra}


EMOJI = [
    _entry("HEAVY BLACK HEART", "2764-fe0f.png"),
    _entry("WHITE MEDIUM STAR", "2b50.png", "Travel & Places"),
    _entry("EVERGREEN TREE", "1f332.png", "Animals & Nature"),
    _entry("PILE OF POO", "1f4a9.png"),                                  # corrupt PNG
    _entry("THUMBS UP SIGN", "1f44d.png", "People & Body",
           skin_variations={"1F3FB": {"unified": "1F44D-1F3FB", "image": "1f44d-1f3fb.png"}}),
    _entry("United States Flag", "1f1fa-1f1f8.png", "Flags"),
]
NAMES = [
    {"label": "red heart", "hexcode": "2764"},                       # emojibase drops FE0F
    {"label": "star", "hexcode": "2B50"},
    {"label": "evergreen tree", "hexcode": "1F332"},
    {"label": "thumbs up", "hexcode": "1F44D",
     "skins": [{"label": "thumbs up: light skin tone", "hexcode": "1F44D-1F3FB"}]},
    {"label": "flag: United States", "hexcode": "1F1FA-1F1F8"},
]


def _fake_package(path, name=twemoji.PACKAGE, emoji=EMOJI, images=True):
    """An emoji-datasource-twitter-X.tgz look-alike (package/emoji.json, package/img/twitter/64/*.png)."""
    pngs = {
        "2764-fe0f.png": _png(_rgba_heart()),
        "2b50.png": _png(Image.new("RGBA", (64, 64), (*GOLD, 255))),
        "1f332.png": _png(Image.new("RGB", (64, 32), GREEN)),            # not square, no alpha
        "1f4a9.png": b"\x89PNG\r\n\x1a\n not really a png",
        "1f44d.png": _png(Image.new("RGBA", (64, 64), (255, 204, 77, 255))),
        "1f44d-1f3fb.png": _png(Image.new("RGBA", (64, 64), (247, 222, 206, 255))),
        "1f1fa-1f1f8.png": _png(Image.new("RGB", (64, 64), (60, 59, 110))),
    }
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "package/package.json", json.dumps({"name": name, "version": "9.9.9", "license": "MIT"}).encode())
        _add(tar, "package/LICENSE", b"The MIT License (MIT)\n\nCopyright (c) 2013 Cal Henderson\n")
        _add(tar, "package/README.md", b"| Twitter | [Twemoji (fork)](https://github.com/jdecked/twemoji), v16.0.1 |\n")
        if emoji is not None:
            _add(tar, "package/emoji.json", json.dumps(emoji).encode())
        if images:
            for fname, data in pngs.items():
                _add(tar, f"package/img/twitter/64/{fname}", data)
    return path


def _fake_names(path):
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "package/package.json", json.dumps({"name": twemoji.NAMES_PACKAGE, "version": "8.8.8"}).encode())
        _add(tar, "package/LICENSE", b"MIT License\n\nCopyright (c) 2017-2019 Miles Johnson\n")
        _add(tar, "package/en/data.json", json.dumps(NAMES).encode())
    return path


@pytest.fixture
def archives(tmp_path):
    return str(_fake_package(tmp_path / "emoji-datasource-twitter-9.9.9.tgz")), str(_fake_names(tmp_path / "names.tgz"))


def _run(archives, out, *flags):
    twemoji.main(["--archive", archives[0], "--names_archive", archives[1], "--out", str(out), "--no_progress", *flags])


def _labels(out, stem):
    return (out / "labels" / f"{stem}.txt").read_text(encoding="utf-8").splitlines()


def test_images_are_square_rgb_composited_and_resized(tmp_path, archives):
    out = tmp_path / "out"
    _run(archives, out, "--resolution", "32", "--background", "black")
    for stem in ("2764-fe0f", "2b50", "1f332", "1f44d"):
        with Image.open(out / "images" / f"{stem}.png") as img:
            assert img.mode == "RGB" and img.size == (32, 32), (stem, img.mode, img.size)
    heart = np.asarray(Image.open(out / "images/2764-fe0f.png")).astype(int)
    assert (heart[0, 0] == 0).all()                        # transparent blue became the black background
    assert np.abs(heart[16, 16] - RED).max() <= 2          # the opaque middle keeps its colour
    tree = np.asarray(Image.open(out / "images/1f332.png")).astype(int)
    assert (tree[0, 16] == 0).all() and np.abs(tree[16, 16] - GREEN).max() <= 2  # padded top, art in the middle


def test_captions_name_colour_and_no_repeated_colour_word(tmp_path, archives):
    out = tmp_path / "out"
    _run(archives, out)
    assert _labels(out, "2764-fe0f") == ["red heart", "a red heart", "an emoji of a red heart", "a red heart emoji"]
    assert _labels(out, "2b50") == ["star", "a yellow star", "an emoji of a star", "a yellow star emoji"]
    assert _labels(out, "1f332")[:3] == ["evergreen tree", "a green evergreen tree", "an emoji of an evergreen tree"]
    assert _labels(out, "1f44d")[1] == "a yellow thumbs up"
    # The files are what the training code reads.
    ds = ImageLabelDataset(out / "images", out / "labels", resolution=32, cache_dir=tmp_path / "cache", verbose=False)
    assert len(ds) == 4 and ds.captions[ds.names.index("2b50")][0] == "star"


def test_without_names_archive_the_unicode_names_are_used(tmp_path, archives, capsys):
    out = tmp_path / "out"
    twemoji.main(["--archive", archives[0], "--out", str(out), "--no_progress"])
    assert "warning: no --names_archive" in capsys.readouterr().out
    # "black" is in the name, so no computed "red" is added in front of it.
    assert _labels(out, "2764-fe0f")[:2] == ["heavy black heart", "a heavy black heart"]
    assert _labels(out, "2b50")[:2] == ["white medium star", "a white medium star"]
    assert _labels(out, "1f332")[1] == "a green evergreen tree"


def test_skip_counts_and_flags_for_skin_tones_and_flags(tmp_path, archives, capsys):
    out = tmp_path / "out"
    _run(archives, out)
    summary = capsys.readouterr().out
    assert "Wrote 4 images, skipped 3" in summary and "unreadable PNG): 1f4a9" in summary
    source = json.loads((out / "SOURCE.json").read_text())
    assert source["package"] == twemoji.PACKAGE and source["version"] == "9.9.9"
    assert source["images_written"] == 4 and source["images_skipped"] == 3
    assert source["skipped_by_reason"] == {"flag, see --include_flags": 1,
                                           "skin-tone variant, see --include_skin_tones": 1, "unreadable PNG": 1}
    assert not (out / "images/1f4a9.png").exists() and not (out / "images/1f44d-1f3fb.png").exists()

    out2 = tmp_path / "out2"
    _run(archives, out2, "--include_skin_tones", "--include_flags")
    assert json.loads((out2 / "SOURCE.json").read_text())["images_written"] == 6
    assert _labels(out2, "1f44d-1f3fb")[0] == "thumbs up: light skin tone"
    assert _labels(out2, "1f1fa-1f1f8")[0] == "flag: united states"


def test_attribution_names_twemoji_and_cc_by(tmp_path, archives):
    out = tmp_path / "out"
    _run(archives, out, "--resolution", "32")
    text = (out / "ATTRIBUTION.md").read_text()
    for needle in ("Twemoji v16.0.1", "Twitter, Inc. and other contributors", "CC-BY 4.0", twemoji.CC_BY_URL,
                   f"{twemoji.PACKAGE} 9.9.9", "scaled to 32x32", "Cal Henderson", "Miles Johnson"):
        assert needle in text, needle


@pytest.mark.parametrize("colour, rgb", [
    ("red", RED), ("red", (255, 0, 0)), ("orange", (244, 144, 12)), ("yellow", GOLD), ("yellow", (255, 255, 0)),
    ("green", GREEN), ("green", (0, 255, 0)), ("blue", (85, 172, 238)), ("blue", (0, 0, 255)),
    ("purple", (170, 142, 214)), ("pink", (244, 171, 186)), ("pink", (255, 105, 180)), ("brown", (193, 105, 79)),
    ("brown", (102, 33, 19)), ("black", (0, 0, 0)), ("black", (41, 47, 51)), ("white", (255, 255, 255)),
    ("gray", (128, 128, 128)), ("gray", (102, 117, 127))])
def test_dominant_colour_of_solid_images(colour, rgb):
    img = np.zeros((8, 8, 4), np.uint8)
    img[...] = (*rgb, 255)
    assert twemoji.dominant_colour(img) == colour


def test_dominant_colour_ignores_near_transparent_pixels():
    img = np.zeros((10, 10, 4), np.uint8)
    img[...] = (0, 0, 255, 40)                 # mostly a faint blue shadow
    img[:3, :3] = (*RED, 255)                  # a few opaque red pixels
    assert twemoji.dominant_colour(img) == "red"
    img[..., 3] = 0
    assert twemoji.dominant_colour(img) is None
    assert twemoji.captions_for("ghost", None) == ["ghost", "a ghost", "an emoji of a ghost", "a ghost emoji"]


def test_caption_articles_and_plurals():
    assert twemoji.captions_for("tangerine", "orange")[1] == "an orange tangerine"
    assert twemoji.captions_for("unicorn", "white")[2] == "an emoji of a unicorn"
    assert twemoji.captions_for("sparkles", "yellow")[:3] == ["sparkles", "yellow sparkles", "an emoji of sparkles"]
    assert twemoji.captions_for("women holding hands", "yellow")[1] == "yellow women holding hands"
    assert twemoji.captions_for("smiling face with hearts", "yellow")[1] == "a yellow smiling face with hearts"
    assert twemoji.captions_for("white flower", "pink")[1] == "a white flower"        # the name's colour wins
    assert twemoji.captions_for("bus", "red")[2] == "an emoji of a bus"


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such file"), ("garbage", "not a readable npm .tgz"), ("no_json", "has no package/emoji.json"),
    ("no_images", "has no package/img/twitter/64"),
    ("apple", "'emoji-datasource-apple', not emoji-datasource-twitter")])
def test_bad_archive_is_one_line_error(tmp_path, kind, message):
    path = tmp_path / "a.tgz"
    if kind == "garbage":
        path.write_bytes(b"this is not a tarball")
    elif kind == "no_json":
        _fake_package(path, emoji=None)
    elif kind == "no_images":
        _fake_package(path, images=False)
    elif kind == "apple":
        _fake_package(path, name="emoji-datasource-apple")
    with pytest.raises(SystemExit) as e:
        twemoji.main(["--archive", str(path), "--out", str(tmp_path / "out"), "--no_progress"])
    text = str(e.value)
    assert text.startswith("error: ") and "\n" not in text and message in text and str(path) in text
    assert not (tmp_path / "out").exists()     # nothing written before the archive is known good


def test_refuses_non_empty_out_unless_overwrite(tmp_path, archives):
    out = tmp_path / "out"
    _run(archives, out, "--include_flags")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"^error: .*not empty; pass --overwrite"):
        _run(archives, out)
    assert (out / "images/1f1fa-1f1f8.png").exists()           # nothing was touched
    _run(archives, out, "--overwrite")
    assert not (out / "images/1f1fa-1f1f8.png").exists()       # the previous run's flag is gone
    assert not (out / "labels/1f1fa-1f1f8.txt").exists()
    assert (out / "notes.txt").read_text() == "mine"           # the user's file is kept
    assert json.loads((out / "SOURCE.json").read_text())["images_written"] == 4


def test_fetch_without_npm_or_with_failing_npm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))                   # no npm on PATH
    with pytest.raises(SystemExit, match=r"^error: --fetch needs npm"):
        twemoji.main(["--fetch", "--out", str(tmp_path / "out")])
    npm = tmp_path / "npm"
    npm.write_text("#!/bin/sh\necho 'npm ERR! 404 Not Found - GET https://registry.npmjs.org/x' >&2\nexit 1\n")
    os.chmod(npm, 0o755)
    with pytest.raises(SystemExit, match=r"^error: npm pack .*exit 1: npm ERR! 404 Not Found"):
        twemoji.main(["--fetch", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
