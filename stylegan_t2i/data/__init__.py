"""Captioned image data: image_dir + label_dir pairs, one uint8 cache, a resumable data order."""
from stylegan_t2i.data.dataset import ImageLabelDataset, ResolutionView, area_downsample
from stylegan_t2i.data.order import IndexOrder
from stylegan_t2i.data.scan import DatasetError, SkipReport

__all__ = ["ImageLabelDataset", "ResolutionView", "IndexOrder", "SkipReport", "DatasetError", "area_downsample"]
