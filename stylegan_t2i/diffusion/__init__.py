"""Text-conditioned DDPM baseline: weightless schedulers (`scheduler`) and the ε-predicting UNet (`unet`)."""
from stylegan_t2i.diffusion.scheduler import (
                                              DDIMScheduler,
                                              DDPMScheduler,
                                              SchedulerConfig,
                                              guided_eps,
                                              img2img_start,
                                              make_betas,
)
from stylegan_t2i.diffusion.unet import UNet, UNetConfig, cpu_demo_unet

__all__ = ["DDIMScheduler", "DDPMScheduler", "SchedulerConfig", "UNet", "UNetConfig", "cpu_demo_unet",
           "guided_eps", "img2img_start", "make_betas"]
