"""Contrastive pretraining of the text encoder, its checkpoint, and evaluation helpers.

`pretrain_text_encoder` trains a tokenizer on every caption of a dataset, then a
`ContrastiveModel` (text Transformer + small CNN) with the CLIP loss on (image, random caption)
pairs. The result is a frozen `TextEncoderBundle`: what the GAN, the DDPM and the metrics use
to turn captions into token features / sentence embeddings and to score image-text alignment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..batch_share import BatchShare
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..config import config_from_dict, config_to_dict
from ..distributed import Distributed
from ..images import from_uint8, zoom_and_shift
from ..run_log import RunLog
from ..training.faults import NonFiniteCounter, apply_gradients
from ..training.interrupt import GracefulInterrupt, TrainingInterrupted
from ..training.stats import RunningMeans
from .contrastive import ContrastiveModel, clip_loss
from .encoder import TextEncoderConfig
from .image_encoder import ImageEncoderConfig
from .tokenizer import Tokenizer

PAYLOAD_KEYS = ("text_cfg", "image_cfg", "model", "tokenizer", "max_len")


@dataclass(frozen=True)
class PretrainConfig:
    resolution:     int = 32                # Images are resized to this once, before training.
    batch:          int = 128               # Pairs per step (capped at the dataset size).
    lr:             float = 1e-3            # AdamW peak learning rate.
    steps:          int = 500               # Optimizer steps (demo: held-out AUC 1.0 by ~300 at batch 64).
    seed:           int = 0                 # Seeds the weights and the batch sampling.
    weight_decay:   float = 0.05            # AdamW decoupled decay on matrices only.
    warmup:         int = 100               # Linear warm-up steps, then cosine decay to 0.
    max_len:        int = 32                # Tokenizer / encoder sequence length.
    vocab_size:     int | None = None       # None: scaled to the corpus (Tokenizer.train).
    text_dim:       int = 128               # TextEncoderConfig.dim.
    text_depth:     int = 3                 # TextEncoderConfig.depth.
    text_heads:     int = 4                 # TextEncoderConfig.heads.
    embed_dim:      int = 128               # Shared embedding width of both towers.
    image_channels: tuple = (32, 64, 128)   # ImageEncoderConfig.channels.
    log_every:      int = 50                # Steps between logged scalars.
    zoom_jitter:    float = 0.1             # Image tower sees each image zoomed by 1 +- U(this) (0 = off).
    max_nonfinite:  int = 10                # Consecutive non-finite steps before training stops.


class TextEncoderBundle:
    """Tokenizer + contrastive model, frozen and in eval mode. All methods run without grad."""

    def __init__(self,
        tokenizer:  Tokenizer,              # Trained on the dataset's captions.
        model:      ContrastiveModel,       # Text and image towers.
        text_cfg:   TextEncoderConfig,      # Rebuilds model.text_encoder.
        image_cfg:  ImageEncoderConfig,     # Rebuilds model.image_encoder.
    ):
        self.tokenizer, self.model, self.text_cfg, self.image_cfg = tokenizer, model, text_cfg, image_cfg
        self.model.eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def to(self, device: str | torch.device) -> "TextEncoderBundle":
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self,
        captions:   Sequence[str],                  # B captions.
        device:     str | torch.device | None = None,  # Where the outputs go; None: the model's device.
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> tokens [B, max_len, D], mask [B, max_len] bool, sentence [B, E] (unnormalised)."""
        ids, mask = self.tokenizer.encode(captions)
        ids, mask = ids.to(self.device), mask.to(self.device)
        tokens, sentence = self.model.text_encoder(ids, mask)
        device = self.device if device is None else device
        return tokens.to(device), mask.to(device), sentence.to(device)

    @torch.no_grad()
    def embed_text(self, captions: Sequence[str], batch: int = 256) -> torch.Tensor:
        """B captions -> unit-norm contrastive embeddings [B, E] on the model's device."""
        out = []
        for i in range(0, len(captions), batch):
            ids, mask = self.tokenizer.encode(captions[i:i + batch])
            out.append(self.model.encode_text(ids.to(self.device), mask.to(self.device)))
        return torch.cat(out)

    @torch.no_grad()
    def embed_images(self, img: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """img [B, 3, H, W] in [-1, 1] -> unit-norm embeddings [B, E] on the model's device."""
        return torch.cat([self.model.encode_image(img[i:i + batch].to(self.device, torch.float32))
                          for i in range(0, img.shape[0], batch)])

    @torch.no_grad()
    def alignment(self, img: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """img [B, 3, H, W] in [-1, 1], B captions -> [B] cosine similarity of each pair (on img's device)."""
        assert img.ndim == 4 and img.shape[0] == len(captions), (img.shape, len(captions))
        return (self.embed_images(img) * self.embed_text(captions)).sum(dim=1).to(img.device)


# ----------------------------------------------------------------------------------------------
# Training.

def model_configs(cfg: PretrainConfig, vocab_size: int) -> tuple[TextEncoderConfig, ImageEncoderConfig]:
    text_cfg = TextEncoderConfig(vocab_size=vocab_size, max_len=cfg.max_len, dim=cfg.text_dim,
                                 depth=cfg.text_depth, heads=cfg.text_heads, embed_dim=cfg.embed_dim)
    image_cfg = ImageEncoderConfig(resolution=cfg.resolution, channels=tuple(cfg.image_channels),
                                   embed_dim=cfg.embed_dim)
    return text_cfg, image_cfg


def pretrain_text_encoder(
    dataset,                            # Has .images uint8 [N, 3, R, R] and .captions list[list[str]].
    cfg:        PretrainConfig,         # Hyper-parameters.
    device:     str | torch.device,     # Where to train.
    run_log:    RunLog | None = None,   # Receives Loss/contrastive, Accuracy/retrieval, Progress/*.
    progress:   bool = True,            # Show a tqdm bar.
    dist:       Distributed = Distributed(),  # Data-parallel place; cfg.batch is the global batch.
    start:      TextEncoderBundle | None = None,  # Re-tune this one instead (a fine-tuned run's).
) -> TextEncoderBundle:
    """Train the tokenizer on all captions, then the contrastive model; return it frozen.

    With `start`, its tokenizer is kept (sentencepiece spells a word it never saw with the
    sub-pieces it has, so the GAN or DDPM trained on it keeps reading the same ids) and its
    weights are where training starts; `cfg`'s sizes are then unused, and its resolution must be
    `start`'s image tower's.

    Each step draws `batch` distinct samples and one random caption of each, and minimises the
    symmetric InfoNCE loss over the whole global batch (all ranks' embeddings are gathered).
    The image tower sees each image zoomed about its centre by a random factor within
    1 +- `zoom_jitter`: without it, the encoder tells small shapes apart by their area alone (a
    square 10 % smaller reads as a circle), and a generator can satisfy its alignment loss with
    a blob of the right area (docs/architecture.md, "Losses").
    Deterministic for a given seed on a given device.

    Like the GAN and DDPM loops (docs/architecture.md, "Training loop"), a step whose loss or
    gradient is non-finite on any rank is skipped and counted (Faults/nonfinite_steps), and
    `max_nonfinite` in a row raise TrainingDiverged; SIGINT/SIGTERM stop it after the current
    step with TrainingInterrupted (it has no checkpoint to resume from: nothing is saved).
    """
    device = torch.device(device)
    captions = [list(caps) for caps in dataset.captions]
    if len(captions) != dataset.images.shape[0] or any(not caps for caps in captions):
        raise ValueError("pretrain_text_encoder: every image needs at least one caption")
    tokenizer, model = _start_model(captions, cfg, start)
    model.to(device)
    text_cfg, image_cfg = model.text_encoder.cfg, model.image_encoder.cfg
    img = _images_at(torch.as_tensor(dataset.images), cfg.resolution).to(device)
    pairs = _CaptionTable(tokenizer, captions, device)
    opt = _make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr_factor(step, cfg))
    gen = torch.Generator().manual_seed(cfg.seed)
    batch = min(cfg.batch, img.shape[0])
    share = dist.share(batch)
    bar = tqdm(range(cfg.steps), desc="text encoder", disable=not (progress and dist.is_main), dynamic_ncols=True)
    nonfinite = NonFiniteCounter(cfg.max_nonfinite, advice="No text encoder was saved: lower its --lr "
                                 "(tools/train_text_encoder.py) and run again")
    stats, logged = RunningMeans(), 0

    def write_log(done: int) -> None:
        values = stats.flush()
        bar.set_postfix(loss=f"{values['Loss/contrastive']:.3f}", acc=f"{values['Accuracy/retrieval']:.3f}")
        if run_log is not None and dist.is_main:
            run_log.scalars(done * batch, {**values, "Progress/logit_scale": model.scale().item(),
                                           "Progress/lr": sched.get_last_lr()[0]}, iteration=done)

    with GracefulInterrupt() as interrupt:
        for step in bar:
            idx = torch.randperm(img.shape[0], generator=gen)[:batch]
            ids, mask = pairs.sample(idx, gen)
            zoom = 1 + (torch.rand(batch, generator=gen) * 2 - 1) * cfg.zoom_jitter
            idx, ids, mask, zoom = share.take(idx), share.take(ids), share.take(mask), share.take(zoom)
            images = img[idx.to(device)]
            if cfg.zoom_jitter:
                images = zoom_and_shift(images, torch.zeros(len(images), 2, device=device), zoom.to(device))
            loss, acc, taken = _train_step(model, opt, images, ids, mask, dist, share, nonfinite, step * batch / 1000)
            sched.step()
            stats.add({"Loss/contrastive": loss, "Accuracy/retrieval": acc})
            if not taken:
                stats.add({"Faults/nonfinite_steps": 1.0})
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                write_log(step + 1)
                logged = step + 1
            if interrupt.requested_on_any(dist, device):
                if logged < step + 1:
                    write_log(step + 1)
                bar.close()
                raise TrainingInterrupted(f"text encoder pretraining interrupted by {interrupt.source} at step "
                                          f"{step + 1} of {cfg.steps}; it cannot resume, so nothing was saved")
    return TextEncoderBundle(tokenizer, model, text_cfg, image_cfg)


def _start_model(captions: list[list[str]], cfg: PretrainConfig,
                 start: TextEncoderBundle | None) -> tuple[Tokenizer, ContrastiveModel]:
    """(tokenizer, trainable model) that pretraining starts from: `start`'s, or new ones."""
    if start is not None:
        if start.image_cfg.resolution != cfg.resolution:
            raise ValueError(f"pretrain_text_encoder: the image tower to re-tune sees {start.image_cfg.resolution} px, "
                             f"not cfg.resolution {cfg.resolution}")
        model = ContrastiveModel(start.text_cfg, start.image_cfg)
        model.load_state_dict(start.model.state_dict())
        return start.tokenizer, model
    tokenizer = Tokenizer.train([c for caps in captions for c in caps], cfg.max_len, cfg.vocab_size)
    text_cfg, image_cfg = model_configs(cfg, tokenizer.vocab_size)
    with torch.random.fork_rng(devices=[]):     # Seed the weights without touching global RNG state.
        torch.manual_seed(cfg.seed)
        return tokenizer, ContrastiveModel(text_cfg, image_cfg)


class _CaptionTable:
    """All captions tokenized once; `sample` picks one random caption per image."""

    def __init__(self, tokenizer: Tokenizer, captions: list[list[str]], device: torch.device):
        counts = torch.tensor([len(caps) for caps in captions])
        self.offsets = torch.cumsum(counts, 0) - counts             # First caption of each sample.
        self.counts = counts
        ids, mask = tokenizer.encode([c for caps in captions for c in caps])
        self.ids, self.mask = ids.to(device), mask.to(device)

    def sample(self, idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """idx: [B] sample indices -> ids, mask [B, L'] with L' the longest chosen caption."""
        pick = (torch.rand(idx.shape[0], generator=gen) * self.counts[idx]).long()
        rows = (self.offsets[idx] + pick).to(self.ids.device)
        ids, mask = self.ids[rows], self.mask[rows]
        # Padding is invisible to the encoder, so trimming all-pad columns changes nothing but cost.
        length = int(mask.sum(dim=1).max())
        return ids[:, :length], mask[:, :length]


def _train_step(model: ContrastiveModel, opt: torch.optim.Optimizer, img: torch.Tensor, ids: torch.Tensor,
                mask: torch.Tensor, dist: Distributed, share: BatchShare, nonfinite: NonFiniteCounter,
                kimg: float) -> tuple[float, float, bool]:
    """One AdamW step on the CLIP loss of the global batch, computed from this rank's share
    -> (loss, in-batch retrieval accuracy in both directions, whether the step was taken: a
    non-finite one is skipped and counted by `nonfinite`).

    Every rank computes the same global loss, with gradients flowing only through its own rows
    of the gathered embeddings; the *sum* of the ranks' gradients is then the one-process
    gradient, once the temperature's gradient (which every rank gets in full) is divided by W.
    """
    model.train()
    img_local, txt_local = model.encode_image(img), model.encode_text(ids, mask)
    img_emb = _with_own_rows(dist.all_gather(img_local), img_local, share)
    txt_emb = _with_own_rows(dist.all_gather(txt_local), txt_local, share)
    scale = model.scale()
    scale = scale.detach() + (scale - scale.detach()) / dist.world_size     # Same value, gradient / W.
    loss = clip_loss(img_emb, txt_emb, scale)
    taken, _ = apply_gradients(opt, loss, dist, nonfinite, kimg, average=False)
    with torch.no_grad():
        sim = img_emb @ txt_emb.t()
        target = torch.arange(sim.shape[0], device=sim.device)
        acc = 0.5 * ((sim.argmax(1) == target).float().mean() + (sim.argmax(0) == target).float().mean())
    return loss.item(), acc.item(), taken


def _with_own_rows(gathered: torch.Tensor, own: torch.Tensor, share: BatchShare) -> torch.Tensor:
    """The gathered global batch with this rank's rows replaced by `own` (which carries gradients)."""
    return torch.cat([gathered[:share.start], own, gathered[share.stop:]])


def _make_optimizer(model: ContrastiveModel, cfg: PretrainConfig) -> torch.optim.AdamW:
    # Decay matrices (weights, embeddings) only; biases, norm gains and the temperature are
    # left alone, as in CLIP and nanoGPT.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def _lr_factor(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `steps`."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _images_at(img_u8: torch.Tensor, res: int) -> torch.Tensor:
    """img_u8: [N, 3, H, W] uint8 -> img [N, 3, res, res] float in [-1, 1], resized with
    antialiasing in chunks so a large dataset is never held as float at full size."""
    assert img_u8.ndim == 4 and img_u8.shape[1] == 3 and img_u8.dtype == torch.uint8, (img_u8.shape, img_u8.dtype)
    chunks = []
    for i in range(0, img_u8.shape[0], 1024):
        img = from_uint8(img_u8[i:i + 1024])
        if img.shape[2:] != (res, res):
            img = F.interpolate(img, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        chunks.append(img)
    return torch.cat(chunks)


# ----------------------------------------------------------------------------------------------
# Checkpoint.

def text_encoder_payload(bundle: TextEncoderBundle) -> dict[str, Any]:
    """Plain data that rebuilds `bundle`; GAN/DDPM checkpoints store it under "text_encoder".

    The sentencepiece model is stored as a uint8 tensor: `torch.load(weights_only=True)`
    refuses raw `bytes` objects.
    """
    model_bytes = bundle.tokenizer.to_bytes()
    return {
        "text_cfg": config_to_dict(bundle.text_cfg),
        "image_cfg": config_to_dict(bundle.image_cfg),
        "model": {k: v.detach().cpu().clone() for k, v in bundle.model.state_dict().items()},
        "tokenizer": torch.frombuffer(bytearray(model_bytes), dtype=torch.uint8),
        "max_len": bundle.tokenizer.max_len,
    }


def bundle_from_payload(payload: dict[str, Any]) -> TextEncoderBundle:
    """Inverse of `text_encoder_payload` (strict state-dict load); the bundle is on CPU."""
    missing = [k for k in PAYLOAD_KEYS if k not in payload]
    if missing:
        raise ValueError(f"text encoder payload lacks keys {missing}")
    raw = payload["tokenizer"]
    model_bytes = raw.numpy().tobytes() if isinstance(raw, torch.Tensor) else bytes(raw)
    tokenizer = Tokenizer.from_bytes(model_bytes, int(payload["max_len"]))
    text_cfg = config_from_dict(TextEncoderConfig, payload["text_cfg"])
    image_cfg = config_from_dict(ImageEncoderConfig, payload["image_cfg"])
    model = ContrastiveModel(text_cfg, image_cfg)
    model.load_state_dict(payload["model"], strict=True)
    return TextEncoderBundle(tokenizer, model, text_cfg, image_cfg)


def save_text_encoder(path: str | Path, bundle: TextEncoderBundle, pretrain_cfg: PretrainConfig | None = None) -> Path:
    payload = text_encoder_payload(bundle)
    if pretrain_cfg is not None:
        payload["pretrain_cfg"] = config_to_dict(pretrain_cfg)
    return save_checkpoint(path, "text_encoder", payload)


def load_text_encoder(source: str | Path | dict[str, Any]) -> TextEncoderBundle:
    """Rebuild a bundle from a checkpoint path or a loaded checkpoint dict.

    A `text_encoder` checkpoint holds the payload at top level; a `gan` / `ddpm` checkpoint
    holds it under "text_encoder". Raises CheckpointError (one line) when neither applies.
    """
    name = "checkpoint" if isinstance(source, dict) else str(source)
    data = source if isinstance(source, dict) else load_checkpoint(source)
    payload = data if data.get("kind") == "text_encoder" else data.get("text_encoder")
    if not isinstance(payload, dict):
        raise CheckpointError(f"{name}: holds no text encoder (kind {data.get('kind')!r})")
    try:
        return bundle_from_payload(payload)
    except (ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{name}: broken text encoder ({str(e).strip().splitlines()[0]})") from None


# ----------------------------------------------------------------------------------------------
# Evaluation helpers.

def roc_auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Area under the ROC curve of scores `pos` (should be high) vs `neg`, via the rank formula.

    AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), R_pos the sum of the positives'
    ranks in the pooled sample, ties given their average rank (Mann-Whitney U / (n_pos n_neg)).
    """
    pos, neg = pos.detach().double().cpu().flatten(), neg.detach().double().cpu().flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    scores = torch.cat([pos, neg])
    ranks = _average_ranks(scores)
    n_pos, n_neg = pos.numel(), neg.numel()
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of x [N], tied values sharing the mean of their ranks (scipy 'average')."""
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()                     # Last 1-based rank of each tie group.
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(x)
    ranks[order] = mean_rank[inverse]
    return ranks


def retrieval_accuracy(
    query_emb:      torch.Tensor,   # [Q, E] unit-norm queries (e.g. caption embeddings).
    gallery_emb:    torch.Tensor,   # [G, E] unit-norm gallery (e.g. image embeddings).
    query_labels:   torch.Tensor,   # [Q] int label of each query.
    gallery_labels: torch.Tensor,   # [G] int label of each gallery item.
) -> float:
    """Fraction of queries whose nearest gallery item (max cosine) carries the query's label."""
    assert query_emb.ndim == 2 and gallery_emb.ndim == 2 and query_emb.shape[1] == gallery_emb.shape[1]
    assert query_labels.shape == query_emb.shape[:1] and gallery_labels.shape == gallery_emb.shape[:1]
    nearest = (query_emb @ gallery_emb.t()).argmax(dim=1)
    hits = gallery_labels.to(nearest.device)[nearest] == query_labels.to(nearest.device)
    return float(hits.float().mean())
