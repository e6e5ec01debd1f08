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

import re
from pathlib import Path

import torch

from stylegan_t2i.checkpoint import load_checkpoint
from stylegan_t2i.run_dir import run_dirs

SNAPSHOT_PATTERN = re.compile(r"^network-snapshot-(\d+)\.pt$")
FINAL_NAME = "network-final.pt"


def snapshot_name(nimg: int) -> str:
    return f"network-snapshot-{nimg:09d}.pt"


def snapshots_in(run_dir: Path) -> list[Path]:
    """Snapshot files of a run, oldest first (by images shown, which the name encodes)."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob("network-snapshot-*.pt")
             if (m := SNAPSHOT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The run's most advanced checkpoint: the final one if training finished, else the newest snapshot."""
    final = Path(run_dir) / FINAL_NAME
    if final.is_file():
        return final
    snaps = snapshots_in(run_dir)
    return snaps[-1] if snaps else None


def find_auto_resume(out: Path) -> Path | None:
    """Newest checkpoint of the newest run under `out` that has one, else None."""
    for run in reversed(run_dirs(out)):
        ckpt = newest_checkpoint(run)
        if ckpt is not None:
            return ckpt
    return None


def prune_snapshots(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` snapshots (the final checkpoint is never touched)."""
    for old in snapshots_in(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_gan_checkpoint(path: str | Path) -> dict:
    return load_checkpoint(path, kinds="gan")


def all_finite(module: torch.nn.Module) -> bool:
    """True when every parameter and buffer is finite (a checkpoint must never hold NaN weights)."""
    return all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point())
