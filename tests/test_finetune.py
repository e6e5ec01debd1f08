"""Fine-tuning (issue 18): `--finetune CKPT` starts a new run from a trained checkpoint's networks
and text encoder at its final resolution with alpha = 1, on other data; its config.json records
where it started; optimizers start fresh; bad uses are one-line errors. The GAN and the DDPM."""
import json
import os
import resource

import pytest
import torch

from stylegan_t2i.checkpoint import load_checkpoint, save_checkpoint
from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.cli import train_ddpm
from stylegan_t2i.data import ImageLabelDataset
from stylegan_t2i.data.demo_scenes import BUILTIN, SceneSet, generate_demo_dataset
from stylegan_t2i.diffusion.trainer import DdpmTrainer
from stylegan_t2i.gan.schedule import ProgressiveSchedule, ScheduleConfig
from stylegan_t2i.gan.trainer import GanTrainer
from stylegan_t2i.inference import export_for_generation, load_sampler
from stylegan_t2i.text.pretrain import PretrainConfig, bundle_from_payload, load_text_encoder, pretrain_text_encoder
from stylegan_t2i.text.tokenizer import UNK_ID

# 8 px = stages 4x4 and 8x8; 16 images per phase, batch 8: the source ends at 8 px, alpha 1.
GAN_TINY = ["--max_res", "8", "--batch", "8", "--kimg_per_stage", "0.016", "--text_encoder_steps", "8",
            "--seed", "3", "--device", "cpu"]
DDPM_TINY = ["--max_res", "8", "--batch", "8", "--sample_steps", "2", "--text_encoder_steps", "8",
             "--seed", "3", "--device", "cpu"]
# A fine-tuned run of two steps.
SHORT = ["--total_kimg", "0.016", "--device", "cpu"]
NEW_COLOURS = SceneSet(colours=BUILTIN.colours + ("cyan", "pink"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The source data (built-in scenes) and the new data: scenes with two colours the source's
    captions never name."""
    root = tmp_path_factory.mktemp("finetune")
    old = generate_demo_dataset(root / "old", resolution=16, num_images=48)
    new = generate_demo_dataset(root / "new", resolution=16, num_images=32, seed=1, scenes=NEW_COLOURS)
    return {"root": root, "old": ["--image_dir", str(old[0]), "--label_dir", str(old[1])],
            "new": ["--image_dir", str(new[0]), "--label_dir", str(new[1])], "new_labels": new[1]}


@pytest.fixture(scope="module")
def gan_source(data):
    return train_progan.main(data["old"] + GAN_TINY + ["--out", str(data["root"] / "gan"), "--total_kimg", "0.032"])


@pytest.fixture(scope="module")
def ddpm_source(data):
    return train_ddpm.main(data["old"] + DDPM_TINY + ["--out", str(data["root"] / "ddpm"), "--total_kimg", "0.016"])


@pytest.fixture
def first_state(monkeypatch):
    """What a trainer holds when `fit` starts: its networks' state dicts, its optimizers' states
    and (GAN) the phase of its first step."""
    seen = {}

    def spy(cls):
        fit = cls.fit

        def recording_fit(self, total_kimg):
            for key, obj in self.checkpointed().items():
                seen[key] = {k: v.clone() for k, v in obj.state_dict().items()} if isinstance(obj, torch.nn.Module) \
                    else obj.state_dict()["state"]
            if isinstance(self, GanTrainer):
                seen["phase"] = self.schedule.at(self.nimg)
            return fit(self, total_kimg)
        monkeypatch.setattr(cls, "fit", recording_fit)
    spy(GanTrainer)
    spy(DdpmTrainer)
    return seen


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _config(final) -> dict:
    return json.loads((final.parent / "config.json").read_text())


# ----------------------------------------------------------------------------------------------
# GAN.

def test_gan_finetune_starts_from_the_checkpoint_at_its_final_resolution(data, gan_source, first_state, tmp_path):
    source = load_checkpoint(gan_source, kinds="gan")
    final = train_progan.main(data["new"] + SHORT + ["--finetune", str(gan_source), "--out", str(tmp_path),
                                                     "--max_res", "8"])   # Its own resolution may be given.
    assert final.parent != gan_source.parent and final.parent.name == "00000-images-ft-8"
    # The first step: the final stage at alpha 1, the source's weights, fresh optimizers.
    phase = first_state["phase"]
    assert (phase.stage, phase.alpha, phase.res) == (1, 1.0, 8)
    for key in ("G", "D", "G_ema"):
        assert _equal(first_state[key], source[key]), key
    assert first_state["opt_G"] == {} and first_state["opt_D"] == {}
    # config.json and the checkpoints record where it started.
    config = _config(final)
    assert config["finetune"] == {"path": str(gan_source.resolve()), "kind": "gan", "kimg": 0.032,
                                  "networks": {"G": "G", "D": "D", "G_ema": "G_ema"}, "text_steps": 0,
                                  "data": {k: source["config"]["data"][k] for k in ("image_dir", "label_dir",
                                                                                   "num_images")}}
    ck = load_checkpoint(final, kinds="gan")
    assert ck["config"]["finetune"] == config["finetune"]
    assert config["data"]["label_dir"] == str(data["new_labels"]) and config["data"]["num_images"] == 32
    # Its schedule never leaves the final stage; the networks and the text encoder are the source's.
    schedule = ProgressiveSchedule(ScheduleConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in config["schedule"].items()}))
    assert config["schedule"]["start_res"] == 8 and schedule.at(0).alpha == 1.0 and schedule.at(0).res == 8
    assert ck["progress"] == {"nimg": 16, "stage": 1, "alpha": 1.0, "step": 2}
    assert config["generator"] == source["config"]["generator"] and config["train"] == source["config"]["train"]
    assert _equal(ck["text_encoder"]["model"], source["text_encoder"]["model"])
    assert not _equal(ck["G"], source["G"])     # and it trained
    img = load_sampler(final).sample(["a small cyan circle on the left on a black background"], [0])
    assert img.shape == (1, 3, 8, 8) and torch.isfinite(img).all()


def test_new_words_encode_with_the_kept_tokenizer(data, gan_source):
    """sentencepiece spells the new colour words with the pieces it has: no unknown id, and the
    ids decode back to the caption."""
    tokenizer = bundle_from_payload(load_checkpoint(gan_source)["text_encoder"]).tokenizer
    captions = [line for path in sorted(data["new_labels"].glob("*.txt")) for line in path.read_text().splitlines()]
    new = [c for c in captions if "cyan" in c or "pink" in c]
    assert new, "the new data names no new colour"
    ids, mask = tokenizer.encode(new)
    assert not (ids == UNK_ID).any()
    assert tokenizer.decode(ids) == new and mask.sum(1).min() > 3
    # Only a character no caption had is unknown: the demo captions have no "z".
    assert (tokenizer.encode(["a small zebra"])[0] == UNK_ID).sum() == 1


def test_gan_finetune_from_a_generation_only_export(data, gan_source, first_state, tmp_path):
    """An export holds only G_ema: G starts from it and the critic freshly initialised."""
    export = export_for_generation(gan_source, tmp_path / "export.pt")
    final = train_progan.main(data["new"] + SHORT + ["--finetune", str(export), "--out", str(tmp_path / "runs")])
    source = load_checkpoint(gan_source, kinds="gan")
    assert _equal(first_state["G"], source["G_ema"]) and _equal(first_state["G_ema"], source["G_ema"])
    assert not _equal(first_state["D"], source["D"])
    assert _config(final)["finetune"]["networks"] == {"G": "G_ema", "D": "fresh", "G_ema": "G_ema"}


def test_gan_finetune_retunes_the_text_encoder_first(data, gan_source, tmp_path):
    final = train_progan.main(data["new"] + SHORT + ["--finetune", str(gan_source), "--out", str(tmp_path),
                                                     "--finetune_text_steps", "4"])
    source, ck = load_checkpoint(gan_source), load_checkpoint(final)
    retuned = load_text_encoder(final.parent / "text_encoder.pt")
    assert torch.equal(ck["text_encoder"]["tokenizer"], source["text_encoder"]["tokenizer"])
    assert _equal(ck["text_encoder"]["model"], retuned.model.state_dict())
    assert not _equal(ck["text_encoder"]["model"], source["text_encoder"]["model"])
    assert _config(final)["finetune"]["text_steps"] == 4
    # The encoder to re-tune fixes the resolution its image tower sees.
    dataset = ImageLabelDataset(data["new"][1], data["new"][3], 16, verbose=False)
    with pytest.raises(ValueError, match="sees 8 px, not cfg.resolution 16"):
        pretrain_text_encoder(dataset, PretrainConfig(resolution=16, steps=1), "cpu", progress=False, start=retuned)


def test_a_finetuned_run_resumes_as_one(data, gan_source, tmp_path):
    """--resume alone continues a fine-tuned run: still at the final stage, the record kept."""
    first = train_progan.main(data["new"] + SHORT + ["--finetune", str(gan_source), "--out", str(tmp_path)])
    final = train_progan.main(data["new"] + ["--resume", str(first), "--total_kimg", "0.024", "--device", "cpu",
                                             "--out", str(tmp_path)])
    old, new = load_checkpoint(first), load_checkpoint(final)
    assert new["config"]["finetune"] == old["config"]["finetune"]
    assert new["progress"] == {"nimg": 24, "stage": 1, "alpha": 1.0, "step": 3}


def test_finetune_with_resume_auto_starts_then_continues_its_own_run(data, gan_source, tmp_path):
    """--finetune CKPT --resume auto (the command torchrun restarts, and the one an interrupted
    run names): a new fine-tuned run when there is none, then that run, never the source's run
    or another run under the same --out."""
    auto = data["new"] + SHORT + ["--finetune", str(gan_source), "--resume", "auto", "--out", str(tmp_path)]
    first = train_progan.main(auto)
    other = train_progan.main(data["new"] + SHORT + ["--text_encoder_steps", "2", "--out", str(tmp_path)])
    assert other.parent.name > first.parent.name and "-ft-" in first.parent.name   # The newer run is not it.
    again = train_progan.main(auto[:auto.index("--out")] + ["--total_kimg", "0.024", "--out", str(tmp_path)])
    assert again.parent == first.parent
    ck = load_checkpoint(again)
    assert ck["progress"]["nimg"] == 24 and ck["config"]["finetune"]["path"] == str(gan_source.resolve())


def _refused(main, args: list[str], out) -> str:
    with pytest.raises(SystemExit) as failure:
        main(args + ["--out", str(out)])
    message = str(failure.value)
    assert "\n" not in message and message.startswith("error: ")
    assert not out.exists() or not any(out.iterdir()), "a refused fine-tune left a run directory"
    return message


def test_gan_finetune_errors_are_one_line(data, gan_source, tmp_path):
    ck = ["--finetune", str(gan_source)]
    out = tmp_path / "runs"
    assert _refused(train_progan.main, data["new"] + ck + ["--resume", str(gan_source)], out) == (
        "error: --finetune starts a new run and --resume PATH continues one; give one of them "
        "(--finetune with --resume auto continues the newest run fine-tuned from that checkpoint, or starts one)")
    missing = tmp_path / "missing.pt"
    assert _refused(train_progan.main, data["new"] + ["--finetune", str(missing)], out) == (
        f"error: --finetune: {missing}: no such checkpoint file")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(gan_source.read_bytes()[:1000])     # Truncated.
    assert _refused(train_progan.main, data["new"] + ["--finetune", str(corrupt)], out).startswith(
        f"error: --finetune: {corrupt}: not a readable checkpoint")
    encoder = gan_source.parent / "text_encoder.pt"
    assert _refused(train_progan.main, data["new"] + ["--finetune", str(encoder)], out) == (
        f"error: --finetune: {encoder}: checkpoint of kind 'text_encoder', expected 'gan'")
    assert _refused(train_progan.main, data["new"] + ck + ["--max_res", "16"], out) == (
        "error: --finetune: the checkpoint is 8 px and a fine-tuned run keeps its resolution, not --max_res 16; "
        "drop the flag")
    assert _refused(train_progan.main, data["new"] + ck + ["--kimg_per_stage", "1"], out) == (
        "error: --finetune: drop --kimg_per_stage; the run keeps the checkpoint's networks and trains only at "
        "its final resolution")
    assert _refused(train_progan.main, data["new"] + ck + ["--text_encoder", str(encoder)], out) == (
        "error: --finetune: drop --text_encoder; the run keeps the checkpoint's text encoder (re-tune it with "
        "--finetune_text_steps N)")
    assert _refused(train_progan.main, data["new"] + ["--finetune_text_steps", "5"], out) == (
        "error: --finetune_text_steps re-tunes the text encoder of a --finetune checkpoint; give --finetune too")
    lacking = {k: v for k, v in load_checkpoint(gan_source).items() if k not in ("format", "version", "kind",
                                                                                 "text_encoder")}
    lacking = save_checkpoint(tmp_path / "lacking.pt", "gan", lacking)
    assert _refused(train_progan.main, data["new"] + ["--finetune", str(lacking)], out) == (
        f"error: --finetune: {lacking} holds no text_encoder; pass a checkpoint written by training or "
        "tools/export_generator.py")


# ----------------------------------------------------------------------------------------------
# DDPM.

def test_ddpm_finetune_starts_from_the_checkpoint(data, ddpm_source, first_state, tmp_path):
    source = load_checkpoint(ddpm_source, kinds="ddpm")
    final = train_ddpm.main(data["new"] + ["--finetune", str(ddpm_source), "--out", str(tmp_path),
                                           "--total_kimg", "0.008", "--device", "cpu"])
    assert final.parent != ddpm_source.parent and final.parent.name == "00000-images-ft-ddpm-8"
    assert _equal(first_state["unet"], source["unet"]) and _equal(first_state["unet_ema"], source["unet_ema"])
    assert first_state["optimizer"] == {}
    config = _config(final)
    assert config["finetune"]["path"] == str(ddpm_source.resolve()) and config["finetune"]["kind"] == "ddpm"
    assert config["finetune"]["kimg"] == 0.016
    assert config["finetune"]["networks"] == {"unet": "unet", "unet_ema": "unet_ema"}
    ck = load_checkpoint(final, kinds="ddpm")
    assert ck["config"]["finetune"] == config["finetune"] and ck["config"]["unet"] == source["config"]["unet"]
    # Its settings are the source's (--sample_steps 2 too), but for --total_kimg.
    assert ck["progress"] == {"nimg": 8, "step": 1}
    assert config["train"] == {**source["config"]["train"], "total_kimg": 0.008}
    assert _equal(ck["text_encoder"]["model"], source["text_encoder"]["model"])


def test_ddpm_finetune_errors_are_one_line(data, ddpm_source, gan_source, tmp_path):
    out = tmp_path / "runs"
    assert _refused(train_ddpm.main, data["new"] + ["--finetune", str(gan_source)], out) == (
        f"error: --finetune: {gan_source}: checkpoint of kind 'gan', expected 'ddpm'")
    assert _refused(train_ddpm.main, data["new"] + ["--finetune", str(ddpm_source), "--max_res", "16"], out) == (
        "error: --finetune: the checkpoint is 8 px and a fine-tuned run keeps its resolution, not --max_res 16; "
        "drop the flag")
    assert _refused(train_ddpm.main, data["new"] + ["--finetune", str(ddpm_source), "--resume", str(ddpm_source)],
                    out).startswith("error: --finetune starts a new run and --resume PATH continues one")


# ----------------------------------------------------------------------------------------------
# benchmarks/bench_finetune.py: its parts (the runs themselves take minutes).

def test_bench_finetune_table_and_flags():
    from benchmarks import bench_finetune as bf
    assert bf.parse_args([]).scenes == NEW_COLOURS
    with pytest.raises(SystemExit):
        bf.parse_args(["--new_colours", "teal"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    assert bf.cpu_seconds(os.getpid()) == pytest.approx(usage.ru_utime + usage.ru_stime, abs=0.5)
    attrs = {"shape": 0.5, "colour": 0.75, "size": 1.0, "position": 1.0, "background": 1.0}
    results = {"seen": {**attrs, "all": 0.25, "by_value": {"colour": {"red": 1.0, "cyan": 0.5, "pink": 0.0}}},
               "held_out": {**attrs, "all": 0.125}}
    row = bf.table_row("fine-tuned", {"kimg": 12.34, "res": 32, "cpu_s": 600.4}, results, ("cyan", "pink"))
    assert row["all new colours"] == 0.25 and row["all held-out"] == 0.125 and row["colour"] == 0.75
    table = bf.markdown([row]).splitlines()
    assert table[0].startswith("| run | kimg | res | cpu_s | shape | colour |")
    assert table[2] == "| fine-tuned | 12.3 | 32 | 600 | 0.500 | 0.750 | 1.000 | 1.000 | 1.000 | 0.250 | 0.125 | 0.250 |"
