"""NVlabs StyleGAN2-ADA's own networks as a speed baseline for `benchmarks/bench_generator.py --nvlabs PATH`.

PATH is a checkout of NVlabs/stylegan2-ada-pytorch (measured: commit
d72cc7d041b42ec8e806021a205ed9349f87c6a4, 2023-09-22). Its code is under the NVIDIA Source Code
License (non-commercial use only), so nothing of it is copied into this repository: its
`training/networks.py` is imported at run time from PATH, with the `dnnlib` and `torch_utils` of
the same checkout (and `dnnlib` imports `requests`): a finder on `sys.meta_path` resolves those
three top-level names, and only those, in PATH, so nothing else of PATH becomes importable. Its custom ops run their reference paths on
the CPU, and on CUDA wherever their plugins do not build.

`build_networks` makes their Generator and Discriminator at the size of one of our presets;
`WganGpStep` trains them the way `GanTrainer` trains ours, so the two steps differ only where the
methods do (see its docstring).
"""
from __future__ import annotations

import copy
import importlib.abc
import importlib.machinery
import sys
from pathlib import Path
from types import ModuleType

import torch

from stylegan_t2i.gan.losses import critic_loss, generator_loss, gradient_penalty
from stylegan_t2i.gan.trainer import GanTrainConfig
from stylegan_t2i.models.critic import CriticConfig
from stylegan_t2i.models.generator import GeneratorConfig
from stylegan_t2i.training.ema import update_ema

CHECKOUT_PACKAGES = ("training", "dnnlib", "torch_utils")    # Their top-level packages, which import each other.


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds the top-level packages `names` in the folder `root` (their submodules then come from
    the packages' own __path__); every other name is left to the finders after it."""

    def __init__(self, root: Path, names: tuple[str, ...] = CHECKOUT_PACKAGES):
        self.root, self.names = root, names

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(self.root)])


def import_networks(path: str) -> ModuleType:
    """NVlabs' `training.networks` from the checkout at `path`; a one-line SystemExit if it cannot
    be imported (nothing in their tree is patched)."""
    root = Path(path).resolve()
    if not (root / "training" / "networks.py").is_file():
        raise SystemExit(f"bench_generator.py: --nvlabs {path}: no training/networks.py there; pass a checkout "
                         f"of NVlabs/stylegan2-ada-pytorch")
    if not any(isinstance(f, CheckoutFinder) and f.root == root for f in sys.meta_path):
        sys.meta_path.insert(0, CheckoutFinder(root))
    try:
        from training import networks
    except Exception as e:          # Any failure of their tree to import (a missing package, a torch API change).
        first_line = (str(e).splitlines() or [""])[0]
        raise SystemExit(f"bench_generator.py: --nvlabs {path}: importing training.networks failed: "
                         f"{type(e).__name__}: {first_line}") from None
    if Path(networks.__file__).resolve().parent.parent != root:
        raise SystemExit(f"bench_generator.py: --nvlabs {path}: `training` was imported from "
                         f"{Path(networks.__file__).parent}, not from the checkout")
    return networks


def build_networks(
    networks:   ModuleType,             # NVlabs' training.networks (`import_networks`).
    g_cfg:      GeneratorConfig,        # Our G's config: z, w, mapping depth, channels, clamp, resolution.
    d_cfg:      CriticConfig,           # Our D's config: channels, clamp.
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """NVlabs' Generator and Discriminator at our configs' size, in float32 (no fp16 layers).

    The caption becomes NVlabs' conditioning label: c_dim = text_dim, so their mapping embeds a
    text_dim-wide vector as ours embeds the sentence embedding. G is their skip synthesis network
    and D their resnet discriminator (both their defaults); everything else is their default too
    (the D's label mapping, minibatch std over groups of 4)."""
    common = dict(channel_base=g_cfg.channel_base, channel_max=g_cfg.channel_max, conv_clamp=g_cfg.conv_clamp)
    G = networks.Generator(z_dim=g_cfg.z_dim, c_dim=g_cfg.text_dim, w_dim=g_cfg.w_dim, img_resolution=g_cfg.max_res,
                           img_channels=3, mapping_kwargs=dict(num_layers=g_cfg.mapping_layers),
                           synthesis_kwargs=dict(architecture="skip", num_fp16_res=0, **common))
    D = networks.Discriminator(c_dim=d_cfg.text_dim, img_resolution=d_cfg.max_res, img_channels=3,
                               architecture="resnet", num_fp16_res=0, channel_base=d_cfg.channel_base,
                               channel_max=d_cfg.channel_max, conv_clamp=d_cfg.conv_clamp)
    return G, D


class WganGpStep:
    """WGAN-GP training of NVlabs' G and D, step by step as `GanTrainer` does with n_critic = 1.

    critic_phase: fakes from G without grad, D on the reals and on the fakes (two calls, as
    NVlabs' loss makes them), the Wasserstein loss with drift (`losses.critic_loss`), the gradient
    penalty with double backward (`losses.gradient_penalty`) on every step, since NVlabs has no
    lazy WGAN-GP, then Adam. generator_phase: fakes with grad, D, `losses.generator_loss`, Adam,
    then the EMA of G. Unlike ours there is no matching-aware term and no alignment loss: NVlabs'
    conditional D scores one label per image and has no image-text encoder. G runs as NVlabs
    trains it (in training mode float32, which chooses the unfused modulated convolution).
    """

    def __init__(self, G: torch.nn.Module, D: torch.nn.Module, cfg: GanTrainConfig, lr: float, device: torch.device):
        self.G, self.D = G.to(device).train(), D.to(device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.cfg, self.device = cfg, device
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=lr, betas=cfg.betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr, betas=cfg.betas)

    def _z(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, self.G.z_dim, device=self.device)       # [B, z_dim]

    def _score(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.D(img, c).flatten()                                   # [B, 1] -> [B]

    def critic_phase(
        self,
        reals:  torch.Tensor,           # [B, 3, R, R] in [-1, 1].
        c:      torch.Tensor,           # [B, c_dim] their captions' embeddings.
    ) -> None:
        with torch.no_grad():
            fakes = self.G(self._z(len(reals)), c)
        losses = critic_loss(self._score(reals, c), self._score(fakes, c), None, drift=self.cfg.drift)
        gp, _ = gradient_penalty(self._score, reals, fakes, c, torch.rand(len(reals), device=self.device),
                                 weight=self.cfg.gp_weight)
        self.opt_D.zero_grad(set_to_none=True)
        (losses["loss"] + gp).backward()
        self.opt_D.step()

    def generator_phase(
        self,
        c:      torch.Tensor,           # [B, c_dim]
        beta:   float,                  # EMA decay of this step (`ema.ema_beta`).
    ) -> None:
        self.D.requires_grad_(False)    # Gradients through D, not of D's weights, as in our step.
        loss = generator_loss(self._score(self.G(self._z(len(c)), c), c))
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_G.step()
        self.D.requires_grad_(True)
        update_ema(self.G_ema, self.G, beta)
