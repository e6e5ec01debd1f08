"""Pair `image_dir/NAME.ext` with `label_dir/NAME.txt` and count every input that cannot be used.

docs/architecture.md, "Data format": images pair with caption files by relative stem (sub-folders mirrored,
extensions case-insensitive); a caption file holds one caption per line. Bad input never
crashes: each problem is counted in a `SkipReport` under one of `SKIP_KINDS`, and the first few
names of each kind are kept so the user can find them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CAPTION_EXTENSION = ".txt"
MAX_EXAMPLES = 5

# kind -> what the summary says about it. All but `upsampled` are skipped samples.
SKIP_KINDS = {
    "unreadable_image":   "unreadable or truncated image (skipped)",
    "zero_byte_image":    "zero-byte image (skipped)",
    "duplicate_image":    "second image with the same name, other extension (skipped)",
    "missing_caption":    "image without a caption file (skipped)",
    "missing_image":      "caption file without an image (skipped)",
    "zero_byte_caption":  "zero-byte caption file (skipped)",
    "blank_caption":      "caption file with only whitespace (skipped)",
    "non_utf8_caption":   "caption file that is not UTF-8 (skipped)",
    "unreadable_caption": "caption file that cannot be read, e.g. no permission (skipped)",
    "upsampled":          "image smaller than the resolution, up-sampled (kept)",
}


class DatasetError(ValueError):
    """The dataset cannot be used at all; the message is one line meant for the user."""


@dataclasses.dataclass
class SkipReport:
    """Counts of bad inputs by kind, plus the first `MAX_EXAMPLES` names of each kind."""
    counts:     dict[str, int] = dataclasses.field(default_factory=dict)        # kind -> number of files
    examples:   dict[str, list[str]] = dataclasses.field(default_factory=dict)  # kind -> first few names
    num_usable: int = 0                                                         # pairs in the dataset

    def add(self, kind: str, name: str) -> None:
        assert kind in SKIP_KINDS, kind
        self.counts[kind] = self.counts.get(kind, 0) + 1
        names = self.examples.setdefault(kind, [])
        if len(names) < MAX_EXAMPLES:
            # A file name that is not valid UTF-8 reaches Python with surrogate escapes, which a
            # strict UTF-8 console cannot print: keep the bad bytes visible as \xNN instead.
            names.append(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))

    def summary(self) -> str:
        """Multi-line text: the usable count, then one line per kind with its first names."""
        lines = [f"Dataset: {self.num_usable} usable image/caption pairs"]
        for kind, what in SKIP_KINDS.items():
            if self.counts.get(kind):
                more = " ..." if self.counts[kind] > len(self.examples[kind]) else ""
                lines.append(f"  {self.counts[kind]:6d} {what}: {', '.join(self.examples[kind])}{more}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An image with a usable caption file; whether the image decodes is found out later."""
    name:     str        # relative stem with '/' separators, e.g. "sub/img001"
    path:     Path       # the image file
    captions: list[str]  # one or more non-blank captions


def _list_files(root: Path, keep: tuple[str, ...]) -> dict[str, list[Path]]:
    """Relative stem -> files under `root` whose lower-cased suffix is in `keep`, sorted.

    Hidden files and folders (names starting with '.') are ignored: they hold caches, editor
    and OS metadata (.DS_Store, ._img.png), never samples.
    """
    found: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() not in keep:
            continue
        if path.is_file():
            found.setdefault(rel.with_suffix("").as_posix(), []).append(path)
    return found


def read_captions(path: Path) -> tuple[list[str], str | None]:
    """Captions of one file (stripped, blank lines dropped) and the skip kind if unusable."""
    try:
        data = path.read_bytes()
    except OSError:
        return [], "unreadable_caption"
    if not data:
        return [], "zero_byte_caption"
    try:
        text = data.decode("utf-8-sig")  # tolerate a byte-order mark written by some editors
    except UnicodeDecodeError:
        return [], "non_utf8_caption"
    captions = [line.strip() for line in text.splitlines() if line.strip()]
    return captions, (None if captions else "blank_caption")


def scan_pairs(image_dir: str | Path, label_dir: str | Path) -> tuple[list[Candidate], SkipReport]:
    """Pair images with caption files by relative stem; count every unpaired or empty file.

    Returns the candidates sorted by name and a report whose `num_usable` is still 0: images
    are only known to be readable after decoding (see `image_io.load_image`).
    """
    image_dir, label_dir = Path(image_dir), Path(label_dir)
    for what, folder in (("image_dir", image_dir), ("label_dir", label_dir)):
        if not folder.is_dir():
            raise DatasetError(f"{what} {folder} does not exist or is not a directory")
    images = _list_files(image_dir, IMAGE_EXTENSIONS)
    labels = _list_files(label_dir, (CAPTION_EXTENSION,))
    report = SkipReport()
    candidates = []
    for name in sorted(set(images) | set(labels)):
        image_paths, label_paths = images.get(name, []), labels.get(name, [])
        for extra in image_paths[1:]:
            report.add("duplicate_image", extra.relative_to(image_dir).as_posix())
        if not image_paths:
            report.add("missing_image", name)
            continue
        if not label_paths:
            report.add("missing_caption", name)
            continue
        if image_paths[0].stat().st_size == 0:
            report.add("zero_byte_image", name)
            continue
        captions, problem = read_captions(label_paths[0])
        if problem is not None:
            report.add(problem, name)
            continue
        candidates.append(Candidate(name=name, path=image_paths[0], captions=captions))
    return candidates, report
