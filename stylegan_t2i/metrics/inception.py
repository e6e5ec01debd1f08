"""InceptionV3 for FID/KID features and Inception Score logits, in pytorch-fid's FID layout.

The network is the TensorFlow "2015-12-05" InceptionV3 used by the original FID code, as
ported by pytorch-fid (Seitzer 2020): torchvision's Inception3 module names, BatchNorm
eps=0.001, and four blocks patched to match TensorFlow's pooling (Mixed_5b-5d, 6b-6e and 7b
average-pool without counting the zero padding; Mixed_7c max-pools in its pool branch).

Weights: a state dict saved in the key layout of pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` (obtain it yourself; nothing is downloaded here):

    Conv2d_{1a,2a,2b,3b,4a}_*.{conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var}
    Mixed_5{b,c,d}.branch{1x1, 5x5_1, 5x5_2, 3x3dbl_1..3, _pool}.<same conv/bn keys>
    Mixed_6a.branch{3x3, 3x3dbl_1..3}.<...>
    Mixed_6{b,c,d,e}.branch{1x1, 7x7_1..3, 7x7dbl_1..5, _pool}.<...>
    Mixed_7a.branch{3x3_1, 3x3_2, 7x7x3_1..4}.<...>
    Mixed_7{b,c}.branch{1x1, 3x3_1, 3x3_2a, 3x3_2b, 3x3dbl_1, 3x3dbl_2, 3x3dbl_3a, 3x3dbl_3b, _pool}.<...>
    fc.weight [1008, 2048], fc.bias [1008]     (the TF classifier: IS logits, unused for features)

i.e. exactly `InceptionV3().state_dict()` keys; `bn.num_batches_tracked` may be absent (old
files), nothing else may be missing or extra. Inputs: img [N, 3, H, W] in [-1, 1], resized
to 299x299 (bilinear, anti-aliased); TF's network expects (x - 128) / 128, i.e. [-1, 1].
Outputs: `model(img)` is pool3 [N, 2048] (FID/KID); `model.logits(pool3)` the 1008-way
classifier logits [N, 1008] (Inception Score), computed from the same pass's pool3.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

INCEPTION_RES = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008      # TF's classifier outputs: the 1000 ImageNet classes, the rest unused.

# ----------------------------------------------------------------------------
# Building blocks.


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps=0.001, TF's value) -> ReLU."""

    def __init__(self,
        in_channels:    int,
        out_channels:   int,
        kernel_size:    int | tuple[int, int],
        stride:         int = 1,
        padding:        int | tuple[int, int] = 0,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TF's average pool divides by the number of valid (non-padding) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 5x5 | double 3x3 | pool -> 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction: strided 3x3 | double 3x3 | max pool -> 480 + in channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 then 7x1) -> 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c, 1)
        self.branch7x7_2 = BasicConv2d(c, c, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c, 1)
        self.branch7x7dbl_2 = BasicConv2d(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c, c, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction: 3x3 | 7x7 then 3x3 | max pool -> 512 + in channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs -> 2048 channels.

    pool='avg' is pytorch-fid's FIDInceptionE_1 (Mixed_7b), pool='max' its FIDInceptionE_2
    (Mixed_7c): the TF graph max-pools in the last block's pool branch.
    """

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        assert pool in ("avg", "max"), pool
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        if self.pool == "avg":
            p = _avg_pool_3x3(x)
        else:
            p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(p)], 1)

# ----------------------------------------------------------------------------
# The network.


class InceptionV3(nn.Module):
    """FID InceptionV3: img [N, 3, H, W] in [-1, 1] -> pool3 features [N, 2048]; `logits` for IS."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)  # TF's 1008-way classifier (`logits`).

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        assert img.ndim == 4 and img.shape[1] == 3, img.shape
        # Anti-aliased resize (Clean-FID, Parmar et al. 2022): plain bilinear down-sampling
        # aliases and shifts FID. The resize is linear, so [-1, 1] maps to [-1, 1] as TF expects.
        x = F.interpolate(img.clamp(-1, 1), size=(INCEPTION_RES, INCEPTION_RES),
                          mode="bilinear", align_corners=False, antialias=True)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))      # [N, 64, 147, 147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)                            # [N, 64, 73, 73]
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))                           # [N, 192, 71, 71]
        x = F.max_pool2d(x, kernel_size=3, stride=2)                            # [N, 192, 35, 35]
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                      self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)                                                        # -> [N, 2048, 8, 8]
        return x.mean(dim=(2, 3))                                               # [N, 2048]

    def logits(self,
        pool3:  torch.Tensor,           # [N, 2048] from forward(): one pass serves FID and IS.
        bias:   bool = False,           # Add fc.bias; False is what the reference IS code does.
    ) -> torch.Tensor:
        """The TF classifier's logits [N, 1008] (softmax over all 1008 outputs gives p(y|x)).

        The Inception Score of Salimans et al. (openai/improved-gan, and torch-fidelity's
        'logits_unbiased') multiplies pool3 by the weight of TF's `softmax/logits/MatMul` and
        never adds the bias, so bias=False reproduces their numbers."""
        assert pool3.ndim == 2 and pool3.shape[1] == FEATURE_DIM, pool3.shape
        return F.linear(pool3, self.fc.weight, self.fc.bias if bias else None)

# ----------------------------------------------------------------------------
# Loading.


def _describe(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def _check_state_dict(state: dict, model: InceptionV3, path: Path) -> dict:
    """Return `state` with absent num_batches_tracked filled in; one ValueError on any mismatch."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors (expected pytorch-fid's "
                         "pt_inception-2015-12-05 layout, see stylegan_t2i/metrics/inception.py)")
    expected = model.state_dict()
    state = dict(state)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)  # Unused in eval; absent in old files.
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: not an InceptionV3 state dict in pytorch-fid's "
                         f"pt_inception-2015-12-05 key layout: missing {_describe(missing)}, "
                         f"unexpected {_describe(unexpected)}, wrong shape {_describe(shapes)} "
                         "(see the key list in stylegan_t2i/metrics/inception.py)")
    return state


def load_inception(
    path:   str | Path,                     # State dict file (pytorch-fid FID weights layout).
    device: torch.device | str = "cpu",
) -> InceptionV3:
    """Build InceptionV3, load `path` strictly (weights_only=True), return it in eval mode.

    Errors are one line naming `path`: FileNotFoundError for a missing file, ValueError for a
    file that is not a weights-only state dict (junk, an unsafe pickle) or has the wrong layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: InceptionV3 weights file not found (pass the path of "
                                "pytorch-fid's pt_inception-2015-12-05-6726825d.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # A malformed file makes the unpickler raise anything (KeyError, IndexError, ...).
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{path}: cannot be read as a weights-only state dict "
                         f"({type(e).__name__}: {first})") from None
    with torch.device("meta"):
        model = InceptionV3()       # No random init: every tensor comes from the file.
    # Every parameter and buffer is replaced (assign=True), so the meta tensors never run.
    model.load_state_dict(_check_state_dict(state, model, path), strict=True, assign=True)
    return model.eval().requires_grad_(False).to(device)
