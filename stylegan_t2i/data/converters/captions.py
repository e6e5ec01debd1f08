"""Convert a captions file (COCO-style JSON, or CSV/TSV) plus an image folder to image_dir + label_dir.

    python datasets/captions.py --captions captions_train2017.json --images train2017 --out data/coco

Inputs:
  * JSON: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}; several
    annotations of one image become several caption lines.
  * .csv / .tsv with a header naming the columns `image` and `caption`; repeated rows of one
    image append captions.
Images are hard-linked into out/images/ (copied where linking fails, e.g. across file systems),
keeping their relative paths; out/labels/<same stem>.txt gets one caption per line. Images that
are missing, have no caption, or whose name escapes the image folder are counted and reported,
never a crash.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path, PurePosixPath

from stylegan_t2i.data.converter_report import SkippedByReason


@dataclasses.dataclass
class ConvertReport(SkippedByReason):
    num_images:   int = 0       # images written with captions
    num_captions: int = 0       # caption lines written

    def summary(self) -> str:
        return "\n".join([f"Wrote {self.num_images} images with {self.num_captions} captions"] + self.skip_lines())


def _clean(caption: str) -> str:
    """One caption per line in the output: inner newlines and tabs become spaces."""
    return " ".join(str(caption).split())


def read_coco(path: Path, report: ConvertReport) -> dict[str, list[str]]:
    """file_name -> captions, in annotation order; images without annotations map to []."""
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    try:
        files = {img["id"]: img["file_name"] for img in data["images"]}
        captions: dict[str, list[str]] = {name: [] for name in files.values()}
        for ann in data["annotations"]:
            if ann["image_id"] not in files:
                report.skip("caption of an unknown image_id", str(ann["image_id"]))
                continue
            captions[files[ann["image_id"]]].append(ann["caption"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} is not COCO-style captions JSON (missing {e}); "
                         "expected images[].id/file_name and annotations[].image_id/caption")
    return captions


def read_table(path: Path, delimiter: str) -> dict[str, list[str]]:
    """image -> captions from a CSV/TSV with a header naming `image` and `caption` columns."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "image" not in columns or "caption" not in columns:
            raise ValueError(f"{path} needs a header row with columns image{delimiter}caption; found {reader.fieldnames}")
        captions: dict[str, list[str]] = {}
        for row in reader:
            captions.setdefault(row[columns["image"]] or "", []).append(row[columns["caption"]] or "")
    return captions


def read_captions_file(path: str | Path, report: ConvertReport) -> dict[str, list[str]]:
    """Dispatch on the suffix: .json (COCO), .csv, .tsv/.tab."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_coco(path, report)
    if suffix in (".csv", ".tsv", ".tab"):
        return read_table(path, "," if suffix == ".csv" else "\t")
    raise ValueError(f"{path}: unknown captions format {suffix!r}; "
                     "use COCO-style .json, or .csv/.tsv with columns image,caption")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # other file system, or links not supported
        shutil.copy2(src, dst)


def convert_captions(captions_file: str | Path, images_dir: str | Path, out_dir: str | Path) -> ConvertReport:
    """Write out_dir/images/<name> (linked or copied) and out_dir/labels/<name stem>.txt."""
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    report = ConvertReport()
    for name, raw in sorted(read_captions_file(captions_file, report).items()):
        rel = PurePosixPath(name.replace("\\", "/"))
        captions = [c for c in map(_clean, raw) if c]
        if not name or rel.is_absolute() or ".." in rel.parts:
            report.skip("name outside the image folder", name)
        elif not captions:
            report.skip("no caption", name)
        elif not (images_dir / rel).is_file():
            report.skip("missing image", name)
        else:
            _link_or_copy(images_dir / rel, out_dir / "images" / rel)
            label = out_dir / "labels" / rel.with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(captions) + "\n", encoding="utf-8")
            report.num_images += 1
            report.num_captions += len(captions)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Convert a captions file plus an image folder to images/ + labels/ (one caption per line).")
    parser.add_argument("--captions", required=True,
                        help="COCO-style .json, or .csv/.tsv with a header naming columns image and caption")
    parser.add_argument("--images", required=True, help="folder the captions file's image names are relative to")
    parser.add_argument("--out", required=True, help="output folder; images/ and labels/ are written inside")
    args = parser.parse_args(argv)
    for flag, path, test in (("--captions", args.captions, os.path.isfile), ("--images", args.images, os.path.isdir)):
        if not test(path):
            raise SystemExit(f"{flag} {path}: not found")
    try:
        report = convert_captions(args.captions, args.images, args.out)
    except (ValueError, csv.Error) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SystemExit(f"{args.captions}: {e}")
    print(report.summary())
    print(f"Train with: --image_dir {Path(args.out) / 'images'} --label_dir {Path(args.out) / 'labels'}")


if __name__ == "__main__":
    main()
