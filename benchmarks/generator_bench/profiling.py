"""--profile: where the training step's time goes, from torch.profiler.

Per resolution, one lazy-penalty cycle of training iterations (after one untimed cycle) under
the profiler, and the ops with the most self CPU time (time in the op itself, not in the ops it
calls), per iteration; with --nvlabs, the same for NVlabs' WGAN-GP step.
"""
from __future__ import annotations

import argparse
from typing import Callable, Sequence

import torch

from generator_bench.harness import (
    CONFIGS,
    build_trainer,
    late_ema_beta,
    random_reals,
    random_step_text,
    train_config,
    train_phases,
)
from generator_bench.report import markdown
from stylegan_t2i import nvlabs_baseline
from stylegan_t2i.measure import sync

TOP = 5
COLUMNS = ("res", "network", "op", "self CPU ms", "% of self CPU", "calls")


def top_ops(phases: Sequence[Callable[[], None]], cycle: int, device: torch.device, count: int = TOP) -> list[dict]:
    """The `count` ops with the most self CPU time over one training cycle (after an untimed one)."""
    def run_cycle():
        for _ in range(cycle):
            for fn in phases:
                fn()
    run_cycle()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        run_cycle()
        sync(device)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:count]
    return [{"op": e.key, "self CPU ms": e.self_cpu_time_total / 1e3 / cycle, "calls": e.count // cycle,
             "% of self CPU": 100 * e.self_cpu_time_total / total} for e in top]


def run_profile(args: argparse.Namespace, resolutions: list[int], device: torch.device, networks) -> list[dict]:
    rows = []
    train_cfg = train_config(args.config, args.gp_interval)
    cycle = train_cfg.gp_interval
    for res in resolutions:
        torch.manual_seed(0)
        trainer, phase = build_trainer(res, args.train_batch, args.text_dim, device, args.config, args.gp_interval)
        reals = random_reals(args.train_batch, res, device)
        step_text = random_step_text(trainer, args.train_batch, args.text_dim, device)
        rows += [{"res": res, "network": "ours", **r}
                 for r in top_ops(train_phases(trainer, phase, reals, step_text), cycle, device)]
        if networks is not None:
            g_cfg, d_cfg = CONFIGS[args.config](args.text_dim, max_res=res)
            step = nvlabs_baseline.WganGpStep(*nvlabs_baseline.build_networks(networks, g_cfg, d_cfg),
                                              train_cfg, phase.lr, device)
            c, beta = step_text.text, late_ema_beta(train_cfg, args.train_batch)
            rows += [{"res": res, "network": "NVlabs", **r}
                     for r in top_ops((lambda: step.critic_phase(reals, c), lambda: step.generator_phase(c, beta)),
                                      cycle, device)]
    print(f"{args.config} networks, training batch {args.train_batch}: top {TOP} ops by self CPU time over "
          f"{cycle} training iterations (per iteration)")
    print(markdown(rows, COLUMNS))
    return rows
