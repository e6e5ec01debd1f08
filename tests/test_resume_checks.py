"""A resume goes on as the run was trained (issue 17): a flag that contradicts the checkpoint, or
other data, is refused with one line saying what differs; only --total_kimg may change. Flags
left out take the checkpoint's values; checkpoints without a data fingerprint resume unchecked
(tests/test_checkpoint_compat.py)."""
import shutil

import pytest
import torch

from stylegan_t2i.checkpoint import load_checkpoint, save_checkpoint
from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.cli import train_ddpm
from stylegan_t2i.cli.run_setup import check_resume_flags, load_resume
from stylegan_t2i.config import config_to_dict
from stylegan_t2i.data import ImageLabelDataset
from stylegan_t2i.data.demo_scenes import generate_demo_dataset
from stylegan_t2i.diffusion.trainer import DdpmTrainConfig
from stylegan_t2i.distributed import Distributed
from stylegan_t2i.gan.trainer import GanTrainConfig
from stylegan_t2i.text.pretrain import PretrainConfig, load_text_encoder, pretrain_text_encoder, save_text_encoder

RES = 8
# No --kimg_per_stage: the cpu_demo preset's per-resolution phase lengths (10 kimg at 4 px), so
# these 16 images are two steps at 4x4, and a preset other than cpu_demo gives another schedule.
TINY = ["--max_res", str(RES), "--batch", "8", "--snapshot_kimg", "0.016", "--seed", "3", "--device", "cpu"]
AGAIN = "; drop the flag or start a new run"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 16-image GAN run on 48 demo images, with a text encoder pretrained for 8 steps."""
    root = tmp_path_factory.mktemp("resume")
    image_dir, label_dir = generate_demo_dataset(root / "data", resolution=16, num_images=48)
    cfg = PretrainConfig(resolution=RES, steps=8, warmup=2, seed=3)
    bundle = pretrain_text_encoder(ImageLabelDataset(image_dir, label_dir, RES, verbose=False), cfg, "cpu",
                                   progress=False)
    encoder = save_text_encoder(root / "text_encoder.pt", bundle, cfg)
    data = ["--image_dir", str(image_dir), "--label_dir", str(label_dir)]
    final = train_progan.main(data + TINY + ["--text_encoder", str(encoder), "--out", str(root / "runs"),
                                             "--total_kimg", "0.016"])
    return {"root": root, "data": data, "image_dir": image_dir, "label_dir": label_dir, "encoder": encoder,
            "final": final}


def _refused(args: list[str], out) -> str:
    with pytest.raises(SystemExit) as failure:
        train_progan.main(args + ["--out", str(out)])
    message = str(failure.value)
    assert "\n" not in message
    assert not out.exists() or not any(out.iterdir()), "a refused resume left a run directory"
    return message


@pytest.mark.parametrize("flags, why", [
    (["--batch", "16"], "with --batch 8, not 16"),
    (["--batch=16"], "with --batch 8, not 16"),
    (["--bat", "16"], "with --batch 8, not 16"),                  # argparse's abbreviation, still seen
    (["--max_res", "16"], "with --max_res 8, not 16"),
    (["--lr", "0.002"], "with --lr 0.001, not 0.002"),
    (["--kimg_per_stage", "0.016"], "with its preset's per-resolution phase lengths, not --kimg_per_stage 0.016"),
    (["--preset", "progan_paper"], "with --preset cpu_demo, not progan_paper"),
    (["--seed", "4"], "with --seed 3, not 4"),
    (["--snapshot_kimg", "0.032"], "with --snapshot_kimg 0.016, not 0.032"),
    (["--n_critic", "2"], "with --n_critic 1, not 2"),
    (["--align_weight", "0.25"], f"with --align_weight {GanTrainConfig.align_weight:g}, not 0.25"),
    (["--negatives", "5"], f"with --negatives {GanTrainConfig.negatives}, not 5"),
    (["--gp_interval", "7"], f"with --gp_interval {GanTrainConfig.gp_interval}, not 7"),
    (["--xflip"], "without --xflip"),
])
def test_a_changed_flag_is_refused_with_one_line(run, tmp_path, flags, why):
    message = _refused(run["data"] + ["--resume", str(run["final"])] + flags, tmp_path / "runs")
    assert message == f"error: --resume: the checkpoint was trained {why}{AGAIN}"


def test_a_changed_flag_is_refused_by_resume_auto_too(run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(run["final"].parent, runs / run["final"].parent.name)
    with pytest.raises(SystemExit, match="^error: --resume: the checkpoint was trained with --batch 8, not 4;"):
        train_progan.main(run["data"] + ["--resume", "auto", "--out", str(runs), "--batch", "4"])


def test_another_text_encoder_is_refused(run, tmp_path):
    bundle = load_text_encoder(run["encoder"])
    next(bundle.model.parameters()).data.add_(1.0)
    other = save_text_encoder(tmp_path / "other.pt", bundle)
    message = _refused(run["data"] + ["--resume", str(run["final"]), "--text_encoder", str(other)], tmp_path / "runs")
    assert message == f"error: --resume: the checkpoint holds another text encoder than {other}{AGAIN}"


def test_other_data_is_refused_naming_both(run, tmp_path):
    image_dir, label_dir = generate_demo_dataset(tmp_path / "fewer", resolution=16, num_images=32)
    message = _refused(["--image_dir", str(image_dir), "--label_dir", str(label_dir),
                        "--resume", str(run["final"])], tmp_path / "runs")
    assert message == (f"error: --resume: the checkpoint was trained on image_dir {run['image_dir']} and label_dir "
                       f"{run['label_dir']} (48 images), not image_dir {image_dir} and label_dir {label_dir} "
                       f"(32 images); pass the same data or start a new run")
    # As many images, one of them renamed (its caption file too).
    renamed = shutil.copytree(run["image_dir"].parent, tmp_path / "renamed")
    first = sorted((renamed / "images").glob("*.png"))[0]
    first.rename(first.with_name("renamed.png"))
    (renamed / "labels" / f"{first.stem}.txt").rename(renamed / "labels" / "renamed.txt")
    message = _refused(["--image_dir", str(renamed / "images"), "--label_dir", str(renamed / "labels"),
                        "--resume", str(run["final"])], tmp_path / "runs")
    assert message.endswith("(48 images, other file names); pass the same data or start a new run")


def test_only_total_kimg_changed_continues_also_from_moved_data(run, tmp_path):
    """The same flags again (a flag equal to the checkpoint's is fine) and a longer run; the data
    fingerprint holds names, not folders, so the same data moved elsewhere is accepted."""
    moved = shutil.copytree(run["image_dir"].parent, tmp_path / "moved")
    data = ["--image_dir", str(moved / "images"), "--label_dir", str(moved / "labels")]
    final = train_progan.main(data + TINY + ["--text_encoder", str(run["encoder"]), "--resume", str(run["final"]),
                                             "--out", str(tmp_path / "runs"), "--total_kimg", "0.024"])
    old, new = load_checkpoint(run["final"], kinds="gan"), load_checkpoint(final, kinds="gan")
    assert old["progress"]["nimg"] == 16 and new["progress"]["nimg"] == 24
    assert new["config"]["schedule"] == {**old["config"]["schedule"], "total_kimg": 0.024}
    assert new["config"]["train"] == old["config"]["train"]
    assert new["config"]["data"]["fingerprint"] == old["config"]["data"]["fingerprint"]
    assert new["config"]["data"]["image_dir"] == str(moved / "images")


def test_a_resume_without_flags_takes_xflip_from_the_checkpoint(run, tmp_path):
    """--xflip is read from the command line by the dataset: a resume that leaves it out must
    not turn the flips off."""
    ck = load_checkpoint(run["final"], kinds="gan")
    ck["config"]["data"]["xflip"] = True
    flipped = save_checkpoint(tmp_path / "flipped.pt", "gan", {k: v for k, v in ck.items()
                                                              if k not in ("format", "version", "kind")})
    args = train_progan.parse_args(run["data"] + ["--resume", str(flipped)])
    resumed, _ = load_resume(args, "gan", Distributed(), torch.device("cpu"))
    assert not args.xflip
    check_resume_flags(args, resumed, train_progan.gan_trained_with)
    assert args.xflip


def test_ddpm_resume_refuses_changed_flags(tmp_path):
    """tools/train_ddpm.py checks before it reads any data, so a checkpoint's configs suffice."""
    config = {"unet": {"resolution": RES}, "train": config_to_dict(DdpmTrainConfig(batch=8, seed=3)),
              "data": {"xflip": False}}
    path = save_checkpoint(tmp_path / "ddpm.pt", "ddpm", {"config": config})
    for flags, why in ((["--batch", "16"], "--batch 8, not 16"), (["--max_res", "16"], "--max_res 8, not 16"),
                       (["--seed", "0"], "--seed 3, not 0"),
                       (["--p_uncond", "0.5"], f"--p_uncond {DdpmTrainConfig.p_uncond:g}, not 0.5")):
        with pytest.raises(SystemExit) as failure:
            train_ddpm.main(["--resume", str(path), "--out", str(tmp_path / "runs")] + flags)
        assert str(failure.value) == f"error: --resume: the checkpoint was trained with {why}{AGAIN}"
