"""The Python API, diffusers-style: a checkpoint in, PIL images out (docs/architecture.md,
"Data flow", step 4).

    from stylegan_t2i import TextToImage

    pipe = TextToImage.from_checkpoint(None)            # None: the demo model in pretrained/
    out = pipe(["a red circle", "a blue square"], upscale=4)
    out.images[0].save("red-circle.png"), out.seeds     # [0, 1]
    pipe.save_pretrained("my-model")                    # my-model/model.pt + README.md

The pipeline holds no maths: it finds the checkpoint and the device, fills in the seeds and
turns the sampler's img [N, 3, R, R] in [-1, 1] into PIL images. GAN and DDPM checkpoints go
through the same `inference.Sampler` interface, which checks the options (GAN: truncation;
DDPM: steps, guidance, sampler, eta, init_image, strength).
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from stylegan_t2i.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.images import resize_image, to_uint8
from stylegan_t2i.inference import DEMO_MODEL, SAMPLERS, Sampler, generation_payload, load_sampler

MODEL_FILE = "model.pt"     # What save_pretrained writes into its directory, and from_checkpoint reads there.
CARD_FILE = "README.md"


@dataclass(frozen=True)
class TextToImageOutput:
    images: list[Image.Image]   # One RGB image per prompt.
    seeds:  list[int]           # Image i's seed: the same prompt and seed give the same image again.


def checkpoint_path(path: str | Path | None) -> Path:
    """The checkpoint file: `path`, `path`/model.pt for a save_pretrained directory, or the demo
    model for None (a one-line CheckpointError when this checkout lacks it)."""
    if path is None:
        if not DEMO_MODEL.is_file():
            raise CheckpointError(f"{DEMO_MODEL}: no demo model here (package data of stylegan_t2i, linked to the "
                                  f"repository's pretrained/demo-gan.pt); reinstall the package or pass a checkpoint path")
        return DEMO_MODEL
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() else path


def _one_image(options: dict[str, Any], i: int, n: int) -> dict[str, Any]:
    """The options of image i of n alone: an init_image of n rows gives its row i."""
    init = options.get("init_image")
    if n > 1 and isinstance(init, torch.Tensor) and init.ndim == 4 and init.shape[0] == n:
        return {**options, "init_image": init[i:i + 1]}
    return options


def _seed(seed: Any) -> int:
    """An integer seed in the int64 range (what torch.Generator.manual_seed and the DDPM's
    step-noise offset take); a float, str or out-of-range value is a one-line error."""
    try:
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"seeds must be integers, got {seed!r}") from None
    if not -2 ** 63 <= seed < 2 ** 63:
        raise ValueError(f"seeds must be in [-2**63, 2**63 - 1], got {seed}")
    return seed


def upscale_nearest(img: Image.Image, factor: int) -> Image.Image:
    """Each pixel becomes a factor x factor block (nearest neighbour, pixel-exact)."""
    return resize_image(img, (img.width * factor, img.height * factor), "nearest")


class TextToImage:
    """Prompts (+ seeds) -> PIL images from any checkpoint kind in `inference.SAMPLERS`."""

    def __init__(self,
        sampler:    Sampler,        # A sampler from inference (built from a checkpoint or from networks).
        checkpoint: dict,           # What generation needs of its checkpoint (inference.generation_payload).
    ):
        self.sampler, self.checkpoint = sampler, checkpoint

    @classmethod
    def from_checkpoint(cls,
        path:   str | Path | None = None,       # A checkpoint, a save_pretrained directory; None: the demo model.
        device: str | torch.device = "auto",    # 'auto' (CUDA when there is one), 'cpu', 'cuda', 'cuda:N'.
    ) -> TextToImage:
        """The pipeline of a GAN or DDPM checkpoint (a training or a generation-only one)."""
        data = load_checkpoint(checkpoint_path(path), kinds=tuple(SAMPLERS))
        if not isinstance(device, torch.device):
            try:
                device = resolve_device(device)
            except (RuntimeError, TypeError, SystemExit) as e:     # SystemExit: CUDA asked for, none here
                raise ValueError(f"bad device {device!r}: {str(e).removeprefix('error: ')}") from None
        return cls(load_sampler(data, device), generation_payload(data))

    def __call__(self,
        prompts:            str | Sequence[str],            # One prompt, or one per image.
        seeds:              Sequence[int] | None = None,    # One per image; None: 0..N-1.
        truncation:         float | None = None,            # GAN: psi toward the caption's mean w; None: 1 (off).
        upscale:            int | None = None,              # Enlarge by this integer factor, nearest neighbour.
        **sampler_options:  Any,                            # DDPM: steps, guidance, sampler, eta, init_image, strength.
    ) -> TextToImageOutput:
        """Image i from prompts[i] and seeds[i]. An option the checkpoint's sampler does not take
        (truncation for a DDPM, steps for a GAN) or a bad value is a one-line ValueError."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts must be a str or a sequence of str, got {[type(p).__name__ for p in prompts]}")
        seeds = list(range(len(prompts))) if seeds is None else [_seed(s) for s in seeds]
        if not prompts or len(seeds) != len(prompts):
            raise ValueError(f"need one seed per prompt and at least one prompt, got {len(prompts)} prompts "
                             f"and {len(seeds)} seeds")
        if upscale is not None and (isinstance(upscale, bool) or not isinstance(upscale, int) or upscale < 1):
            raise ValueError(f"upscale must be an integer >= 1 (or None), got {upscale!r}")
        if isinstance(truncation, numbers.Real) and math.isfinite(truncation) \
                and abs(truncation) > torch.finfo(torch.float32).max:       # float32 lerp would overflow
            raise ValueError(f"option truncation must fit in float32 (|psi| <= 3.4e38), got {truncation!r}")
        options = sampler_options if truncation is None else {**sampler_options, "truncation": truncation}
        # One sampler call per image: float kernels may round differently at another batch size,
        # and a last-bit difference can flip a uint8 level, so a batched image would depend on
        # the other prompts of its call.
        img = torch.cat([self.sampler.sample([p], [s], **_one_image(options, i, len(prompts)))
                         for i, (p, s) in enumerate(zip(prompts, seeds))])
        img_u8 = to_uint8(img)                                                  # [N, R, R, 3]
        images = [Image.fromarray(a.numpy()) for a in img_u8]
        if upscale is not None:
            images = [upscale_nearest(img, upscale) for img in images]
        return TextToImageOutput(images, seeds)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `directory`/model.pt, a generation-only checkpoint, and a README.md model card;
        `TextToImage.from_checkpoint(directory)` loads it back. Returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_checkpoint(directory / MODEL_FILE, self.sampler.kind, self.checkpoint)
        (directory / CARD_FILE).write_text(model_card(self.sampler, directory), encoding="utf-8")
        return directory


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_card(sampler: Sampler, directory: Path) -> str:
    """README.md of a save_pretrained directory: what the model is and the code that loads it."""
    defaults = ", ".join(f"`{k}={v!r}`" for k, v in dataclasses.asdict(sampler.options()).items())
    network = sampler.network
    return "\n".join([
        f"# stylegan_t2i text-to-image model ({sampler.kind})", "",
        f"- Kind: `{sampler.kind}` (the checkpoint kind; `stylegan_t2i.inference.SAMPLERS` maps it to a sampler).",
        f"- Output: {sampler.resolution}x{sampler.resolution} RGB.",
        (f"- Parameters: {num_params(network):,} in the {type(network).__name__}; {num_params(sampler.text.model):,} "
         f"in the frozen contrastive text encoder (text and image towers)."),
        f"- Trained: {sampler.kimg:g} kimg (thousands of training images shown).",
        (f"- File: `{MODEL_FILE}`, a generation-only checkpoint (plain data: "
         f"`torch.load(path, weights_only=True)` loads it)."),
        f"- Sampling options and their defaults: {defaults}.", "",
        "## Load it", "",
        "```python",
        "from stylegan_t2i import TextToImage", "",
        f"pipe = TextToImage.from_checkpoint({json.dumps(str(directory))})",
        'out = pipe(["a small red circle on the left on a black background"], seeds=[0])',
        'out.images[0].save("sample.png")',
        "```", ""])
