"""Evaluation metrics: FD/FID, KID, IS, SWD, precision/recall, image-text alignment, features."""
from .alignment import embed_images_and_captions, mean_cosine_alignment, r_precision
from .features import (
                       FeatureExtractor,
                       ModuleExtractor,
                       extract_features,
                       make_feature_extractor,
                       quantize_8bit,
                       resize_antialiased,
)
from .frechet import feature_statistics, frechet_distance, frechet_distance_from_features
from .inception import InceptionV3, load_inception
from .inception_score import inception_score
from .kid import kernel_inception_distance
from .precision_recall import precision_recall
from .swd import SWDResult, sliced_wasserstein_distance

__all__ = [
    "FeatureExtractor", "InceptionV3", "ModuleExtractor", "SWDResult",
    "embed_images_and_captions", "extract_features", "feature_statistics", "frechet_distance",
    "frechet_distance_from_features", "inception_score", "kernel_inception_distance", "load_inception",
    "make_feature_extractor", "mean_cosine_alignment", "precision_recall", "quantize_8bit",
    "r_precision", "resize_antialiased", "sliced_wasserstein_distance",
]
