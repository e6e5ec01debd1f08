"""The benchmark's networks and training iteration, and their timing.

`build_trainer` makes a real GanTrainer on a config's networks, fully grown, with no run dir or
dataset; `train_phases` is the body of `GanTrainer.fit` for n_critic = 1 minus data loading and
text encoding, as its two phases; `time_phases` times them, each synchronised on its own.
"""
from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from typing import Callable, Sequence

import torch

from stylegan_t2i.gan.schedule import Phase, ProgressiveSchedule, cpu_demo_schedule
from stylegan_t2i.gan.trainer import GanTrainConfig, GanTrainer, StepText
from stylegan_t2i.measure import reset_peak_memory, sync
from stylegan_t2i.models.critic import Critic, CriticConfig
from stylegan_t2i.models.generator import Generator
from stylegan_t2i.models.presets import cpu_demo_configs, nvlabs_size_configs
from stylegan_t2i.text.contrastive import ContrastiveModel
from stylegan_t2i.text.pretrain import PretrainConfig, TextEncoderBundle, model_configs
from stylegan_t2i.training.ema import ema_beta

CONFIGS = {"cpu_demo": cpu_demo_configs, "nvlabs": nvlabs_size_configs}
TEXT_DIMS = {"cpu_demo": PretrainConfig().embed_dim, "nvlabs": 256}


def train_config(config: str, gp_interval: int | None = None) -> GanTrainConfig:
    """The trainer's config for a network config: nvlabs runs in float32, as NVlabs does.
    `gp_interval` overrides the lazy penalty's interval; 1 pays it on every step, as NVlabs' step."""
    cfg = GanTrainConfig(amp=config != "nvlabs")
    return cfg if gp_interval is None else dataclasses.replace(cfg, gp_interval=gp_interval)


def check_train_batch(d_cfg: CriticConfig, batch: int) -> None:
    """The critic's minibatch-std groups must tile the training batch."""
    group = min(d_cfg.mbstd_group_size, batch)
    if batch % group:
        raise SystemExit(f"bench_generator.py: training batch {batch} must be divisible by the critic's "
                         f"minibatch-std group size {group}; use a multiple of {d_cfg.mbstd_group_size}")


def build_trainer(
    res:        int,                # Final resolution: the networks are built fully grown to it.
    batch:      int,                # Minibatch of every training step.
    text_dim:   int,                # Width of the sentence embedding.
    device:     torch.device,
    config:     str = "cpu_demo",   # A key of CONFIGS.
    gp_interval: int | None = None, # Overrides GanTrainConfig.gp_interval (see train_config).
) -> tuple[GanTrainer, Phase]:
    """A GanTrainer on the config's networks with no run dir or dataset (the benchmark feeds reals
    and embeddings itself) and an untrained demo-size contrastive model (the alignment loss runs
    its image tower; no tokenizer is needed), and the final-stage, alpha = 1 phase."""
    g_cfg, d_cfg = CONFIGS[config](text_dim, max_res=res)
    check_train_batch(d_cfg, batch)
    schedule = ProgressiveSchedule(cpu_demo_schedule(max_res=res))
    text_cfg, image_cfg = model_configs(PretrainConfig(), vocab_size=64)
    bundle = TextEncoderBundle(None, ContrastiveModel(text_cfg, image_cfg).to(device), text_cfg, image_cfg)
    trainer = GanTrainer(Generator(g_cfg), Critic(d_cfg), text_bundle=bundle, dataset=None, order=(),
                         schedule=schedule, cfg=train_config(config, gp_interval), run_dir=None, device=device,
                         sample_prompts=[], configs={}, progress=False)
    phase = Phase(stage=g_cfg.num_stages - 1, alpha=1.0, res=res, batch=batch, lr=schedule.cfg.lr)
    return trainer, phase


def random_step_text(trainer: GanTrainer, batch: int, text_dim: int, device: torch.device) -> StepText:
    """Random sentence embeddings [B, text_dim], unit contrastive ones and k candidate negatives."""
    k = trainer.cfg.negative_candidates
    unit = torch.randn(batch, trainer.text.image_cfg.embed_dim, device=device)
    return StepText(text=torch.randn(batch, text_dim, device=device), unit=torch.nn.functional.normalize(unit, dim=1),
                    wrong=torch.randn(batch, k, text_dim, device=device),
                    wrong_valid=torch.ones(batch, k, dtype=torch.bool, device=device))


def random_reals(batch: int, res: int, device: torch.device) -> torch.Tensor:
    """A fixed batch of 'real' images [T, 3, R, R] in [-1, 1] (the step's cost does not depend on them)."""
    return torch.rand(batch, 3, res, res, device=device) * 2 - 1


def train_phases(
    trainer:    GanTrainer,
    phase:      Phase,
    reals:      torch.Tensor,       # [T, 3, R, R] in [-1, 1].
    step_text:  StepText,           # The batch's captions and hard negatives, embedded.
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The body of `GanTrainer.fit` for n_critic = 1, minus data loading and text encoding, as its
    two phases: (critic step, generator step + EMA update)."""
    share = trainer.dist.share(phase.batch)     # The whole batch in one process.

    def critic():
        trainer.critic_step(phase, share, reals, step_text, trainer.regularize_now(0))
        trainer.nimg += phase.batch

    def generator():
        trainer.generator_step(phase, share, step_text)
        trainer.update_ema(phase.batch)
        trainer.step += 1
    return critic, generator


def time_phases(
    phases:     Sequence[Callable[[], None]],   # One iteration, in order.
    cycle:      int,                # Iterations per timed call (a training call: one lazy-penalty cycle).
    device:     torch.device,
    warmup:     int,                # Untimed iterations first.
    repeats:    int,                # Timed calls; >= 1.
) -> list[float]:
    """Median ms per iteration of each phase, then of the whole iteration: `repeats` timed calls
    of `cycle` iterations after `warmup` untimed iterations, each phase synchronised and timed on
    its own inside the same calls. Any `cycle` consecutive training iterations hold exactly one
    penalty step (`GanTrainer.regularize_now`), so every call has the same mix."""
    def run(iterations: int) -> list[float]:
        spent = [0.0] * len(phases)
        for _ in range(iterations):
            for i, fn in enumerate(phases):
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                spent[i] += time.perf_counter() - start
        return spent
    run(warmup)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        spent = run(cycle)
        samples.append([s * 1e3 / cycle for s in spent] + [(time.perf_counter() - start) * 1e3 / cycle])
    return [statistics.median(column) for column in zip(*samples)]


def late_ema_beta(cfg: GanTrainConfig, batch: int) -> float:
    """The EMA decay of one step late in training (past the ramp-up), for NVlabs' EMA update."""
    return ema_beta(batch, 10 ** 7, cfg.ema_kimg, cfg.ema_rampup)


def fresh_window(device: torch.device) -> None:
    """Free the previous measurement's tensors, then open a new peak-memory window."""
    gc.collect()
    reset_peak_memory(device)
