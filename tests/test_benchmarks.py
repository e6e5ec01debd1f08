"""Smoke tests of benchmarks/bench_generator.py and bench_sampling.py at the smallest settings:
every table row is printed with positive numbers, and bad input is a one-line error.

The sampling checkpoints hold untrained networks (throughput does not depend on the weights),
written in the same layout as the trainers' checkpoints. Timings are never asserted.
"""
import re

import pytest
import torch

from benchmarks import bench_generator, bench_sampling
from stylegan_t2i.checkpoint import save_checkpoint
from stylegan_t2i.config import config_to_dict
from stylegan_t2i.diffusion import SchedulerConfig, UNet, UNetConfig
from stylegan_t2i.models import cpu_demo_configs
from stylegan_t2i.models.generator import Generator
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
    assert [c.strip() for c in head.strip("|").split("|")] == [*bench_generator.COLUMNS, "peak RSS MiB"]
    (cells,) = _table_rows(out)
    assert cells[:3] == ["8", "4", "ours"] and all(_positive(c) for c in cells[3:])
    assert rows[0]["G GFLOP/img"] > 0 and 0 < rows[0]["% of conv ceiling"]


def test_bench_generator_nvlabs_missing_checkout_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no training/networks.py there") as e:
        bench_generator.main(["--config", "nvlabs", "--nvlabs", str(tmp_path / "missing"), "--device", "cpu"])
    assert "\n" not in str(e.value)


def test_bench_generator_rejects_bad_resolutions_and_batch():
    with pytest.raises(SystemExit, match="powers of two"):
        bench_generator.main(["--resolutions", "12", "--device", "cpu"])
    with pytest.raises(SystemExit, match="divisible"):
        bench_generator.main(["--resolutions", "8", "--batch", "6", "--device", "cpu"])
    with pytest.raises(SystemExit, match="add --scaling"):
        bench_generator.main(["--plot", "x.png", "--device", "cpu"])


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
