"""Smoke tests of benchmarks/bench_generator.py and bench_sampling.py at the smallest settings:
every table row is printed with positive numbers, and bad input is a one-line error. The soak
bench's summary is checked on made-up samples (a real soak runs for minutes).

The sampling checkpoints hold untrained networks (throughput does not depend on the weights),
written in the same layout as the trainers' checkpoints. Timings are never asserted.
"""
import json
import re

import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import conv_flop_count

from benchmarks import bench_generator, bench_sampling, bench_soak
from generator_bench import flops, harness, report, scaling, table
from stylegan_t2i.checkpoint import save_checkpoint
from stylegan_t2i.config import config_to_dict
from stylegan_t2i.diffusion import SchedulerConfig, UNet, UNetConfig
from stylegan_t2i.gan.trainer import GanTrainConfig
from stylegan_t2i.models import cpu_demo_configs
from stylegan_t2i.models.generator import Generator, GeneratorConfig
from stylegan_t2i.models.presets import nvlabs_size_configs
from stylegan_t2i.text.contrastive import ContrastiveModel
from stylegan_t2i.text.pretrain import PretrainConfig, TextEncoderBundle, model_configs, text_encoder_payload
from stylegan_t2i.text.tokenizer import Tokenizer

TINY_TEXT = PretrainConfig(resolution=8, max_len=16, text_dim=16, text_depth=1, text_heads=2, embed_dim=16,
                           image_channels=(8,))


def _table_rows(out: str) -> list[list[str]]:
    """Cells of the markdown body rows (header and separator dropped)."""
    lines = [line for line in out.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def _positive(cell: str) -> bool:
    value = float(re.sub(r"x$", "", cell))
    return value > 0


def test_bench_generator_prints_a_positive_row_per_resolution(capsys):
    rows = bench_generator.main(["--resolutions", "4,8", "--batch", "4", "--repeats", "1", "--warmup", "0",
                                 "--device", "cpu", "--text_dim", "16"])
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and "torch " in out and "threads: " in out
    cells = _table_rows(out)
    assert [c[:3] for c in cells] == [["4", "4", "ours"], ["8", "4", "ours"]]
    assert all(_positive(c) for row in cells for c in row[3:])
    assert [r["res"] for r in rows] == [4, 8] and all(r["peak"] > 0 for r in rows)
    assert all(r["train batch"] == 4 for r in rows)  # cpu_demo trains at --batch


def test_bench_generator_nvlabs_config_prints_every_column(capsys):
    rows = bench_generator.main(["--config", "nvlabs", "--resolutions", "8", "--batch", "4", "--train_batch", "4",
                                 "--repeats", "1", "--warmup", "0", "--device", "cpu", "--text_dim", "16"])
    out = capsys.readouterr().out
    assert "config: nvlabs" in out and "ceiling: dense 3x3 conv" in out and "GFLOP/s" in out
    head = [line for line in out.splitlines() if line.startswith("|")][0]
    assert [c.strip() for c in head.strip("|").split("|")] == [*table.COLUMNS, "peak RSS MiB"]
    (cells,) = _table_rows(out)
    assert cells[:3] == ["8", "4", "ours"] and all(_positive(c) for c in cells[3:])
    (row,) = rows
    g_cfg, _ = nvlabs_size_configs(16, max_res=8)
    assert row["G conv GFLOP/img"] == flops.synthesis_conv_flops(g_cfg) / 1e9
    assert row["G GFLOP/s"] == pytest.approx(row["G conv GFLOP/img"] * row["G fwd img/s"])
    assert 0 < row["% of conv ceiling"]


def test_bench_generator_nvlabs_missing_checkout_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no training/networks.py there") as e:
        bench_generator.main(["--config", "nvlabs", "--nvlabs", str(tmp_path / "missing"), "--device", "cpu"])
    assert "\n" not in str(e.value)


def test_gp_interval_sets_the_penalty_cycle_of_our_trainer():
    """--gp_interval 1 times our step with the penalty on every step (NVlabs' maths); unset keeps the lazy default."""
    trainer, _ = harness.build_trainer(8, 4, 16, torch.device("cpu"), "nvlabs", gp_interval=1)
    assert trainer.cfg.gp_interval == 1 and not trainer.cfg.amp
    assert harness.train_config("cpu_demo").gp_interval == GanTrainConfig.gp_interval and harness.train_config("cpu_demo").amp
    steps = []
    for step in range(3):
        trainer.step = step
        steps.append(trainer.regularize_now(0))
    assert steps == [True, True, True]
    with pytest.raises(SystemExit, match="--gp_interval must be >= 1"):
        bench_generator.main(["--gp_interval", "0", "--device", "cpu"])


def test_bench_generator_rejects_bad_resolutions_and_batch():
    with pytest.raises(SystemExit, match="powers of two"):
        bench_generator.main(["--resolutions", "12", "--device", "cpu"])
    with pytest.raises(SystemExit, match="divisible"):
        bench_generator.main(["--resolutions", "8", "--batch", "6", "--device", "cpu"])
    with pytest.raises(SystemExit, match="add --scaling"):
        bench_generator.main(["--plot", "x.png", "--device", "cpu"])


class DenseConvFlops(TorchDispatchMode):
    """FLOPs of every dense (groups = 1) convolution that runs, transposed ones included, by
    torch's own formula; the depthwise FIR filters (groups = channels) are left out, as
    `flops.synthesis_conv_flops` leaves them out."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.convolution.default and args[8] == 1:
            x, w, transposed = args[0], args[1], args[6]
            self.total += conv_flop_count(list(x.shape), list(w.shape), list(out.shape), transposed)
        return out


@pytest.mark.parametrize("g_cfg", [
    nvlabs_size_configs(16, max_res=16)[0],
    cpu_demo_configs(16, max_res=32)[0],
    GeneratorConfig(text_dim=16, max_res=16, channel_base=128, channel_max=16, architecture="orig"),
], ids=["nvlabs-16", "cpu_demo-32", "orig-16"])
def test_synthesis_conv_flops_are_the_dense_convs_the_generator_runs(g_cfg):
    G = Generator(g_cfg).eval().requires_grad_(False)
    z, text = torch.randn(2, g_cfg.z_dim), torch.randn(2, g_cfg.text_dim)    # batch 2: the unfused, dense form
    with torch.no_grad(), DenseConvFlops() as counter:
        G(z, text, g_cfg.num_stages - 1, 1.0, noise_mode="const")
    # The mapping and affine layers are matrix products, not convolutions, so the counts agree exactly.
    assert flops.synthesis_conv_flops(g_cfg) * 2 == counter.total


def test_synthesis_conv_flops_of_the_nvlabs_32px_generator_in_closed_form():
    # 256 channels at 4..32 px: conv1 at each resolution r, conv0 on the r/2 input, toRGB everywhere (skip).
    conv1 = sum(2 * r * r * 256 * 256 * 9 for r in (4, 8, 16, 32))
    conv0 = sum(2 * (r // 2) ** 2 * 256 * 256 * 9 for r in (8, 16, 32))
    torgb = sum(2 * r * r * 256 * 3 for r in (4, 8, 16, 32))
    assert flops.synthesis_conv_flops(nvlabs_size_configs(256, max_res=32)[0]) == conv1 + conv0 + torgb
    assert round((conv1 + conv0 + torgb) / 1e9, 2) == 2.0   # Issue 14's 3.2 counts conv0 at r: 4x too much.


def test_markdown_formats_numbers_and_marks_missing_cells():
    rows = [{"name": "a", "n": 7, "x": 1234.5}, {"name": "b", "n": 8, "x": 12.34, "y": 0.012345},
            {"name": "c", "n": 9, "x": 1.2345, "y": "2.00x"}]
    assert report.markdown(rows, ("name", "n", "x", "y"), ("network", "count", "x", "y")).splitlines() == [
        "| network | count | x | y |", "|---:|---:|---:|---:|",
        "| a | 7 | 1234 | - |", "| b | 8 | 12.3 | 0.0123 |", "| c | 9 | 1.23 | 2.00x |"]


def test_scaling_estimate_scales_the_largest_measured_cell_by_work():
    estimator = scaling.Estimator()
    assert estimator.estimate(1.0) is None         # Nothing measured: the first cell always runs.
    estimator.add(1.0, {"measure s": 4.0, "cell s": 6.0})
    estimator.add(2.0, {"measure s": 10.0, "cell s": 14.0})
    estimator.add(3.0, {"note": "failed: its process died", "cell s": 1.0})     # Not a measurement.
    assert estimator.estimate(4.0) == pytest.approx(3.0 + 10.0 * 4.0 / 2.0)     # mean start-up 3 s


@pytest.mark.parametrize("flag, value, message", [
    ("--sweep_res", "16,32", "is not VALUES@FIXED"),
    ("--sweep_res", "12,16@16", "not a power of two"),
    ("--sweep_batch", "6@32", "divisible"),
])
def test_scaling_bad_grid_is_a_one_line_error(flag, value, message):
    with pytest.raises(SystemExit, match=message) as e:
        bench_generator.main(["--scaling", flag, value, "--device", "cpu"])
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="both empty"):
        bench_generator.main(["--scaling", "--sweep_res", "", "--sweep_batch", "", "--device", "cpu"])
    with pytest.raises(SystemExit, match="no folder"):
        bench_generator.main(["--scaling", "--json", "/nonexistent-dir/x.json", "--device", "cpu"])


def test_scaling_measures_a_cell_in_its_own_process_skips_the_rest_and_writes_json_and_png(tmp_path, capsys):
    """--max_cell_s 0: the first (smallest) cell runs, every later one is estimated over it and skipped."""
    out_json, out_png = tmp_path / "scaling.json", tmp_path / "scaling.png"
    rows = bench_generator.main(["--scaling", "--config", "cpu_demo", "--text_dim", "16", "--sweep_res", "4,8@4",
                                 "--sweep_batch", "4@4", "--repeats", "1", "--warmup", "0", "--max_cell_s", "0",
                                 "--threads", "1", "--device", "cpu", "--json", str(out_json), "--plot", str(out_png)])
    out = capsys.readouterr().out
    assert "cell 1/2: res 4 batch 4: " in out and "cell 2/2: res 8 batch 4: skipped, estimated" in out
    cells = _table_rows(out)
    assert [c[:3] for c in cells] == [["res", "4", "4"], ["res", "8", "4"], ["batch", "4", "4"]]
    measured = dict(zip(scaling.COLUMNS, cells[0]))
    assert all(_positive(measured[c]) for c in scaling.COLUMNS[3:8]) and measured["note"] == "-"
    assert cells[2][1:] == cells[0][1:]     # The cell both sweeps hold, measured once.
    assert cells[1][3:8] == ["-"] * 5 and cells[1][8].startswith("skipped: estimated")
    saved = json.loads(out_json.read_text())
    assert saved["mode"] == "scaling" and saved["args"]["sweep_res"] == "4,8@4" and saved["rows"] == rows
    assert rows[0]["train peak MiB"] > 0 and rows[0]["measure s"] <= rows[0]["cell s"]
    assert Image.open(out_png).size == (1024, 768)


def test_profile_prints_the_top_ops_and_writes_json(tmp_path, capsys):
    out_json = tmp_path / "profile.json"
    rows = bench_generator.main(["--profile", "--config", "cpu_demo", "--res", "4", "--batch", "4",
                                 "--train_batch", "4", "--text_dim", "16", "--device", "cpu",
                                 "--json", str(out_json)])
    out = capsys.readouterr().out
    assert "top 5 ops by self CPU time over 4 training iterations" in out
    assert len(rows) == 5 == len(_table_rows(out)) and all(r["res"] == 4 and r["network"] == "ours" for r in rows)
    ms = [r["self CPU ms"] for r in rows]
    assert ms == sorted(ms, reverse=True) and ms[-1] > 0 and sum(r["% of self CPU"] for r in rows) <= 100
    assert any(r["op"].startswith("aten::") for r in rows) and all(r["calls"] >= 1 for r in rows)
    saved = json.loads(out_json.read_text())
    assert saved["mode"] == "profile" and saved["args"]["config"] == "cpu_demo" and saved["rows"] == rows


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Untrained GAN (8 px and 16 px) and DDPM (8 px) checkpoints sharing one tiny text encoder."""
    root = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    tokenizer = Tokenizer.train(list(bench_sampling.CAPTIONS), max_len=TINY_TEXT.max_len)
    text_cfg, image_cfg = model_configs(TINY_TEXT, tokenizer.vocab_size)
    text = text_encoder_payload(TextEncoderBundle(tokenizer, ContrastiveModel(text_cfg, image_cfg),
                                                  text_cfg, image_cfg))
    paths = {}
    for res in (8, 16):
        g_cfg, _ = cpu_demo_configs(text_cfg.embed_dim, max_res=res)
        paths[f"gan{res}"] = save_checkpoint(root / f"gan{res}.pt", "gan", {
            "config": {"generator": config_to_dict(g_cfg)}, "G_ema": Generator(g_cfg).state_dict(),
            "progress": {"nimg": 0, "stage": g_cfg.num_stages - 1, "alpha": 1.0}, "text_encoder": text})
    unet_cfg = UNetConfig(resolution=8, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                          attention_resolutions=(8,), context_dim=text_cfg.dim, num_heads=2, groups=4)
    paths["ddpm"] = save_checkpoint(root / "ddpm.pt", "ddpm", {
        "config": {"unet": config_to_dict(unet_cfg), "scheduler": config_to_dict(SchedulerConfig(num_train_timesteps=10))},
        "unet_ema": UNet(unet_cfg).state_dict(), "progress": {"nimg": 0}, "text_encoder": text})
    return paths


def test_bench_sampling_prints_gan_ddim_and_ddpm_rows(checkpoints, capsys):
    rows = bench_sampling.main(["--gan", str(checkpoints["gan8"]), "--ddpm", str(checkpoints["ddpm"]),
                                "--num", "2", "--ddim_steps", "2", "--ddpm_steps", "3", "--repeats", "1",
                                "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and "8 px, 2 images per call" in out and "DDPM: 1" in out
    cells = _table_rows(out)
    assert [c[:3] for c in cells] == [["GAN", "1", "1"], ["DDIM-2", "2", "1"], ["DDPM-3", "3", "1"]]
    assert all(_positive(c) for row in cells for c in row[3:])
    assert cells[0][5] == "1.0x"  # the GAN relative to itself
    assert [r["method"] for r in rows] == ["GAN", "DDIM-2", "DDPM-3"]


def test_bench_sampling_errors_are_one_line(checkpoints, tmp_path):
    with pytest.raises(SystemExit, match="same resolution") as e:
        bench_sampling.main(["--gan", str(checkpoints["gan16"]), "--ddpm", str(checkpoints["ddpm"]), "--device", "cpu"])
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="pass a 'ddpm' one"):
        bench_sampling.main(["--gan", str(checkpoints["gan8"]), "--ddpm", str(checkpoints["gan8"]), "--device", "cpu"])
    with pytest.raises(SystemExit, match="no such checkpoint file"):
        bench_sampling.main(["--gan", str(tmp_path / "missing.pt"), "--ddpm", str(checkpoints["ddpm"]),
                             "--device", "cpu"])
    with pytest.raises(SystemExit, match="10 timesteps"):
        bench_sampling.main(["--gan", str(checkpoints["gan8"]), "--ddpm", str(checkpoints["ddpm"]),
                             "--ddpm_steps", "20", "--device", "cpu"])


def test_bench_soak_summary_measures_from_the_grown_sample_and_gives_write_percentiles():
    probe = bench_soak.SoakProbe(stop_after_s=600, rss_every=1)
    # Growing until 120 s (RSS jumps), then fully grown with a steady 6 MiB/hour slope.
    probe.samples = [bench_soak.Sample(s, s / 100, s >= 120, (300.0 if s < 120 else 500.0) + s / 600)
                     for s in range(0, 601, 30)]
    probe.writes = [(float(ms), 13.5) for ms in range(1, 101)]  # 1 .. 100 ms
    row = bench_soak.summarize(probe, warmup_s=60)
    assert row["warm_grown"] and row["warm_minutes"] == 2.0 and row["samples_after_warm"] == 17
    assert row["RSS warm MiB"] == pytest.approx(500.2) and row["growth MiB"] == pytest.approx(0.8)
    assert row["MiB/hour"] == pytest.approx(6.0)
    assert row["ckpt writes"] == 100 and row["ckpt MiB"] == 13.5
    assert row["write p50 ms"] == pytest.approx(50.5) and row["write p99 ms"] == pytest.approx(99.01)
    assert row["write max ms"] == 100.0
    cells = dict(zip(bench_soak.COLUMNS, _table_rows(bench_soak.format_table(row))[0]))
    assert cells["write p50 ms"] == "50.5" and cells["write p99 ms"] == "99.0" and cells["ckpt writes"] == "100"
