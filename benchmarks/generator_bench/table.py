"""The default mode: one row per network and resolution, beside the machine's conv ceiling.

A row is G_ema's forward (img/s, the synthesis convs' GFLOP per image from the config, the GFLOP/s
that gives and its share of the dense-conv ceiling) and one training iteration of the real
GanTrainer (img/s, its critic and generator phases) with the row's peak memory; with --nvlabs,
NVlabs' networks at the same size, and the speed ratios.
"""
from __future__ import annotations

import argparse
import gc
from typing import Callable

import torch

from generator_bench.flops import synthesis_conv_flops
from generator_bench.harness import (
    CONFIGS,
    build_trainer,
    fresh_window,
    late_ema_beta,
    random_reals,
    random_step_text,
    time_phases,
    train_config,
    train_phases,
)
from generator_bench.report import markdown
from stylegan_t2i import nvlabs_baseline
from stylegan_t2i.gan.schedule import ProgressiveSchedule, cpu_demo_schedule
from stylegan_t2i.measure import dense_conv_gflops, memory_label, peak_memory_mib, sgemm_gflops
from stylegan_t2i.models.generator import GeneratorConfig

COLUMNS = ("res", "batch", "network", "G fwd img/s", "G conv GFLOP/img", "G GFLOP/s", "% of conv ceiling",
           "train batch", "train step img/s", "critic ms", "G step ms")


def g_forward_cells(fn: Callable[[], torch.Tensor], g_cfg: GeneratorConfig, batch: int, ceiling: float,
                    device: torch.device, args: argparse.Namespace) -> dict[str, float]:
    """The G-forward cells of a row: img/s, the synthesis convs' GFLOP per image, the GFLOP/s
    they run at and its share of `ceiling` (GFLOP/s)."""
    gflop = synthesis_conv_flops(g_cfg) / 1e9
    ms = time_phases([fn], 1, device, args.warmup, args.repeats)[-1]
    img_s = batch / ms * 1e3
    return {"G fwd img/s": img_s, "G conv GFLOP/img": gflop, "G GFLOP/s": gflop * img_s,
            "% of conv ceiling": 100 * gflop * img_s / ceiling}


def train_cells(phases, batch: int, cycle: int, device: torch.device, args: argparse.Namespace) -> dict[str, float]:
    """The training cells: img/s of a whole iteration and ms of each phase, a call being one
    lazy-penalty cycle of `cycle` iterations (--warmup untimed calls, --repeats timed ones)."""
    critic_ms, g_ms, step_ms = time_phases(phases, cycle, device, args.warmup * cycle, args.repeats)
    return {"train batch": batch, "train step img/s": batch / step_ms * 1e3, "critic ms": critic_ms, "G step ms": g_ms}


def measure_ours(res: int, args: argparse.Namespace, device: torch.device, ceiling: float) -> dict:
    """Our row at `res`: G_ema's forward and a training iteration of the real GanTrainer."""
    gc.collect()
    torch.manual_seed(0)
    trainer, phase = build_trainer(res, args.train_batch, args.text_dim, device, args.config, args.gp_interval)
    b = args.batch
    reals = random_reals(args.train_batch, res, device)
    step_text = random_step_text(trainer, args.train_batch, args.text_dim, device)
    z = torch.randn(b, trainer.G.cfg.z_dim, device=device)                      # [B, z_dim]
    text = torch.randn(b, args.text_dim, device=device)                         # [B, text_dim]
    fresh_window(device)

    @torch.no_grad()
    def g_forward():
        return trainer.G_ema(z, text, phase.stage, phase.alpha, noise_mode="const")

    assert g_forward().shape == (b, 3, res, res)
    row = {"res": res, "batch": b, "network": "ours",
           **g_forward_cells(g_forward, trainer.G.cfg, b, ceiling, device, args)}
    row.update(train_cells(train_phases(trainer, phase, reals, step_text), args.train_batch,
                           trainer.cfg.gp_interval, device, args))
    return {**row, "peak": peak_memory_mib(device)}


def measure_nvlabs(networks, res: int, args: argparse.Namespace, device: torch.device, ceiling: float) -> list[dict]:
    """NVlabs' rows at `res`: their G forward fused and unfused; their WGAN-GP step on the unfused row."""
    gc.collect()
    torch.manual_seed(0)
    g_cfg, d_cfg = CONFIGS[args.config](args.text_dim, max_res=res)
    G, D = nvlabs_baseline.build_networks(networks, g_cfg, d_cfg)
    train_cfg = train_config(args.config, args.gp_interval)
    lr = ProgressiveSchedule(cpu_demo_schedule(max_res=res)).cfg.lr     # Ours, as `build_trainer`'s phase.
    step = nvlabs_baseline.WganGpStep(G, D, train_cfg, lr, device)
    b, t = args.batch, args.train_batch
    z = torch.randn(b, g_cfg.z_dim, device=device)
    c = torch.randn(b, args.text_dim, device=device)
    reals = random_reals(t, res, device)
    c_train = torch.randn(t, args.text_dim, device=device)
    beta = late_ema_beta(train_cfg, t)
    rows = []
    for fused in (True, False):
        fresh_window(device)

        @torch.no_grad()
        def g_forward():
            return step.G_ema(z, c, noise_mode="const", fused_modconv=fused)

        assert g_forward().shape == (b, 3, res, res)
        # Their synthesis convs are ours in number and shape (same config), so the same FLOPs.
        rows.append({"res": res, "batch": b, "network": f'NVlabs {"fused" if fused else "unfused"}',
                     **g_forward_cells(g_forward, g_cfg, b, ceiling, device, args)})
        if not fused:   # NVlabs' G trains unfused (float32 in training mode), so its step goes here.
            phases = (lambda: step.critic_phase(reals, c_train), lambda: step.generator_phase(c_train, beta))
            rows[-1].update(train_cells(phases, t, train_cfg.gp_interval, device, args))
        rows[-1]["peak"] = peak_memory_mib(device)
    return rows


def ratio_row(ours: dict, theirs: dict) -> dict:
    """Speed ratios ours / NVlabs for the columns both rows have (ms columns: theirs / ours)."""
    row = {"res": ours["res"], "batch": ours["batch"], "network": f'ours / {theirs["network"]}'}
    for key in ("G fwd img/s", "train step img/s"):
        if key in theirs:
            row[key] = f"{ours[key] / theirs[key]:.2f}x"
    for key in ("critic ms", "G step ms"):
        if key in theirs:
            row[key] = f"{theirs[key] / ours[key]:.2f}x"
    return row


def measure_ceiling(args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(dense 3x3 conv GFLOP/s at the G-forward batch, sgemm GFLOP/s) of `device`."""
    return (dense_conv_gflops(device, args.warmup, args.repeats, batch=args.batch),
            sgemm_gflops(device, args.warmup, args.repeats))


def format_table(rows: list[dict], device: torch.device, repeats: int, warmup: int) -> str:
    """Markdown table of the rows, one per network and resolution."""
    return (f"median of {repeats} timed repeats after {warmup} warm-up calls\n"
            + markdown(rows, COLUMNS + ("peak",), COLUMNS + (memory_label(device),)))


def run_table(args: argparse.Namespace, resolutions: list[int], device: torch.device, networks) -> list[dict]:
    conv, gemm = measure_ceiling(args, device)
    print(f"ceiling: dense 3x3 conv 256->256 at 32 px, batch {args.batch}: {conv:.1f} GFLOP/s; "
          f"sgemm 2048^3: {gemm:.1f} GFLOP/s (float32, median of {args.repeats})")
    # One discarded row first: the process's first-use costs (thread pool, allocator growth)
    # made whichever resolution came first 1.8x slower in the G forward, warm-up calls or not.
    measure_ours(resolutions[0], argparse.Namespace(**{**vars(args), "repeats": 1, "warmup": 1}), device, conv)
    rows = []
    for res in resolutions:
        rows.append(measure_ours(res, args, device, conv))
        if networks is not None:
            fused, unfused = measure_nvlabs(networks, res, args, device, conv)
            rows += [fused, unfused, ratio_row(rows[-1], fused), ratio_row(rows[-1], unfused)]
    print(format_table(rows, device, args.repeats, args.warmup))
    return rows
