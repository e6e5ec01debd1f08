"""Throughput of the upfirdn2d / bias_act ops at the shapes of a 64x64 StyleGAN.

Prints, per op and resolution, the median time of
  F+B : forward + backward,
  GP  : forward + backward(create_graph) + backward through the gradient
        (what the WGAN-GP gradient penalty does),
for impl='ref' and, when CUDA is present, impl='cuda' with the ref/cuda ratio.
Then it compares, for the GP case, the ref upfirdn2d (custom backward that is
itself an upfirdn2d) with the same op written as zero insertion + pad +
grouped conv2d left to autograd, which justifies the design (docs/architecture.md, "Ops").

    python benchmarks/bench_ops.py [--batch 16] [--repeats 5] [--warmup 2]

(after `pip install -e .` or `pip install .`)
"""

import argparse

import torch
import torch.nn.functional as F

from stylegan_t2i.measure import median_ms
from stylegan_t2i.ops import bias_act, upfirdn2d

# (resolution, channels) of a 64x64 generator/critic block.
STAGES = [(8, 256), (16, 256), (32, 128), (64, 64)]


def _step(op, x, mode):
    """One F+B or GP step of y = op(x) with loss = sum(y^2) / 2.

    The loss must be non-linear in y: for a linear op and a linear loss the
    gradient would not depend on x and there would be no double backward.
    """
    x = x.detach().requires_grad_(True)
    y = op(x)
    loss = y.square().sum() / 2
    if mode == "F+B":
        loss.backward()
        return
    g, = torch.autograd.grad(loss, x, create_graph=True)
    g.square().sum().backward()


def _plain_upsample2d(x, f):
    """upsample2d(x, f) as zero insertion + pad + grouped conv2d, differentiated by autograd."""
    n, c, h, w = x.shape
    fh, fw = f.shape
    z = F.pad(x.reshape(n, c, h, 1, w, 1), [0, 1, 0, 0, 0, 1]).reshape(n, c, h * 2, w * 2)
    z = F.pad(z, [(fw + 1) // 2, (fw - 2) // 2, (fh + 1) // 2, (fh - 2) // 2])
    weight = (f.flip([0, 1]) * 4).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(z, weight, groups=c)


def _plain_downsample2d(x, f):
    """downsample2d(x, f) as pad + grouped conv2d + subsampling, differentiated by autograd."""
    c = x.shape[1]
    fh, fw = f.shape
    z = F.pad(x, [(fw - 1) // 2, (fw - 2) // 2, (fh - 1) // 2, (fh - 2) // 2])
    weight = f.flip([0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(z, weight, groups=c)[:, :, ::2, ::2]


def _ops(f, b_by_c, impl):
    """name -> (input resolution factor, op(x)) for the four measured ops."""
    return {
        "upsample2d":   (0.5, lambda x: upfirdn2d.upsample2d(x, f, impl=impl)),
        "downsample2d": (1.0, lambda x: upfirdn2d.downsample2d(x, f, impl=impl)),
        "filter2d":     (1.0, lambda x: upfirdn2d.filter2d(x, f, impl=impl)),
        "bias_act":     (1.0, lambda x: bias_act.bias_act(x, b_by_c[x.shape[1]], act="lrelu", clamp=256, impl=impl)),
    }


def _table(args, device):
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    b_by_c = {c: torch.randn(c, device=device) for _, c in STAGES}
    impls = ["ref", "cuda"] if device.type == "cuda" else ["ref"]
    head = f"{'op':<13}{'input shape':<20}{'mode':<5}{'ref ms':>9}{'ref Melem/s':>13}"
    if "cuda" in impls:
        head += f"{'cuda ms':>9}{'ref/cuda':>10}"
    print(head)
    print("-" * len(head))
    for name in _ops(f, b_by_c, "ref"):
        for res, ch in STAGES:
            scale = _ops(f, b_by_c, "ref")[name][0]
            shape = [args.batch, ch, int(res * scale), int(res * scale)]
            x = torch.randn(shape, device=device)
            for mode in ("F+B", "GP"):
                ms = {impl: median_ms(lambda: _step(_ops(f, b_by_c, impl)[name][1], x, mode), device,
                                      args.warmup, args.repeats) for impl in impls}
                row = f"{name:<13}{str(shape):<20}{mode:<5}{ms['ref']:>9.2f}{x.numel() / ms['ref'] / 1e3:>13.1f}"
                if "cuda" in impls:
                    row += f"{ms['cuda']:>9.3f}{ms['ref'] / ms['cuda']:>10.1f}"
                print(row)


def _design_check(args, device):
    """GP step: custom-backward ref upfirdn2d vs autograd through the grouped-conv form."""
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    print("\nGP step, custom backward (ref) vs autograd through grouped conv2d:")
    head = f"{'op':<13}{'input shape':<20}{'custom ms':>10}{'autograd ms':>13}{'autograd/custom':>17}"
    print(head)
    print("-" * len(head))
    cases = [("upsample2d", lambda x: upfirdn2d.upsample2d(x, f, impl="ref"), lambda x: _plain_upsample2d(x, f), 0.5),
             ("downsample2d", lambda x: upfirdn2d.downsample2d(x, f, impl="ref"), lambda x: _plain_downsample2d(x, f), 1.0)]
    for name, custom, plain, scale in cases:
        for res, ch in STAGES:
            shape = [args.batch, ch, int(res * scale), int(res * scale)]
            x = torch.randn(shape, device=device)
            torch.testing.assert_close(custom(x), plain(x))  # same op, so the timing compares like with like
            t_custom = median_ms(lambda: _step(custom, x, "GP"), device, args.warmup, args.repeats)
            t_plain = median_ms(lambda: _step(plain, x, "GP"), device, args.warmup, args.repeats)
            print(f"{name:<13}{str(shape):<20}{t_custom:>10.2f}{t_plain:>13.2f}{t_plain / t_custom:>17.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="batch size N of every input (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per cell; the median is shown (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing each cell (default 2)")
    parser.add_argument("--cpu", action="store_true", help="benchmark on the CPU even when CUDA is present")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch; 0 = torch's choice (default 1: on a shared machine, "
                             "OpenMP barrier waits otherwise dominate and the numbers are noise)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 0:
        raise SystemExit("bench_ops.py: --batch and --repeats must be >= 1, --warmup and --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    torch.manual_seed(0)
    print(f"device: {device}, torch {torch.__version__}, threads: {torch.get_num_threads()}, float32, batch {args.batch}")
    _table(args, device)
    _design_check(args, device)


if __name__ == "__main__":
    main()
