"""Text-conditioned progressive StyleGAN2 networks."""
from stylegan_t2i.models.critic import Critic, CriticConfig
from stylegan_t2i.models.generator import Generator, GeneratorConfig
from stylegan_t2i.models.presets import cpu_demo_configs

__all__ = ["Critic", "CriticConfig", "Generator", "GeneratorConfig", "cpu_demo_configs"]
