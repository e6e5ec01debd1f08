"""Convert the CIFAR-10 python archive to image_dir + label_dir with class-name captions.

    python datasets/cifar10.py --archive cifar-10-python.tar.gz --out data/cifar10 --split train

writes out/images/<split>/NNNNN.png and out/labels/<split>/NNNNN.txt ("a photo of a cat", ...).

The archive's batches are pickles (that is how the format is defined: dicts of numpy arrays
read with `encoding="bytes"`). Unpickling can run code, so they are read with an unpickler
that only accepts the numpy classes an array needs and rejects everything else; still,
convert only archives from a source you trust.
"""
from __future__ import annotations

import argparse
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TEMPLATES = ("a photo of {a} {c}", "{a} {c}", "a small photo of {a} {c}", "a low resolution photo of {a} {c}",
             "a blurry photo of {a} {c}", "an image of {a} {c}")
SPLIT_MEMBERS = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

# (module, name) pairs a pickled numpy array may reference: the Python 2 original writes
# numpy.core, numpy 2 writes numpy._core, protocol 5 uses _frombuffer, and Python 3's protocol 2
# stores bytes through _codecs.encode. None of them can run arbitrary code.
_ALLOWED_GLOBALS = {(f"numpy.{core}.{mod}", name) for core in ("core", "_core")
                    for mod, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))}
_ALLOWED_GLOBALS |= {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/bytes/numbers and numpy arrays only; any other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def captions_for_class(class_name: str) -> list[str]:
    """Captions of one class in every template, with "an" before a vowel ("an airplane")."""
    article = "an" if class_name[0].lower() in "aeiou" else "a"
    return [t.format(a=article, c=class_name) for t in TEMPLATES]


def _read_batches(archive: Path) -> dict[str, dict]:
    """Member basename -> unpickled dict, for every batch and batches.meta in the archive."""
    wanted = {"batches.meta", *SPLIT_MEMBERS["train"], *SPLIT_MEMBERS["test"]}
    batches = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar.getmembers():  # read in memory: nothing is extracted to disk
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and base in wanted:
                data = tar.extractfile(member).read()
                batches[base] = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    return batches


def convert_cifar10(archive: str | Path, out_dir: str | Path, split: str = "train") -> int:
    """Write the images of `split` ("train", "test" or "both") as PNGs with captions; returns
    the number written. Raises ValueError naming the archive if batches are missing or malformed."""
    archive, out_dir = Path(archive), Path(out_dir)
    batches = _read_batches(archive)
    names = CLASS_NAMES
    if "batches.meta" in batches:
        names = tuple(n.decode() for n in batches["batches.meta"][b"label_names"])
    count = 0
    for s in (("train", "test") if split == "both" else (split,)):
        missing = [m for m in SPLIT_MEMBERS[s] if m not in batches]
        if missing:
            raise ValueError(f"{archive} has no {', '.join(missing)}: is it the CIFAR-10 python version?")
        (out_dir / "images" / s).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / s).mkdir(parents=True, exist_ok=True)
        index = 0
        for member in SPLIT_MEMBERS[s]:
            # Each row holds the 1024 R values, then G, then B, of one 32x32 image.
            data = np.asarray(batches[member][b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = batches[member][b"labels"]
            assert len(labels) == len(data), (member, len(labels), len(data))
            for img_u8, label in zip(data, labels):
                Image.fromarray(img_u8.transpose(1, 2, 0)).save(out_dir / "images" / s / f"{index:05d}.png")
                text = "\n".join(captions_for_class(names[label])) + "\n"
                (out_dir / "labels" / s / f"{index:05d}.txt").write_text(text, encoding="utf-8")
                index += 1
        count += index
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Convert cifar-10-python.tar.gz to images/ + labels/ with class-name captions. "
                    "Convert only archives from a trusted source (the batches are pickles).")
    parser.add_argument("--archive", required=True, help="path of cifar-10-python.tar.gz (the python version)")
    parser.add_argument("--out", required=True, help="output folder; images/<split>/ and labels/<split>/ are written inside")
    parser.add_argument("--split", choices=("train", "test", "both"), default="train",
                        help="which split to convert (default: train)")
    args = parser.parse_args(argv)
    if not Path(args.archive).is_file():
        raise SystemExit(f"{args.archive}: no such file; pass the downloaded cifar-10-python.tar.gz with --archive")
    try:
        count = convert_cifar10(args.archive, args.out, args.split)
    except (tarfile.TarError, pickle.UnpicklingError, ValueError, KeyError, IndexError, EOFError) as e:
        raise SystemExit(f"{args.archive}: not a readable CIFAR-10 python archive ({e})")
    print(f"Wrote {count} images: --image_dir {Path(args.out) / 'images'} --label_dir {Path(args.out) / 'labels'}")


if __name__ == "__main__":
    main()
