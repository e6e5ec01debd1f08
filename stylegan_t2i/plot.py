"""Charts and labelled image grids, drawn off-screen with matplotlib's Agg renderer.

    fig = line_plot([Series("DDIM", xs, ys)], x_label="s / image", y_label="FD", log_x=True)
    save_figure(fig, "quality_vs_time.png")
    save_figure(training_curves(records), "runs/00000-demo-32/training_curves.png")
    save_figure(scaling_plot(by_res=[{"res": 32, "ms_per_image": 1.9, "peak_mib": 310}, ...],
                             by_batch=[{"batch": 8, "ms_per_image": 2.4, "peak_mib": 280}, ...]), "scaling.png")

Every figure is a `matplotlib.figure.Figure` with its own Agg canvas: no pyplot, no global backend
switch, no display. Figures are built and drawn under `_style()` (matplotlib's own defaults plus
STYLE, restored afterwards), so a user's matplotlibrc changes neither the look nor the pixel size,
and all text is in the DejaVu Sans that matplotlib ships.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter

# A power of two: size / DPI * DPI is exact in floating point, so a figure is exactly `size` pixels.
DPI = 128
STYLE = {
    "font.family": "DejaVu Sans",   # Bundled with matplotlib: the same glyphs on every machine.
    "font.size": 8,                 # Points: 14 px at DPI.
    "axes.grid": True,
    "grid.color": "0.88",
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "legend.fontsize": "small",
}
# log.jsonl tags that training_curves draws by default, in panel order: the GAN's, the DDPM's
# (tools/train_ddpm.py) and the text encoder's (tools/train_text_encoder.py).
RUN_TAGS = ("Loss/D", "Loss/G", "Critic/wdist", "Loss/D/gp", "Loss/D/mismatch", "Loss/G/align",
            "Speed/img_per_s", "Progress/resolution", "Loss/diffusion", "Loss/contrastive", "Accuracy/retrieval")


def _style():
    """Context manager: matplotlib's default rcParams plus STYLE, the caller's restored on exit."""
    return matplotlib.style.context(["default", STYLE])


def _figure(size: tuple[int, int], layout: str | None = "constrained") -> Figure:
    """A white figure of exactly `size` = (width, height) pixels with its own Agg canvas."""
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG of its exact pixel size; returns the path."""
    path = Path(path)
    with _style():
        fig.savefig(path, format="png", dpi=DPI)
    return path


def render(fig: Figure) -> np.ndarray:
    """Draw `fig` -> [H, W, 3] uint8 RGB."""
    with _style():
        fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _plain(value: float, _pos=None) -> str:
    """Tick text: 0.01, 250, 4e+04."""
    return f"{value:g}"


class _PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which minor log ticks to label (more when the axis spans fewer
    decades), written as plain numbers."""

    def __call__(self, x, pos=None) -> str:
        return _plain(x) if super().__call__(x, pos) else ""


def _plain_log_ticks(axis) -> None:
    """Label a log axis with plain numbers (0.01, 40) rather than matplotlib's 10^-2, 4x10^1."""
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False))


def _drawable(x, y, log_x: bool = False, log_y: bool = False) -> bool:
    """A point can be drawn: both coordinates finite numbers, and > 0 on a log axis."""
    return (x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
            and (x > 0 or not log_x) and (y > 0 or not log_y))


# ----------------------------------------------------------------------------------------------
# Line chart (tools/compare.py's quality vs time).

@dataclass(frozen=True)
class Series:
    label:  str                         # Legend entry.
    xs:     tuple[float, ...]           # Data x (> 0 on a log axis).
    ys:     tuple[float, ...]           # Data y, same length; non-finite points are skipped.
    color:  str | None = None           # A matplotlib colour ("tab:red", "#d62728"); None: the next default.
    point_labels: tuple[str, ...] = ()  # Optional text beside each point (e.g. step counts).


def line_plot(
    series:     Sequence[Series],       # One line (with markers) per series.
    x_label:    str,
    y_label:    str,
    title:      str = "",
    size:       tuple[int, int] = (640, 440),   # Image (width, height) in pixels.
    log_x:      bool = False,           # log10 x axis.
) -> Figure:
    """One axes: each series as a line through its finite points, a marker on each, a legend."""
    if not any(_drawable(x, y, log_x) for s in series for x, y in zip(s.xs, s.ys)):
        raise ValueError("line_plot: no finite data points to draw")
    with _style():
        fig = _figure(size)
        ax = fig.add_subplot()
        for s in series:
            kept = [(x, y, i) for i, (x, y) in enumerate(zip(s.xs, s.ys)) if _drawable(x, y, log_x)]
            line, = ax.plot([k[0] for k in kept], [k[1] for k in kept], marker="o", color=s.color, label=s.label)
            for x, y, i in kept:
                if i < len(s.point_labels):
                    ax.annotate(s.point_labels[i], (x, y), xytext=(4, 4), textcoords="offset points",
                                color=line.get_color(), fontsize="small")
        if log_x:
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis)
        ax.set(xlabel=x_label, ylabel=y_label, title=title)
        ax.margins(0.08)
        ax.legend(loc="best")
    return fig


# ----------------------------------------------------------------------------------------------
# Training curves (tools/plot_run.py).

def _resolution_changes(kimg: np.ndarray, records: Sequence[Mapping]) -> list[float]:
    """kimg at which Progress/resolution changes between consecutive records."""
    res = [r.get("Progress/resolution") for r in records]
    return [float(kimg[i]) for i in range(1, len(res)) if res[i] != res[i - 1] and None not in res[i - 1:i + 1]]


def _fade_spans(kimg: np.ndarray, records: Sequence[Mapping]) -> list[tuple[float, float]]:
    """(start, end) kimg of each fade-in: a stretch of records with Progress/alpha < 1."""
    spans, start = [], None
    for x, r in zip(kimg, records):
        fading = _number(r.get("Progress/alpha", 1.0)) < 1
        if fading and start is None:
            start = float(x)
        elif not fading and start is not None:
            spans.append((start, float(x)))
            start = None
    return spans + ([(start, float(kimg[-1]))] if start is not None else [])


def _number(value) -> float:
    """A logged value as a float; anything that is not a number is a missing point (NaN)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def training_curves(
    records:    Sequence[Mapping],      # log.jsonl records in step order (run_log.read_log + latest_history).
    tags:       Sequence[str] = RUN_TAGS,   # Scalars to draw, one panel each; absent ones are skipped.
    title:      str = "",
    width:      int = 1280,             # Image width in pixels; 300 px of height per row of panels.
) -> Figure:
    """One panel per tag present in `records`, against kimg (step / 1000), two panels a row; in
    every panel a dotted line where the resolution grows and a shaded band over each fade-in."""
    present = [t for t in tags if any(t in r for r in records)]
    if not present:
        raise ValueError(f"no scalar to plot: the log has none of {', '.join(tags)}")
    kimg = np.array([r["step"] / 1000 for r in records])
    growth, fades = _resolution_changes(kimg, records), _fade_spans(kimg, records)
    cols = 1 if len(present) == 1 else 2
    rows = math.ceil(len(present) / cols)
    with _style():
        fig = _figure((width, 300 * rows + 40))
        for i, tag in enumerate(present):
            ax = fig.add_subplot(rows, cols, i + 1)
            values = np.array([_number(r.get(tag, math.nan)) for r in records])
            if tag == "Progress/resolution":
                ax.step(kimg, values, where="post", color="tab:green")
                ax.set_yscale("log", base=2)
                _plain_log_ticks(ax.yaxis)
            else:
                ax.plot(kimg, values, color="tab:blue")
            for x in growth:
                ax.axvline(x, color="0.5", linestyle=":", linewidth=0.8)
            for start, end in fades:
                ax.axvspan(start, end, color="tab:orange", alpha=0.08, linewidth=0)
            ax.set(title=tag, xlabel="kimg")
            if len(kimg) > 1:
                ax.set_xlim(kimg.min(), kimg.max())
        note = "; ".join((["dotted: resolution grows"] if growth else []) + (["shaded: fade-in"] if fades else []))
        note = f"  ({note})" if note else ""
        fig.suptitle(f"{title}  {len(records)} records, {kimg.min():g}-{kimg.max():g} kimg{note}".strip())
    return fig


# ----------------------------------------------------------------------------------------------
# Scaling (time per image and peak memory against resolution and batch).

def _scaling_panel(ax, rows: Sequence[Mapping], x_key: str, y_keys: Sequence[str], y_label: str) -> None:
    """Log-log lines of each y_key against x_key (log2: resolutions and batches are powers of two)."""
    rows = sorted(rows, key=lambda r: r[x_key])
    for key in y_keys:
        pts = [(r[x_key], r.get(key)) for r in rows if _drawable(r[x_key], r.get(key), log_x=True, log_y=True)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _plain_log_ticks(ax.xaxis)
    _plain_log_ticks(ax.yaxis)
    ax.set_ylabel(y_label)
    if len(y_keys) > 1:
        ax.legend(loc="best")


def _fixed(rows: Sequence[Mapping], key: str, name: str) -> str:
    """' (batch 32)' when every row has the same `key`, else ''."""
    values = {r.get(key) for r in rows}
    return f" ({name} {values.pop():g})" if len(values) == 1 and None not in values else ""


def scaling_plot(
    by_res:     Sequence[Mapping[str, float]],  # Resolution sweep: rows with "res" (and "batch"), the measures.
    by_batch:   Sequence[Mapping[str, float]],  # Batch sweep: rows with "batch" (and "res"), the measures.
    time_keys:  Sequence[str] = ("ms_per_image",),  # Row keys of the time panels, one line each.
    memory_key: str = "peak_mib",       # Row key of the memory panels.
    title:      str = "",
    size:       tuple[int, int] = (1024, 768),  # Image (width, height) in pixels.
) -> Figure:
    """Time per image (top) and peak memory (bottom) against resolution (left) and batch (right),
    log-log; a sweep with no rows leaves its column out."""
    sweeps = [(rows, x_key, name) for rows, x_key, name in
              ((by_res, "res", "resolution (px)"), (by_batch, "batch", "batch")) if rows]
    if not sweeps:
        raise ValueError("scaling_plot: no rows in by_res or by_batch")
    with _style():
        fig = _figure(size)
        axes = fig.subplots(2, len(sweeps), squeeze=False)
        for col, (rows, x_key, name) in enumerate(sweeps):
            other = _fixed(rows, "batch", "batch") if x_key == "res" else _fixed(rows, "res", "res")
            _scaling_panel(axes[0, col], rows, x_key, time_keys, "ms per image")
            _scaling_panel(axes[1, col], rows, x_key, [memory_key], "peak memory (MiB)")
            axes[0, col].set_title(f"vs {name.split(' ')[0]}{other}")
            axes[1, col].set_xlabel(name)
        if title:
            fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# Labelled image grid (tools/compare.py's samples.png).

def _fit(text_artist, text: str, width: float, renderer) -> None:
    """Shorten the artist's text to its longest prefix + '...' that fits in `width` pixels."""
    while text and text_artist.get_window_extent(renderer).width > width:
        text = text[:-1]
        text_artist.set_text(text + "...")


def labelled_grid(
    blocks:     Sequence[np.ndarray],   # Per column block a [rows*H', W', 3] uint8 image (same heights).
    titles:     Sequence[str],          # Text above each block.
    row_labels: Sequence[str],          # Text left of each row.
    row_height: int,                    # Pixel height of one row in every block.
    label_width: int = 220,             # Width of the row-label column.
    gap:        int = 8,                # White space between blocks.
) -> np.ndarray:
    """Put grids side by side with a title over each and a label left of each row -> [H, W, 3];
    the blocks' pixels are copied unresampled."""
    assert len(blocks) == len(titles) and all(b.shape[0] == blocks[0].shape[0] for b in blocks)
    header = 18
    width = label_width + sum(b.shape[1] for b in blocks) + gap * len(blocks)
    height = blocks[0].shape[0] + header
    with _style():
        fig = _figure((width, height), layout=None)     # No layout engine: placement by pixel.
        x = label_width
        for block, title in zip(blocks, titles):
            fig.figimage(block, xo=x, yo=0, origin="upper")
            fig.text((x + block.shape[1] / 2) / width, 1 - header / 2 / height, title,
                     ha="center", va="center", parse_math=False)
            x += block.shape[1] + gap
        renderer = fig.canvas.get_renderer()
        for r, label in enumerate(row_labels):
            t = fig.text(4 / width, 1 - (header + r * row_height + row_height / 2) / height, label,
                         ha="left", va="center", parse_math=False)
            _fit(t, label, label_width - 8, renderer)
    return render(fig)
