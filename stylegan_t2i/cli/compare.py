"""GAN vs DDPM on the same work: quality, sampling speed and peak memory, one report.

    python tools/compare.py --gan runs/00000-demo-32/network-final.pt --ddpm runs/00001-demo-ddpm-32/network-final.pt
    python tools/compare.py --gan G.pt --ddpm D.pt --image_dir imgs --label_dir txt --num 2000 \\
        --ddim_steps 10,25,50 --ddpm_steps 1000 --ddpm_num 200 --out compare_report

Methods: the GAN (one forward pass), the DDPM sampled with DDIM at each --ddim_steps count, and
with ancestral DDPM sampling at --ddpm_steps. Every method is scored by stylegan_t2i.evaluation
with the same captions and seeds (the first --num of them; DDPM ancestral only the first
--ddpm_num, because 1000 UNet passes per image are slow on a CPU: its FD/KID are then on fewer
images, and FD is biased upward at small sample sizes). Speed is the median of 3 timed runs on
--timing_num images after a warm-up run; peak memory is torch.cuda.max_memory_allocated on a
GPU and the process's peak RSS (VmHWM, reset through /proc/self/clear_refs) on a CPU.

Writes <out>/report.md, <out>/report.json, <out>/quality_vs_time.png and <out>/samples.png.
Installed as the console command `stylegan-t2i-compare` (same flags).
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stylegan_t2i.cli.common import (
    add_eval_arguments,
    check_data_arguments,
    eval_config,
    given_options,
    json_safe,
    open_dataset,
    parse_steps,
    run_reporting,
    write_json,
)
from stylegan_t2i.config import config_to_dict
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.evaluation import (
    EvalConfig,
    eval_captions,
    eval_seeds,
    evaluate_sampler,
    module_fingerprint,
)
from stylegan_t2i.images import make_grid, save_png, to_uint8
from stylegan_t2i.inference import load_sampler
from stylegan_t2i.measure import machine_description, median_ms, peak_memory_mib, reset_peak_memory
from stylegan_t2i.plot import Series, labelled_grid, line_plot, save_figure

# Figure in the report/plot -> the --metrics name that computes it.
PLOT_METRICS = {"fd": "fd", "kid": "kid", "swd": "swd", "precision": "pr", "recall": "pr",
                "alignment": "align", "r_precision": "align"}
TABLE = ("fd", "kid", "swd", "precision", "recall", "alignment", "r_precision")
TIMING_REPEATS = 3
MIN_CELL = 64           # samples.png: images are enlarged (nearest) to at least this many pixels.


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gan", type=Path, required=True, help="gan checkpoint (train_progan.py)")
    p.add_argument("--ddpm", type=Path, required=True, help="ddpm checkpoint (tools/train_ddpm.py)")
    p.add_argument("--out", type=Path, default=Path("compare_report"), help="report folder (default: compare_report)")
    add_eval_arguments(p, num=2000)
    m = p.add_argument_group("methods and timing")
    m.add_argument("--ddim_steps", type=parse_steps, default=[10, 25, 50], help="DDIM step counts (default: 10,25,50)")
    m.add_argument("--ddpm_steps", type=int, default=1000, help="ancestral DDPM steps (default: 1000)")
    m.add_argument("--ddpm_num", type=int, default=200,
                   help="images scored for ancestral DDPM, slow on CPU (default: 200; --num for the rest)")
    m.add_argument("--timing_num", type=int, default=64, help="images per timed run (default: 64)")
    m.add_argument("--ddpm_timing_num", type=int, default=16,
                   help="images per timed run of ancestral DDPM (default: 16)")
    rep = p.add_argument_group("report")
    rep.add_argument("--prompts", nargs="+", help="prompts of samples.png (default: 4 from the dataset)")
    rep.add_argument("--samples_per_prompt", type=int, default=4, help="seeds per prompt in samples.png (default: 4)")
    rep.add_argument("--plot_metric", choices=sorted(PLOT_METRICS), default="fd",
                     help="quality axis of quality_vs_time.png (default: fd)")
    args = p.parse_args(argv)
    check_data_arguments(p, args)
    if min(args.ddpm_steps, args.ddpm_num, args.timing_num, args.ddpm_timing_num, args.samples_per_prompt) < 1:
        p.error("--ddpm_steps, --ddpm_num, --timing_num, --ddpm_timing_num and --samples_per_prompt must be >= 1")
    return args


@dataclass(frozen=True)
class Method:
    name:       str     # Row label: "GAN", "DDIM-25", "DDPM-1000".
    kind:       str     # Checkpoint kind: 'gan' or 'ddpm' (--gan or --ddpm samples it).
    sampler:    str     # 'gan', 'ddim' or 'ddpm'.
    steps:      int     # Network passes per image (1 for the GAN; guidance doubles the UNet batch).
    num:        int     # Images scored.
    timing_num: int     # Images per timed run.
    options:    dict    # Keywords of that checkpoint's sampler.sample.


def methods(args) -> list[Method]:
    gan, ddpm = given_options(args, ("truncation",)), given_options(args, ("guidance",))
    out = [Method("GAN", "gan", "gan", 1, args.num, args.timing_num, gan)]
    out += [Method(f"DDIM-{k}", "ddpm", "ddim", k, args.num, args.timing_num, {**ddpm, "steps": k, "sampler": "ddim"})
            for k in args.ddim_steps]
    out.append(Method(f"DDPM-{args.ddpm_steps}", "ddpm", "ddpm", args.ddpm_steps, min(args.ddpm_num, args.num),
                      args.ddpm_timing_num, {**ddpm, "steps": args.ddpm_steps, "sampler": "ddpm"}))
    return out


def method_config(base: EvalConfig, m: Method) -> EvalConfig:
    return dataclasses.replace(base, num=m.num, options=m.options)


# ----------------------------------------------------------------------------------------------
# Speed and memory.

def measure_speed(sampler, m: Method, cfg: EvalConfig, captions, seeds, device) -> dict:
    """Median wall time of TIMING_REPEATS runs on m.timing_num images after one warm-up run
    (first-use costs: kernel selection, allocator growth), and the peak memory of those runs."""
    caps, sds = captions[:m.timing_num], seeds[:m.timing_num]

    def run():
        return sampler.sample(caps, sds, **cfg.options)

    run()   # The warm-up, outside the peak-memory window.
    note = reset_peak_memory(device)
    seconds = median_ms(run, device, warmup=0, repeats=TIMING_REPEATS) / 1000
    return {"images_per_second": len(sds) / seconds, "ms_per_image": 1000 * seconds / len(sds),
            "peak_mib": peak_memory_mib(device), "memory_note": note, "timing_images": len(sds)}


# ----------------------------------------------------------------------------------------------
# Figures.

def quality_vs_time(rows: list[dict], metric: str, path: Path) -> Path:
    """Plot `metric` against seconds per image (log x): GAN and DDPM points, DDIM as a line."""
    def series(label, selected, labels):
        return Series(label, tuple(r["ms_per_image"] / 1000 for r in selected),
                      tuple(float("nan") if r.get(metric) is None else r[metric] for r in selected), None,
                      tuple(labels))
    ddim = [r for r in rows if r["sampler"] == "ddim"]
    groups = [series("GAN", [r for r in rows if r["sampler"] == "gan"], []),
              series("DDIM (steps)", ddim, [str(r["steps"]) for r in ddim])]
    groups += [series(f"DDPM ancestral, {r['num']} images", [r], [str(r["steps"])])
               for r in rows if r["sampler"] == "ddpm"]
    fig = line_plot(groups, "seconds per image (log scale)", metric, f"{metric} vs sampling time", log_x=True)
    return save_figure(fig, path)


def sample_block(sampler, m: Method, cfg: EvalConfig, prompts, seeds) -> np.ndarray:
    """One method's grid: rows = prompts, columns = seeds, enlarged to >= MIN_CELL pixels."""
    img = sampler.sample([p for p in prompts for _ in seeds], seeds * len(prompts), **cfg.options)
    img_u8 = to_uint8(img)
    scale = max(1, MIN_CELL // img_u8.shape[1])
    img_u8 = img_u8.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return make_grid(img_u8, len(prompts), len(seeds))


def samples_figure(samplers, ms: list[Method], cfg: EvalConfig, prompts, seeds, path: Path,
                   progress: bool = True) -> Path:
    blocks = [sample_block(samplers[m.kind], m, method_config(cfg, m), prompts, seeds)
              for m in tqdm(ms, desc="samples.png", unit="method", disable=not progress)]
    if len({b.shape[0] for b in blocks}) > 1:   # GAN and DDPM at different resolutions: pad to one height.
        height = max(b.shape[0] for b in blocks)
        blocks = [np.pad(b, ((0, height - b.shape[0]), (0, 0), (0, 0)), constant_values=255) for b in blocks]
    row_height = (blocks[0].shape[0] - 2) // len(prompts)
    grid = labelled_grid(blocks, [m.name for m in ms], prompts, row_height)
    return save_png(path, grid)


# ----------------------------------------------------------------------------------------------
# Report.

def _cell(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def feature_note(feature_space: str | None, shared_encoder: bool) -> str:
    """What FD/KID/PR and alignment are measured in, and whether GAN and DDPM rows compare."""
    align = ("alignment and R-precision use each checkpoint's own contrastive model, " +
             ("the same for both checkpoints" if shared_encoder else
              "**which differs between the two checkpoints: their alignment rows are not comparable**"))
    if feature_space == "inception":
        return f"FD/KID/precision/recall in InceptionV3 pool3 features (FD = FID); {align}"
    if feature_space is None:
        return align
    space = ("the contrastive image encoder both checkpoints share" if shared_encoder else
             "each checkpoint's own contrastive image encoder, **which differs between the two: GAN and "
             "DDPM rows are in different feature spaces and not comparable (give --inception, or train "
             "both with the same --text_encoder)**")
    return f"FD/KID/precision/recall in {space}; {align}"


def markdown_report(report: dict) -> str:
    rows = report["methods"]
    lines = ["# GAN vs DDPM: quality and sampling speed", "",
             f"- Machine: {report['machine']}",
             f"- Checkpoints: GAN `{report['gan']}`, DDPM `{report['ddpm']}`",
             f"- Features: {feature_note(rows[0].get('feature_space'), report['shared_encoder'])}",
             (f"- Timing: median of {TIMING_REPEATS} runs after a warm-up run, batch "
              f"{report['settings']['batch']}; peak memory: {rows[0]['memory_note']}"), "",
             ("| method | steps | images | images/s | ms/image | peak MiB | fd | kid | swd | precision | recall "
              "| alignment | r_precision |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        figures = " | ".join(_cell(r.get(k), ".4g") for k in TABLE)
        lines.append(f"| {r['name']} | {r['steps']} | {r['num']} | {r['images_per_second']:.3g} | "
                     f"{r['ms_per_image']:.3g} | {r['peak_mib']:.0f} | {figures} |")
    ddpm = [r for r in rows if r["sampler"] == "ddpm"]
    lines += ["", "Notes:", ""]
    lines += [(f"- {r['name']} (ancestral) was scored on {r['num']} images (`--ddpm_num`), the other rows on "
               f"{rows[0]['num']}: FD is biased upward at small sample sizes, so compare its FD only with "
               f"that in mind (KID is unbiased). Its timing used {r['timing_images']} images.") for r in ddpm]
    lines += [("- Same captions and seeds for every method: image i uses caption i and seed "
               f"{report['settings']['seed']}*1e6 + i."), "",
              ("Figures: `quality_vs_time.png` (quality against seconds per image), `samples.png` "
               "(rows = prompts, column blocks = methods, same seeds)."), "", "Commands:", "", "```"]
    lines += report["commands"] + ["```", ""]
    return "\n".join(lines)


def commands(args, argv, ms: list[Method]) -> list[str]:
    """This run, and the tools/evaluate.py command that reproduces each row's quality figures."""
    data = "" if args.image_dir is None else f" --image_dir {shlex.quote(str(args.image_dir))} " \
                                             f"--label_dir {shlex.quote(str(args.label_dir))}"
    common = f"--metrics {args.metrics} --seed {args.seed} --batch {args.batch}"
    if args.inception is not None:
        common += f" --inception {shlex.quote(str(args.inception))}"
    out = ["python tools/compare.py " + shlex.join(argv)]
    for m in ms:
        ck = shlex.quote(str(getattr(args, m.kind)))
        extra = "".join(f" --{name} {shlex.quote(str(value))}" for name, value in m.options.items())
        out.append(f"python tools/evaluate.py --checkpoint {ck}{data} --num {m.num} {common}{extra}")
    return out


def score_methods(args, cfg: EvalConfig, samplers: dict, dataset, device: torch.device,
                  progress: bool = True) -> list[dict]:
    """One row per method: its evaluation figures, then its timed speed and peak memory; with
    `progress`, a bar over the methods above evaluate_sampler's own bars."""
    cache, rows = {}, []
    captions, seeds = eval_captions(dataset.captions, args.num, args.seed), eval_seeds(args.num, args.seed)
    bar = tqdm(methods(args), desc="compare", unit="method", disable=not progress, dynamic_ncols=True)
    for m in bar:
        bar.write(f"== {m.name}: scoring {m.num} images, timing {m.timing_num}")
        mcfg, sampler = method_config(cfg, m), samplers[m.kind]
        bar.set_postfix_str(f"{m.name}: scoring")
        try:
            result = evaluate_sampler(sampler, dataset, mcfg, device, progress=progress, cache=cache)
        except (ValueError, OSError) as e:
            raise SystemExit(f"error: {m.name}: {e}") from None
        result.pop("images_per_second")     # The timed runs below measure speed.
        bar.set_postfix_str(f"{m.name}: timing")
        rows.append({"name": m.name, "sampler": m.sampler, **result, "steps": m.steps,
                     **measure_speed(sampler, m, mcfg, captions, seeds, device)})
    return rows


def load_samplers(args, device: torch.device) -> dict:
    """{'gan': GanSampler, 'ddpm': DdpmSampler}; a checkpoint of the wrong kind is a one-line error."""
    samplers = {"gan": load_sampler(args.gan, device), "ddpm": load_sampler(args.ddpm, device)}
    for kind, s in samplers.items():
        if s.kind != kind:
            raise SystemExit(f"error: --{kind} {getattr(args, kind)} is a {s.kind} checkpoint, not {kind}")
        s.batch = args.batch
    return samplers


def compare(args, argv: list[str]) -> dict:
    cfg = eval_config(args)
    needed = PLOT_METRICS[args.plot_metric]
    if needed not in cfg.metrics:
        raise SystemExit(f"error: --plot_metric {args.plot_metric} needs '{needed}' in --metrics")
    try:
        args.out.mkdir(parents=True, exist_ok=True)     # Fail before the long part, not after it.
    except OSError as e:
        raise SystemExit(f"error: cannot create --out {args.out}: {e.strerror or e}") from None
    device = resolve_device(args.device)
    samplers = load_samplers(args, device)
    max_res = max(s.train_resolution for s in samplers.values())
    dataset, _, default_prompts = open_dataset(args, max_res, verbose=not args.no_progress)
    rows = score_methods(args, cfg, samplers, dataset, device, progress=not args.no_progress)
    prompts, sample_seeds = args.prompts or default_prompts[:4], eval_seeds(args.samples_per_prompt, args.seed)
    report = {"machine": machine_description(device), "gan": str(args.gan), "ddpm": str(args.ddpm),
              "shared_encoder": len({module_fingerprint(s.text.model) for s in samplers.values()}) == 1,
              "settings": config_to_dict(cfg), "methods": rows, "commands": commands(args, argv, methods(args)),
              "prompts": prompts, "sample_seeds": sample_seeds}
    quality_vs_time(rows, args.plot_metric, args.out / "quality_vs_time.png")
    samples_figure(samplers, methods(args), cfg, prompts, sample_seeds, args.out / "samples.png",
                   progress=not args.no_progress)
    (args.out / "report.md").write_text(markdown_report(json_safe(report)))
    write_json(args.out / "report.json", report)
    print(f"wrote {args.out}/report.md, report.json, quality_vs_time.png, samples.png")
    return report


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    return run_reporting(compare, args, argv)


if __name__ == "__main__":
    main()
