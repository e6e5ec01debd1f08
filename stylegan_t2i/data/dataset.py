"""`ImageLabelDataset`: image_dir + label_dir pairs as one cached uint8 array, with captions.

    ds = ImageLabelDataset("imgs", "txt", resolution=64)
    img_u8, caption = ds[i]          # uint8 [3, 64, 64], one of sample i's captions
    loader = DataLoader(ds.view(16), batch_size=32, sampler=IndexOrder(len(ds)))

Every random choice (which caption, whether to flip) comes from one `torch.Generator` owned by
the dataset, so a training loop can save and restore it (`state_dict`) and resume bit-exactly.
That holds with `num_workers=0`; worker processes would each draw from a copy of it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from stylegan_t2i.data.cache import load_or_build
from stylegan_t2i.data.scan import DatasetError, scan_pairs

VIEW_CHUNK = 512  # images down-sampled at a time when a view is first built (bounds float memory)


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def area_downsample(images: torch.Tensor, res: int) -> torch.Tensor:
    """images: [N, 3, R, R] uint8 -> [N, 3, res, res] uint8, each pixel the mean of its
    (R/res)^2 block, rounded once: repeated 2x2 means without rounding in between."""
    n, c, r, _ = images.shape
    assert images.dtype == torch.uint8 and images.shape == (n, c, r, r), images.shape
    assert _is_pow2(res) and r % res == 0, (r, res)
    out = torch.empty((n, c, res, res), dtype=torch.uint8)
    for start in range(0, n, VIEW_CHUNK):
        x = images[start:start + VIEW_CHUNK].to(torch.float32)
        out[start:start + VIEW_CHUNK] = F.avg_pool2d(x, r // res).round_().to(torch.uint8)
    return out


class ResolutionView(torch.utils.data.Dataset):
    """The samples of an `ImageLabelDataset` at one resolution; shares its random generator."""

    def __init__(self, dataset: "ImageLabelDataset", images: torch.Tensor):
        assert images.shape[0] == len(dataset), images.shape
        self.dataset = dataset
        self.images = images      # [N, 3, res, res] uint8
        self.resolution = images.shape[-1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, str]:
        return self.dataset._sample(self.images, idx)


class ImageLabelDataset(torch.utils.data.Dataset):
    """Captioned images from `image_dir/NAME.ext` + `label_dir/NAME.txt` (docs/architecture.md, "Data format").

    Attributes: `resolution` (int), `names` (sorted relative stems), `captions` (all captions
    of each sample), `images` (uint8 [N, 3, R, R], CPU, possibly memory-mapped), `report`
    (what was skipped or up-sampled). Raises `DatasetError` (one line) when a directory is
    missing or no pair is usable.
    """

    def __init__(
        self,
        image_dir:  str | Path,          # images, any of scan.IMAGE_EXTENSIONS, sub-folders allowed
        label_dir:  str | Path,          # captions: same relative stem, .txt, one caption per line
        resolution: int,                 # power of 2; every image is cropped and resized to it
        xflip:      bool = False,        # random horizontal flip on each use
        cache_dir:  str | Path | None = None,  # None: cache.default_cache_dir(image_dir)
        seed:       int = 0,             # seeds the caption/flip generator
        verbose:    bool = True,         # print the skip summary and show the cache progress bar
    ):
        if not _is_pow2(resolution):
            raise ValueError(f"resolution must be a power of 2, got {resolution}")
        candidates, report = scan_pairs(image_dir, label_dir)
        decoded = load_or_build(candidates, resolution, Path(image_dir), cache_dir, verbose)
        for name in decoded.unreadable:
            report.add("unreadable_image", name)
        for name in decoded.upsampled:
            report.add("upsampled", name)
        bad = set(decoded.unreadable)
        usable = [c for c in candidates if c.name not in bad]
        report.num_usable = len(usable)
        if verbose:
            print(report.summary())
        if not usable:
            skipped = ", ".join(f"{n} {k}" for k, n in report.counts.items()) or "no files found"
            raise DatasetError(f"no usable image/caption pairs in image_dir {image_dir} "
                               f"and label_dir {label_dir} ({skipped})")
        self.resolution = resolution
        self.names = [c.name for c in usable]
        self.captions = [c.captions for c in usable]
        self.images = torch.from_numpy(decoded.images)
        self.report = report
        self.xflip = xflip
        self._generator = torch.Generator().manual_seed(seed)
        self._views = {resolution: ResolutionView(self, self.images)}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, str]:
        return self._sample(self.images, idx)

    def _sample(self, images: torch.Tensor, idx: int) -> tuple[torch.Tensor, str]:
        """(img_u8 [3, res, res], caption): a caption drawn uniformly from sample idx's, and a
        horizontal flip with probability 1/2 when xflip; both from the shared generator."""
        captions = self.captions[idx]
        caption = captions[int(torch.randint(len(captions), (), generator=self._generator))]
        img_u8 = images[idx]
        if self.xflip and bool(torch.rand((), generator=self._generator) < 0.5):
            return img_u8.flip(-1), caption
        return img_u8.clone(), caption  # a copy: callers may modify it without touching the dataset

    def fingerprint(self) -> dict[str, int | str]:
        """What identifies the data for a resume, saved with the run's configs: the number of
        pairs, a hash of their sorted relative names and the resolution (docs/architecture.md,
        "Checkpoints"). Moving the folders keeps it; adding, removing or renaming a file does not."""
        names = "\n".join(sorted(self.names)).encode("utf-8", "surrogateescape")
        return {"num_images": len(self.names), "names_sha256": hashlib.sha256(names).hexdigest()[:16],
                "resolution": self.resolution}

    def view(self, res: int) -> ResolutionView:
        """The same samples at `res` (a power of 2 <= resolution), area down-sampled once and kept."""
        if not (_is_pow2(res) and res <= self.resolution):
            raise ValueError(f"view resolution must be a power of 2 <= {self.resolution}, got {res}")
        if res not in self._views:
            self._views[res] = ResolutionView(self, area_downsample(self.images, res))
        return self._views[res]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._generator.set_state(state["generator"])
