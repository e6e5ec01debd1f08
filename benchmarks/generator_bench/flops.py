"""FLOPs of a generator's synthesis convolutions, counted from its config (no forward pass).

Per image, 2 FLOP per multiply-add, the network fully grown (alpha = 1), as `Generator` runs them
(stylegan_t2i/models/generator.py, layers.conv2d_resample):
  a block's conv1 : 3x3, C -> C at its resolution r:                2 r^2 C^2 9
  its conv0 (up)  : 3x3 stride-2 transposed conv, C_in -> C, on the r/2 input: 2 (r/2)^2 C_in C 9,
                    a quarter of a 3x3 conv at r (the FIR low-pass after it is not counted)
  its toRGB       : 1x1, C -> 3 at r: 2 r^2 C 3; every block's in 'skip', the last one's in 'orig'
The mapping MLP, the affine layers, the demodulation and the FIR filters are left out: at the
nvlabs size they are under 1 % of the total. So the 32-px nvlabs generator costs 2.0 GFLOP per
image; counting every conv0 at its output resolution, as a dense 3x3 conv there, gives 3.2.
"""
from __future__ import annotations

from stylegan_t2i.models.generator import GeneratorConfig
from stylegan_t2i.models.layers import channels_at


def _conv_flops(res: int, c_in: int, c_out: int, k: int) -> int:
    """A k x k conv evaluated at res x res output points."""
    return 2 * res * res * c_in * c_out * k * k


def synthesis_conv_flops(cfg: GeneratorConfig) -> int:
    """FLOPs per image of the synthesis convolutions of a fully grown Generator(cfg)."""
    total, prev = 0, 0
    resolutions = [4 * 2 ** s for s in range(cfg.num_stages)]
    for res in resolutions:
        ch = channels_at(res, cfg.channel_base, cfg.channel_max)
        if res > 4:
            total += _conv_flops(res // 2, prev, ch, 3)     # conv0: transposed, on the input grid.
        total += _conv_flops(res, ch, ch, 3)
        if cfg.architecture == "skip" or res == resolutions[-1]:
            total += _conv_flops(res, ch, 3, 1)
        prev = ch
    return total
