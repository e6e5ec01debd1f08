"""Export a generation-only copy of a GAN or DDPM checkpoint (EMA network, text encoder, tokenizer).

    python tools/export_generator.py --checkpoint runs/00000-demo-32/network-final.pt --out pretrained/demo-gan.pt
    stylegan-t2i-export-generator --checkpoint CK --out model.pt      # the installed console command
"""
from __future__ import annotations

import argparse
from pathlib import Path

from stylegan_t2i.checkpoint import CheckpointError
from stylegan_t2i.inference import export_for_generation


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="a gan or ddpm checkpoint (train_progan.py, tools/train_ddpm.py)")
    p.add_argument("--out", type=Path, required=True, help="where to write the exported file")
    args = p.parse_args(argv)
    try:
        out = export_for_generation(args.checkpoint, args.out)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return out


if __name__ == "__main__":
    main()
