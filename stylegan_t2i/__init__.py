"""stylegan_t2i: text-to-image StyleGAN with a DDPM baseline. The Python API is `TextToImage`
(stylegan_t2i/pipeline.py); docs/architecture.md maps the rest."""
from stylegan_t2i.pipeline import TextToImage, TextToImageOutput

__all__ = ["TextToImage", "TextToImageOutput"]
