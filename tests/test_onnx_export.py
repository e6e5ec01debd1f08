"""ONNX export (tools/export_onnx.py): onnxruntime matches PyTorch at batch 1 and 3, and the
torch-free path that config.json describes (sentencepiece + onnxruntime) draws GanSampler.sample's image."""
import json
import warnings

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="ONNX export tests need the onnx package: pip install -e '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime: pip install -e '.[onnx]'")

from stylegan_t2i.cli import export_onnx
from stylegan_t2i.inference import GanSampler, load_sampler, seeded_normal
from stylegan_t2i.models.generator import Generator, GeneratorConfig
from stylegan_t2i.text.contrastive import ContrastiveModel
from stylegan_t2i.text.pretrain import PretrainConfig, TextEncoderBundle, model_configs
from stylegan_t2i.text.tokenizer import Tokenizer

CAPTIONS = ["a large red circle in the center on a black background",
            "a small blue square on the left",
            "a yellow triangle on the right on a white background"]
LONG = " ".join(["a small green square on the left on a gray background"] * 6)     # > max_len - 2 pieces


@pytest.fixture(scope="module")
def sampler():
    return load_sampler(export_onnx.DEMO_MODEL)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    export_onnx.main(["--out", str(out)])           # the default checkpoint: the shipped demo model
    return out


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_writes_valid_graphs_with_dynamic_axes_and_a_config(exported, sampler):
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["files"] == {"text_encoder": "text_encoder.onnx", "generator": "generator.onnx",
                            "tokenizer": "tokenizer.model"}
    assert (cfg["z_dim"], cfg["text_dim"], cfg["resolution"], cfg["max_len"]) == (
        sampler.G.cfg.z_dim, sampler.G.cfg.text_dim, sampler.resolution, sampler.text.tokenizer.max_len)
    assert {k: cfg["tokenizer"][k] for k in ("pad_id", "unk_id", "bos_id", "eos_id")} == {
        "pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3}
    assert (exported / "tokenizer.model").read_bytes() == sampler.text.tokenizer.to_bytes()
    for name, dynamic in (("text_encoder.onnx", {"ids": ["batch", "length"], "mask": ["batch", "length"]}),
                          ("generator.onnx", {"z": ["batch"], "embedding": ["batch"]})):
        model = onnx.load(str(exported / name))
        onnx.checker.check_model(model)
        assert model.opset_import[0].version == cfg["opset"]
        dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim if d.dim_param] for i in model.graph.input}
        assert dims == dynamic


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_pytorch(exported, sampler, batch):
    captions, seeds = CAPTIONS[:batch], list(range(10, 10 + batch))
    ids, mask = sampler.text.tokenizer.encode(captions)
    emb_ref = sampler.embed(captions)
    emb = _session(exported / "text_encoder.onnx").run(None, {"ids": ids.numpy(), "mask": mask.numpy()})[0]
    assert emb.shape == tuple(emb_ref.shape) and np.abs(emb - emb_ref.numpy()).max() < 1e-4
    # L is dynamic: dropping all-pad columns gives the same embedding.
    length = int(mask.sum(1).max())
    emb_short = _session(exported / "text_encoder.onnx").run(
        None, {"ids": ids[:, :length].numpy(), "mask": mask[:, :length].numpy()})[0]
    assert np.abs(emb_short - emb_ref.numpy()).max() < 1e-4

    z = seeded_normal(seeds, sampler.G.cfg.z_dim, torch.device("cpu"))
    img_ref = sampler.synthesize(emb_ref, z)
    img = _session(exported / "generator.onnx").run(None, {"z": z.numpy(), "embedding": emb_ref.numpy()})[0]
    assert img.shape == (batch, 3, sampler.resolution, sampler.resolution)
    assert np.abs(img - img_ref.numpy()).max() < 1e-4


def _tokenize(cfg, sp, captions):
    """config.json's recipe in numpy; no torch."""
    t, max_len = cfg["tokenizer"], cfg["max_len"]
    ids = np.full((len(captions), max_len), t["pad_id"], dtype=np.int64)
    for row, caption in enumerate(captions):
        pieces = sp.encode(caption)[:max_len - 2]
        ids[row, :len(pieces) + 2] = [t["bos_id"], *pieces, t["eos_id"]]
    return ids, ids != t["pad_id"]


def test_torch_free_pipeline_draws_the_samplers_image(exported, sampler):
    import sentencepiece as spm

    cfg = json.loads((exported / "config.json").read_text())
    sp = spm.SentencePieceProcessor(model_file=str(exported / cfg["files"]["tokenizer"]))
    captions, seeds = [CAPTIONS[0], LONG], [3, 7]
    ids, mask = _tokenize(cfg, sp, captions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # the long caption's truncation warning
        ids_ref, mask_ref = sampler.text.tokenizer.encode(captions)
        img_ref = sampler.sample(captions, seeds).numpy()
    np.testing.assert_array_equal(ids, ids_ref.numpy())
    np.testing.assert_array_equal(mask, mask_ref.numpy())
    z = seeded_normal(seeds, cfg["z_dim"], torch.device("cpu")).numpy()   # torch only draws the latents
    emb = _session(exported / cfg["files"]["text_encoder"]).run(None, {"ids": ids, "mask": mask})[0]
    img = _session(exported / cfg["files"]["generator"]).run(None, {"z": z, "embedding": emb})[0]
    assert np.abs(img - img_ref).max() < 1e-4


def test_skip_generator_mid_fade_with_conv_clamp_exports_exactly(tmp_path):
    """The other generator form: skip architecture, direct caption styles, fading in (alpha 0.5), clamped."""
    torch.manual_seed(0)
    text = PretrainConfig(resolution=8, max_len=16, text_dim=16, text_depth=1, text_heads=2, embed_dim=16,
                          image_channels=(8,))
    tokenizer = Tokenizer.train(CAPTIONS, max_len=text.max_len)
    text_cfg, image_cfg = model_configs(text, tokenizer.vocab_size)
    bundle = TextEncoderBundle(tokenizer, ContrastiveModel(text_cfg, image_cfg), text_cfg, image_cfg)
    g_cfg = GeneratorConfig(text_dim=16, max_res=16, z_dim=8, z_embed_dim=4, text_embed_dim=8, w_dim=16,
                            mapping_layers=1, text_w_dim=8, architecture="skip", torgb_init=0.1,
                            channel_base=64, channel_max=8, conv_clamp=1.0)
    sampler = GanSampler(Generator(g_cfg), bundle, stage=1, alpha=0.5, device="cpu", kimg=0.0)
    cfg = export_onnx.export_onnx(sampler, tmp_path)
    assert cfg["resolution"] == 8 and cfg["alpha"] == 0.5
    err = export_onnx.check_export(sampler, tmp_path)
    assert err["embedding"] < 1e-4 and err["image"] < 1e-4, err


def test_cli_refuses_a_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="no such checkpoint"):
        export_onnx.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")])
