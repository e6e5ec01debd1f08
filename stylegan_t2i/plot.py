"""Small PIL-only charts and labelled image grids (matplotlib is not a dependency).

    fig, axes = line_plot([Series("DDIM", xs, ys)], x_label="s / image", y_label="FD", log_x=True)
    fig.save("quality_vs_time.png")
    axes.to_pixel(x, y)      # where a data point was drawn

A chart is one `Axes` (the data -> pixel mapping, linear or log10 on x) plus drawing steps:
frame, ticks with labels, the series (lines and markers), a legend.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))
INK = (0, 0, 0)
GRID = (225, 225, 225)
MARKER_RADIUS = 4


@dataclass(frozen=True)
class Series:
    label:  str                         # Legend entry.
    xs:     tuple[float, ...]           # Data x (> 0 on a log axis).
    ys:     tuple[float, ...]           # Data y, same length; non-finite points are skipped.
    color:  tuple[int, int, int] | None = None  # RGB; None: the next PALETTE colour.
    point_labels: tuple[str, ...] = ()  # Optional text beside each point (e.g. step counts).


@dataclass(frozen=True)
class Axes:
    """Maps data (x, y) into the plot box (left, top, right, bottom) in pixels; y grows upward."""
    x_range:    tuple[float, float]     # Data x at the left and right edges of the box.
    y_range:    tuple[float, float]     # Data y at the bottom and top edges of the box.
    box:        tuple[int, int, int, int]   # Pixel box (left, top, right, bottom).
    log_x:      bool = False            # x mapped through log10.

    def _fx(self, x: float) -> float:
        return math.log10(x) if self.log_x else x

    def to_pixel(self, x: float, y: float) -> tuple[int, int]:
        """Data point -> (column, row) pixel, by linear interpolation of (log) x and y in the box."""
        left, top, right, bottom = self.box
        x0, x1 = self._fx(self.x_range[0]), self._fx(self.x_range[1])
        y0, y1 = self.y_range
        u = (self._fx(x) - x0) / (x1 - x0)
        v = (y - y0) / (y1 - y0)
        return round(left + u * (right - left)), round(bottom - v * (bottom - top))


PAD = 0.08      # Fraction of the data span left empty on each side, so no point sits on the frame.


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round values (1, 2 or 5 x 10^k apart) inside [lo, hi], about `target` of them."""
    raw = (hi - lo) / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(math.floor((hi - first) / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Values 1, 2, 5 x 10^k inside [lo, hi] (0 < lo < hi); only the powers of ten when the range
    spans more than two decades."""
    mults = (1,) if math.log10(hi / lo) > 2 else (1, 2, 5)
    ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in mults]
    return [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]


def _tick_text(v: float) -> str:
    return f"{v:.0e}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:g}"


def _padded(lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] widened by PAD of its span on each side (by 1 when it is a single value)."""
    span = hi - lo if hi > lo else max(abs(lo), 1.0)
    return lo - PAD * span, hi + PAD * span


def _axis_ranges(series: Sequence[Series], log_x: bool) -> tuple[tuple[float, float], tuple[float, float]]:
    """Data ranges of x and y that enclose every finite point (x > 0 on a log axis), padded."""
    pts = [(x, y) for s in series for x, y in zip(s.xs, s.ys)
           if math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)]
    if not pts:
        raise ValueError("line_plot: no finite data points to draw")
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if log_x:   # Pad in log10 space, where the points are spaced as drawn.
        lo, hi = _padded(math.log10(min(xs)), math.log10(max(xs)))
        x_range = (10.0 ** lo, 10.0 ** hi)
    else:
        x_range = _padded(min(xs), max(xs))
    return x_range, _padded(min(ys), max(ys))


def _draw_frame(draw: ImageDraw.ImageDraw, axes: Axes, x_ticks, y_ticks, font) -> None:
    """Grid lines, the box, and tick labels below / left of it."""
    left, top, right, bottom = axes.box
    for x in x_ticks:
        px, _ = axes.to_pixel(x, axes.y_range[0])
        draw.line([(px, top), (px, bottom)], fill=GRID)
        draw.text((px, bottom + 4), _tick_text(x), fill=INK, font=font, anchor="mt")
    for y in y_ticks:
        _, py = axes.to_pixel(axes.x_range[0], y)
        draw.line([(left, py), (right, py)], fill=GRID)
        draw.text((left - 4, py), _tick_text(y), fill=INK, font=font, anchor="rm")
    draw.rectangle(axes.box, outline=INK)


def _draw_series(draw: ImageDraw.ImageDraw, axes: Axes, s: Series, color, font) -> list[tuple[int, int]]:
    """Line through the finite points, a marker on each, optional point labels; returns the pixels."""
    pts = [(axes.to_pixel(x, y), i) for i, (x, y) in enumerate(zip(s.xs, s.ys))
           if math.isfinite(x) and math.isfinite(y) and (x > 0 or not axes.log_x)]
    if len(pts) > 1:
        draw.line([p for p, _ in pts], fill=color, width=2)
    for (px, py), i in pts:
        r = MARKER_RADIUS
        draw.ellipse([px - r, py - r, px + r, py + r], fill=color)
        if i < len(s.point_labels):
            draw.text((px + r + 2, py - r - 2), s.point_labels[i], fill=color, font=font, anchor="lb")
    return [p for p, _ in pts]


def _draw_legend(draw: ImageDraw.ImageDraw, axes: Axes, entries, points: list[tuple[int, int]], font) -> None:
    """One coloured marker + label per series, in the first inside corner of the box (top-right,
    top-left, bottom-right, bottom-left) that covers no data point; top-right if none is free."""
    left, top, right, bottom = axes.box
    width = max(draw.textlength(label, font=font) for label, _ in entries) + 24
    height = 14 * len(entries) + 4
    corners = [(right - 6 - width, top + 6), (left + 6, top + 6),
               (right - 6 - width, bottom - 6 - height), (left + 6, bottom - 6 - height)]
    margin = MARKER_RADIUS + 2

    def is_free(corner) -> bool:
        x0, y0 = corner
        return not any(x0 - margin <= px <= x0 + width + margin and y0 - margin <= py <= y0 + height + margin
                       for px, py in points)
    x0, y = next((c for c in corners if is_free(c)), corners[0])
    draw.rectangle([x0, y, x0 + width, y + height], fill=(255, 255, 255), outline=INK)
    for label, color in entries:
        draw.ellipse([x0 + 6, y + 5, x0 + 14, y + 13], fill=color)
        draw.text((x0 + 20, y + 9), label, fill=INK, font=font, anchor="lm")
        y += 14


def line_plot(
    series:     Sequence[Series],       # One line (with markers) per series.
    x_label:    str,
    y_label:    str,
    title:      str = "",
    size:       tuple[int, int] = (640, 440),   # Image (width, height) in pixels.
    log_x:      bool = False,           # log10 x axis with ticks at powers of ten.
) -> tuple[Image.Image, Axes]:
    """Draw the series on white; return the RGB image and the Axes used (to locate points)."""
    font = ImageFont.load_default()
    width, height = size
    x_range, y_range = _axis_ranges(series, log_x)
    x_ticks = log_ticks(*x_range) if log_x else nice_ticks(*x_range)
    axes = Axes(x_range, y_range, (70, 36, width - 20, height - 50), log_x)
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    _draw_frame(draw, axes, x_ticks, nice_ticks(*y_range), font)
    entries, points = [], []
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        points += _draw_series(draw, axes, s, color, font)
        entries.append((s.label, color))
    _draw_legend(draw, axes, entries, points, font)
    left, top, right, bottom = axes.box
    draw.text(((left + right) // 2, height - 8), x_label, fill=INK, font=font, anchor="md")
    draw.text(((left + right) // 2, 10), title, fill=INK, font=font, anchor="mt")
    # A vertical y label: draw it horizontally on its own strip and rotate.
    strip = Image.new("RGB", (bottom - top, 14), (255, 255, 255))
    ImageDraw.Draw(strip).text(((bottom - top) // 2, 7), y_label, fill=INK, font=font, anchor="mm")
    img.paste(strip.rotate(90, expand=True), (4, top))
    return img, axes


def labelled_grid(
    blocks:     Sequence[np.ndarray],   # Per column block a [rows*H', W', 3] uint8 image (same heights).
    titles:     Sequence[str],          # Text above each block.
    row_labels: Sequence[str],          # Text left of each row.
    row_height: int,                    # Pixel height of one row in every block.
    label_width: int = 220,             # Width of the row-label column.
    gap:        int = 8,                # White space between blocks.
) -> np.ndarray:
    """Put grids side by side with a title over each and a label left of each row -> [H, W, 3]."""
    font = ImageFont.load_default()
    assert len(blocks) == len(titles) and all(b.shape[0] == blocks[0].shape[0] for b in blocks)
    header = 18
    width = label_width + sum(b.shape[1] for b in blocks) + gap * len(blocks)
    img = Image.new("RGB", (width, blocks[0].shape[0] + header), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    x = label_width
    for block, title in zip(blocks, titles):
        img.paste(Image.fromarray(block), (x, header))
        draw.text((x + block.shape[1] // 2, header // 2), title, fill=INK, font=font, anchor="mm")
        x += block.shape[1] + gap
    for r, label in enumerate(row_labels):
        draw.text((4, header + r * row_height + row_height // 2), _fit(draw, label, label_width - 8, font),
                  fill=INK, font=font, anchor="lm")
    return np.asarray(img)


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """`text` if it fits in `width` pixels, else its longest prefix + '...' that does."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
