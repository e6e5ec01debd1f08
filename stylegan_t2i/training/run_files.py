"""What every trainer (GAN, DDPM) does with its run directory, in one place.

A run directory holds `network-snapshot-<nimg>.pt` every snapshot (the newest few kept) and
`network-final.pt` at the end (docs/architecture.md, "Checkpoints"). This module names those files, finds
the ones to resume from, prunes old snapshots, packs the global RNG state, and refuses non-finite weights.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import torch

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


def run_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, most advanced (most images shown) first: usually the newest snapshot,
    or the final one; a finished run that was extended and killed has snapshots past its old final.
    A final whose progress cannot be read comes first: loading it then says what is wrong with it
    (or, for `--resume auto`, sets it aside as corrupt)."""
    candidates = snapshots_in(run_dir)
    final = Path(run_dir) / FINAL_NAME
    if final.is_file():
        candidates.append(final)
    return sorted(candidates, key=_unreadable_then_nimg, reverse=True)  # stable: snapshot before final on a tie


def _unreadable_then_nimg(path: Path) -> tuple[bool, int]:
    nimg = checkpoint_nimg(path)
    return nimg < 0, nimg


def checkpoint_nimg(path: Path) -> int:
    """Images shown at a checkpoint: from a snapshot's name, else from its progress record
    (read through a memory map); -1 when it cannot be read."""
    if m := SNAPSHOT_PATTERN.match(path.name):
        return int(m.group(1))
    data = _peek(path)
    try:
        return int(data["progress"]["nimg"])
    except (TypeError, KeyError, ValueError):
        return -1


def _peek(path: Path):
    """A checkpoint's top-level dict through a memory map (tensors are not read), or None."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a malformed file can make the unpickler raise anything; the real load reports it
        return None


def checkpoint_kind(path: Path) -> str | None:
    """The `kind` tag of a checkpoint, or None when the file cannot be read that way."""
    data = _peek(path)
    return data.get("kind") if isinstance(data, dict) else None


def auto_resume_candidates(
    out:    Path,               # Parent of the run directories.
    kind:   str | None = None,  # Only checkpoints of this kind ('gan', 'ddpm'); None: any.
) -> Iterator[Path]:
    """What `--resume auto` may continue from, best first: the newest run's checkpoints (most
    advanced first, `run_checkpoints`), then the older runs'. Lazy, for `load_newest_readable`.

    GAN and DDPM runs may share `out`, so checkpoints of the other kind are passed over. One
    whose kind cannot be read is yielded anyway: loading it then says what is wrong with it.
    """
    for run in reversed(run_dirs(out)):
        for ckpt in run_checkpoints(run):
            if kind is None or checkpoint_kind(ckpt) in (kind, None):
                yield ckpt


def prune_snapshots(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` snapshots (the final checkpoint is never touched), and
    the partial temporary files that writes cut short by a kill left behind. Called right
    after a write completes, by the only process that writes, so no write is in flight."""
    for old in snapshots_in(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    for partial in Path(run_dir).glob(".network-*.pt.*.tmp"):
        partial.unlink(missing_ok=True)


def rng_state(device: torch.device, dataset, order) -> dict:
    """Every random state a resumed run needs: torch (and CUDA), the dataset's caption/flip
    generator and the data order's position (`data.order.IndexOrder`)."""
    # The order's position is stored under "sampler", the key checkpoints written before the
    # class was renamed already use: renaming it would stop those runs from resuming.
    state = {"torch": torch.get_rng_state(), "dataset": dataset.state_dict(), "sampler": order.state_dict()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device, dataset, order) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    dataset.load_state_dict(state["dataset"])
    order.load_state_dict(state["sampler"])      # The key rng_state keeps for old checkpoints.


def all_finite(module: torch.nn.Module) -> bool:
    """True when every parameter and buffer is finite (a checkpoint must never hold NaN weights)."""
    return all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point())

