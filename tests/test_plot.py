"""stylegan_t2i.plot (matplotlib charts, labelled grids), run_log.read_log and tools/plot_run.py."""
import json
import math

import matplotlib
import numpy as np
import pytest
from matplotlib import font_manager
from matplotlib.text import Text
from PIL import Image

from stylegan_t2i.cli import plot_run
from stylegan_t2i.plot import (
    STYLE,
    Series,
    _style,
    labelled_grid,
    line_plot,
    render,
    save_figure,
    scaling_plot,
    training_curves,
)
from stylegan_t2i.run_log import RunLog, latest_history, read_log

RED = (214, 39, 40)     # matplotlib's "tab:red".
GAN_TAGS = ("Loss/D", "Loss/G", "Critic/wdist", "Loss/D/gp", "Loss/D/mismatch", "Loss/G/align",
            "Speed/img_per_s", "Progress/resolution")


def assert_png(path, size):
    """A PNG of exactly `size` = (width, height) that is not one flat colour."""
    img = Image.open(path)
    assert img.format == "PNG" and img.size == size
    assert np.asarray(img.convert("RGB"), dtype=np.float64).var() > 0


def assert_dejavu_only(fig):
    """Every piece of text in the drawn figure is set in the DejaVu Sans that matplotlib ships."""
    names = {t.get_fontname() for t in fig.findobj(Text) if t.get_text()}
    assert names == {"DejaVu Sans"}
    with _style():
        path = font_manager.findfont(font_manager.FontProperties(family=STYLE["font.family"]),
                                     fallback_to_default=False)
    assert path.startswith(matplotlib.get_data_path())


def gan_record(step: int) -> dict[str, float]:
    """Made-up GAN scalars at `step`: resolution 4 px to 8 kimg, then 8 px with a 4 kimg fade-in."""
    k = step / 1000
    return {"Loss/D": -1 + math.sin(k), "Loss/G": 2 + math.cos(k), "Critic/wdist": 1 + k / 10, "Loss/D/gp": 0.2,
            "Loss/G/align": 1 / (1 + k), "Speed/img_per_s": 300 - 10 * k,
            "Progress/resolution": 4 if k < 8 else 8, "Progress/alpha": 1 if k < 8 or k >= 12 else (k - 8) / 4}


def write_log(run_dir, steps):
    log = RunLog(run_dir)
    for step in steps:
        log.scalars(step, gan_record(step), kimg=step / 1000)
    log.close()
    return run_dir / "log.jsonl"


# ----------------------------------------------------------------------------------------------
# line_plot (tools/compare.py's quality_vs_time.png).

def test_line_plot_draws_each_point_where_its_axes_map_it(tmp_path):
    xs, ys = (0.01, 0.1, 1.0), (3.0, 2.0, 1.0)
    fig = line_plot([Series("a", xs, ys, "tab:red", ("1", "2", "3"))], "x", "y", title="t", log_x=True)
    img = render(fig)
    assert img.shape == (440, 640, 3)
    ax = fig.axes[0]
    cols = []
    for x, y in zip(xs, ys):
        col, row_up = ax.transData.transform((x, y))     # Display pixels, origin bottom-left.
        cols.append(col)
        assert np.abs(img[img.shape[0] - round(row_up), round(col)].astype(int) - RED).max() <= 8
    # Equal steps in log10(x) land equally far apart; larger y is drawn higher up.
    assert abs((cols[1] - cols[0]) - (cols[2] - cols[1])) <= 1
    assert ax.get_xscale() == "log" and [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()] == ["x", "y", "t"]
    assert_dejavu_only(fig)
    assert_png(save_figure(fig, tmp_path / "line.png"), (640, 440))


def test_line_plot_skips_non_finite_points_and_refuses_when_none_is_left():
    fig = line_plot([Series("a", (1.0, 2.0, 3.0), (1.0, math.nan, 2.0)), Series("none", (1.0,), (math.nan,))],
                    "x", "y")
    assert len(fig.axes[0].lines[0].get_xdata()) == 2
    with pytest.raises(ValueError, match="no finite data points"):
        line_plot([Series("a", (0.0, -1.0), (1.0, 2.0))], "x", "y", log_x=True)


def test_a_users_matplotlibrc_changes_neither_size_nor_fonts(tmp_path):
    hostile = {"font.family": "serif", "figure.dpi": 37, "savefig.dpi": 300, "savefig.bbox": "tight",
               "figure.facecolor": "black", "savefig.facecolor": "black"}
    with matplotlib.rc_context(hostile):
        fig = line_plot([Series("a", (1.0, 2.0), (1.0, 2.0))], "x", "y", size=(333, 211))
        path = save_figure(fig, tmp_path / "line.png")
        assert matplotlib.rcParams["font.family"] == ["serif"]    # Restored after each chart.
    assert_png(path, (333, 211))
    assert tuple(np.asarray(Image.open(path).convert("RGB"))[0, 0]) == (255, 255, 255)
    assert_dejavu_only(fig)


# ----------------------------------------------------------------------------------------------
# scaling_plot.

BY_RES = [{"res": r, "batch": 32, "ms_per_image": 0.002 * r ** 2, "train_ms": 0.01 * r ** 2,
           "peak_mib": 200 + 0.5 * r ** 2} for r in (64, 8, 16, 32)]      # Unsorted on purpose.
BY_BATCH = [{"res": 32, "batch": b, "ms_per_image": 2 + 8 / b, "train_ms": 6 + 30 / b, "peak_mib": 150 + 9 * b}
            for b in (1, 4, 16, 64)]


def test_scaling_plot_is_log_log_time_and_memory_against_resolution_and_batch(tmp_path):
    fig = scaling_plot(BY_RES, BY_BATCH, time_keys=("ms_per_image", "train_ms"), title="made-up")
    path = save_figure(fig, tmp_path / "scaling.png")
    assert_png(path, (1024, 768))
    top_left, top_right, bottom_left, bottom_right = fig.axes
    assert all(ax.get_xscale() == "log" and ax.get_yscale() == "log" for ax in fig.axes)
    assert top_left.get_title() == "vs resolution (batch 32)" and top_right.get_title() == "vs batch (res 32)"
    assert bottom_left.get_xlabel() == "resolution (px)" and bottom_right.get_xlabel() == "batch"
    assert [line.get_label() for line in top_left.lines] == ["ms_per_image", "train_ms"]
    assert list(top_left.lines[0].get_xdata()) == [8, 16, 32, 64]
    assert list(bottom_right.lines[0].get_ydata()) == [r["peak_mib"] for r in BY_BATCH]
    assert_dejavu_only(fig)


def test_scaling_plot_leaves_out_an_empty_sweep_and_unplottable_values(tmp_path):
    rows = BY_RES + [{"res": 128, "batch": 32, "ms_per_image": math.nan, "peak_mib": 0}]
    fig = scaling_plot(rows, [])
    assert len(fig.axes) == 2 and len(fig.axes[0].lines[0].get_xdata()) == 4
    assert_png(save_figure(fig, tmp_path / "res_only.png"), (1024, 768))
    with pytest.raises(ValueError, match="no rows"):
        scaling_plot([], [])


# ----------------------------------------------------------------------------------------------
# labelled_grid (tools/compare.py's samples.png).

def test_labelled_grid_copies_blocks_exactly_and_fits_long_labels():
    rng = np.random.default_rng(0)
    blocks = [rng.integers(0, 256, (2 * 66 + 2, w, 3), dtype=np.uint8) for w in (134, 71)]
    long = "a small red circle on the left on a black background " * 3
    grid = labelled_grid(blocks, ["GAN", "DDIM-10"], [long, "a blue square"], row_height=66)
    assert grid.shape == (18 + 134, 220 + 134 + 71 + 2 * 8, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[18:, 220:354], blocks[0])
    np.testing.assert_array_equal(grid[18:, 362:433], blocks[1])
    assert (grid[:18, 220:354] < 128).any()                 # The title is drawn above its block...
    assert (grid[18:84, :200] < 128).any()                  # ... and each label left of its row,
    assert (grid[:, 214:220] == 255).all()                  # the long one cut before the images.


# ----------------------------------------------------------------------------------------------
# Training curves: run_log.read_log, training_curves, tools/plot_run.py.

def test_plot_run_draws_a_panel_per_logged_main_scalar(tmp_path, capsys):
    run = tmp_path / "00000-test-8"
    run.mkdir()
    write_log(run, range(500, 16001, 500))
    out = plot_run.main(["--run", str(run)])
    assert out == run / "training_curves.png" and "32 records" in capsys.readouterr().out
    # The made-up log has 7 of the 8 GAN scalars (no Loss/D/mismatch): 4 rows of 2 panels, 300 px each.
    assert_png(out, (1280, 4 * 300 + 40))
    fig = training_curves(latest_history(read_log(run / "log.jsonl")), title=run.name)
    assert [ax.get_title() for ax in fig.axes] == [t for t in GAN_TAGS if t != "Loss/D/mismatch"]
    assert all(ax.get_xlabel() == "kimg" for ax in fig.axes)
    render(fig)
    assert_dejavu_only(fig)
    assert "dotted: resolution grows" in fig.get_suptitle() and "shaded: fade-in" in fig.get_suptitle()
    assert_png(plot_run.main(["--run", str(run), "--out", str(tmp_path / "c.png")]), (1280, 1240))


def test_a_resumed_runs_abandoned_records_are_dropped(tmp_path):
    write_log(tmp_path, [1000, 2000, 3000, 4000, 2000, 3000])      # Resumed from the 1 kimg snapshot.
    records = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in records] == [1000, 2000, 3000, 4000, 2000, 3000]
    assert [r["step"] for r in latest_history(records)] == [1000, 2000, 3000]
    assert latest_history(records)[1] is records[4]


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("", "empty"),
    ("\n\n", "empty"),
    ('{"step": 1000, "Loss/D": 1.0}\n{"step": 2000, "Loss/D": \n', "line 2: not JSON"),
    ("[1, 2]\n", "line 1: not a record with an integer 'step'"),
    ('{"kimg": 1.0, "Loss/D": 1.0}\n', "line 1: not a record with an integer 'step'"),
    ('{"step": 1000, "Loss/other": 1.0}\n', "no scalar to plot"),
])
def test_a_missing_empty_or_malformed_log_is_a_one_line_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "log.jsonl").write_text(content)
    with pytest.raises(SystemExit) as e:
        plot_run.main(["--run", str(tmp_path)])
    msg = str(e.value)
    assert msg.startswith("error: ") and "\n" not in msg and message in msg
    assert not (tmp_path / "training_curves.png").exists()


def test_run_that_is_not_a_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="is not a directory"):
        plot_run.main(["--run", str(tmp_path / "nope")])


def test_non_numbers_in_a_log_are_gaps_not_errors(tmp_path):
    lines = [{"step": 1000, "Loss/D": 1.0}, {"step": 2000, "Loss/D": "oops"}, {"step": 3000, "Loss/D": None},
             {"step": 4000, "Loss/D": 2.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    fig = training_curves(read_log(tmp_path / "log.jsonl"))
    ys = fig.axes[0].lines[0].get_ydata()
    assert len(fig.axes) == 1 and ys[0] == 1.0 and np.isnan(ys[1:3]).all() and ys[3] == 2.0
