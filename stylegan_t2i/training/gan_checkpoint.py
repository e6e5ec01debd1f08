"""GAN checkpoints: packing trainer state into plain data and finding what to resume.

Layout of a `gan` checkpoint (all plain data, `weights_only=True` loadable):
    config:        {"generator", "critic", "train", "schedule"} JSON-able dicts
    G, D, G_ema:   state dicts;  opt_G, opt_D: optimizer state dicts (absent in exports)
    progress:      {"nimg", "stage", "alpha", "step"}
    rng:           {"torch", "cuda" (list), "dataset", "sampler"}
    text_encoder:  the frozen text encoder with its tokenizer (see text.pretrain)
    sample:        {"prompts", "seeds"} used for the progress grids
"""
from __future__ import annotations

from pathlib import Path

from stylegan_t2i.checkpoint import load_checkpoint
from stylegan_t2i.training import run_files
# The run-directory helpers are shared with the DDPM trainer; the GAN code reaches them as ckpt.*.
from stylegan_t2i.training.run_files import (FINAL_NAME, all_finite, prune_snapshots,  # noqa: F401
                                             restore_rng_state, rng_state, snapshot_name)


def find_auto_resume(out: Path) -> Path | None:
    """Newest GAN checkpoint of the newest GAN run under `out` (DDPM runs there are passed over)."""
    return run_files.find_auto_resume(out, kind="gan")


def load_gan_checkpoint(path: str | Path) -> dict:
    return load_checkpoint(path, kinds="gan")

