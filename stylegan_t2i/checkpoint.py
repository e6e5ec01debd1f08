"""Checkpoints as plain data: one file, atomic writes, `weights_only=True` loads.

A checkpoint is a dict of tensors, numbers, strings, bytes, lists and dicts:

    {"format": "stylegan_t2i", "version": FORMAT_VERSION, "kind": "gan" | "ddpm" | "text_encoder", ...}

Nothing in it is code, so loading never unpickles classes (docs/architecture.md, "Checkpoints").
"""
from __future__ import annotations

import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import torch

FORMAT_TAG = "stylegan_t2i"
FORMAT_VERSION = 1
KINDS = ("gan", "ddpm", "text_encoder")


T = TypeVar("T")


class CheckpointError(RuntimeError):
    """A checkpoint could not be used; the message is one line meant for the user."""


class CorruptCheckpointError(CheckpointError):
    """The file is no checkpoint at all: truncated, empty, random bytes or foreign data, as after
    disk trouble (unlike a good checkpoint that cannot be used here: a newer version, another kind)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason    # A few words for a warning, e.g. "EOFError".


def save_checkpoint(path: str | os.PathLike, kind: str, payload: dict[str, Any]) -> Path:
    """Write `payload` tagged with format/version/kind to `path` atomically.

    The bytes go to a temporary file in the same directory, are fsync'ed, and only then
    renamed over `path`, so a crash or a full disk never leaves a half-written file where a
    good checkpoint was.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")
    data = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "kind": kind, **payload}
    return atomic_torch_save(path, data)


def atomic_torch_save(path: str | os.PathLike, data: Any) -> Path:
    """`torch.save(data)` to `path` through a fsync'ed temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every filesystem allows opening a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, kinds: str | Iterable[str] | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, refusing anything else.

    Raises `CheckpointError` with a one-line message for a missing or unreadable file, a file
    that is not a checkpoint of this project, an unsafe pickle, a newer format version, or a
    kind not in `kinds`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptCheckpointError(
            f"{path}: refused to load (not a plain-data checkpoint; weights_only=True rejected it: {first})",
            "not plain data") from None
    except Exception as e:  # a malformed file can make the unpickler raise anything
        raise CorruptCheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_first_line(e)})",
                                     type(e).__name__) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_TAG:
        raise CorruptCheckpointError(f"{path}: not a stylegan_t2i checkpoint", "not a stylegan_t2i checkpoint")
    version = data.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this code supports "
            f"({FORMAT_VERSION}); upgrade stylegan_t2i"
        )
    if kinds is not None:
        allowed = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        if data.get("kind") not in allowed:
            raise CheckpointError(
                f"{path}: checkpoint of kind {data.get('kind')!r}, expected {' or '.join(map(repr, allowed))}"
            )
    return data


def load_newest_readable(
    candidates: Iterable[Path],     # Checkpoints found by a search, best (newest) first; may be lazy.
    load:       Callable[[Path], T],  # Loads one, e.g. `lambda p: load_checkpoint(p, kinds="gan")`.
) -> tuple[T, Path] | None:
    """`(load(path), path)` of the first candidate that is not corrupt, or None when none is left.

    A corrupt candidate (`CorruptCheckpointError`) is renamed to `<name>.corrupt` (never deleted,
    never over an earlier one), named in one warning line on stderr, and the next one is tried.
    Any other `CheckpointError` (a newer format version, another kind) is raised: that file is
    fine, just not usable here. Each candidate is loaded at most once. Only for checkpoints found
    by searching (`--resume auto`, generate.py without --checkpoint): a file the user named is
    loaded as it is, and a failure is an error.
    """
    for path in candidates:
        try:
            return load(path), path
        except CorruptCheckpointError as e:
            print(f"warning: {path} is corrupt ({e.reason}); {_set_aside(path)}, "
                  f"falling back to the previous checkpoint", file=sys.stderr)
    return None


def _set_aside(path: Path) -> str:
    """Rename a corrupt file to the first free `<name>.corrupt[.N]`; says what was done."""
    dest, n = path.with_name(f"{path.name}.corrupt"), 0
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.corrupt.{n}")
    try:
        path.rename(dest)
    except OSError as e:
        return f"could not rename it ({e.strerror or e})"
    return f"renamed it to {dest.name}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""
