"""Generator and training-step throughput of the project's networks, per resolution, and against
NVlabs StyleGAN2-ADA's own networks at the same size. The modes live in benchmarks/generator_bench/.

--config picks the G/D pair, built fully grown (final stage, alpha = 1) for each resolution R:
  cpu_demo : `models.presets.cpu_demo_configs(text_dim, max_res=R)` (the table's default; text_dim 128).
  nvlabs   : `models.presets.nvlabs_size_configs(text_dim, max_res=R)`: z/w/text 256, 2 mapping
             layers, channels min(8192 // res, 256), no conv clamp, skip G and D, float32 on
             every device (GanTrainConfig.amp off); text_dim 256 (the default of --scaling and --profile).

The table (generator_bench/table.py), one row per network and resolution:
  G fwd img/s      : B / time of one G_ema forward without grad, B = --batch (random z and random
                     text embeddings [B, text_dim]; noise_mode='const' and float32, as generate.py).
  G conv GFLOP/img : the synthesis convolutions' work per image, from the config
                     (generator_bench/flops.py: the up convs as the stride-2 transposed convs they are).
  G GFLOP/s, % of conv ceiling : GFLOP/img x G fwd img/s, and its share of the machine's dense
                     3x3-conv rate (256 -> 256 channels at 32 px, batch --batch, float32; printed
                     above the table with the sgemm rate, both medians of --repeats calls).
  train step img/s : T / time of one GanTrainer iteration with n_critic = 1, T = --train_batch
                     (default 16 for nvlabs, as issue 14's table, and --batch for cpu_demo), by
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
Times are medians of --repeats timed calls after --warmup untimed ones; a timed training call
runs gp_interval iterations (one lazy-penalty cycle) and is divided by that count; --gp_interval 1
times our step with the penalty on every step, the same maths as NVlabs' WGAN-GP step.

--nvlabs PATH adds, per resolution, NVlabs' Generator and Discriminator at the same size
(`stylegan_t2i/nvlabs_baseline.py`: imported at run time from a checkout of NVlabs/stylegan2-ada-pytorch,
measured with commit d72cc7d041b42ec8e806021a205ed9349f87c6a4, NVIDIA Source Code License, never
copied here): their G forward with fused_modconv=True and =False, and a WGAN-GP step written like
ours (`nvlabs_baseline.WganGpStep`: no lazy penalty, no matching term, no alignment loss), which
goes on the unfused row because NVlabs' G chooses the unfused path in training. Then two rows of
speed ratios ours / NVlabs (> 1: ours is faster; for the ms columns, NVlabs' ms / ours).

--scaling (generator_bench/scaling.py): ms per image and peak memory of the G forward and the
training step over a grid of resolutions (--sweep_res, at one batch) and batches (--sweep_batch,
at one resolution), one new process per cell; cells estimated over --max_cell_s are skipped;
--plot PNG draws it (`stylegan_t2i.plot.scaling_plot`). --profile (generator_bench/profiling.py):
torch.profiler over one training cycle (after one untimed) at each --res, and the top 5 ops by
self CPU time. Every mode prints a markdown table; --json PATH also writes its rows.

    python benchmarks/bench_generator.py [--config cpu_demo|nvlabs] [--res 32,64] [--batch 32] \\
        [--train_batch T] [--nvlabs PATH] [--repeats 5] [--warmup 2] [--device auto] [--threads N] \\
        [--text_dim D] [--gp_interval N] [--json PATH] [--profile | --scaling [--sweep_res 16,32,64,128@16] \\
        [--sweep_batch 8,16,32,64@32] [--max_cell_s 120] [--plot PNG]]

(after `pip install -e .` or `pip install .`)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from generator_bench.harness import CONFIGS, TEXT_DIMS, check_train_batch
from generator_bench.profiling import run_profile
from generator_bench.report import write_json
from generator_bench.scaling import grid, run_scaling
from generator_bench.table import run_table
from stylegan_t2i import nvlabs_baseline
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.gan.trainer import GanTrainConfig
from stylegan_t2i.measure import machine_description


def parse_resolutions(text: str) -> list[int]:
    """'32,64' -> [32, 64]; each a power of two >= 4."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"bench_generator.py: --res {text!r} is not a comma-separated list of integers") from None
    bad = [r for r in values if r < 4 or r & (r - 1)]
    if not values or bad:
        raise SystemExit(f"bench_generator.py: --res must be powers of two >= 4, got {text!r}")
    return values


def _check_output(path: str | None, flag: str) -> None:
    """An output file's folder must exist, so that a long run does not fail at its end."""
    if path and not Path(path).resolve().parent.is_dir():
        raise SystemExit(f"bench_generator.py: {flag} {path}: no folder {Path(path).parent}; create it or pass another path")


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None,
                        help="network sizes: cpu_demo or nvlabs (default cpu_demo; nvlabs with --scaling or --profile)")
    parser.add_argument("--res", "--resolutions", dest="resolutions", metavar="LIST", default="32,64",
                        help="comma-separated final resolutions of the table and --profile, powers of two >= 4 "
                             "(default 32,64)")
    parser.add_argument("--batch", type=int, default=32, help="images per G forward of the table (default 32)")
    parser.add_argument("--train_batch", type=int, default=None,
                        help="images per training step of the table and --profile, a multiple of 4 above 4 "
                             "(default 16 for nvlabs, --batch for cpu_demo)")
    parser.add_argument("--nvlabs", metavar="PATH", default=None,
                        help="a checkout of NVlabs/stylegan2-ada-pytorch: add its networks to the table and --profile")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per cell; the median is shown (default 5; 1 with --scaling)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls before timing each cell (default 2; 1 with --scaling, where the "
                             "training warm-up is that many iterations, not cycles)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch; 0 = torch's choice, as in training (default 0)")
    parser.add_argument("--text_dim", type=int, default=None,
                        help='width of the random sentence embeddings, i.e. the text encoder\'s embed_dim '
                             f'(default {TEXT_DIMS["cpu_demo"]} for cpu_demo, the pretraining default; '
                             f'{TEXT_DIMS["nvlabs"]} for nvlabs)')
    parser.add_argument("--gp_interval", type=int, default=None,
                        help="critic steps per gradient penalty in our training step; 1 pays it on every step, "
                             f"as NVlabs' WGAN-GP step does (default GanTrainConfig's {GanTrainConfig.gp_interval}, lazy)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the rows to this JSON file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--scaling", action="store_true",
                      help="time per image and peak memory against resolution and batch instead of the table")
    mode.add_argument("--profile", action="store_true",
                      help="the top 5 ops by self CPU time of the training step instead of the table")
    parser.add_argument("--sweep_res", metavar="RES,...@BATCH", default="16,32,64,128@16",
                        help="with --scaling: resolutions@batch of the resolution sweep; '' for none "
                             "(default 16,32,64,128@16)")
    parser.add_argument("--sweep_batch", metavar="BATCH,...@RES", default="8,16,32,64@32",
                        help="with --scaling: batches@resolution of the batch sweep; '' for none (default 8,16,32,64@32)")
    parser.add_argument("--max_cell_s", metavar="S", type=float, default=120,
                        help="with --scaling: skip a cell whose estimated wall time is over this (default 120)")
    parser.add_argument("--plot", metavar="PNG", default=None, help="with --scaling: draw it to this PNG")
    args = parser.parse_args(argv)
    args.config = args.config or ("nvlabs" if args.scaling or args.profile else "cpu_demo")
    args.text_dim = args.text_dim or TEXT_DIMS[args.config]
    args.train_batch = args.train_batch or (16 if args.config == "nvlabs" else args.batch)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.scaling else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.scaling else 2)
    if min(args.batch, args.train_batch, args.repeats, args.text_dim, 1 if args.gp_interval is None else args.gp_interval) < 1 or args.warmup < 0 or args.threads < 0:
        raise SystemExit("bench_generator.py: --batch, --train_batch, --repeats, --text_dim and --gp_interval must be >= 1, "
                         "--warmup and --threads >= 0")
    if args.plot and not args.scaling:
        raise SystemExit("bench_generator.py: --plot draws the --scaling table; add --scaling")
    _check_output(args.plot, "--plot")
    _check_output(args.json, "--json")
    if args.scaling:
        grid(args)          # A bad sweep fails here, in one line, before anything is measured.
    else:
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
        rows, mode = run_scaling(args, device), "scaling"
    else:
        print(f"config: {args.config}, text_dim {args.text_dim}; G forward batch {args.batch}, "
              f"training batch {args.train_batch}")
        if args.profile:
            rows, mode = run_profile(args, resolutions, device, networks), "profile"
        else:
            rows, mode = run_table(args, resolutions, device, networks), "table"
    if args.json:
        print(f"json: {write_json(args.json, mode, rows, args, device)}")
    return rows


if __name__ == "__main__":
    main()
