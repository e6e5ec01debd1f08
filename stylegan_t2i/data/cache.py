"""Decode a dataset once into one uint8 array on disk, and memory-map it on later runs.

The cache is `<cache_dir>/<dir-hash>-<res>-<key>.npy` (the images, [N, 3, R, R] uint8, only the
ones that decoded) plus a `.json` beside it (which names failed or were up-sampled). `key`
hashes the decoded file list with sizes and mtimes, the resolution and `CACHE_VERSION`, so any
change to the files rebuilds it (docs/architecture.md, "Data format"). Files are written under temporary
names and renamed into place, so a killed build never leaves a cache that looks complete.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from stylegan_t2i.data.image_io import DECODE_ERRORS, load_image
from stylegan_t2i.data.scan import Candidate

CACHE_VERSION = 1       # bump when decoding changes (filters, colour handling) to rebuild old caches
DECODE_BLOCK = 256      # images in flight at once: bounds memory held by the thread pool
COMPACT_CHUNK = 1024    # rows copied at a time when dropping unreadable images from the array


@dataclasses.dataclass(frozen=True)
class DecodedImages:
    images:     np.ndarray  # [num_ok, 3, R, R] uint8; a copy-on-write memmap when cached
    unreadable: list[str]   # candidate names that failed to decode, in candidate order
    upsampled:  list[str]   # decoded names whose shorter side was below R


def default_cache_dir(image_dir: str | Path) -> Path:
    """`<parent of image_dir>/.stylegan_t2i_cache`: beside the data, outside the image tree."""
    return Path(image_dir).resolve().parent / ".stylegan_t2i_cache"


def cache_key(candidates: Sequence[Candidate], resolution: int) -> str:
    """sha256 over (name, suffix, size, mtime_ns) of every image, the resolution and the version."""
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "resolution": resolution}).encode())
    for c in candidates:
        st = c.path.stat()
        h.update(json.dumps([c.name, c.path.suffix, st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def _decode_one(candidate: Candidate, resolution: int) -> tuple[np.ndarray, bool] | None:
    try:
        return load_image(candidate.path, resolution)
    except DECODE_ERRORS:
        return None


def decode_into(
    candidates: Sequence[Candidate],    # images to decode, in order
    resolution: int,                    # output side R
    out:        np.ndarray,             # [len(candidates), 3, R, R] uint8, written row by row
    verbose:    bool,                   # show a tqdm bar
) -> tuple[list[bool], list[bool]]:
    """Decode every candidate into `out[i]` with a thread pool (PIL releases the GIL while
    decoding and resizing). Returns per-candidate (decoded_ok, upsampled) flags; rows of
    candidates that failed are left unwritten."""
    assert out.shape == (len(candidates), 3, resolution, resolution) and out.dtype == np.uint8
    ok, upsampled = [False] * len(candidates), [False] * len(candidates)
    workers = min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(candidates), desc=f"Caching images at {resolution}x{resolution}",
                 unit="img", disable=not verbose) as bar:
        for start in range(0, len(candidates), DECODE_BLOCK):
            block = candidates[start:start + DECODE_BLOCK]
            for i, result in enumerate(pool.map(_decode_one, block, [resolution] * len(block)), start):
                if result is not None:
                    out[i], upsampled[i] = result
                    ok[i] = True
                bar.update(1)
    return ok, upsampled


def _outcome(candidates: Sequence[Candidate], ok: list[bool], upsampled: list[bool]) -> dict[str, list[str]]:
    """The names that failed to decode and the decoded ones that were up-sampled."""
    return {"unreadable": [c.name for c, good in zip(candidates, ok) if not good],
            "upsampled": [c.name for c, good, up in zip(candidates, ok, upsampled) if good and up]}


def _compact_to_file(src: np.ndarray, keep: list[bool], path: Path) -> None:
    """Write the rows of `src` flagged in `keep` to a new .npy file, a chunk at a time."""
    rows = np.flatnonzero(keep)
    dst = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(rows),) + src.shape[1:])
    for start in range(0, len(rows), COMPACT_CHUNK):
        chunk = rows[start:start + COMPACT_CHUNK]
        dst[start:start + len(chunk)] = src[chunk]
    dst.flush()
    del dst


def _build(candidates: Sequence[Candidate], resolution: int, stem: Path, verbose: bool) -> None:
    """Decode into `<stem>.npy` and `<stem>.json` via temporary files renamed into place."""
    tmp = stem.with_name(f".{stem.name}.{os.getpid()}")
    raw_path, npy_tmp, json_tmp = Path(f"{tmp}.raw.npy"), Path(f"{tmp}.npy"), Path(f"{tmp}.json")
    shape = (len(candidates), 3, resolution, resolution)
    raw = np.lib.format.open_memmap(raw_path, mode="w+", dtype=np.uint8, shape=shape)
    try:
        ok, upsampled = decode_into(candidates, resolution, raw, verbose)
        raw.flush()
        if all(ok):
            del raw
            os.replace(raw_path, npy_tmp)
        else:
            _compact_to_file(raw, ok, npy_tmp)
            del raw
        meta = {"version": CACHE_VERSION, "resolution": resolution, **_outcome(candidates, ok, upsampled)}
        json_tmp.write_text(json.dumps(meta))
        os.replace(npy_tmp, stem.with_suffix(".npy"))
        os.replace(json_tmp, stem.with_suffix(".json"))  # last: a .json means the .npy is complete
    finally:
        for leftover in (raw_path, npy_tmp, json_tmp):
            leftover.unlink(missing_ok=True)


def load_or_build(
    candidates: Sequence[Candidate],    # images to decode, in order
    resolution: int,                    # output side R
    image_dir:  Path,                   # names the cache files and locates the default cache folder
    cache_dir:  Path | None,            # None: default_cache_dir(image_dir)
    verbose:    bool,                   # progress bar and notes
) -> DecodedImages:
    """The decoded images of `candidates`, from the cache when its key matches, else decoded now.

    `cache_dir=None` uses `default_cache_dir(image_dir)`; an unwritable folder falls back to
    decoding into memory with a printed note.
    """
    if not candidates:  # nothing to decode: write no cache file
        return DecodedImages(images=np.empty((0, 3, resolution, resolution), np.uint8), unreadable=[], upsampled=[])
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(image_dir)
    if not _writable(cache_dir):
        print(f"Note: cache folder {cache_dir} is not writable; decoding {len(candidates)} images "
              "into memory without a cache.")
        images = np.empty((len(candidates), 3, resolution, resolution), np.uint8)
        ok, upsampled = decode_into(candidates, resolution, images, verbose)
        return DecodedImages(images=images[np.asarray(ok, bool)], **_outcome(candidates, ok, upsampled))
    prefix = f"{hashlib.sha256(str(Path(image_dir).resolve()).encode()).hexdigest()[:8]}-{resolution}"
    stem = cache_dir / f"{prefix}-{cache_key(candidates, resolution)[:16]}"
    if not stem.with_suffix(".json").is_file():
        _build(candidates, resolution, stem, verbose)
        for stale in cache_dir.glob(f"{prefix}-*"):  # older versions of this dataset at this res
            if stale.name.split(".")[0] != stem.name:
                stale.unlink(missing_ok=True)
    elif verbose:
        print(f"Using image cache {stem.with_suffix('.npy')}")
    meta = json.loads(stem.with_suffix(".json").read_text())
    # Copy-on-write: pages are read lazily and shared between processes; writes stay private,
    # so torch sees a writable array and the file is never modified.
    images = np.load(stem.with_suffix(".npy"), mmap_mode="c")
    assert images.shape == (len(candidates) - len(meta["unreadable"]), 3, resolution, resolution), images.shape
    return DecodedImages(images=images, unreadable=meta["unreadable"], upsampled=meta["upsampled"])
