"""The built-in demo dataset (stylegan_t2i/data/demo_scenes.py; the script datasets/demo_scenes.py)."""
from __future__ import annotations

import collections
import itertools
import json

import numpy as np
import pytest

from stylegan_t2i.data import ImageLabelDataset
from stylegan_t2i.data import demo_scenes as demo


def test_combinations_split_seen_and_held_out():
    seen, held = demo.all_combinations(held_out=False), demo.all_combinations(held_out=True)
    total = int(np.prod([len(v) for v in demo.ATTRIBUTES.values()]))
    per_pair = total // (len(demo.ATTRIBUTES["shape"]) * len(demo.ATTRIBUTES["colour"]))
    assert len(held) == len(demo.HELD_OUT) * per_pair and len(seen) + len(held) == total
    assert {(c["shape"], c["colour"]) for c in held} == set(demo.HELD_OUT)
    assert not {(c["shape"], c["colour"]) for c in seen} & set(demo.HELD_OUT)
    assert len({tuple(c.values()) for c in seen + held}) == total


def test_every_caption_names_every_attribute():
    attrs = {"shape": "circle", "colour": "red", "size": "small", "position": "left", "background": "black"}
    assert demo.caption_for(attrs) == "a small red circle on the left on a black background"
    for combo in demo.all_combinations(False) + demo.all_combinations(True):
        captions = demo.captions_for(combo)
        assert len(captions) == len(demo.TEMPLATES) == len(set(captions)) >= 3
        for caption in captions:
            words = caption.replace(",", " ").split()
            assert all(combo[k] in words for k in demo.ATTRIBUTES), (combo, caption)


def test_colours_stand_out_from_every_background():
    for (c, rgb), (b, bg) in itertools.product(demo.COLOUR_RGB.items(), demo.BACKGROUND_RGB.items()):
        assert np.linalg.norm(np.subtract(rgb, bg, dtype=float)) > 120, (c, b)
    colours = list(demo.COLOUR_RGB.values())
    assert min(np.linalg.norm(np.subtract(a, b, dtype=float)) for a, b in itertools.combinations(colours, 2)) > 100


@pytest.mark.parametrize("shape", demo.ATTRIBUTES["shape"])
def test_render_scene_draws_the_attributes(shape):
    res = 32
    base = {"shape": shape, "colour": "yellow", "background": "white"}
    masks = {}
    for size, pos in itertools.product(demo.ATTRIBUTES["size"], demo.ATTRIBUTES["position"]):
        img = demo.render_scene({**base, "size": size, "position": pos}, res)
        arr = np.asarray(img)
        assert img.size == (res, res) and img.mode == "RGB"
        assert np.array_equal(arr, np.asarray(demo.render_scene({**base, "size": size, "position": pos}, res)))
        assert tuple(arr[0, 0]) == demo.BACKGROUND_RGB["white"]
        masks[size, pos] = np.abs(arr.astype(int) - demo.BACKGROUND_RGB["white"]).sum(-1) > 60
        cx = int(demo.POSITION_FRAC[pos] * res)
        assert tuple(arr[res // 2, cx]) == demo.COLOUR_RGB["yellow"]  # the shape's centre has its colour
    xs = {k: np.nonzero(m)[1].mean() for k, m in masks.items()}
    for size in demo.ATTRIBUTES["size"]:
        assert xs[size, "left"] < res / 2 - 4 < xs[size, "center"] < res / 2 + 4 < xs[size, "right"]
    for pos in demo.ATTRIBUTES["position"]:
        assert masks["large", pos].sum() > 2.5 * masks["small", pos].sum()


def test_generate_is_balanced_idempotent_and_loadable(tmp_path):
    num_seen = len(demo.all_combinations(held_out=False))
    image_dir, label_dir = demo.generate_demo_dataset(tmp_path, resolution=8, num_images=2 * num_seen, seed=1)
    records = [json.loads(line) for line in (tmp_path / "attributes.jsonl").read_text().splitlines()]
    counts = collections.Counter(tuple(r[k] for k in demo.ATTRIBUTES) for r in records)
    assert len(counts) == num_seen and set(counts.values()) == {2}  # every seen combination, twice
    assert json.loads((tmp_path / "held_out.json").read_text())["held_out"] == [list(p) for p in demo.HELD_OUT]
    r = records[7]
    assert (label_dir / f"{r['name']}.txt").read_text().splitlines() == demo.captions_for(r)
    mtime = (image_dir / "00000.png").stat().st_mtime_ns
    assert demo.generate_demo_dataset(tmp_path, resolution=8, num_images=2 * num_seen, seed=1) == (image_dir, label_dir)
    assert (image_dir / "00000.png").stat().st_mtime_ns == mtime  # second call wrote nothing
    demo.generate_demo_dataset(tmp_path, resolution=8, num_images=10, seed=1)  # other parameters: replaced
    assert len(list(image_dir.glob("*.png"))) == len(list(label_dir.glob("*.txt"))) == 10
    ds = ImageLabelDataset(image_dir, label_dir, 8, verbose=False)
    assert len(ds) == 10 and ds.report.counts == {} and ds.captions[3] == demo.captions_for(records[3])


def test_cli_and_determinism(tmp_path, capsys):
    demo.main(["--out", str(tmp_path / "a"), "--resolution", "16", "--num", "12"])
    assert "--image_dir" in capsys.readouterr().out
    demo.main(["--out", str(tmp_path / "b"), "--resolution", "16", "--num", "12"])
    for name in ("00000.png", "00011.png"):
        assert (tmp_path / "a" / "images" / name).read_bytes() == (tmp_path / "b" / "images" / name).read_bytes()
    assert (tmp_path / "a" / "attributes.jsonl").read_text() == (tmp_path / "b" / "attributes.jsonl").read_text()
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path / "c"), "--num", "0"])


# ----------------------------------------------------------------------------------------------
# Variant scene sets: a second caption set with new words (issue 18, fine-tuning).

VARIANT = demo.SceneSet(shapes=demo.BUILTIN.shapes + ("diamond",), colours=demo.BUILTIN.colours + ("cyan", "pink"))


def test_a_variant_set_is_generated_recorded_and_read_back(tmp_path):
    assert VARIANT.held_out == demo.HELD_OUT and VARIANT.attributes["size"] == demo.ATTRIBUTES["size"]
    seen, held = demo.all_combinations(False, VARIANT), demo.all_combinations(True, VARIANT)
    assert len(seen) + len(held) == 4 * 7 * 18 and len(held) == 3 * 18
    demo.generate_demo_dataset(tmp_path, resolution=16, num_images=40, scenes=VARIANT)
    params = json.loads((tmp_path / "demo_params.json").read_text())
    assert params["shapes"] == list(VARIANT.shapes) and params["colours"] == list(VARIANT.colours)
    assert demo.scene_set_of(tmp_path) == VARIANT
    assert demo.demo_dataset_ready(tmp_path, 16, 40, 0, VARIANT) and not demo.demo_dataset_ready(tmp_path, 16, 40, 0)
    records = [json.loads(line) for line in (tmp_path / "attributes.jsonl").read_text().splitlines()]
    assert all((r["shape"], r["colour"]) not in demo.HELD_OUT for r in records)
    assert any(r["colour"] in ("cyan", "pink") or r["shape"] == "diamond" for r in records)
    assert json.loads((tmp_path / "held_out.json").read_text())["attributes"]["colour"] == list(VARIANT.colours)
    # The built-in set's marker has no scene keys: datasets written before variants stay valid.
    demo.generate_demo_dataset(tmp_path / "builtin", resolution=8, num_images=3)
    assert set(json.loads((tmp_path / "builtin" / "demo_params.json").read_text())) == {
        "version", "resolution", "num_images", "seed"}
    assert demo.scene_set_of(tmp_path / "builtin") == demo.BUILTIN == demo.scene_set_of(tmp_path / "none")


def test_diamond_and_the_new_colours_render():
    res, attrs = 64, {"shape": "diamond", "colour": "cyan", "size": "large", "position": "center", "background": "black"}
    arr = np.asarray(demo.render_scene(attrs, res))
    assert tuple(arr[res // 2, res // 2]) == demo.COLOUR_RGB["cyan"]
    half = demo.SIZE_FRAC["large"] * res / 2
    assert tuple(arr[int(res / 2 - 0.8 * half), int(res / 2 - 0.8 * half)]) == demo.BACKGROUND_RGB["black"]  # a corner
    square = np.asarray(demo.render_scene({**attrs, "shape": "square", "colour": "pink"}, res))
    assert tuple(square[res // 2, res // 2]) == demo.COLOUR_RGB["pink"]
    area = (arr.sum(-1) > 0).sum() / (square.sum(-1) > 0).sum()
    assert 0.45 < area < 0.6     # half the square's box


@pytest.mark.parametrize("kwargs, why", [
    ({"colours": ("red", "teal")}, "colours must be distinct values of"),
    ({"colours": ("red", "red", "blue")}, "colours must be distinct values of"),
    ({"shapes": ()}, "shapes must be distinct values of"),
    ({"colours": ("red", "green")}, "must hold one of the held-out pairs"),
])
def test_bad_scene_sets_are_refused(kwargs, why):
    with pytest.raises(ValueError, match=why):
        demo.SceneSet(**kwargs)


def test_cli_writes_a_variant_and_refuses_a_bad_one(tmp_path):
    demo.main(["--out", str(tmp_path / "a"), "--resolution", "8", "--num", "4", "--colours", "blue,cyan",
               "--shapes", "triangle,diamond"])
    assert demo.scene_set_of(tmp_path / "a") == demo.SceneSet(shapes=("triangle", "diamond"), colours=("blue", "cyan"))
    with pytest.raises(SystemExit, match="^error: demo scenes: colours must be distinct values of"):
        demo.main(["--out", str(tmp_path / "b"), "--colours", "red,teal"])
