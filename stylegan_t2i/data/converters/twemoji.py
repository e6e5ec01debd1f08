"""Convert the Twemoji emoji art of the npm package emoji-datasource-twitter to image_dir + label_dir.

    python datasets/twemoji.py --fetch --out data/twemoji
    python datasets/twemoji.py --archive emoji-datasource-twitter-16.0.0.tgz \
        --names_archive emojibase-data-17.0.0.tgz --out data/twemoji --resolution 64

`--fetch` runs `npm pack` for both pinned packages into a temporary folder (npm must be
installed); otherwise pass the .tgz files `npm pack NAME@VERSION` downloads. The tarballs are
read in memory, nothing is extracted to disk. Writes

  out/images/NAME.png   RGB, the RGBA artwork composited onto --background, padded square,
                        Lanczos-resized to --resolution (NAME is the Twemoji file name, e.g. 2764-fe0f)
  out/labels/NAME.txt   one caption per line: "red heart", "a red heart",
                        "an emoji of a red heart", "a red heart emoji"
  out/ATTRIBUTION.md    Twemoji's CC-BY 4.0 attribution, what was changed, and the MIT notices
  out/SOURCE.json       package names/versions/sha256, options, counts, the names written

Names: emoji-datasource's `name` is the Unicode character name, which for old symbols names the
glyph style, not the colour (U+2764 is "HEAVY BLACK HEART", U+2B50 "WHITE MEDIUM STAR"). The
CLDR names ("red heart", "star") come from the second package, emojibase-data (--names_archive);
without it the Unicode names are used and a warning says so.

Colour: the colour word ("a yellow star") is the most common palette colour of the artwork's
opaque pixels, classified by hue, saturation and value (`stylegan_t2i.data.colour_captions`); it is left out when
the name already says a colour ("red heart", "white flower"). Skin-tone variants and flags are
left out unless asked for. Graphics: CC-BY 4.0 (Twitter, Inc. and contributors; jdecked/twemoji
and contributors); emoji data: MIT. Keep out/ATTRIBUTION.md next to any copy of the images.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor
from tqdm import tqdm

from stylegan_t2i.data.colour_captions import captions_for, dominant_colour
from stylegan_t2i.data.converter_report import MAX_EXAMPLES, SkippedByReason

PACKAGE = "emoji-datasource-twitter"
PACKAGE_VERSION = "16.0.0"              # pinned for --fetch: its Twemoji art is jdecked/twemoji v16.0.1
NAMES_PACKAGE = "emojibase-data"
NAMES_VERSION = "17.0.0"                # pinned for --fetch; a newer one only adds names
IMAGE_PREFIX = "package/img/twitter/64/"  # the only per-emoji PNG folder (the others are sprite sheets)
EMOJI_JSON = "package/emoji.json"
NAMES_JSON = "package/en/data.json"
PACKAGE_JSON = "package/package.json"
LICENSE_FILE = "package/LICENSE"
README_FILE = "package/README.md"
CC_BY_URL = "https://creativecommons.org/licenses/by/4.0/"

SKIN_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark",
              "1F3FF": "dark"}
_IMAGE_NAME = re.compile(r"^[0-9a-f]+(-[0-9a-f]+)*\.png$")  # also keeps output names inside out/
_TWEMOJI_VERSION = re.compile(r"\[Twemoji[^\]]*\]\((https://github\.com/[^)]+)\),\s*v([0-9.]+)")


class ArchiveError(ValueError):
    """An archive cannot be used at all; the message is one line naming the file and the fix."""


@dataclasses.dataclass
class Package:
    """What was read from one npm tarball."""
    name:    str
    version: str
    sha256:  str
    license: str                        # the LICENSE file's text, "" if the tarball has none
    readme:  str = ""
    data:    object = None              # the parsed emoji.json / en/data.json
    images:  dict[str, bytes] = dataclasses.field(default_factory=dict)  # file name -> PNG bytes


@dataclasses.dataclass(frozen=True)
class Entry:
    """One emoji image to convert."""
    stem:     str                       # output name, the Twemoji file name without .png
    image:    str                       # file name inside IMAGE_PREFIX
    hexcode:  str                       # code points, e.g. "2764-FE0F"
    name:     str                       # Unicode name (fallback caption name)
    category: str
    skin:     str | None = None         # skin_variations key, e.g. "1F3FB" or "1F3FB-1F3FC"


@dataclasses.dataclass
class Report(SkippedByReason):
    written: list[str] = dataclasses.field(default_factory=list)              # stems written

    def summary(self) -> str:
        return "\n".join([f"Wrote {len(self.written)} images, skipped {self.num_skipped}"] + self.skip_lines())


# --- reading the tarballs ------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_members(archive: Path, want) -> dict[str, bytes]:
    """name -> bytes of the regular files for which want(name) is true, in one sequential pass
    (a .tgz cannot seek cheaply, so members are read in stream order)."""
    found = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.isfile() and want(member.name):
                    found[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:  # gzip errors are OSErrors, truncation EOFError
        why = " ".join(str(e).split())  # tarfile lists one reason per compression, one per line
        raise ArchiveError(f"{archive}: not a readable npm .tgz ({why}); download it again with "
                           f"`npm pack NAME@VERSION` or use --fetch")
    return found


def _load_json(archive: Path, members: dict[str, bytes], name: str, expected: str):
    if name not in members:
        raise ArchiveError(f"{archive} has no {name}: is it the {expected} package "
                           f"(`npm pack {expected}@VERSION`)?")
    try:
        return json.loads(members[name].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ArchiveError(f"{archive}: {name} is not valid JSON ({e}); download the package again")


def _read_package(archive: Path, expected: str, data_member: str, want_images: bool) -> Package:
    """Read one npm tarball, check it is `expected` (another emoji-datasource-* provider has
    other licences, e.g. Apple's art is not licensed for reuse) and parse its data file."""
    wanted = {PACKAGE_JSON, data_member, LICENSE_FILE, README_FILE}
    members = _read_members(archive, lambda n: n in wanted or (want_images and n.startswith(IMAGE_PREFIX)))
    meta = _load_json(archive, members, PACKAGE_JSON, expected)
    name = meta.get("name") if isinstance(meta, dict) else None
    if name != expected:
        raise ArchiveError(f"{archive} is the npm package {name!r}, not {expected}; "
                           f"pass `npm pack {expected}@VERSION`'s tarball")
    data = _load_json(archive, members, data_member, expected)
    if not isinstance(data, list):
        raise ArchiveError(f"{archive}: {data_member} is not a list of emoji; download the package again")
    images = {n[len(IMAGE_PREFIX):]: b for n, b in members.items() if n.startswith(IMAGE_PREFIX)}
    if want_images and not images:
        raise ArchiveError(f"{archive} has no {IMAGE_PREFIX}*.png; download the package again")
    return Package(name=name, version=str(meta.get("version", "?")), sha256=_sha256(archive),
                   license=members.get(LICENSE_FILE, b"").decode("utf-8", "replace"),
                   readme=members.get(README_FILE, b"").decode("utf-8", "replace"),
                   data=data, images=images)


def read_emoji_package(archive: str | Path) -> Package:
    """emoji-datasource-twitter: emoji.json and the 64 px PNGs."""
    return _read_package(Path(archive), PACKAGE, EMOJI_JSON, want_images=True)


def read_names_package(archive: str | Path) -> tuple[Package, dict[str, str]]:
    """emojibase-data: the package and normalised hexcode -> CLDR name, skin variants included."""
    pkg = _read_package(Path(archive), NAMES_PACKAGE, NAMES_JSON, want_images=False)
    names = {}
    for item in pkg.data:
        for e in [item, *(item.get("skins") or [])] if isinstance(item, dict) else []:
            if isinstance(e, dict) and e.get("hexcode") and e.get("label"):
                names[normalise_hexcode(e["hexcode"])] = str(e["label"])
    return pkg, names


def normalise_hexcode(code: str) -> str:
    """Upper case without FE0F: emojibase drops the variation selector where emoji-datasource
    keeps it ("2764" vs "2764-FE0F"); both name the same emoji."""
    return "-".join(c for c in code.upper().split("-") if c != "FE0F")


# --- choosing the emoji --------------------------------------------------------------------------

def list_entries(emoji: list, include_skin_tones: bool, include_flags: bool, report: Report) -> list[Entry]:
    """Entries to convert in emoji.json order; excluded and malformed ones are counted in `report`."""
    entries = []
    for e in emoji:
        if not isinstance(e, dict) or not isinstance(e.get("image"), str):
            report.skip("malformed emoji.json entry", str(e)[:40])
            continue
        base = Entry(stem=e["image"][:-4], image=e["image"], hexcode=str(e.get("unified") or ""),
                     name=str(e.get("name") or e.get("short_name") or ""), category=str(e.get("category") or ""))
        variants = [base]
        for key, var in sorted((e.get("skin_variations") or {}).items()):
            if isinstance(var, dict) and isinstance(var.get("image"), str):
                variants.append(dataclasses.replace(base, stem=var["image"][:-4], image=var["image"],
                                                    hexcode=str(var.get("unified") or ""), skin=key))
        for entry in variants:
            if not _IMAGE_NAME.match(entry.image):
                report.skip("unexpected image file name", entry.image)
            elif entry.category == "Flags" and not include_flags:
                report.skip("flag, see --include_flags", entry.stem)
            elif entry.skin is not None and not include_skin_tones:
                report.skip("skin-tone variant, see --include_skin_tones", entry.stem)
            else:
                entries.append(entry)
    return entries


def caption_name(entry: Entry, cldr: dict[str, str] | None) -> str:
    """Lower-case name: the CLDR name when known, else the Unicode name (+ its skin tones)."""
    if cldr and normalise_hexcode(entry.hexcode) in cldr:
        name = cldr[normalise_hexcode(entry.hexcode)]
    else:
        name = entry.name
        if entry.skin:
            tones = [SKIN_TONES.get(t.upper(), t.lower()) for t in entry.skin.split("-")]
            name += ": " + ", ".join(f"{t} skin tone" for t in tones)
    return " ".join(name.lower().split())


# --- images --------------------------------------------------------------------------------------

def decode_rgba(data: bytes) -> Image.Image:
    """PNG bytes -> RGBA image, fully decoded (so a truncated file fails here, not later).
    Palette PNGs with a transparent index become RGBA with that alpha."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.convert("RGBA")


def to_square_rgb(img: Image.Image, background: tuple[int, int, int], resolution: int) -> Image.Image:
    """Composite onto `background` first (resizing RGBA before would blend the colour of fully
    transparent pixels into the edges), pad to a centred square, then Lanczos-resize."""
    flat = Image.new("RGBA", img.size, (*background, 255))
    flat.alpha_composite(img)
    flat = flat.convert("RGB")
    side = max(flat.size)
    if flat.size != (side, side):
        square = Image.new("RGB", (side, side), background)
        square.paste(flat, ((side - flat.width) // 2, (side - flat.height) // 2))
        flat = square
    if side != resolution:
        flat = flat.resize((resolution, resolution), Image.LANCZOS)
    return flat


# --- output folder -------------------------------------------------------------------------------

def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless --overwrite; then remove only the images and labels that
    the previous run listed in its SOURCE.json (so a run without --include_flags does not keep
    old flags). Anything else in the folder is left alone."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SystemExit(f"error: --out {out_dir} is a file; choose a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise SystemExit(f"error: --out {out_dir} is not empty; pass --overwrite to replace what a previous "
                         f"twemoji.py run wrote there (other files are kept), or choose another --out")
    try:
        previous = json.loads((out_dir / "SOURCE.json").read_text(encoding="utf-8")).get("names", [])
    except (OSError, ValueError, AttributeError):
        previous = []  # no manifest: files of the same name are overwritten, nothing is deleted
    removed = 0
    for stem in previous:
        if isinstance(stem, str) and _IMAGE_NAME.match(stem + ".png"):
            for path in (out_dir / "images" / f"{stem}.png", out_dir / "labels" / f"{stem}.txt"):
                if path.is_file():
                    path.unlink()
                    removed += 1
    if removed:
        print(f"--overwrite: removed {removed} files of the previous run listed in {out_dir / 'SOURCE.json'}")


def _foreign_files(out_dir: Path, written: set[str]) -> list[str]:
    """Files in images/ and labels/ this run did not write: the training code would read them too."""
    foreign = []
    for sub, suffix in (("images", ".png"), ("labels", ".txt")):
        for path in sorted((out_dir / sub).rglob("*")):
            if path.is_file() and not (path.parent == out_dir / sub and path.suffix == suffix
                                       and path.stem in written):
                foreign.append(path.relative_to(out_dir).as_posix())
    return foreign


def _twemoji_source(readme: str) -> tuple[str, str]:
    """(repository URL, version) of the Twemoji art named in the emoji-datasource README."""
    m = _TWEMOJI_VERSION.search(readme)
    return (m.group(1), m.group(2)) if m else ("https://github.com/jdecked/twemoji", "")


def write_attribution(out_dir: Path, pkg: Package, names_pkg: Package | None, resolution: int,
                      background: str) -> None:
    """ATTRIBUTION.md: CC-BY 4.0 asks for the creators, the licence with its URL, and a note of
    the changes made; the MIT notices of the name data are copied verbatim."""
    repo, tw_version = _twemoji_source(pkg.readme)
    tw = f"Twemoji{' v' + tw_version if tw_version else ''} ({repo})"
    lines = [
        "# Attribution",
        "",
        f"The images in `images/` are Twemoji graphics: {tw}.",
        "Copyright 2014-2021 Twitter, Inc. and other contributors; copyright 2022-present",
        "Jason Sofonia & Justine De Caires (jdecked/twemoji) and other contributors.",
        f"The graphics are licensed under CC-BY 4.0 (Creative Commons Attribution 4.0 International): {CC_BY_URL}",
        "",
        f"They were taken from the npm package {pkg.name} {pkg.version} (img/twitter/64/*.png,",
        f"https://github.com/iamcal/emoji-data) and changed: composited onto a {background} background,",
        f"padded to a square, converted to RGB and scaled to {resolution}x{resolution} px (Lanczos) by",
        "datasets/twemoji.py. The changes are not endorsed by Twitter/X or the Twemoji authors.",
        "",
        "The captions in `labels/` are made from emoji names and a colour word computed from the pixels.",
        f"Emoji data: {pkg.name} {pkg.version}, MIT licence (notice below).",
    ]
    if names_pkg is not None:
        lines.append(f"CLDR emoji names: {names_pkg.name} {names_pkg.version} "
                     "(https://github.com/milesj/emojibase), MIT licence (notice below).")
    for p in (pkg, names_pkg):
        if p is not None and p.license.strip():
            lines += ["", f"## {p.name} {p.version} licence", "", "```", p.license.strip(), "```"]
    (out_dir / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_source(out_dir: Path, pkg: Package, names_pkg: Package | None, report: Report, options: dict) -> None:
    repo, tw_version = _twemoji_source(pkg.readme)
    info = {
        "package": pkg.name, "version": pkg.version, "sha256": pkg.sha256,
        "twemoji": {"repository": repo, "version": tw_version, "license": "CC-BY-4.0", "license_url": CC_BY_URL},
        "names_package": names_pkg.name if names_pkg else None,
        "names_version": names_pkg.version if names_pkg else None,
        "names_sha256": names_pkg.sha256 if names_pkg else None,
        "options": options,
        "images_written": len(report.written),
        "images_skipped": report.num_skipped,
        "skipped_by_reason": {k: len(v) for k, v in report.skipped.items()},
        "names": report.written,  # what --overwrite may remove next time
    }
    (out_dir / "SOURCE.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


# --- conversion ----------------------------------------------------------------------------------

def convert_twemoji(archive: str | Path, out_dir: str | Path, resolution: int = 64, background: str = "white",
                    include_skin_tones: bool = False, include_flags: bool = False,
                    names_archive: str | Path | None = None, overwrite: bool = False,
                    progress: bool = True) -> Report:
    """Convert; raises ArchiveError (one line) for an unusable archive, before touching out_dir."""
    out_dir = Path(out_dir)
    bg = ImageColor.getrgb(background)[:3]
    pkg = read_emoji_package(archive)
    names_pkg, cldr = read_names_package(names_archive) if names_archive else (None, None)
    if cldr is None:
        print(f"warning: no --names_archive: captions use Unicode names (U+2764 is 'heavy black heart'); "
              f"pass {NAMES_PACKAGE}'s tarball for CLDR names ('red heart')")
    report = Report()
    entries = list_entries(pkg.data, include_skin_tones, include_flags, report)
    prepare_out_dir(out_dir, overwrite)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    for entry in tqdm(entries, desc="twemoji", unit="img", disable=not progress, dynamic_ncols=True):
        data = pkg.images.get(entry.image)
        if data is None:
            report.skip("image missing from the archive", entry.stem)
            continue
        try:
            rgba = decode_rgba(data)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            report.skip("unreadable PNG", entry.stem)
            continue
        colour = dominant_colour(np.asarray(rgba))
        to_square_rgb(rgba, bg, resolution).save(out_dir / "images" / f"{entry.stem}.png")
        captions = captions_for(caption_name(entry, cldr), colour)
        (out_dir / "labels" / f"{entry.stem}.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
        report.written.append(entry.stem)
    options = {"resolution": resolution, "background": background, "include_skin_tones": include_skin_tones,
               "include_flags": include_flags}
    write_attribution(out_dir, pkg, names_pkg, resolution, background)
    write_source(out_dir, pkg, names_pkg, report, options)
    foreign = _foreign_files(out_dir, set(report.written))
    if foreign:
        print(f"warning: {len(foreign)} other files in {out_dir}/images or labels were left in place and will be "
              f"read by training: {', '.join(foreign[:MAX_EXAMPLES])}{' ...' if len(foreign) > MAX_EXAMPLES else ''}")
    return report


def fetch_archives(dest: Path) -> tuple[Path, Path]:
    """`npm pack` both pinned packages into dest; one-line SystemExit when npm is missing or fails."""
    npm = shutil.which("npm")
    specs = (f"{PACKAGE}@{PACKAGE_VERSION}", f"{NAMES_PACKAGE}@{NAMES_VERSION}")
    if npm is None:
        raise SystemExit("error: --fetch needs npm, which is not on PATH; install Node.js/npm, or run "
                         f"`npm pack {' '.join(specs)}` elsewhere and pass --archive/--names_archive")
    print(f"npm pack {' '.join(specs)} (about 70 MB) ...")
    try:
        done = subprocess.run([npm, "pack", *specs], cwd=dest, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemExit(f"error: npm pack {' '.join(specs)} failed ({e}); pass --archive instead")
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout or "").splitlines() if ln.strip()]
        why = next((ln for ln in lines if "ERR" in ln and "A complete log" not in ln), lines[-1] if lines else "")
        raise SystemExit(f"error: npm pack {' '.join(specs)} failed (exit {done.returncode}: {why}); "
                         "check the network/registry, or pass --archive")
    paths = (dest / f"{PACKAGE}-{PACKAGE_VERSION}.tgz", dest / f"{NAMES_PACKAGE}-{NAMES_VERSION}.tgz")
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"error: npm pack did not write {p.name} in {dest}; pass --archive instead")
    return paths


def _resolution(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be between 1 and 4096, got {value}")
    return value


def _colour(text: str) -> str:
    try:
        ImageColor.getrgb(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown colour {text!r}; use a name (white, black) or #rrggbb")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=f"Convert the Twemoji art of the npm package {PACKAGE} to images/ + labels/ "
                    "(captions: CLDR name and a colour word computed from the pixels) with a CC-BY 4.0 "
                    "ATTRIBUTION.md. Give --archive (and --names_archive), or --fetch.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--archive", help=f"the tarball of `npm pack {PACKAGE}@VERSION`, "
                                       f"e.g. {PACKAGE}-{PACKAGE_VERSION}.tgz")
    src.add_argument("--fetch", action="store_true",
                     help=f"run `npm pack {PACKAGE}@{PACKAGE_VERSION} {NAMES_PACKAGE}@{NAMES_VERSION}` in a "
                          "temporary folder (needs npm and the npm registry) and convert those")
    parser.add_argument("--names_archive", help=f"the tarball of `npm pack {NAMES_PACKAGE}@VERSION`, for CLDR names "
                                                "('red heart', 'star'); without it the Unicode names "
                                                "('heavy black heart', 'white medium star') are used")
    parser.add_argument("--out", required=True, help="output folder; images/, labels/, ATTRIBUTION.md and "
                                                     "SOURCE.json are written inside")
    parser.add_argument("--resolution", type=_resolution, default=64,
                        help="side of the square output images in px (default 64, the artwork's own size; "
                             "larger values up-sample; training needs a power of 2)")
    parser.add_argument("--background", type=_colour, default="white",
                        help="colour the transparent artwork is composited onto: a name or #rrggbb (default white)")
    parser.add_argument("--include_skin_tones", action="store_true",
                        help="also convert the skin-tone variants (about 1900 more images; default: left out)")
    parser.add_argument("--include_flags", action="store_true", help="also convert the flags (default: left out)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow a non-empty --out: the images and labels a previous run listed in its "
                             "SOURCE.json are removed, other files are kept")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.fetch and args.names_archive:
        parser.error("--fetch downloads the names package itself; leave out --names_archive")
    for flag, path in (("--archive", args.archive), ("--names_archive", args.names_archive)):
        if path is not None and not Path(path).is_file():
            raise SystemExit(f"error: {flag} {path}: no such file; run `npm pack "
                             f"{PACKAGE if flag == '--archive' else NAMES_PACKAGE}@VERSION` or use --fetch")
    with tempfile.TemporaryDirectory(prefix="twemoji-") as tmp:
        archive, names_archive = fetch_archives(Path(tmp)) if args.fetch else (args.archive, args.names_archive)
        try:
            report = convert_twemoji(archive, args.out, args.resolution, args.background, args.include_skin_tones,
                                     args.include_flags, names_archive, args.overwrite, not args.no_progress)
        except ArchiveError as e:
            raise SystemExit(f"error: {e}")
    print(report.summary())
    print(f"Train with: --image_dir {Path(args.out) / 'images'} --label_dir {Path(args.out) / 'labels'}")


if __name__ == "__main__":
    main()
