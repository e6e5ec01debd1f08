"""CLIP loss, contrastive pretraining, the text_encoder checkpoint and evaluation helpers."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats
import torch

from stylegan_t2i.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stylegan_t2i.text.contrastive import ContrastiveModel, clip_loss
from stylegan_t2i.text.encoder import TextEncoderConfig
from stylegan_t2i.text.image_encoder import ImageEncoderConfig
from stylegan_t2i.text.pretrain import (
    PretrainConfig,
    load_text_encoder,
    pretrain_text_encoder,
    retrieval_accuracy,
    roc_auc,
    save_text_encoder,
    text_encoder_payload,
)

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
           "yellow": (255, 255, 0), "white": (255, 255, 255), "black": (0, 0, 0)}
TINY = PretrainConfig(resolution=8, batch=12, lr=3e-3, steps=40, warmup=5, max_len=12, text_dim=32,
                      text_depth=1, text_heads=2, embed_dim=16, image_channels=(8, 16), log_every=10)


def colour_dataset(copies=2):
    """Flat colour images at 8x8 with a few phrasings of the colour name each."""
    images, captions = [], []
    for name, rgb in COLOURS.items():
        for _ in range(copies):
            images.append(np.broadcast_to(np.array(rgb, np.uint8)[:, None, None], (3, 8, 8)))
            captions.append([f"a {name} image", f"{name}", f"something {name}"])
    return SimpleNamespace(images=np.stack(images), captions=captions)


@pytest.fixture(scope="module")
def trained():
    log = SimpleNamespace(records=[])
    log.scalars = lambda step, values, **extra: log.records.append((step, values))
    bundle = pretrain_text_encoder(colour_dataset(), TINY, "cpu", run_log=log, progress=False)
    return bundle, log.records


def test_clip_loss_hand_computed():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # logits = 2 * img @ txt^T = [[1.2, 0], [1.6, 2]]
    rows = [math.log(1 + math.exp(0 - 1.2)), math.log(1 + math.exp(1.6 - 2))]         # image -> text
    cols = [math.log(1 + math.exp(1.6 - 1.2)), math.log(1 + math.exp(0 - 2))]         # text -> image
    expected = 0.5 * (sum(rows) / 2 + sum(cols) / 2)
    assert clip_loss(img, txt, torch.tensor(2.0)).item() == pytest.approx(expected, abs=1e-6)


def test_logit_scale_init_and_clamp():
    model = ContrastiveModel(TextEncoderConfig(vocab_size=8, dim=16, depth=1, heads=2, embed_dim=8),
                             ImageEncoderConfig(resolution=8, channels=(4,), embed_dim=8))
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == 100.0
    emb = model.encode_image(torch.zeros(2, 3, 8, 8))
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_pretraining_lowers_loss_and_aligns(trained):
    bundle, records = trained
    losses = [values["Loss/contrastive"] for _, values in records]
    assert len(records) == 4 and {"Accuracy/retrieval", "Progress/logit_scale"} <= set(records[0][1])
    assert losses[-1] < 0.5 * losses[0], losses
    # Each colour's image is closest to its own name among all colours.
    names = list(COLOURS)
    img = torch.stack([torch.tensor(COLOURS[n], dtype=torch.float32).view(3, 1, 1).expand(3, 8, 8) / 127.5 - 1
                       for n in names])
    acc = retrieval_accuracy(bundle.embed_text([f"a {n} image" for n in names]), bundle.embed_images(img),
                             torch.arange(6), torch.arange(6))
    assert acc == 1.0
    assert not any(p.requires_grad for p in bundle.model.parameters()) and not bundle.model.training


def test_bundle_encode_shapes(trained):
    bundle, _ = trained
    tokens, mask, sentence = bundle.encode(["red", "a blue image"], "cpu")
    assert tokens.shape == (2, 12, 32) and mask.shape == (2, 12) and sentence.shape == (2, 16)
    assert mask.sum(1).tolist() == [3, 5]
    img = torch.zeros(2, 3, 16, 16)
    assert bundle.alignment(img, ["red", "blue"]).shape == (2,)


def test_save_load_round_trip(trained, tmp_path):
    bundle, _ = trained
    path = save_text_encoder(tmp_path / "text_encoder.pt", bundle, TINY)
    torch.load(path, weights_only=True)                                 # Plain data only.
    loaded = load_text_encoder(path)
    caps = ["a green image", "white", "something unseen"]
    for a, b in zip(bundle.encode(caps, "cpu"), loaded.encode(caps, "cpu")):
        assert torch.equal(a, b)
    img = torch.rand(3, 3, 8, 8) * 2 - 1
    assert torch.equal(bundle.alignment(img, caps), loaded.alignment(img, caps))
    # The same payload nested in a GAN checkpoint, and errors as one-line CheckpointErrors.
    save_checkpoint(tmp_path / "gan.pt", "gan", {"text_encoder": text_encoder_payload(bundle)})
    nested = load_text_encoder(load_checkpoint(tmp_path / "gan.pt"))
    assert torch.equal(nested.encode(caps)[2], bundle.encode(caps)[2])
    save_checkpoint(tmp_path / "ddpm.pt", "ddpm", {})
    with pytest.raises(CheckpointError, match="no text encoder"):
        load_text_encoder(tmp_path / "ddpm.pt")
    with pytest.raises(CheckpointError):
        load_text_encoder(tmp_path / "missing.pt")


def test_roc_auc_matches_scipy_with_ties():
    gen = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 8, (50,), generator=gen).float()
    neg = torch.randint(0, 6, (70,), generator=gen).float()
    u = scipy.stats.mannwhitneyu(pos.numpy(), neg.numpy()).statistic
    assert roc_auc(pos, neg) == pytest.approx(u / (50 * 70), abs=1e-12)
    assert roc_auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert roc_auc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5


def test_retrieval_accuracy_counts_label_matches():
    gallery = torch.eye(3)
    query = torch.tensor([[1.0, 0.1, 0.0], [0.9, 0.2, 0.0], [0.0, 0.0, 1.0]])
    # Nearest items: 0, 0, 2; labels of gallery items [5, 6, 7]; query labels [5, 6, 7].
    assert retrieval_accuracy(query, gallery, torch.tensor([5, 6, 7]), torch.tensor([5, 6, 7])) == pytest.approx(2 / 3)
    assert retrieval_accuracy(query, gallery, torch.tensor([5, 5, 7]), torch.tensor([5, 6, 7])) == 1.0


def test_tool_main_writes_run(tmp_path):
    from PIL import Image

    from stylegan_t2i.cli.train_text_encoder import main

    (tmp_path / "imgs").mkdir()
    (tmp_path / "txt").mkdir()
    for i, (name, rgb) in enumerate(COLOURS.items()):
        Image.new("RGB", (12, 12), rgb).save(tmp_path / "imgs" / f"{i}.png")
        (tmp_path / "txt" / f"{i}.txt").write_text(f"a {name} square\n{name}\n")
    run_dir = main(["--image_dir", str(tmp_path / "imgs"), "--label_dir", str(tmp_path / "txt"), "--out",
                    str(tmp_path / "runs"), "--resolution", "8", "--steps", "3", "--batch", "4", "--no_progress"])
    assert run_dir.name == "00000-textenc-imgs-8"
    assert list(run_dir.glob("events.out.tfevents.*")) and (run_dir / "config.json").is_file()
    assert (run_dir / "log.jsonl").read_text().count("Loss/contrastive") == 1
    bundle = load_text_encoder(run_dir / "text_encoder.pt")
    assert bundle.image_cfg.resolution == 8 and bundle.encode(["a red square"])[2].shape == (1, 128)
    with pytest.raises(SystemExit, match="label_dir"):
        main(["--image_dir", str(tmp_path / "imgs")])


def _pretrain_with_loss(monkeypatch, wrap, **cfg):
    """Pretrain briefly with `wrap(step, loss)` in place of each step's CLIP loss; -> (raised, log records)."""
    import dataclasses

    from stylegan_t2i.text import pretrain

    real_loss, calls = pretrain.clip_loss, []

    def loss(*args):
        calls.append(1)
        return wrap(len(calls), real_loss(*args))

    monkeypatch.setattr(pretrain, "clip_loss", loss)
    log = SimpleNamespace(records=[])
    log.scalars = lambda step, values, **extra: log.records.append((extra["iteration"], values))
    with pytest.raises(Exception) as raised:
        pretrain_text_encoder(colour_dataset(), dataclasses.replace(TINY, **cfg), "cpu", run_log=log, progress=False)
    return raised.value, log.records


def test_pretraining_stops_after_the_step_a_signal_arrives_in(monkeypatch):
    import os
    import signal

    from stylegan_t2i.training.interrupt import TrainingInterrupted

    def nan_then_signal(step, loss):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss * float("nan") if step <= 2 else loss

    error, records = _pretrain_with_loss(monkeypatch, nan_then_signal, steps=6, log_every=2)
    assert isinstance(error, TrainingInterrupted) and "SIGTERM at step 3 of 6" in str(error)
    assert [step for step, _ in records] == [2, 3]          # the partial window is logged too
    assert records[0][1]["Faults/nonfinite_steps"] == 2 and "Faults/nonfinite_steps" not in records[1][1]


def test_pretraining_stops_after_max_nonfinite_steps_in_a_row(monkeypatch):
    from stylegan_t2i.training.faults import TrainingDiverged

    error, records = _pretrain_with_loss(monkeypatch, lambda step, loss: loss * float("nan"), max_nonfinite=3)
    assert isinstance(error, TrainingDiverged) and "3 non-finite losses or gradients in a row" in str(error)
    assert "No text encoder was saved" in str(error) and records == []
