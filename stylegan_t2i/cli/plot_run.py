"""Training curves of a run from its log.jsonl: one PNG, a panel per main scalar against kimg.

    python tools/plot_run.py --run runs/00000-demo-32
    python tools/plot_run.py --run runs/00000-demo-32 --out curves.png
    stylegan-t2i-plot-run --run runs/00000-demo-32                # the installed console command

Panels, for the scalars the log has: Loss/D, Loss/G, Critic/wdist, Loss/D/gp, Loss/D/mismatch,
Loss/G/align, Speed/img_per_s, Progress/resolution (a GAN run); Loss/diffusion (DDPM);
Loss/contrastive, Accuracy/retrieval (text encoder). A resumed run's log holds the abandoned
records after its snapshot too; only the records the run now stands on are drawn.
Writes <run>/training_curves.png unless --out is given.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from stylegan_t2i.plot import save_figure, training_curves
from stylegan_t2i.run_log import latest_history, read_log


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run directory holding log.jsonl (runs/NNNNN-...)")
    p.add_argument("--out", type=Path, help="PNG to write (default: <run>/training_curves.png)")
    args = p.parse_args(argv)
    if not args.run.is_dir():
        raise SystemExit(f"error: --run {args.run} is not a directory")
    try:
        records = latest_history(read_log(args.run / "log.jsonl"))
        fig = training_curves(records, title=args.run.name)
    except ValueError as e:     # A LogError, or a log with none of the scalars.
        raise SystemExit(f"error: {e}") from None
    out = args.out or args.run / "training_curves.png"
    try:
        save_figure(fig, out)
    except OSError as e:
        raise SystemExit(f"error: cannot write {out}: {e.strerror or e}") from None
    print(f"wrote {out} ({len(records)} records, {records[0]['step'] / 1000:g}-{records[-1]['step'] / 1000:g} kimg)")
    return out


if __name__ == "__main__":
    main()
