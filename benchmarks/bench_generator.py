"""Generator and training-step throughput of the cpu_demo networks, per resolution.

For each resolution R the G/D pair of `models.presets.cpu_demo_configs(text_dim, max_res=R)`
is built and run fully grown (final stage, alpha = 1), with batch B:

  G fwd img/s      : B / time of one G_ema forward without grad (random z and random text
                     embeddings [B, text_dim]; noise_mode='const' and float32, as generate.py).
  train step img/s : B / time of one GanTrainer iteration with n_critic = 1, by calling the
                     real `GanTrainer.critic_step` (D's trunk on reals scored against their
                     captions and TrainConfig.negatives hard negatives, D on fakes, WGAN-GP with
                     double backward, Adam step), `generator_step` (G forward, D on fakes, the
                     alignment loss through the demo-size image encoder, Adam step) and
                     `update_ema` on a GanTrainer without a run dir. The reals are a fixed
                     in-memory batch in [-1, 1] and the sentence embeddings are random, so data
                     loading, the text encoder and the negative draw (which `fit` also runs each
                     iteration) are not timed.
                     On CUDA the steps use the trainer's bfloat16 autocast (TrainConfig.amp).
  peak MiB         : CPU: peak RSS of the process (VmHWM, reset per resolution, so it includes
                     the interpreter and libraries); CUDA: torch.cuda.max_memory_allocated.
                     Over both measurements of the row.

Times are medians of --repeats timed calls after --warmup untimed ones.

    python benchmarks/bench_generator.py [--resolutions 32,64] [--batch 32] [--repeats 5] \\
        [--warmup 2] [--device auto] [--threads N] [--text_dim 128]

(after `pip install -e .`; from a bare checkout prefix PYTHONPATH=.)
"""
from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

if __package__ in (None, ""):   # run as `python benchmarks/bench_generator.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from stylegan_t2i.batch_share import BatchShare
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.measure import (machine_description, median_ms, memory_label, peak_memory_mib,
                                  reset_peak_memory)
from stylegan_t2i.models import cpu_demo_configs
from stylegan_t2i.models.critic import Critic
from stylegan_t2i.models.generator import Generator
from stylegan_t2i.text.contrastive import ContrastiveModel
from stylegan_t2i.text.pretrain import PretrainConfig, TextEncoderBundle, model_configs
from stylegan_t2i.training.gan_trainer import GanTrainer, StepText, TrainConfig
from stylegan_t2i.training.schedule import Phase, ProgressiveSchedule, cpu_demo_schedule

COLUMNS = ('res', 'batch', 'G fwd img/s', 'train step img/s')


def parse_resolutions(text: str) -> list[int]:
    """'32,64' -> [32, 64]; each a power of two >= 4."""
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise SystemExit(f'bench_generator.py: --resolutions {text!r} is not a comma-separated list of integers') from None
    bad = [r for r in values if r < 4 or r & (r - 1)]
    if not values or bad:
        raise SystemExit(f'bench_generator.py: --resolutions must be powers of two >= 4, got {text!r}')
    return values


def build_trainer(
    res:        int,                # Final resolution: the networks are built fully grown to it.
    batch:      int,                # Minibatch of every step.
    text_dim:   int,                # Width of the sentence embedding.
    device:     torch.device,
) -> tuple[GanTrainer, Phase]:
    """A GanTrainer on the cpu_demo networks with no run dir or dataset (the benchmark feeds reals
    and embeddings itself) and an untrained demo-size contrastive model (the alignment loss runs
    its image tower; no tokenizer is needed), and the final-stage, alpha = 1 phase."""
    g_cfg, d_cfg = cpu_demo_configs(text_dim, max_res=res)
    group = min(d_cfg.mbstd_group_size, batch)
    if batch % group:
        raise SystemExit(f'bench_generator.py: --batch {batch} must be divisible by the critic\'s '
                         f'minibatch-std group size {group}; use a multiple of {d_cfg.mbstd_group_size}')
    schedule = ProgressiveSchedule(cpu_demo_schedule(max_res=res))
    text_cfg, image_cfg = model_configs(PretrainConfig(), vocab_size=64)
    bundle = TextEncoderBundle(None, ContrastiveModel(text_cfg, image_cfg).to(device), text_cfg, image_cfg)
    trainer = GanTrainer(Generator(g_cfg), Critic(d_cfg), text_bundle=bundle, dataset=None, sampler=(),
                         schedule=schedule, cfg=TrainConfig(), run_dir=None, device=device,
                         sample_prompts=[], configs={}, progress=False)
    phase = Phase(stage=g_cfg.num_stages - 1, alpha=1.0, res=res, batch=batch, lr=schedule.cfg.lr)
    return trainer, phase


def train_iteration(
    trainer:    GanTrainer,
    phase:      Phase,
    share:      BatchShare,         # trainer.dist.share(phase.batch): the whole batch in one process.
    reals:      torch.Tensor,       # [B, 3, R, R] in [-1, 1].
    step_text:  StepText,           # The batch's captions and hard negatives, embedded.
) -> None:
    """The body of `GanTrainer.fit` for n_critic = 1, minus data loading and text encoding."""
    trainer.critic_step(phase, share, reals, step_text)
    trainer.nimg += phase.batch
    trainer.generator_step(phase, share, step_text)
    trainer.update_ema(phase.batch)
    trainer.step += 1


def measure(res: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """One table row: throughput of G_ema's forward and of a training iteration at `res`."""
    gc.collect()  # Free the previous resolution's networks before the memory window opens.
    torch.manual_seed(0)
    trainer, phase = build_trainer(res, args.batch, args.text_dim, device)
    b = args.batch
    reals = torch.rand(b, 3, res, res, device=device) * 2 - 1   # [B, 3, R, R] in [-1, 1]
    text = torch.randn(b, args.text_dim, device=device)         # [B, text_dim]
    k = trainer.cfg.negatives
    unit = torch.randn(b, trainer.text.image_cfg.embed_dim, device=device)
    step_text = StepText(text=text, unit=torch.nn.functional.normalize(unit, dim=1),
                         wrong=torch.randn(b, k, args.text_dim, device=device),
                         wrong_valid=torch.ones(b, k, dtype=torch.bool, device=device))
    share = trainer.dist.share(phase.batch)
    z = torch.randn(b, trainer.G.cfg.z_dim, device=device)      # [B, z_dim]
    reset_peak_memory(device)

    @torch.no_grad()
    def g_forward():
        return trainer.G_ema(z, text, phase.stage, phase.alpha, noise_mode='const')

    assert g_forward().shape == (b, 3, res, res)
    g_ms = median_ms(g_forward, device, args.warmup, args.repeats)
    step_ms = median_ms(lambda: train_iteration(trainer, phase, share, reals, step_text), device,
                        args.warmup, args.repeats)
    return {'res': res, 'batch': b, 'G fwd img/s': b / g_ms * 1e3, 'train step img/s': b / step_ms * 1e3,
            'peak': peak_memory_mib(device)}


def format_table(rows: list[dict[str, float]], device: torch.device, repeats: int, warmup: int) -> str:
    """Markdown table of the rows, one per resolution."""
    head = list(COLUMNS) + [memory_label(device)]
    lines = [f'median of {repeats} timed repeats after {warmup} warm-up calls',
             '| ' + ' | '.join(head) + ' |', '|' + '---:|' * len(head)]
    for r in rows:
        lines.append(f"| {r['res']} | {r['batch']} | {r['G fwd img/s']:.1f} | {r['train step img/s']:.1f} "
                     f"| {r['peak']:.0f} |")
    return '\n'.join(lines)


def main(argv=None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--resolutions', default='32,64',
                        help='comma-separated final resolutions, powers of two >= 4 (default 32,64)')
    parser.add_argument('--batch', type=int, default=32,
                        help='images per forward and per training step; a multiple of 4 above 4 (default 32)')
    parser.add_argument('--repeats', type=int, default=5, help='timed repeats per cell; the median is shown (default 5)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed calls before timing each cell (default 2)')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N (default: auto)')
    parser.add_argument('--threads', type=int, default=0,
                        help="CPU threads for torch; 0 = torch's choice, as in training (default 0)")
    parser.add_argument('--text_dim', type=int, default=PretrainConfig().embed_dim,
                        help='width of the random sentence embeddings, i.e. the text encoder\'s embed_dim '
                             f'(default {PretrainConfig().embed_dim}, the pretraining default)')
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 0 or args.text_dim < 1:
        raise SystemExit('bench_generator.py: --batch, --repeats and --text_dim must be >= 1, '
                         '--warmup and --threads >= 0')
    resolutions = parse_resolutions(args.resolutions)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'machine: {machine_description(device)}')
    # One discarded row first: the process's first-use costs (thread pool, allocator growth)
    # made whichever resolution came first 1.8x slower in the G forward, warm-up calls or not.
    measure(resolutions[0], args, device)
    rows = [measure(res, args, device) for res in resolutions]
    print(format_table(rows, device, args.repeats, args.warmup))
    return rows


if __name__ == '__main__':
    main()
