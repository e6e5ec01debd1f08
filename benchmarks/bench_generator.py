"""Generator and training-step throughput of the project's networks, per resolution, and against
NVlabs StyleGAN2-ADA's own networks at the same size.

--config picks the G/D pair, built fully grown (final stage, alpha = 1) for each resolution R:
  cpu_demo : `models.presets.cpu_demo_configs(text_dim, max_res=R)` (the default; text_dim 128).
  nvlabs   : `models.presets.nvlabs_size_configs(text_dim, max_res=R)`: z/w/text 256, 2 mapping
             layers, channels min(8192 // res, 256), no conv clamp, skip G and D, float32 on
             every device (GanTrainConfig.amp off); text_dim 256.

Each table row is one network at one resolution:
  G fwd img/s      : B / time of one G_ema forward without grad, B = --batch (random z and random
                     text embeddings [B, text_dim]; noise_mode='const' and float32, as generate.py).
  G GFLOP/img      : that forward's convolutions and matrix products per image, counted once by
                     torch.utils.flop_counter.FlopCounterMode (element-wise work not counted).
  G GFLOP/s, % of conv ceiling : GFLOP/img x G fwd img/s, and its share of the machine's dense
                     3x3-conv rate (256 -> 256 channels at 32 px, batch --batch, float32; printed
                     above the table with the sgemm rate, both medians of --repeats calls).
  train step img/s : T / time of one GanTrainer iteration with n_critic = 1, T = --train_batch
                     (default 16 for nvlabs, as the issue's table, and --batch for cpu_demo), by
                     calling the real `GanTrainer.critic_step` (one D trunk pass on reals and
                     fakes, the reals scored against their captions and GanTrainConfig.negatives hard
                     negatives, WGAN-GP with double backward on every GanTrainConfig.gp_interval-th
                     step, Adam step), `generator_step` (G forward, D on fakes, the alignment loss
                     through the demo-size image encoder, Adam step) and `update_ema` on a
                     GanTrainer without a run dir. The reals are a fixed in-memory batch in
                     [-1, 1] and the sentence embeddings are random, so data loading, the text
                     encoder and the negative draw (which `fit` also runs each iteration) are not
                     timed. On CUDA the cpu_demo steps use the trainer's bfloat16 autocast.
  critic ms, G step ms : the two phases of that iteration, each timed on its own (synchronised)
                     inside the same calls: critic_step; generator_step + update_ema.
  peak MiB         : CPU: peak RSS of the process (VmHWM, reset per row, so it includes the
                     interpreter and libraries); CUDA: torch.cuda.max_memory_allocated. Over all
                     the measurements of the row.

--nvlabs PATH adds, per resolution, NVlabs' Generator and Discriminator at the same size
(`stylegan_t2i/nvlabs_baseline.py`: imported at run time from a checkout of NVlabs/stylegan2-ada-pytorch,
measured with commit d72cc7d041b42ec8e806021a205ed9349f87c6a4, NVIDIA Source Code License, never
copied here): their G forward with fused_modconv=True and =False, and a WGAN-GP step written like
ours (`nvlabs_baseline.WganGpStep`: no lazy penalty, no matching term, no alignment loss), which
goes on the unfused row because NVlabs' G chooses the unfused path in training. Then two rows of
speed ratios ours / NVlabs (> 1: ours is faster; for the ms columns, NVlabs' ms / ours).

Times are medians of --repeats timed calls after --warmup untimed ones; a timed training call
runs gp_interval iterations (one lazy-penalty cycle) and is divided by that count.

--scaling: time per image and peak memory of the G forward and of the training step (each with
its own peak window) for the nvlabs config against resolution (16-128 px at batch 16) and batch
(8-64 at 32 px); --plot PNG draws it (`stylegan_t2i.plot.scaling_plot`). --profile: torch.profiler
over one training cycle (after one untimed) at each resolution, and the top 5 ops by self CPU time.

    python benchmarks/bench_generator.py [--config cpu_demo|nvlabs] [--resolutions 32,64] \\
        [--batch 32] [--train_batch T] [--nvlabs PATH] [--repeats 5] [--warmup 2] \\
        [--device auto] [--threads N] [--text_dim D] [--scaling [--plot PNG] | --profile]

(after `pip install -e .` or `pip install .`)
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Callable, Sequence

import torch

from stylegan_t2i import nvlabs_baseline
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.gan.schedule import Phase, ProgressiveSchedule, cpu_demo_schedule
from stylegan_t2i.gan.trainer import GanTrainConfig, GanTrainer, StepText
from stylegan_t2i.measure import (
    dense_conv_gflops,
    forward_flops,
    machine_description,
    memory_label,
    peak_memory_mib,
    reset_peak_memory,
    sgemm_gflops,
    sync,
)
from stylegan_t2i.models.critic import Critic, CriticConfig
from stylegan_t2i.models.generator import Generator
from stylegan_t2i.models.presets import cpu_demo_configs, nvlabs_size_configs
from stylegan_t2i.text.contrastive import ContrastiveModel
from stylegan_t2i.text.pretrain import PretrainConfig, TextEncoderBundle, model_configs
from stylegan_t2i.training.ema import ema_beta

CONFIGS = {"cpu_demo": cpu_demo_configs, "nvlabs": nvlabs_size_configs}
TRAIN_CONFIGS = {"cpu_demo": GanTrainConfig(), "nvlabs": GanTrainConfig(amp=False)}  # nvlabs: float32, as NVlabs runs.
TEXT_DIMS = {"cpu_demo": PretrainConfig().embed_dim, "nvlabs": 256}
COLUMNS = ("res", "batch", "network", "G fwd img/s", "G GFLOP/img", "G GFLOP/s", "% of conv ceiling",
           "train batch", "train step img/s", "critic ms", "G step ms")
SCALING_BY_RES = ((16, 16), (32, 16), (64, 16), (128, 16))      # (res, batch) of --scaling
SCALING_BY_BATCH = ((32, 8), (32, 16), (32, 32), (32, 64))
SCALING_COLUMNS = ("sweep", "res", "batch", "G fwd ms/img", "G fwd peak MiB", "train step ms/img", "train peak MiB")


def parse_resolutions(text: str) -> list[int]:
    """'32,64' -> [32, 64]; each a power of two >= 4."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"bench_generator.py: --resolutions {text!r} is not a comma-separated list of integers") from None
    bad = [r for r in values if r < 4 or r & (r - 1)]
    if not values or bad:
        raise SystemExit(f"bench_generator.py: --resolutions must be powers of two >= 4, got {text!r}")
    return values


# ---------------------------------------------------------------------------- our networks

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
                         schedule=schedule, cfg=TRAIN_CONFIGS[config], run_dir=None, device=device,
                         sample_prompts=[], configs={}, progress=False)
    phase = Phase(stage=g_cfg.num_stages - 1, alpha=1.0, res=res, batch=batch, lr=schedule.cfg.lr)
    return trainer, phase


def random_step_text(trainer: GanTrainer, batch: int, text_dim: int, device: torch.device) -> StepText:
    """Random sentence embeddings [B, text_dim], unit contrastive ones and K hard negatives."""
    k = trainer.cfg.negatives
    unit = torch.randn(batch, trainer.text.image_cfg.embed_dim, device=device)
    return StepText(text=torch.randn(batch, text_dim, device=device), unit=torch.nn.functional.normalize(unit, dim=1),
                    wrong=torch.randn(batch, k, text_dim, device=device),
                    wrong_valid=torch.ones(batch, k, dtype=torch.bool, device=device))


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


# ---------------------------------------------------------------------------- timing

def time_phases(
    phases:     Sequence[Callable[[], None]],   # One training iteration, in order.
    cycle:      int,                # Iterations per timed call (one lazy-penalty cycle).
    device:     torch.device,
    warmup:     int,
    repeats:    int,
) -> list[float]:
    """Median ms per iteration of each phase, then of the whole iteration: `repeats` timed calls
    of `cycle` iterations after `warmup` untimed ones (as `measure.median_ms`), each phase
    synchronised and timed on its own inside the same calls."""
    def call() -> list[float]:
        spent = [0.0] * len(phases)
        for _ in range(cycle):
            for i, fn in enumerate(phases):
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                spent[i] += time.perf_counter() - start
        return spent
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        spent = call()
        samples.append([s * 1e3 / cycle for s in spent] + [(time.perf_counter() - start) * 1e3 / cycle])
    return [statistics.median(column) for column in zip(*samples)]


def g_forward_cells(fn: Callable[[], torch.Tensor], batch: int, ceiling: float, device: torch.device,
                    args: argparse.Namespace) -> dict[str, float]:
    """The G-forward cells of a row: img/s, counted GFLOP per image, achieved GFLOP/s and its share
    of `ceiling` (GFLOP/s)."""
    gflop = forward_flops(fn) / batch / 1e9
    ms = time_phases([fn], 1, device, args.warmup, args.repeats)[-1]
    img_s = batch / ms * 1e3
    return {"G fwd img/s": img_s, "G GFLOP/img": gflop, "G GFLOP/s": gflop * img_s,
            "% of conv ceiling": 100 * gflop * img_s / ceiling}


def train_cells(phases, batch: int, cycle: int, device: torch.device, args: argparse.Namespace) -> dict[str, float]:
    critic_ms, g_ms, step_ms = time_phases(phases, cycle, device, args.warmup, args.repeats)
    return {"train batch": batch, "train step img/s": batch / step_ms * 1e3, "critic ms": critic_ms, "G step ms": g_ms}


def late_ema_beta(cfg: GanTrainConfig, batch: int) -> float:
    """The EMA decay of one step late in training (past the ramp-up), for NVlabs' EMA update."""
    return ema_beta(batch, 10 ** 7, cfg.ema_kimg, cfg.ema_rampup)


def fresh_window(device: torch.device) -> None:
    """Free the previous row's networks, then open a new peak-memory window."""
    gc.collect()
    reset_peak_memory(device)


def measure_ours(res: int, args: argparse.Namespace, device: torch.device, ceiling: float) -> dict:
    """Our row at `res`: G_ema's forward and a training iteration of the real GanTrainer."""
    gc.collect()
    torch.manual_seed(0)
    trainer, phase = build_trainer(res, args.train_batch, args.text_dim, device, args.config)
    b = args.batch
    reals = torch.rand(args.train_batch, 3, res, res, device=device) * 2 - 1     # [T, 3, R, R] in [-1, 1]
    step_text = random_step_text(trainer, args.train_batch, args.text_dim, device)
    z = torch.randn(b, trainer.G.cfg.z_dim, device=device)                      # [B, z_dim]
    text = torch.randn(b, args.text_dim, device=device)                         # [B, text_dim]
    fresh_window(device)

    @torch.no_grad()
    def g_forward():
        return trainer.G_ema(z, text, phase.stage, phase.alpha, noise_mode="const")

    assert g_forward().shape == (b, 3, res, res)
    row = {"res": res, "batch": b, "network": "ours", **g_forward_cells(g_forward, b, ceiling, device, args)}
    # Each timed call covers one penalty cycle, so every repeat holds the same mix of steps with
    # and without it.
    row.update(train_cells(train_phases(trainer, phase, reals, step_text), args.train_batch,
                           trainer.cfg.gp_interval, device, args))
    return {**row, "peak": peak_memory_mib(device)}


def measure_nvlabs(networks, res: int, args: argparse.Namespace, device: torch.device, ceiling: float) -> list[dict]:
    """NVlabs' rows at `res`: their G forward fused and unfused; their WGAN-GP step on the unfused row."""
    gc.collect()
    torch.manual_seed(0)
    g_cfg, d_cfg = CONFIGS[args.config](args.text_dim, max_res=res)
    G, D = nvlabs_baseline.build_networks(networks, g_cfg, d_cfg)
    train_cfg = TRAIN_CONFIGS[args.config]
    lr = ProgressiveSchedule(cpu_demo_schedule(max_res=res)).cfg.lr     # Ours, as `build_trainer`'s phase.
    step = nvlabs_baseline.WganGpStep(G, D, train_cfg, lr, device)
    b, t = args.batch, args.train_batch
    z = torch.randn(b, g_cfg.z_dim, device=device)
    c = torch.randn(b, args.text_dim, device=device)
    reals = torch.rand(t, 3, res, res, device=device) * 2 - 1
    c_train = torch.randn(t, args.text_dim, device=device)
    beta = late_ema_beta(train_cfg, t)
    rows = []
    for fused in (True, False):
        fresh_window(device)

        @torch.no_grad()
        def g_forward():
            return step.G_ema(z, c, noise_mode="const", fused_modconv=fused)

        assert g_forward().shape == (b, 3, res, res)
        rows.append({"res": res, "batch": b, "network": f'NVlabs {"fused" if fused else "unfused"}',
                     **g_forward_cells(g_forward, b, ceiling, device, args)})
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


# ---------------------------------------------------------------------------- the table

def measure_ceiling(args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(dense 3x3 conv GFLOP/s at the G-forward batch, sgemm GFLOP/s) of `device`."""
    return (dense_conv_gflops(device, args.warmup, args.repeats, batch=args.batch),
            sgemm_gflops(device, args.warmup, args.repeats))


def _cell(value) -> str:
    if isinstance(value, (str, int)):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def markdown(rows: Sequence[dict], columns: Sequence[str], head: Sequence[str] | None = None) -> str:
    """A markdown table of `columns` of the rows; a row without a column shows '-'."""
    head = list(head or columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    lines += ["| " + " | ".join(_cell(r[c]) if c in r else "-" for c in columns) + " |" for r in rows]
    return "\n".join(lines)


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


# ---------------------------------------------------------------------------- --scaling, --profile

def measure_scaling_point(res: int, batch: int, args: argparse.Namespace, device: torch.device) -> dict:
    """ms per image and peak memory of G_ema's forward and, in a window of its own, of a training
    iteration, both at batch `batch`."""
    gc.collect()
    torch.manual_seed(0)
    trainer, phase = build_trainer(res, batch, args.text_dim, device, args.config)
    reals = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    step_text = random_step_text(trainer, batch, args.text_dim, device)
    z = torch.randn(batch, trainer.G.cfg.z_dim, device=device)

    @torch.no_grad()
    def g_forward():
        return trainer.G_ema(z, step_text.text, phase.stage, phase.alpha, noise_mode="const")

    fresh_window(device)
    g_ms = time_phases([g_forward], 1, device, args.warmup, args.repeats)[-1]
    row = {"res": res, "batch": batch, "G fwd ms/img": g_ms / batch, "G fwd peak MiB": peak_memory_mib(device)}
    fresh_window(device)
    step_ms = time_phases(train_phases(trainer, phase, reals, step_text), trainer.cfg.gp_interval, device,
                          args.warmup, args.repeats)[-1]
    return {**row, "train step ms/img": step_ms / batch, "train peak MiB": peak_memory_mib(device)}


def run_scaling(args: argparse.Namespace, device: torch.device) -> list[dict]:
    points = {}     # (res, batch) -> row: the point both sweeps share is measured once.
    rows = []
    for sweep, grid in (("res", SCALING_BY_RES), ("batch", SCALING_BY_BATCH)):
        for res, batch in grid:
            if (res, batch) not in points:
                points[res, batch] = measure_scaling_point(res, batch, args, device)
            rows.append({"sweep": sweep, **points[res, batch]})
    print(f"{args.config} networks; median of {args.repeats} timed repeats after {args.warmup} warm-up calls; "
          f"a training call is {TRAIN_CONFIGS[args.config].gp_interval} iterations")
    print(markdown(rows, SCALING_COLUMNS))
    if args.plot:
        from stylegan_t2i.plot import save_figure, scaling_plot  # matplotlib only when drawing.
        fig = scaling_plot(by_res=[r for r in rows if r["sweep"] == "res"],
                           by_batch=[r for r in rows if r["sweep"] == "batch"],
                           time_keys=("G fwd ms/img", "train step ms/img"), memory_key="train peak MiB",
                           title=f"{args.config} networks: {machine_description(device)}")
        print(f"plot: {save_figure(fig, args.plot)}")
    return rows


def top_ops(phases: Sequence[Callable[[], None]], cycle: int, device: torch.device, count: int = 5) -> list[dict]:
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
    cycle = TRAIN_CONFIGS[args.config].gp_interval
    for res in resolutions:
        torch.manual_seed(0)
        trainer, phase = build_trainer(res, args.train_batch, args.text_dim, device, args.config)
        reals = torch.rand(args.train_batch, 3, res, res, device=device) * 2 - 1
        step_text = random_step_text(trainer, args.train_batch, args.text_dim, device)
        rows += [{"res": res, "network": "ours", **r}
                 for r in top_ops(train_phases(trainer, phase, reals, step_text), cycle, device)]
        if networks is not None:
            g_cfg, d_cfg = CONFIGS[args.config](args.text_dim, max_res=res)
            step = nvlabs_baseline.WganGpStep(*nvlabs_baseline.build_networks(networks, g_cfg, d_cfg),
                                              TRAIN_CONFIGS[args.config], phase.lr, device)
            c, beta = step_text.text, late_ema_beta(TRAIN_CONFIGS[args.config], args.train_batch)
            rows += [{"res": res, "network": "NVlabs", **r}
                     for r in top_ops((lambda: step.critic_phase(reals, c), lambda: step.generator_phase(c, beta)),
                                      cycle, device)]
    print(f"{args.config} networks, training batch {args.train_batch}: top 5 ops by self CPU time over "
          f"{cycle} training iterations (per iteration)")
    print(markdown(rows, ("res", "network", "op", "self CPU ms", "% of self CPU", "calls")))
    return rows


# ---------------------------------------------------------------------------- entry point

def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None,
                        help="network sizes: cpu_demo or nvlabs (default cpu_demo; nvlabs with --scaling)")
    parser.add_argument("--resolutions", default="32,64",
                        help="comma-separated final resolutions, powers of two >= 4 (default 32,64)")
    parser.add_argument("--batch", type=int, default=32, help="images per G forward (default 32)")
    parser.add_argument("--train_batch", type=int, default=None,
                        help="images per training step, a multiple of 4 above 4 (default 16 for nvlabs, "
                             "--batch for cpu_demo)")
    parser.add_argument("--nvlabs", metavar="PATH", default=None,
                        help="a checkout of NVlabs/stylegan2-ada-pytorch: add its networks to the table and --profile")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per cell; the median is shown (default 5; 3 with --scaling)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls before timing each cell (default 2; 1 with --scaling)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch; 0 = torch's choice, as in training (default 0)")
    parser.add_argument("--text_dim", type=int, default=None,
                        help='width of the random sentence embeddings, i.e. the text encoder\'s embed_dim '
                             f'(default {TEXT_DIMS["cpu_demo"]} for cpu_demo, the pretraining default; '
                             f'{TEXT_DIMS["nvlabs"]} for nvlabs)')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--scaling", action="store_true",
                      help="time per image and peak memory against resolution and batch instead of the table")
    mode.add_argument("--profile", action="store_true",
                      help="the top 5 ops by self CPU time of the training step instead of the table")
    parser.add_argument("--plot", metavar="PNG", default=None, help="with --scaling: draw it to this PNG")
    args = parser.parse_args(argv)
    args.config = args.config or ("nvlabs" if args.scaling else "cpu_demo")
    args.text_dim = args.text_dim or TEXT_DIMS[args.config]
    args.train_batch = args.train_batch or (16 if args.config == "nvlabs" else args.batch)
    args.repeats = args.repeats if args.repeats is not None else (3 if args.scaling else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.scaling else 2)
    if min(args.batch, args.train_batch, args.repeats, args.text_dim) < 1 or args.warmup < 0 or args.threads < 0:
        raise SystemExit("bench_generator.py: --batch, --train_batch, --repeats and --text_dim must be >= 1, "
                         "--warmup and --threads >= 0")
    if args.plot and not args.scaling:
        raise SystemExit("bench_generator.py: --plot draws the --scaling table; add --scaling")
    if not args.scaling:    # --scaling's batches are fixed.
        check_train_batch(CONFIGS[args.config](args.text_dim)[1], args.train_batch)
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    resolutions = parse_resolutions(args.resolutions)
    device = resolve_device(args.device)
    # Before any measurement, so a bad checkout fails in one line and at once.
    networks = nvlabs_baseline.import_networks(args.nvlabs) if args.nvlabs else None
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine_description(device)}")
    if args.scaling:    # Its resolutions and batches are its own.
        print(f"config: {args.config}, text_dim {args.text_dim}")
        return run_scaling(args, device)
    print(f"config: {args.config}, text_dim {args.text_dim}; G forward batch {args.batch}, "
          f"training batch {args.train_batch}")
    if args.profile:
        return run_profile(args, resolutions, device, networks)
    return run_table(args, resolutions, device, networks)


if __name__ == "__main__":
    main()
