"""The text-conditioned progressive GAN's training: its trainer and config (`trainer`), losses
(`losses`), progressive schedule (`schedule`) and hard-negative captions (`negatives`). The
networks are `stylegan_t2i.models`; the run loop it shares with the DDPM is `stylegan_t2i.training`."""
