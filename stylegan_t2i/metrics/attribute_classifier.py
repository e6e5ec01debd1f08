"""An attribute classifier for the demo scenes: the judge of `benchmarks/quality_demo.py`.

A small CNN with one softmax head per attribute of `stylegan_t2i.data.demo_scenes.ATTRIBUTES`, trained
on REAL demo images only (the training split of `ensure_demo_dataset()`, labels from its
attributes.jsonl), so it never sees a held-out (shape, colour) pair. A dataset of a variant
scene set (`SceneSet`: other shapes or colours) gets a classifier of its own set, which its
config records. Generalising to those
pairs takes two measures against the shape<->colour shortcut (see `AttributeClassifier` and
`recolour_foreground`); with them it scores 100 % on freshly rendered held-out scenes. Its
penultimate features are the feature space of the quality benchmark's Fréchet distance.

The trained weights are cached beside the dataset (`<root>/attribute_classifier-<res>.pt`) as
plain tensors, written atomically and read with `torch.load(weights_only=True)`; a missing
cache is retrained (delete the file to retrain with other settings).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stylegan_t2i.checkpoint import atomic_torch_save
from stylegan_t2i.config import config_from_dict, config_to_dict
from stylegan_t2i.data.demo_scenes import (
    ATTRIBUTES,
    BACKGROUND_RGB,
    BUILTIN,
    COLOUR_RGB,
    JITTER,
    SceneSet,
    all_combinations,
    default_demo_root,
    ensure_demo_dataset,
    render_scene,
    scene_set_of,
)

CACHE_FORMAT = "stylegan_t2i_attribute_classifier"
CACHE_VERSION = 1
ATTR_NAMES = tuple(ATTRIBUTES)                          # Head order; labels [N, 5] follow it.


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    resolution:     int = 32        # Input side; every image is area-resized to it first.
    channels:       int = 24        # Width of the first conv stage (doubled once).
    feature_dim:    int = 64        # Trunk feature width (shape, size, position, background).
    colour_dim:     int = 16        # Colour-branch feature width; FD features: feature_dim + colour_dim.
    num_steps:      int = 600       # Adam steps.
    batch_size:     int = 64
    lr:             float = 2e-3
    num_images:     int = 0         # Training images used (0 = all of the dataset).
    seed:           int = 0         # Init, shuffling and evaluation renders.
    shapes:         tuple = BUILTIN.shapes      # The scene set it tells apart (`SceneSet`):
    colours:        tuple = BUILTIN.colours     # set by `ensure_classifier` from its dataset.

    def scenes(self) -> SceneSet:
        return SceneSet(shapes=self.shapes, colours=self.colours)


def num_classes(scenes: SceneSet) -> tuple[int, ...]:
    """Values per attribute of `scenes`, in ATTR_NAMES order."""
    return tuple(len(values) for values in scenes.attributes.values())


# ----------------------------------------------------------------------------------------------
# Images.

def area_resize(
    img:        torch.Tensor,   # [N, 3, H, W] float (any range).
    resolution: int,            # Output side.
) -> torch.Tensor:
    """Area (box) resampling to [N, 3, resolution, resolution]; identity when already that size.

    Area averaging is what the demo renderer itself uses to anti-alias, and for integer factors
    it equals PIL's BOX filter, so real and generated images go through the same reduction.
    """
    assert img.ndim == 4 and img.shape[1] == 3 and img.shape[2] == img.shape[3], img.shape
    if img.shape[-1] == resolution:
        return img
    return F.interpolate(img, size=(resolution, resolution), mode="area")


def pil_to_img(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size -> img [N, 3, H, W] float in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1


def labels_of(combos: list[dict], scenes: SceneSet = BUILTIN) -> torch.Tensor:
    """Attribute dicts -> labels [N, 5] int64, column a = index of the value in `scenes.attributes`."""
    attributes = scenes.attributes
    return torch.tensor([[attributes[a].index(c[a]) for a in ATTR_NAMES] for c in combos], dtype=torch.int64)


def with_jitter(combos: list[dict], rng: np.random.Generator) -> list[dict]:
    """Copies of `combos` with the dataset's position/scale jitter drawn from `rng`."""
    return [{**c, **{k: float(rng.uniform(-r, r)) for k, r in JITTER.items()}} for c in combos]


def render_real(combos: list[dict], render_res: int, resolution: int) -> torch.Tensor:
    """Freshly rendered real scenes: img [N, 3, resolution, resolution] in [-1, 1]."""
    return area_resize(pil_to_img([render_scene(c, render_res) for c in combos]), resolution)


def load_demo_training_set(
    root:       str | Path | None,  # Demo dataset root (None: default_demo_root()); generated if missing.
    resolution: int,                # Side the images are area-resized to.
    num_images: int = 0,            # First N images only (0 = all).
) -> tuple[torch.Tensor, torch.Tensor]:
    """The real training images img [N, 3, R, R] in [-1, 1] and their labels [N, 5] int64 (in its
    scene set, `scene_set_of(root)`).

    An existing dataset at `root` is used as it is (whatever resolution and size it was made
    with); only a missing one is generated with `ensure_demo_dataset`'s defaults.
    """
    root = demo_root(root)
    if not (root / "attributes.jsonl").is_file():
        ensure_demo_dataset(root)
    image_dir = root / "images"
    lines = (root / "attributes.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    if num_images:
        records = records[:num_images]
    images = []
    for r in records:
        with Image.open(image_dir / f"{r['name']}.png") as im:
            images.append(im.convert("RGB"))
    return area_resize(pil_to_img(images), resolution), labels_of(records, scene_set_of(root))


# ----------------------------------------------------------------------------------------------
# Network.

class AttributeClassifier(torch.nn.Module):
    """Two branches, so that no head can use one attribute to guess another (held-out pairs!).

    - trunk: conv stages -> [N, feature_dim]; heads for shape, size, position, background.
      Trained on recoloured images (`recolour_foreground`), so it never sees colour as a cue.
    - colour branch: a per-pixel MLP (1x1 convs) max-pooled over the image -> [N, colour_dim];
      the colour head. Per-pixel + max pool sees colours, not outlines, so it cannot learn
      "triangle -> not blue" from the training set's missing pairs.
    The concatenation of both is the feature space of FD_attr.
    """

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels

        def conv(cin: int, cout: int) -> torch.nn.Sequential:
            # BatchNorm: measured to reach a given accuracy in far fewer CPU steps.
            return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                       torch.nn.BatchNorm2d(cout), torch.nn.ReLU())
        # R -> R/2 -> R/4 -> 4x4; the final 4x4 map keeps *where* the shape is (left/center/right),
        # which a global pool would throw away. No conv at full resolution: the scenes are flat
        # colour fields, and skipping it makes CPU training ~3x cheaper.
        self.trunk = torch.nn.Sequential(
            conv(3, c), torch.nn.AvgPool2d(2), conv(c, 2 * c), torch.nn.AvgPool2d(2),
            conv(2 * c, 2 * c), torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(), torch.nn.Linear(2 * c * 16, cfg.feature_dim), torch.nn.ReLU(),
        )
        d = cfg.colour_dim
        self.colour_branch = torch.nn.Sequential(
            torch.nn.Conv2d(3, d, 1), torch.nn.ReLU(), torch.nn.Conv2d(d, d, 1), torch.nn.ReLU(),
            torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(),
        )
        self.heads = torch.nn.ModuleDict({
            a: torch.nn.Linear(d if a == "colour" else cfg.feature_dim, k)
            for a, k in zip(ATTR_NAMES, num_classes(cfg.scenes()))})

    def _check(self, img: torch.Tensor) -> None:
        r = self.cfg.resolution
        assert img.ndim == 4 and tuple(img.shape[1:]) == (3, r, r), (img.shape, r)

    def logits(
        self,
        img:        torch.Tensor,   # [N, 3, R, R] in [-1, 1]: real colours, for the colour head.
        img_trunk:  torch.Tensor,   # [N, 3, R, R] for the other heads (recoloured in training).
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """({attribute: logits [N, len(values)]}, features [N, feature_dim + colour_dim])."""
        self._check(img)
        self._check(img_trunk)
        f_trunk, f_colour = self.trunk(img_trunk), self.colour_branch(img)
        out = {a: head(f_colour if a == "colour" else f_trunk) for a, head in self.heads.items()}
        return out, torch.cat([f_trunk, f_colour], dim=1)

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        """img: [N, 3, R, R] -> logits per attribute, [N, len(values)] each, in ATTR_NAMES order."""
        out, _ = self.logits(img, img)
        return [out[a] for a in ATTR_NAMES]

    @torch.no_grad()
    def predict(self, img: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """img: [N, 3, R, R] -> (predicted labels [N, 5] int64, features [N, F]), on CPU."""
        device = next(self.parameters()).device
        preds, feats = [], []
        for i in range(0, len(img), batch_size):
            x = img[i:i + batch_size].to(device).float()
            out, f = self.logits(x, x)
            preds.append(torch.stack([out[a].argmax(dim=1) for a in ATTR_NAMES], dim=1).cpu())
            feats.append(f.cpu())
        return torch.cat(preds), torch.cat(feats)


def attribute_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """pred, labels: [N, 5] -> {attribute: accuracy, "all": fraction with all five right}."""
    assert pred.shape == labels.shape and pred.shape[1] == len(ATTR_NAMES), (pred.shape, labels.shape)
    hit = pred == labels
    out = {a: hit[:, i].float().mean().item() for i, a in enumerate(ATTR_NAMES)}
    out["all"] = hit.all(dim=1).float().mean().item()
    return out


def accuracy_by_value(
    pred:   torch.Tensor,               # [N, 5] predicted labels.
    labels: torch.Tensor,               # [N, 5] target labels in `scenes`.
    scenes: SceneSet,
    attrs:  tuple[str, ...] = ("shape", "colour"),
) -> dict[str, dict[str, float]]:
    """{attribute: {value: all-five accuracy of the images whose target has that value}} for
    `attrs`, values without images left out: where a generator fails, e.g. on a new colour word."""
    all_right = (pred == labels).all(dim=1).float()
    out = {}
    for attr in attrs:
        column = labels[:, ATTR_NAMES.index(attr)]
        out[attr] = {value: all_right[column == i].mean().item()
                     for i, value in enumerate(scenes.attributes[attr]) if (column == i).any()}
    return out


# ----------------------------------------------------------------------------------------------
# Training and the cache.

def _palette(names: tuple[str, ...], rgb: dict[str, tuple[int, int, int]]) -> torch.Tensor:
    """The colours `names` in image units ([-1, 1]): [len(names), 3]."""
    return torch.tensor([rgb[v] for v in names], dtype=torch.float32) / 127.5 - 1


_BACKGROUND = _palette(ATTRIBUTES["background"], BACKGROUND_RGB)


def recolour_foreground(
    img:        torch.Tensor,       # [B, 3, H, W] real demo images in [-1, 1].
    labels:     torch.Tensor,       # [B, 5] their attribute labels.
    gen:        torch.Generator,    # Draws the new colours.
    min_dist:   float = 0.7,        # Smallest RGB distance (image units) of a new colour from the background.
    colours:    tuple[str, ...] = BUILTIN.colours,  # What the colour labels index.
) -> torch.Tensor:
    """The same scenes with the shape painted in a random RGB colour (background untouched).

    Why: with (shape, colour) pairs held out, shape and colour are correlated in the training
    set, and a trunk that sees colours learns "blue -> not a triangle" (measured: 12 % shape
    accuracy on held-out renders without augmentation, 62 % with RGB channel permutations,
    which keep each colour's luminance). A uniformly random colour makes shape independent of
    colour and luminance. The demo renderer box-filters a binary coverage mask, so each pixel
    is exactly bg + alpha * (fill - bg); alpha is recovered by projecting onto (fill - bg) with
    the known palette and the shape repainted as bg + alpha * (new - bg).
    """
    b = img.shape[0]
    bg = _BACKGROUND[labels[:, ATTR_NAMES.index("background")]][:, :, None, None]    # [B, 3, 1, 1]
    d = _palette(colours, COLOUR_RGB)[labels[:, ATTR_NAMES.index("colour")]][:, :, None, None] - bg  # [B, 3, 1, 1]
    alpha = (((img - bg) * d).sum(1, keepdim=True) / (d * d).sum(1, keepdim=True)).clamp(0, 1)
    # 8 candidates per sample; take the first far enough from the background (all 8 near it:
    # probability < 1e-6, then the farthest).
    cand = torch.rand(b, 8, 3, generator=gen) * 2 - 1                                 # [B, 8, 3]
    dist = (cand - bg[:, None, :, 0, 0]).norm(dim=2)                                  # [B, 8]
    pick = torch.where((dist >= min_dist).any(1), (dist >= min_dist).int().argmax(1), dist.argmax(1))
    new = cand[torch.arange(b), pick][:, :, None, None]                               # [B, 3, 1, 1]
    return bg + alpha * (new - bg)


def classifier_loss(
    model:  AttributeClassifier,
    img:    torch.Tensor,       # [B, 3, R, R] real images.
    labels: torch.Tensor,       # [B, 5] int64.
    gen:    torch.Generator,    # For the recolouring.
) -> torch.Tensor:
    """Sum over the five heads of the mean cross-entropy; the colour head sees the real image,
    the others its recoloured copy."""
    logits, _ = model.logits(img, recolour_foreground(img, labels, gen, colours=model.cfg.colours))
    return sum(F.cross_entropy(logits[a], labels[:, i]) for i, a in enumerate(ATTR_NAMES))


def train_classifier(
    img:    torch.Tensor,       # Real training images [N, 3, R, R] in [-1, 1], R = cfg.resolution.
    labels: torch.Tensor,       # [N, 5] int64 attribute indices.
    cfg:    ClassifierConfig,
    num_threads: int = 1,       # CPU threads while training (restored afterwards).
) -> AttributeClassifier:
    """Adam + cosine decay on `classifier_loss` (with recolouring), on CPU; the same seed gives
    the same weights.

    One thread by default: the convolutions are too small to gain from two, a fixed count keeps
    the float reductions (and so the weights) identical across machines, and on the shared
    2-core box two threads were measured 15-60x slower whenever the other core was busy.
    """
    assert img.ndim == 4 and labels.shape == (len(img), len(ATTR_NAMES)), (img.shape, labels.shape)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        return _fit(img, labels, cfg)
    finally:
        torch.set_num_threads(prev_threads)


def _fit(img: torch.Tensor, labels: torch.Tensor, cfg: ClassifierConfig) -> AttributeClassifier:
    """The training loop of `train_classifier`."""
    # fork_rng: seed the global RNG that nn.Module init draws from without leaking the change.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = AttributeClassifier(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.num_steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    order, pos = torch.randperm(len(img), generator=gen), 0
    model.train()
    for _ in range(cfg.num_steps):
        if pos + cfg.batch_size > len(order):   # a new shuffled epoch
            order, pos = torch.randperm(len(img), generator=gen), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        loss = classifier_loss(model, img[idx], labels[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval().requires_grad_(False)


def held_out_real_accuracy(
    model:      AttributeClassifier,
    render_res: int = 64,           # Side the scenes are drawn at before the area resize.
    num_per_combo: int = 4,         # Jittered renders per held-out combination.
    seed:       int = 0,
) -> dict[str, float]:
    """Accuracy on freshly rendered real images of held-out combinations (never in training)."""
    scenes = model.cfg.scenes()
    combos = [c for c in all_combinations(held_out=True, scenes=scenes) for _ in range(num_per_combo)]
    combos = with_jitter(combos, np.random.default_rng([seed, 7]))
    pred, _ = model.predict(render_real(combos, render_res, model.cfg.resolution))
    return attribute_accuracy(pred, labels_of(combos, scenes))


def save_classifier(path: str | Path, model: AttributeClassifier, stats: dict) -> Path:
    """Atomic write (temp file + fsync + rename) of plain data: format tag, config, weights, stats."""
    data = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "config": config_to_dict(model.cfg),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "stats": stats}
    return atomic_torch_save(path, data)


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> tuple[AttributeClassifier, dict]:
    """(model in eval mode on `device`, stats) from a file written by `save_classifier`.

    Raises ValueError with a one-line message for a file that is not such a cache.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file can make the unpickler raise anything
        raise ValueError(f"{path}: not a readable classifier cache ({type(e).__name__}); "
                         "delete it to retrain") from None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("version") != CACHE_VERSION:
        raise ValueError(f"{path}: not an attribute-classifier cache of version {CACHE_VERSION}; delete it to retrain")
    try:
        model = AttributeClassifier(config_from_dict(ClassifierConfig, data["config"]))
        model.load_state_dict(data["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:   # written by other code: strict load
        raise ValueError(f"{path}: classifier cache does not match this code ({type(e).__name__}); "
                         "delete it to retrain") from None
    return model.eval().requires_grad_(False).to(device), data["stats"]


def demo_root(root: str | Path | None) -> Path:
    """`root`, or the default demo dataset folder (`default_demo_root()`: datasets/demo in a clone) for None."""
    return Path(root) if root is not None else default_demo_root()


def cache_path(root: str | Path | None, resolution: int) -> Path:
    """Where the classifier of the demo dataset at `root` (None: default_demo_root()) is cached."""
    return demo_root(root) / f"attribute_classifier-{resolution}.pt"


def ensure_classifier(
    root:   str | Path | None,          # Demo dataset root (None: default_demo_root()).
    cfg:    ClassifierConfig,           # Used only when training.
    path:   str | Path | None = None,   # Cache file (None: cache_path(root, cfg.resolution)).
    device: torch.device | str = "cpu",
    verbose: bool = True,
) -> tuple[AttributeClassifier, dict]:
    """Load the cached classifier, or train one on the real demo images and cache it.

    It tells apart the shapes and colours of the dataset's scene set (`scene_set_of(root)`), so a
    variant dataset gets its own; a cache of another set is an error. Returns (model, stats);
    stats holds the training time and the held-out real accuracy.
    """
    path = Path(path) if path is not None else cache_path(root, cfg.resolution)
    if path.is_file():
        model, stats = load_classifier(path, device)
        if model.cfg.resolution != cfg.resolution:
            raise ValueError(f"{path}: classifier for resolution {model.cfg.resolution}, "
                             f"not {cfg.resolution}; pass a matching --resolution or delete it")
        if model.cfg.scenes() != scene_set_of(demo_root(root)):
            raise ValueError(f"{path}: classifier for other shapes or colours than the dataset in "
                             f"{demo_root(root)}; delete it to retrain")
        return model, stats
    start = time.perf_counter()
    img, labels = load_demo_training_set(root, cfg.resolution, cfg.num_images)
    load_s = time.perf_counter() - start
    scenes = scene_set_of(demo_root(root))
    model = train_classifier(img, labels, dataclasses.replace(cfg, shapes=scenes.shapes, colours=scenes.colours))
    stats = {"num_train_images": len(img), "load_s": load_s, "train_s": time.perf_counter() - start - load_s,
             "held_out_real_accuracy": held_out_real_accuracy(model, seed=cfg.seed)}
    save_classifier(path, model, stats)
    if verbose:
        acc = stats["held_out_real_accuracy"]
        print(f"Trained the attribute classifier on {len(img)} real images in {stats['train_s']:.1f} s "
              f"(+{load_s:.1f} s loading); held-out real accuracy: all {acc['all']:.3f}; cached at {path}")
    return model.to(device), stats
