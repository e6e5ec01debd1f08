"""Caption tokenizer, Transformer text encoder and its contrastive (CLIP-style) pretraining."""
from .contrastive import ContrastiveModel, clip_loss
from .encoder import TextEncoder, TextEncoderConfig
from .image_encoder import ImageEncoder, ImageEncoderConfig
from .pretrain import (
    PretrainConfig,
    TextEncoderBundle,
    bundle_from_payload,
    load_text_encoder,
    pretrain_text_encoder,
    retrieval_accuracy,
    roc_auc,
    save_text_encoder,
    text_encoder_payload,
)
from .tokenizer import Tokenizer

__all__ = [
    "ContrastiveModel", "ImageEncoder", "ImageEncoderConfig", "PretrainConfig", "TextEncoder",
    "TextEncoderBundle", "TextEncoderConfig", "Tokenizer", "bundle_from_payload", "clip_loss",
    "load_text_encoder", "pretrain_text_encoder", "retrieval_accuracy", "roc_auc",
    "save_text_encoder", "text_encoder_payload",
]
