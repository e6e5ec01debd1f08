"""Does fine-tuning pay? The demo model fine-tuned on a second caption set against a run from
scratch on the same data, each for the same CPU minutes, judged by quality_demo's attribute accuracy.

    python benchmarks/bench_finetune.py --minutes 10 --json runs/bench_finetune/result.json  # the comparison
    python benchmarks/bench_finetune.py --minutes 0.5 --num_per_combo 1 --scratch_text_steps 2 \
        --num_images 400 --work /tmp/bench_finetune                                        # smoke test

The second caption set: demo scenes (`SceneSet`) with the built-in colours plus --new_colours
(default cyan and pink), words the demo model's captions never name; --num_images scenes at
64 px, generated once into WORK/data (`generate_demo_dataset`), where quality_demo also trains
and caches its attribute classifier for that set.

Each run is `python -m stylegan_t2i.cli.train` (train_progan.py) in a child process on that data:
"fine-tuned" with `--finetune --source` (default: the shipped demo model, a generation-only
export, so its critic starts fresh; the full checkpoint it was exported from keeps the critic),
"from scratch" with the defaults (the cpu_demo schedule from 4 px, its text encoder pretrained
first for --scratch_text_steps). Each is stopped with SIGINT once its process has used --minutes
of CPU time (user + system, all threads, read from /proc; start-up, data loading and any
text-encoder pretraining count), so load from other work on the machine does not shorten one
run more than the other. One thread each by default: on a busy machine a second thread mostly
spin-waits and burns CPU time for nothing. The run finishes its step and writes a snapshot,
which `benchmarks/quality_demo.py --data_root WORK/data` (another child process, not timed)
scores on every seen and held-out combination of the new set. The table gives both runs'
kimg, resolution reached and CPU seconds, the per-attribute accuracy on seen combinations, all
five right on seen and on held-out combinations, and all five right on the scenes of the new
colours (the mean over those colours).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from stylegan_t2i.checkpoint import load_checkpoint
from stylegan_t2i.data import ImageLabelDataset
from stylegan_t2i.data.demo_scenes import BUILTIN, COLOUR_RGB, SceneSet, generate_demo_dataset
from stylegan_t2i.inference import DEMO_MODEL
from stylegan_t2i.metrics.attribute_classifier import ATTR_NAMES
from stylegan_t2i.run_dir import latest_run_dir
from stylegan_t2i.text.pretrain import PretrainConfig
from stylegan_t2i.training.run_files import run_checkpoints

QUALITY_DEMO = Path(__file__).resolve().parent / "quality_demo.py"
# Long enough that the time limit, not the schedule, ends each run.
UNBOUNDED_KIMG = "1000000"
RESOLUTION = 32     # The demo model's, and both runs'.
POLL_S = 0.5        # How often a run's CPU time is read.


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0,
                   help="CPU minutes of each run: its process's user + system time, all threads (default: %(default)s)")
    p.add_argument("--source", type=Path, default=DEMO_MODEL, help="GAN checkpoint to fine-tune (default: %(default)s)")
    p.add_argument("--new_colours", default="cyan,pink",
                   help=f"comma-separated colours added to the built-in ones, of {','.join(COLOUR_RGB)} "
                        "(default: %(default)s)")
    p.add_argument("--num_images", type=int, default=4000, help="scenes of the new set (default: %(default)s)")
    p.add_argument("--text_steps", type=int, default=0,
                   help="fine-tuned run: --finetune_text_steps, re-tuning the text encoder first (default: 0)")
    p.add_argument("--scratch_text_steps", type=int, default=PretrainConfig.steps,
                   help="run from scratch: --text_encoder_steps of its text encoder (default: %(default)s)")
    p.add_argument("--num_per_combo", type=int, default=4,
                   help="quality_demo: images per attribute combination (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS of the children; 0: torch's choice (default: 1, see above)")
    p.add_argument("--work", type=Path, default=Path("runs/bench_finetune"),
                   help="data, runs and results go here (default: %(default)s)")
    p.add_argument("--json", type=Path, help="also write the table's figures here")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.num_images < 1 or args.num_per_combo < 1 or args.threads < 0:
        p.error("need --minutes > 0, --num_images >= 1, --num_per_combo >= 1 and --threads >= 0")
    try:
        args.scenes = SceneSet(colours=BUILTIN.colours + tuple(c.strip() for c in args.new_colours.split(",")))
    except ValueError as e:
        p.error(str(e))
    return args


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")     # utime, stime: fields 14, 15


def timed_run(name: str, flags: list[str], args, data: list[str]) -> dict:
    """Train in a child process until it has used --minutes of CPU time, then SIGINT; returns its
    newest checkpoint with the kimg, resolution, CPU and wall seconds it reached."""
    out = args.work / name.replace(" ", "-")
    cmd = [sys.executable, "-m", "stylegan_t2i.cli.train", *data, "--out", str(out), "--total_kimg", UNBOUNDED_KIMG,
           "--device", "cpu", *flags]
    print(f"{name}: {' '.join(cmd[1:])}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=child_env(args.threads))
    while child.poll() is None and cpu_seconds(child.pid) < args.minutes * 60:
        time.sleep(POLL_S)
    if child.poll() is not None:
        raise SystemExit(f"error: the {name} run ended by itself after {time.perf_counter() - start:.0f} s "
                         f"(exit status {child.returncode}); see its output above")
    child.send_signal(signal.SIGINT)    # The loop finishes its step and writes a snapshot.
    child.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_dir = latest_run_dir(out)
    found = run_checkpoints(run_dir) if run_dir is not None else []
    if not found:
        raise SystemExit(f"error: the {name} run wrote no checkpoint in {args.minutes:g} CPU minutes (still "
                         "starting or pretraining its text encoder?); raise --minutes or lower --scratch_text_steps")
    progress = load_checkpoint(found[0], kinds="gan")["progress"]
    return {"checkpoint": str(found[0]), "kimg": progress["nimg"] / 1000, "res": 4 * 2 ** progress["stage"],
            "alpha": progress["alpha"], "wall_s": time.perf_counter() - start,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def evaluate(name: str, run: dict, args, data_root: Path) -> dict:
    """quality_demo.py's results for the run's checkpoint, on the new set (its classifier)."""
    report = args.work / f"quality-{name.replace(' ', '-')}.json"
    cmd = [sys.executable, str(QUALITY_DEMO), "--checkpoint", run["checkpoint"], "--data_root", str(data_root),
           "--num_per_combo", str(args.num_per_combo), "--device", "cpu", "--json", str(report)]
    subprocess.run(cmd, check=True, env=child_env(args.threads))
    return json.loads(report.read_text())["results"]


def table_row(name: str, run: dict, results: dict, new_colours: tuple[str, ...]) -> dict:
    seen, held = results["seen"], results["held_out"]
    by_colour = seen["by_value"]["colour"]
    return {"run": name, "kimg": run["kimg"], "res": run["res"], "cpu_s": run["cpu_s"],
            **{a: seen[a] for a in ATTR_NAMES}, "all seen": seen["all"], "all held-out": held["all"],
            "all new colours": sum(by_colour[c] for c in new_colours) / len(new_colours)}


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|---|" + "--:|" * (len(cols) - 1)]
    for row in rows:
        cells = [row["run"], f"{row['kimg']:.1f}", str(row["res"]), f"{row['cpu_s']:.0f}",
                 *(f"{row[c]:.3f}" for c in cols[4:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    new_colours = tuple(c for c in args.scenes.colours if c not in BUILTIN.colours)
    data_root = args.work / "data"
    image_dir, label_dir = generate_demo_dataset(data_root, resolution=64, num_images=args.num_images,
                                                 scenes=args.scenes)
    ImageLabelDataset(image_dir, label_dir, RESOLUTION, verbose=False)   # Its image cache: built before the clocks run.
    data = ["--image_dir", str(image_dir), "--label_dir", str(label_dir)]
    runs = {"fine-tuned": ["--finetune", str(args.source), "--finetune_text_steps", str(args.text_steps)],
            "from scratch": ["--text_encoder_steps", str(args.scratch_text_steps)]}
    rows, done = [], {}
    for name, flags in runs.items():
        done[name] = timed_run(name, flags, args, data)
        rows.append(table_row(name, done[name], evaluate(name, done[name], args, data_root), new_colours))
    print(f"\n{args.minutes:g} minutes each on {args.num_images} scenes with the new colours {', '.join(new_colours)} "
          f"(fine-tuned from {args.source}); accuracy on seen combinations unless named:\n")
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"minutes": args.minutes, "source": str(args.source), "rows": rows, "runs": done},
                                        indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
