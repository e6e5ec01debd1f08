"""--scaling: time per image and peak memory of the G forward and the training step against
resolution and batch.

The grid is two sweeps, each 'VALUES@FIXED': --sweep_res 16,32,64,128@16 (resolutions at batch 16)
and --sweep_batch 8,16,32,64@32 (batches at 32 px); a cell both sweeps hold is measured once.
Every cell runs in a new process (multiprocessing 'spawn'), so its peak memory is its own: the
C allocator keeps what an earlier, larger cell freed, and a peak window reset inside one long
process would start from that. In the cell's process: G_ema's forward at the cell's batch
(--warmup untimed and --repeats timed calls), then, in a peak window of its own, training
iterations of the real GanTrainer (--warmup untimed iterations, then --repeats timed lazy-penalty
cycles). Peak memory is as `stylegan_t2i.measure.peak_memory_mib` reads it (CPU: the process's
VmHWM from just before the measurement).

Cells run from the least work to the most (work: the synthesis convs' FLOPs per image x batch).
Each cell's wall time is estimated before it runs, from the largest cell measured so far scaled
by work, plus the measured process start-up; a cell estimated over --max_cell_s is skipped and
says so (the first cell always runs). With the defaults (one warm-up iteration and one timed
cycle of four per cell) the full nvlabs grid should take about 7 minutes on 2 idle cores: about
35 training iterations in all, from 1.5 s (16 px, batch 16) to 18 s (32 px, batch 64) each,
scaled from the 32-px step of benchmarks/RESULTS.md, plus a few seconds of start-up per cell.
"""
from __future__ import annotations

import argparse
import multiprocessing
import time
from dataclasses import dataclass, field

import torch

from generator_bench.flops import synthesis_conv_flops
from generator_bench.harness import (
    CONFIGS,
    build_trainer,
    check_train_batch,
    fresh_window,
    random_reals,
    random_step_text,
    time_phases,
    train_config,
    train_phases,
)
from generator_bench.report import markdown
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.measure import machine_description, peak_memory_mib

COLUMNS = ("sweep", "res", "batch", "G fwd ms/img", "G fwd peak MiB", "train step ms/img", "train peak MiB",
           "cell s", "note")


def parse_sweep(text: str, flag: str, what: str) -> tuple[list[int], int] | None:
    """'16,32,64,128@16' -> ([16, 32, 64, 128], 16); '' -> None (no such sweep)."""
    if not text.strip():
        return None
    values, sep, fixed = text.partition("@")
    try:
        swept = [int(v) for v in values.split(",") if v.strip()]
        other = int(fixed)
    except ValueError:
        swept, other = [], 0
    if not sep or not swept or min(swept + [other]) < 1:
        raise SystemExit(f"bench_generator.py: {flag} {text!r} is not VALUES@FIXED, e.g. "
                         f"{'16,32,64,128@16' if what == 'res' else '8,16,32,64@32'} (positive integers; '' for none)")
    return swept, other


def grid(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(sweep, res, batch) of every cell in print order; a one-line error for an unusable cell."""
    cells = []
    for sweep, text, flag in (("res", args.sweep_res, "--sweep_res"), ("batch", args.sweep_batch, "--sweep_batch")):
        parsed = parse_sweep(text, flag, sweep)
        if parsed is not None:
            swept, fixed = parsed
            cells += [(sweep, v, fixed) if sweep == "res" else (sweep, fixed, v) for v in swept]
    if not cells:
        raise SystemExit("bench_generator.py: --sweep_res and --sweep_batch are both empty; give at least one")
    for _, res, batch in cells:
        if res < 4 or res & (res - 1):
            raise SystemExit(f"bench_generator.py: --scaling resolution {res} is not a power of two >= 4")
        check_train_batch(CONFIGS[args.config](args.text_dim, max_res=res)[1], batch)
    return cells


def cell_work(args: argparse.Namespace, res: int, batch: int) -> float:
    """GFLOP of one G forward of the cell: the estimate's unit of work."""
    return synthesis_conv_flops(CONFIGS[args.config](args.text_dim, max_res=res)[0]) * batch / 1e9


# ---------------------------------------------------------------------------- one cell, in its own process

def measure_cell(res: int, batch: int, args: argparse.Namespace, device: torch.device) -> dict:
    """ms per image and peak memory of G_ema's forward and, in a window of its own, of training
    iterations, both at batch `batch`; 'measure s' is the wall time of the two measurements."""
    start = time.perf_counter()
    torch.manual_seed(0)
    trainer, phase = build_trainer(res, batch, args.text_dim, device, args.config, args.gp_interval)
    reals = random_reals(batch, res, device)
    step_text = random_step_text(trainer, batch, args.text_dim, device)
    z = torch.randn(batch, trainer.G.cfg.z_dim, device=device)

    @torch.no_grad()
    def g_forward():
        return trainer.G_ema(z, step_text.text, phase.stage, phase.alpha, noise_mode="const")

    fresh_window(device)
    g_ms = time_phases([g_forward], 1, device, args.warmup, args.repeats)[-1]
    row = {"G fwd ms/img": g_ms / batch, "G fwd peak MiB": peak_memory_mib(device)}
    fresh_window(device)
    step_ms = time_phases(train_phases(trainer, phase, reals, step_text), trainer.cfg.gp_interval, device,
                          args.warmup, args.repeats)[-1]
    return {**row, "train step ms/img": step_ms / batch, "train peak MiB": peak_memory_mib(device),
            "measure s": time.perf_counter() - start}


def _cell_process(conn, res: int, batch: int, args: argparse.Namespace) -> None:
    """The body of a cell's process: its row, or ('error', the first line of what went wrong)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        conn.send(("ok", measure_cell(res, batch, args, resolve_device(args.device))))
    except Exception as e:          # Reported as the cell's note; the grid goes on.
        conn.send(("error", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"))
    finally:
        conn.close()


def run_cell(res: int, batch: int, args: argparse.Namespace) -> dict:
    """The cell measured in a new process, with its wall time 'cell s' (start-up included); a cell
    whose process failed or died (out of memory, say) has only a note."""
    ctx = multiprocessing.get_context("spawn")      # A fresh interpreter: no memory of earlier cells.
    receive, send = ctx.Pipe(duplex=False)
    start = time.perf_counter()
    proc = ctx.Process(target=_cell_process, args=(send, res, batch, args), daemon=True)
    proc.start()
    send.close()            # Ours: so that recv() ends with EOFError if the process dies.
    try:
        status, payload = receive.recv()
    except EOFError:
        status, payload = "error", "its process died"
    proc.join()
    wall = time.perf_counter() - start
    if status != "ok":
        exit_note = f" (exit code {proc.exitcode})" if proc.exitcode else ""
        return {"cell s": wall, "note": f"failed: {payload}{exit_note}"}
    return {**payload, "cell s": wall}


# ---------------------------------------------------------------------------- the grid

@dataclass
class Estimator:
    """Wall time of a cell from the largest cell measured so far, scaled by work, plus the mean
    start-up (process, imports, networks) of the measured cells."""
    measured: list[tuple[float, float, float]] = field(default_factory=list)    # (work, measure s, start-up s)

    def add(self, work: float, row: dict) -> None:
        if "measure s" in row:
            self.measured.append((work, row["measure s"], row["cell s"] - row["measure s"]))

    def estimate(self, work: float) -> float | None:
        if not self.measured:
            return None
        ref_work, ref_s, _ = max(self.measured)
        startup = sum(m[2] for m in self.measured) / len(self.measured)
        return startup + ref_s * work / ref_work


def measure_grid(cells: list[tuple[str, int, int]], args: argparse.Namespace) -> dict[tuple[int, int], dict]:
    """(res, batch) -> row of each distinct cell, least work first, skipping those estimated over
    --max_cell_s."""
    distinct = sorted({(res, batch) for _, res, batch in cells}, key=lambda c: cell_work(args, *c))
    estimator, points = Estimator(), {}
    for i, (res, batch) in enumerate(distinct):
        work = cell_work(args, res, batch)
        est = estimator.estimate(work)
        where = f"cell {i + 1}/{len(distinct)}: res {res} batch {batch}"
        if est is not None and est > args.max_cell_s:
            print(f"{where}: skipped, estimated {est:.0f} s > --max_cell_s {args.max_cell_s:g}", flush=True)
            points[res, batch] = {"note": f"skipped: estimated {est:.0f} s"}
            continue
        points[res, batch] = row = run_cell(res, batch, args)
        estimator.add(work, row)
        guess = f" (estimated {est:.0f} s)" if est is not None else ""
        print(f"{where}: {row['cell s']:.0f} s{guess}" + (f"; {row['note']}" if "note" in row else ""), flush=True)
    return points


def run_scaling(args: argparse.Namespace, device: torch.device) -> list[dict]:
    cells = grid(args)
    cycle = train_config(args.config, args.gp_interval).gp_interval
    print(f"{args.config} networks; one process per cell; G forward: median of {args.repeats} after {args.warmup} "
          f"warm-up calls; training: {args.warmup} warm-up iterations, then median of {args.repeats} cycles of "
          f"{cycle} iterations; cells estimated over {args.max_cell_s:g} s are skipped", flush=True)
    start = time.perf_counter()
    points = measure_grid(cells, args)
    rows = [{"sweep": sweep, "res": res, "batch": batch, **points[res, batch]} for sweep, res, batch in cells]
    print(f"grid: {time.perf_counter() - start:.0f} s")
    print(markdown(rows, COLUMNS))
    if args.plot:
        from stylegan_t2i.plot import save_figure, scaling_plot  # matplotlib only when drawing.
        fig = scaling_plot(by_res=[r for r in rows if r["sweep"] == "res"],
                           by_batch=[r for r in rows if r["sweep"] == "batch"],
                           time_keys=("G fwd ms/img", "train step ms/img"), memory_key="train peak MiB",
                           title=f"{args.config} networks: {machine_description(device)}")
        print(f"plot: {save_figure(fig, args.plot)}")
    return rows
