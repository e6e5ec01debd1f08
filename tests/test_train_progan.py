"""End to end: train_progan.py trains through two growth stages, writes a checkpoint, event
files, samples and log.jsonl, and a resumed run is bit-exact with an uninterrupted one."""
import json

import pytest
import torch

from stylegan_t2i.checkpoint import load_checkpoint
from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.data.demo_scenes import generate_demo_dataset

# 8 px final resolution = stages 4x4 and 8x8; 16 images per phase, batch 8.
TINY = ["--max_res", "8", "--batch", "8", "--kimg_per_stage", "0.016", "--snapshot_kimg", "0.032",
        "--text_encoder_steps", "8", "--seed", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    image_dir, label_dir = generate_demo_dataset(root, resolution=16, num_images=48)
    return ["--image_dir", str(image_dir), "--label_dir", str(label_dir)]


def _weights(path):
    ck = load_checkpoint(path, kinds="gan")
    return ck, {k: v for net in ("G", "D", "G_ema") for k, v in
                ((f"{net}.{name}", t) for name, t in ck[net].items())}


def test_two_stage_run_writes_everything_and_resumes_bit_exactly(data, tmp_path):
    out_a = tmp_path / "a"
    final_a = train_progan.main(data + TINY + ["--out", str(out_a), "--total_kimg", "0.064"])
    run = final_a.parent
    assert final_a.name == "network-final.pt"
    ck_a, w_a = _weights(final_a)
    assert ck_a["progress"]["nimg"] == 64 and ck_a["progress"]["stage"] == 1
    assert ck_a["progress"]["alpha"] == 1.0
    assert (run / "config.json").is_file() and json.loads((run / "config.json").read_text())["schedule"]["max_res"] == 8
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert sorted(p.name for p in (run / "samples").glob("*.png")), "no sample grid"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {"Loss/D", "Loss/G", "Loss/D/gp", "Progress/alpha", "Speed/img_per_s"} <= set(records[-1])
    assert all(torch.isfinite(t).all() for t in w_a.values())

    # Interrupted version: stop at 32 images, then resume from that checkpoint to 64.
    # The same text encoder as run a (pretrained by it and saved in its run directory).
    encoder = ["--text_encoder", str(run / "text_encoder.pt")]
    out_b = tmp_path / "b"
    half = train_progan.main(data + TINY + encoder + ["--out", str(out_b), "--total_kimg", "0.032"])
    assert load_checkpoint(half)["progress"]["nimg"] == 32
    final_b = train_progan.main(data + TINY + encoder + ["--out", str(out_b), "--total_kimg", "0.064",
                                                         "--resume", str(half)])
    ck_b, w_b = _weights(final_b)
    assert ck_b["progress"] == ck_a["progress"]
    for name, t in w_a.items():
        assert torch.equal(t, w_b[name]), f"{name} differs after resume"


def test_resume_auto_continues_newest_run_or_starts_one(data, tmp_path):
    out = tmp_path / "runs"
    first = train_progan.main(data + TINY + ["--out", str(out), "--total_kimg", "0.016", "--resume", "auto"])
    assert first.parent.name.startswith("00000-")
    encoder = ["--text_encoder", str(first.parent / "text_encoder.pt")]
    again = train_progan.main(data + TINY + encoder + ["--out", str(out), "--total_kimg", "0.024",
                                                       "--resume", "auto"])
    assert again.parent == first.parent  # same run directory, continued
    ck = load_checkpoint(again)
    assert ck["progress"]["nimg"] == 24 and ck["progress"]["stage"] == 1 and ck["progress"]["alpha"] == 0.5


def test_bad_arguments_and_data_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit):
        train_progan.main(["--image_dir", str(tmp_path)])  # --label_dir missing
    (tmp_path / "imgs").mkdir()
    (tmp_path / "txt").mkdir()
    with pytest.raises(SystemExit, match="error: .*imgs"):
        train_progan.main(["--image_dir", str(tmp_path / "imgs"), "--label_dir", str(tmp_path / "txt"),
                           "--out", str(tmp_path / "runs")])
