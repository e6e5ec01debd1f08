"""The built-in demo dataset: captioned synthetic scenes of one coloured shape on a plain background.

Five attributes with few, visually distinct values (readable at 32x32), captions in several
templates that all name every attribute, and three (shape, colour) pairs held out of training
so that generalisation to unseen combinations can be measured:

    python datasets/demo_scenes.py --out datasets/demo --resolution 64 --num 4000
    stylegan-t2i-demo-data --out DIR                  # the same, installed as a console command
    python datasets/demo_scenes.py --out datasets/demo-cyan-pink --colours red,green,blue,yellow,purple,cyan,pink

The last is a variant set (`SceneSet`): other shapes or colours than the built-in ones, i.e. a
second caption set with words the built-in one never uses, to fine-tune a demo model on.

writes out/images/NNNNN.png, out/labels/NNNNN.txt (one caption per template, one per line),
out/attributes.jsonl, out/held_out.json and a marker that makes a repeated call a no-op.

Where the training commands keep it when no --image_dir is given (`default_demo_root`):
$STYLEGAN_T2I_DEMO_DIR if set; in a clone of the repository its datasets/demo; else, for an
installed package, $XDG_CACHE_HOME/stylegan_t2i/demo (~/.cache/stylegan_t2i/demo).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ATTRIBUTES = {
    "shape":      ("circle", "square", "triangle"),
    "colour":     ("red", "green", "blue", "yellow", "purple"),
    "size":       ("small", "large"),
    "position":   ("left", "center", "right"),
    "background": ("black", "white", "gray"),
}
HELD_OUT = (("triangle", "blue"), ("square", "yellow"), ("circle", "purple"))  # (shape, colour) never in training

# Saturated colours, each far from all three backgrounds: yellow is a dark gold so it still reads
# on white, and every colour has a chroma that gray (128, 128, 128) lacks. Cyan and pink are in
# no built-in caption: variant sets add them (at least 100 from every other colour too).
COLOUR_RGB = {"red": (220, 30, 30), "green": (20, 170, 40), "blue": (30, 70, 235),
              "yellow": (235, 185, 0), "purple": (150, 30, 200), "cyan": (0, 200, 210), "pink": (255, 105, 180)}
SHAPES = ("circle", "square", "triangle", "diamond")    # What render_scene draws; diamond: variants only.
BACKGROUND_RGB = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
SIZE_FRAC = {"small": 0.24, "large": 0.44}               # shape extent as a fraction of the image side
POSITION_FRAC = {"left": 0.25, "center": 0.5, "right": 0.75}  # shape centre x as a fraction of the side
JITTER = {"dx": 0.015, "dy": 0.03, "scale": 0.08}        # uniform +- ranges; small enough to stay unambiguous
SUPERSAMPLE = 4                                          # draw at 4x, then box-reduce: exact area anti-aliasing
FORMAT_VERSION = 1
DEMO_DIR_ENV = "STYLEGAN_T2I_DEMO_DIR"                   # Overrides where the demo dataset lives.


@dataclass(frozen=True)
class SceneSet:
    """The shapes and colours a demo dataset draws from (size, position and background are always
    ATTRIBUTES'). The default is the built-in set; another one, e.g. its colours plus cyan and
    pink, is a second caption set with new words. Held out of its training: the pairs of
    HELD_OUT it has (at least one, so that generalisation is still measured)."""
    shapes:  tuple = ATTRIBUTES["shape"]       # Of SHAPES.
    colours: tuple = ATTRIBUTES["colour"]      # Of COLOUR_RGB.

    def __post_init__(self):
        for name, values, known in (("shapes", self.shapes, SHAPES), ("colours", self.colours, tuple(COLOUR_RGB))):
            object.__setattr__(self, name, tuple(values))   # From JSON lists too.
            if not values or len(set(values)) != len(values) or not set(values) <= set(known):
                raise ValueError(f"demo scenes: {name} must be distinct values of {', '.join(known)}; got {list(values)}")
        if not self.held_out:
            pairs = ", ".join(f"{colour} {shape}" for shape, colour in HELD_OUT)
            raise ValueError(f"demo scenes: the set must hold one of the held-out pairs ({pairs}) to hold out")

    @property
    def attributes(self) -> dict[str, tuple[str, ...]]:
        """ATTRIBUTES with this set's shapes and colours (the same order of attributes)."""
        return {**ATTRIBUTES, "shape": self.shapes, "colour": self.colours}

    @property
    def held_out(self) -> tuple[tuple[str, str], ...]:
        return tuple(pair for pair in HELD_OUT if pair[0] in self.shapes and pair[1] in self.colours)


BUILTIN = SceneSet()

_POS_ON = {"left": "on the left", "center": "in the center", "right": "on the right"}
_POS_SIDE = {"left": "left side", "center": "center", "right": "right side"}
TEMPLATES = (
    "a {size} {colour} {shape} {pos_on} on a {background} background",
    "a {colour} {shape}, {size}, {pos_side}, {background} background",
    "{size} {colour} {shape} at the {position} of a {background} image",
    "a {background} background with a {size} {colour} {shape} {pos_on}",
    "a picture of a {size} {colour} {shape} {pos_on}, {background} background",
)


def caption_for(attrs: dict, template: int = 0) -> str:
    """The caption of `attrs` in template number `template` (0 <= template < len(TEMPLATES))."""
    return TEMPLATES[template].format(pos_on=_POS_ON[attrs["position"]], pos_side=_POS_SIDE[attrs["position"]],
                                      **{k: attrs[k] for k in ATTRIBUTES})


def captions_for(attrs: dict) -> list[str]:
    """All templates' captions of `attrs`; each names all five attributes."""
    return [caption_for(attrs, t) for t in range(len(TEMPLATES))]


def all_combinations(held_out: bool, scenes: SceneSet = BUILTIN) -> list[dict]:
    """Every attribute tuple of `scenes` whose (shape, colour) is held out (True) or seen in
    training (False)."""
    attributes = scenes.attributes
    combos = [dict(zip(attributes, values)) for values in itertools.product(*attributes.values())]
    return [c for c in combos if ((c["shape"], c["colour"]) in scenes.held_out) == held_out]


def render_scene(attrs: dict, resolution: int) -> Image.Image:
    """Draw `attrs` (plus optional jitter fractions dx, dy, scale; default 0) as an RGB image.

    Deterministic: the same attrs and resolution give the same pixels. The scene is drawn at
    SUPERSAMPLE x the resolution and box-reduced, so edges are anti-aliased at any size.
    """
    side = resolution * SUPERSAMPLE
    img = Image.new("RGB", (side, side), BACKGROUND_RGB[attrs["background"]])
    extent = SIZE_FRAC[attrs["size"]] * (1 + attrs.get("scale", 0.0)) * side
    cx = (POSITION_FRAC[attrs["position"]] + attrs.get("dx", 0.0)) * side
    cy = (0.5 + attrs.get("dy", 0.0)) * side
    half = extent / 2
    box = (cx - half, cy - half, cx + half, cy + half)
    draw, fill = ImageDraw.Draw(img), COLOUR_RGB[attrs["colour"]]
    if attrs["shape"] == "circle":
        draw.ellipse(box, fill=fill)
    elif attrs["shape"] == "square":
        draw.rectangle(box, fill=fill)
    elif attrs["shape"] == "triangle":  # pointing up, base and height = extent
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    elif attrs["shape"] == "diamond":   # the square's box, corners at the middle of its sides
        draw.polygon([(cx, cy - half), (cx + half, cy), (cx, cy + half), (cx - half, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {attrs['shape']!r}")
    return img.reduce(SUPERSAMPLE)


def _sample_attributes(num_images: int, seed: int, scenes: SceneSet) -> list[dict]:
    """Balanced and uniform over seen combinations: shuffled passes over all of them, plus jitter."""
    rng = np.random.default_rng(seed)
    seen = all_combinations(held_out=False, scenes=scenes)
    order = np.concatenate([rng.permutation(len(seen)) for _ in range(-(-num_images // len(seen)))])
    samples = []
    for i in range(num_images):
        jitter = {k: round(float(rng.uniform(-r, r)), 4) for k, r in JITTER.items()}
        samples.append({"name": f"{i:05d}", **seen[order[i]], **jitter})
    return samples


def generate_demo_dataset(
    out_dir:    str | Path,     # images/, labels/, attributes.jsonl, held_out.json go here
    resolution: int = 64,       # image side in pixels
    num_images: int = 4000,     # number of scenes
    seed:       int = 0,        # seeds the choice of combinations and the jitter
    scenes:     SceneSet = BUILTIN,  # the shapes and colours drawn
) -> tuple[Path, Path]:
    """Write the demo dataset under `out_dir`; returns (image_dir, label_dir).

    Idempotent: a marker with the parameters (demo_params.json; a variant set's shapes and
    colours too) is written last; a call whose parameters match an existing marker returns at
    once, one whose parameters differ replaces the old files.
    """
    out_dir = Path(out_dir)
    image_dir, label_dir, marker = out_dir / "images", out_dir / "labels", out_dir / "demo_params.json"
    if demo_dataset_ready(out_dir, resolution, num_images, seed, scenes):
        return image_dir, label_dir
    marker.unlink(missing_ok=True)
    for folder, pattern in ((image_dir, "[0-9]*.png"), (label_dir, "[0-9]*.txt")):
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(pattern):  # files of an earlier, different generation
            old.unlink()
    samples = _sample_attributes(num_images, seed, scenes)
    for s in samples:
        render_scene(s, resolution).save(image_dir / f"{s['name']}.png")
        (label_dir / f"{s['name']}.txt").write_text("\n".join(captions_for(s)) + "\n", encoding="utf-8")
    (out_dir / "attributes.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    held_out = {"held_out": [list(p) for p in scenes.held_out], "attributes": scenes.attributes}
    (out_dir / "held_out.json").write_text(json.dumps(held_out, indent=1))
    marker.write_text(json.dumps(_params(resolution, num_images, seed, scenes)))
    return image_dir, label_dir


def _params(resolution: int, num_images: int, seed: int, scenes: SceneSet) -> dict:
    """What the marker file of a finished generation records. The built-in set adds no keys, so
    datasets written before there were variants stay valid."""
    params = {"version": FORMAT_VERSION, "resolution": resolution, "num_images": num_images, "seed": seed}
    if scenes != BUILTIN:
        params.update(shapes=list(scenes.shapes), colours=list(scenes.colours))
    return params


def demo_dataset_ready(out_dir: str | Path, resolution: int = 64, num_images: int = 4000, seed: int = 0,
                       scenes: SceneSet = BUILTIN) -> bool:
    """Whether `out_dir` holds a finished generation with these parameters (no work to do)."""
    marker = Path(out_dir) / "demo_params.json"
    return marker.is_file() and json.loads(marker.read_text()) == _params(resolution, num_images, seed, scenes)


def scene_set_of(out_dir: str | Path) -> SceneSet:
    """The scene set a demo dataset at `out_dir` was generated with (its marker; the built-in set
    when the marker names none or is missing)."""
    marker = Path(out_dir) / "demo_params.json"
    params = json.loads(marker.read_text()) if marker.is_file() else {}
    return SceneSet(shapes=params.get("shapes", BUILTIN.shapes), colours=params.get("colours", BUILTIN.colours))


def default_demo_root() -> Path:
    """Where the demo dataset lives: $STYLEGAN_T2I_DEMO_DIR if set; datasets/demo in a clone of
    the repository (this package beside datasets/demo_scenes.py); else the user's cache folder,
    $XDG_CACHE_HOME/stylegan_t2i/demo (~/.cache/stylegan_t2i/demo), for an installed package,
    whose own folder may be read-only."""
    if os.environ.get(DEMO_DIR_ENV):
        return Path(os.environ[DEMO_DIR_ENV])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "datasets" / "demo_scenes.py").is_file():
        return checkout / "datasets" / "demo"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stylegan_t2i" / "demo"


def ensure_demo_dataset(root: str | Path | None = None, resolution: int = 64, num_images: int = 4000) -> tuple[Path, Path]:
    """The demo dataset at `root` (default: `default_demo_root()`), generated if needed."""
    root = Path(root) if root is not None else default_demo_root()
    return generate_demo_dataset(root, resolution=resolution, num_images=num_images)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Generate the built-in captioned demo scenes (image_dir/label_dir format).")
    parser.add_argument("--out", default=str(default_demo_root()),
                        help="output folder; images/ and labels/ are written inside (default: datasets/demo in a "
                             f"clone of the repository, else ~/.cache/stylegan_t2i/demo; ${DEMO_DIR_ENV} "
                             "overrides)")
    parser.add_argument("--resolution", type=int, default=64, help="image side in pixels (default: 64)")
    parser.add_argument("--num", type=int, default=4000, help="number of images (default: 4000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attribute sampling and jitter (default: 0)")
    parser.add_argument("--shapes", default=",".join(BUILTIN.shapes),
                        help=f"comma-separated shapes of {','.join(SHAPES)} (default: %(default)s)")
    parser.add_argument("--colours", default=",".join(BUILTIN.colours),
                        help=f"comma-separated colours of {','.join(COLOUR_RGB)} (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.resolution < 8 or args.num < 1:
        raise SystemExit(f"--resolution must be >= 8 and --num >= 1 (got {args.resolution}, {args.num})")
    try:
        scenes = SceneSet(shapes=_names(args.shapes), colours=_names(args.colours))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    start = time.perf_counter()
    image_dir, label_dir = generate_demo_dataset(args.out, args.resolution, args.num, args.seed, scenes)
    print(f"Demo dataset ready in {time.perf_counter() - start:.1f} s: --image_dir {image_dir} --label_dir {label_dir}")


def _names(flag: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in flag.split(",") if name.strip())


if __name__ == "__main__":
    main()
