"""Export a GAN checkpoint to ONNX, for generation without PyTorch (numpy + sentencepiece + onnxruntime).

    python tools/export_onnx.py --out onnx/                       # the shipped pretrained/demo-gan.pt
    python tools/export_onnx.py --checkpoint runs/00000-demo-32/network-final.pt --out onnx/ --check
    stylegan-t2i-export-onnx --out onnx/                          # the installed console command

Writes into --out:

    text_encoder.onnx   ids int64 [B, L], mask bool [B, L] (L <= max_len) -> embedding float32 [B, text_dim]
    generator.onnx      z float32 [B, z_dim], embedding float32 [B, text_dim] -> image float32 [B, 3, R, R] in [-1, 1]
    tokenizer.model     the checkpoint's sentencepiece model
    config.json         sizes, file names and exactly how to tokenize (bos / eos / pad ids, layout, mask)

The embedding is the text encoder's sentence output, the one `GanSampler` conditions the generator
on; the generator runs at the checkpoint's stage and alpha with noise_mode 'const' and truncation 1,
and clamps to [-1, 1], as `GanSampler.sample` does. B is dynamic in both graphs and L in the text
encoder's. Legacy TorchScript exporter (`dynamo=False`), opset 17.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from stylegan_t2i.checkpoint import CheckpointError
from stylegan_t2i.inference import DEMO_MODEL, GanSampler, seeded_normal
from stylegan_t2i.models import layers

OPSET = 17
TRACE_BATCH = 2     # Batch of the example inputs; see `export_onnx`.
FORMAT = "stylegan_t2i-onnx/1"
GENERATOR_FILE, TEXT_ENCODER_FILE, TOKENIZER_FILE, CONFIG_FILE = (
    "generator.onnx", "text_encoder.onnx", "tokenizer.model", "config.json")


class GeneratorForExport(nn.Module):
    """(z, embedding) -> image, at a fixed stage / alpha, noise 'const', truncation 1, clamped."""

    def __init__(self, G: nn.Module, stage: int, alpha: float):
        super().__init__()
        self.G, self.stage, self.alpha = G, stage, alpha

    def forward(self, z: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        img = self.G(z, embedding, self.stage, self.alpha, truncation_psi=1.0, noise_mode="const")
        return img.float().clamp(-1, 1)


class TextEncoderForExport(nn.Module):
    """(ids, mask) -> the sentence embedding (TextEncoderBundle.encode's third output)."""

    def __init__(self, text_encoder: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(ids, mask)[1]


def _onnx_export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                 dynamic_axes: dict) -> None:
    with warnings.catch_warnings():
        # Shape asserts and Python ints read from shapes during the trace: expected, and harmless here
        # (the traced graph keeps the batch / length axes dynamic; channel counts are fixed anyway).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The legacy exporter's own deprecation notices (the dynamo exporter needs onnxscript; see the docstring).
        warnings.simplefilter("ignore", DeprecationWarning)
        # The FIR filters' flips are Slices with step -1, left to run (4x4 taps) rather than folded.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                          do_constant_folding=True)


def export_onnx(sampler: GanSampler, out_dir: str | Path, source: str = "") -> dict:
    """Write the two graphs, the tokenizer and config.json into `out_dir`; -> the config dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    G, tok = sampler.G, sampler.text.tokenizer
    z_dim, text_dim, max_len = G.cfg.z_dim, G.cfg.text_dim, tok.max_len
    # The modulated convs take the form `layers.prefer_fused` picks for the example batch; it must be
    # the unfused one (one dense conv): the fused one is a conv with groups = batch, and an ONNX Conv's
    # `group` is fixed, so it could not take a dynamic batch axis.
    if layers.prefer_fused(TRACE_BATCH):
        raise RuntimeError(f"layers.prefer_fused({TRACE_BATCH}) is True: the trace would fix the batch size")
    ids, mask = tok.encode(["a red circle", "a blue square"][:TRACE_BATCH])
    with torch.no_grad():
        text_module = TextEncoderForExport(sampler.text.model.text_encoder).eval()
        _onnx_export(text_module, (ids, mask), out_dir / TEXT_ENCODER_FILE, ["ids", "mask"], ["embedding"],
                     {"ids": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"}, "embedding": {0: "batch"}})
        gen_module = GeneratorForExport(G, sampler.stage, sampler.alpha).eval()
        z, emb = torch.randn(TRACE_BATCH, z_dim, generator=torch.Generator().manual_seed(0)), text_module(ids, mask)
        _onnx_export(gen_module, (z, emb), out_dir / GENERATOR_FILE, ["z", "embedding"], ["image"],
                     {"z": {0: "batch"}, "embedding": {0: "batch"}, "image": {0: "batch"}})
    (out_dir / TOKENIZER_FILE).write_bytes(tok.to_bytes())
    config = {
        "format": FORMAT,
        "source": source,
        "kimg": sampler.kimg,
        "opset": OPSET,
        "files": {"text_encoder": TEXT_ENCODER_FILE, "generator": GENERATOR_FILE, "tokenizer": TOKENIZER_FILE},
        "z_dim": z_dim,
        "text_dim": text_dim,
        "resolution": sampler.resolution,
        "max_len": max_len,
        "stage": sampler.stage,
        "alpha": sampler.alpha,
        "noise_mode": "const",
        "truncation": 1.0,
        "tokenizer": {
            "type": "sentencepiece",
            "pad_id": tok.pad_id, "unk_id": tok.unk_id, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
            "vocab_size": tok.vocab_size,
            "max_pieces": max_len - 2,
            "how": [
                "pieces = sentencepiece.SentencePieceProcessor(model_file='tokenizer.model').encode(caption): "
                "the caption as is; the model itself applies NFKC and lower-cases",
                "pieces = pieces[:max_len - 2]  (longer captions are cut; eos is always kept)",
                "ids = [bos_id] + pieces + [eos_id], then pad_id up to max_len: int64 [B, max_len]",
                "mask = ids != pad_id: bool [B, max_len]",
            ],
            "padding": "any length L from the longest row's up to max_len gives the same embedding "
                       "(padding is masked out); max_len is what PyTorch uses",
        },
        "text_encoder": {"inputs": {"ids": "int64 [B, L]", "mask": "bool [B, L]"},
                         "outputs": {"embedding": "float32 [B, text_dim], unnormalised"}},
        "generator": {"inputs": {"z": "float32 [B, z_dim], standard normal",
                                 "embedding": "float32 [B, text_dim], the text encoder's output"},
                      "outputs": {"image": "float32 [B, 3, resolution, resolution] in [-1, 1], RGB; "
                                           "uint8 = round((image + 1) * 127.5), transposed to [H, W, 3]"}},
    }
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return config


def check_export(sampler: GanSampler, out_dir: str | Path, batches=(1, 3)) -> dict[str, float]:
    """Max abs difference between onnxruntime and PyTorch, over `batches`: {'embedding': .., 'image': ..}."""
    import onnxruntime as ort
    out_dir = Path(out_dir)
    text_sess = ort.InferenceSession(str(out_dir / TEXT_ENCODER_FILE), providers=["CPUExecutionProvider"])
    gen_sess = ort.InferenceSession(str(out_dir / GENERATOR_FILE), providers=["CPUExecutionProvider"])
    captions = ["a large red circle in the center on a black background", "a small blue square on the left",
                "a yellow triangle on the right on a white background"]
    err = {"embedding": 0.0, "image": 0.0}
    for b in batches:
        caps, seeds = [captions[i % len(captions)] for i in range(b)], list(range(b))
        ids, mask = sampler.text.tokenizer.encode(caps)
        emb_ref = sampler.embed(caps)
        z = seeded_normal(seeds, sampler.G.cfg.z_dim, torch.device("cpu"))
        img_ref = sampler.synthesize(emb_ref, z)
        emb = text_sess.run(None, {"ids": ids.numpy(), "mask": mask.numpy()})[0]
        img = gen_sess.run(None, {"z": z.numpy(), "embedding": emb_ref.numpy()})[0]
        err["embedding"] = max(err["embedding"], float(abs(torch.from_numpy(emb) - emb_ref).max()))
        err["image"] = max(err["image"], float(abs(torch.from_numpy(img) - img_ref).max()))
    return err


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=DEMO_MODEL,
                   help="a gan checkpoint (training or generation-only; default: the shipped demo model)")
    p.add_argument("--out", type=Path, required=True, help="directory to write the ONNX files into")
    p.add_argument("--check", action="store_true",
                   help="then compare onnxruntime with PyTorch at batch 1 and 3 (needs onnxruntime)")
    args = p.parse_args(argv)
    for module, needed in (("onnx", True), ("onnxruntime", args.check)):
        if needed and importlib.util.find_spec(module) is None:
            raise SystemExit(f"error: {module} is not installed: pip install -e '.[onnx]'")
    try:
        sampler = GanSampler.from_checkpoint(args.checkpoint, "cpu")
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    try:
        config = export_onnx(sampler, args.out, source=args.checkpoint.name)
    except OSError as e:
        raise SystemExit(f"error: cannot write {args.out}: {e}") from None
    for name in config["files"].values():
        path = args.out / name
        print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")
    print(f"wrote {args.out / CONFIG_FILE}")
    if args.check:
        err = check_export(sampler, args.out)
        print(f"onnxruntime vs PyTorch, batch 1 and 3: max abs error embedding {err['embedding']:.2e}, "
              f"image {err['image']:.2e}")
    return args.out


if __name__ == "__main__":
    main()
