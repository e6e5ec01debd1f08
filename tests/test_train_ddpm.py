"""DDPM training: tools/train_ddpm.py writes a checkpoint, events, samples and log.jsonl; the loss
falls on a fixed batch; `--resume auto` continues the same run (passing over GAN runs) bit-exactly;
non-finite steps are skipped, counted, stop training and are never checkpointed.

One torch thread for the whole session comes from tests/conftest.py.
"""
import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_t2i.checkpoint import load_checkpoint, save_checkpoint
from stylegan_t2i.cli import train_ddpm
from stylegan_t2i.data import ImageLabelDataset, IndexOrder
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.diffusion import SchedulerConfig, UNet, UNetConfig
from stylegan_t2i.diffusion.trainer import DdpmTrainConfig, DdpmTrainer, bucket_names
from stylegan_t2i.text.pretrain import load_text_encoder
from stylegan_t2i.training.faults import TrainingDiverged
from stylegan_t2i.training.run_files import auto_resume_candidates

RES, BATCH = 8, 8
# 48 images = 6 steps of 8; a snapshot at 24 images; 2-step guided DDIM grids.
TINY = ["--max_res", str(RES), "--batch", str(BATCH), "--snapshot_kimg", "0.024", "--sample_steps", "2",
        "--text_encoder_steps", "8", "--seed", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    image_dir, label_dir = generate_demo_dataset(root, resolution=16, num_images=32)
    return image_dir, label_dir


@pytest.fixture(scope="module")
def run_a(data, tmp_path_factory):
    """An uninterrupted 48-image run (it also pretrains the text encoder the other tests reuse)."""
    out = tmp_path_factory.mktemp("a")
    return train_ddpm.main(["--image_dir", str(data[0]), "--label_dir", str(data[1])] + TINY
                           + ["--out", str(out), "--total_kimg", "0.048"])


def _state(path):
    ck = load_checkpoint(path, kinds="ddpm")
    tensors = {f"{net}.{k}": v for net in ("unet", "unet_ema") for k, v in ck[net].items()}
    for pid, s in ck["optimizer"]["state"].items():
        tensors.update({f"opt.{pid}.{k}": v for k, v in s.items()})
    return ck, tensors


def test_run_writes_checkpoint_events_samples_and_log(run_a):
    run = run_a.parent
    assert run_a.name == "network-final.pt" and run.name.endswith("-ddpm-8")
    ck, tensors = _state(run_a)
    assert ck["kind"] == "ddpm" and ck["progress"] == {"nimg": 48, "step": 6}
    assert set(ck["config"]) == {"unet", "scheduler", "train", "data"}
    assert ck["config"]["unet"]["resolution"] == RES
    assert ck["config"]["unet"]["context_dim"] == load_text_encoder(run / "text_encoder.pt").text_cfg.dim
    assert {"torch", "dataset", "sampler"} <= set(ck["rng"]) and "tokenizer" in ck["text_encoder"]
    assert len(ck["sample"]["prompts"]) == 8 and ck["sample"]["seeds"] == list(range(8))
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    # Training moved the zero-initialised output conv, and the EMA copy lags behind the weights.
    assert ck["unet"]["conv_out.weight"].abs().sum() > 0
    assert not torch.equal(ck["unet"]["conv_out.weight"], ck["unet_ema"]["conv_out.weight"])
    assert [p.name for p in run.glob("network-snapshot-*.pt")] == ["network-snapshot-000000024.pt"]
    assert json.loads((run / "config.json").read_text())["train"]["batch"] == BATCH
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    grid = np.asarray(Image.open(next((run / "samples").glob("*.png"))))
    assert grid.shape == (8 * (RES + 2) + 2, 8 * (RES + 2) + 2, 3)  # 8 prompts x 8 seeds
    record = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert {"Loss/diffusion", "Progress/kimg", "Speed/img_per_s", "LR"} <= set(record)
    buckets = {k for k in record if k.startswith("Loss/t_")}
    assert buckets and buckets <= set(bucket_names(1000)) and record["Progress/kimg"] == 0.048


def test_bucket_names_split_the_schedule_in_four():
    assert bucket_names(1000) == ["Loss/t_000_249", "Loss/t_250_499", "Loss/t_500_749", "Loss/t_750_999"]


def test_resume_auto_continues_the_ddpm_run_bit_exactly(data, run_a, tmp_path):
    """Stop at 24 images, resume to 48 with --resume auto: same weights, EMA and optimizer state
    as the uninterrupted run; a newer GAN run under the same --out is passed over."""
    args = (["--image_dir", str(data[0]), "--label_dir", str(data[1])] + TINY
            + ["--text_encoder", str(run_a.parent / "text_encoder.pt"), "--out", str(tmp_path), "--resume", "auto"])
    half = train_ddpm.main(args + ["--total_kimg", "0.024"])   # Nothing to resume: starts run 00000.
    assert half.parent.name.startswith("00000-") and load_checkpoint(half)["progress"]["nimg"] == 24
    save_checkpoint(tmp_path / "00001-gan-8" / "network-final.pt", "gan", {})
    assert next(auto_resume_candidates(tmp_path, kind="ddpm")) == half
    assert next(auto_resume_candidates(tmp_path, kind="gan")).parent.name == "00001-gan-8"
    final = train_ddpm.main(args + ["--total_kimg", "0.048"])
    assert final.parent == half.parent
    ck_a, w_a = _state(run_a)
    ck_b, w_b = _state(final)
    assert ck_b["progress"] == ck_a["progress"] and w_a.keys() == w_b.keys()
    for name, t in w_a.items():
        assert torch.equal(t, w_b[name]), f"{name} differs after resume"


def _tiny_trainer(data, run_a, run_dir=None, **cfg):
    bundle = load_text_encoder(run_a.parent / "text_encoder.pt")
    dataset = ImageLabelDataset(data[0], data[1], RES, verbose=False)
    unet_cfg = UNetConfig(resolution=RES, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                          attention_resolutions=(4,), context_dim=bundle.text_cfg.dim, num_heads=4, groups=8)
    torch.manual_seed(0)
    train_cfg = DdpmTrainConfig(**{"batch": BATCH, "lr_warmup_kimg": 0.0, **cfg})
    return DdpmTrainer(UNet(unet_cfg), bundle, dataset, IndexOrder(len(dataset)), SchedulerConfig(),
                       train_cfg, run_dir, torch.device("cpu"), ["a red circle"], {}, progress=False)


def test_loss_falls_on_a_fixed_batch(data, run_a):
    """Training on one batch lowers L_simple measured with fixed (t, ε): 4 copies of the batch,
    so 32 timesteps spread over the schedule are compared before and after."""
    trainer = _tiny_trainer(data, run_a, lr=2e-3, p_uncond=0.0)
    img, captions = trainer.next_reals()
    img4, captions4 = img.repeat(4, 1, 1, 1), captions * 4
    context, mask = trainer.encode(captions4)

    def fixed_loss():
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(123)
            return float(trainer.diffusion_loss(img4, context, mask)[0].mean())

    before = fixed_loss()
    assert before == pytest.approx(1.0, abs=0.15)  # The zero-initialised output predicts ε = 0.
    for _ in range(40):
        trainer.train_step(img, captions)
    after = fixed_loss()
    assert after < 0.7 * before, (before, after)
    logged = trainer.stats.flush()
    assert logged["Loss/diffusion"] < before and "Faults/nonfinite_steps" not in logged


def test_caption_dropout_rate():
    trainer = DdpmTrainer.__new__(DdpmTrainer)
    trainer.cfg = DdpmTrainConfig(p_uncond=0.25)
    torch.manual_seed(0)
    dropped = trainer.drop_captions(["a red circle"] * 4000)
    assert set(dropped) == {"", "a red circle"}
    assert dropped.count("") / 4000 == pytest.approx(0.25, abs=0.03)


def test_nonfinite_steps_are_skipped_counted_stop_and_never_checkpointed(data, run_a, tmp_path):
    trainer = _tiny_trainer(data, run_a, run_dir=tmp_path, max_nonfinite=3)
    img, captions = trainer.next_reals()
    before = {k: v.clone() for k, v in trainer.unet.state_dict().items()}
    bad = torch.full_like(img, float("nan"))
    for _ in range(2):
        assert torch.isnan(trainer.train_step(bad, captions)).all()
    assert all(torch.equal(v, trainer.unet.state_dict()[k]) for k, v in before.items())
    assert trainer.stats.flush()["Faults/nonfinite_steps"] == 2
    trainer.train_step(img, captions)                    # A good step resets the count ...
    for _ in range(2):
        trainer.train_step(bad, captions)
    with pytest.raises(TrainingDiverged, match="3 non-finite losses or gradients in a row"):
        trainer.train_step(bad, captions)                # ... so only the third bad one in a row stops.
    with torch.no_grad():
        trainer.unet_ema.conv_out.weight.fill_(float("nan"))
    assert trainer.snapshot() is None and not list(tmp_path.glob("network-*.pt"))
    trainer.log.close()


def test_bad_arguments_and_data_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit):
        train_ddpm.main(["--image_dir", str(tmp_path)])  # --label_dir missing
    (tmp_path / "imgs").mkdir()
    (tmp_path / "txt").mkdir()
    with pytest.raises(SystemExit, match="error: .*imgs"):
        train_ddpm.main(["--image_dir", str(tmp_path / "imgs"), "--label_dir", str(tmp_path / "txt"),
                         "--out", str(tmp_path / "runs")])
    with pytest.raises(SystemExit, match="error: .*no such checkpoint"):
        train_ddpm.main(["--resume", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "runs")])


def test_sigterm_writes_a_checkpoint_and_stops(data, run_a, tmp_path, monkeypatch):
    trainer = _tiny_trainer(data, run_a, run_dir=tmp_path, sample_steps=1)
    step = trainer.train_step

    def step_then_sigterm(img, captions):
        step(img, captions)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer, "train_step", step_then_sigterm)
    assert trainer.fit(total_kimg=1.0) is None
    ck = load_checkpoint(tmp_path / "network-snapshot-000000008.pt", kinds="ddpm")
    assert ck["progress"] == {"nimg": BATCH, "step": 1}
