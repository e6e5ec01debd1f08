"""Captioned image data: image_dir + label_dir pairs, one uint8 cache, resumable sampling."""
from stylegan_t2i.data.dataset import ImageLabelDataset, ResolutionView, area_downsample
from stylegan_t2i.data.sampler import InfiniteSampler
from stylegan_t2i.data.scan import DatasetError, SkipReport

__all__ = ["ImageLabelDataset", "ResolutionView", "InfiniteSampler", "SkipReport", "DatasetError", "area_downsample"]
