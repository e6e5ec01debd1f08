"""Export a generation-only copy of a GAN or DDPM checkpoint.

The command lives in stylegan_t2i/cli/export_generator.py, also installed as `stylegan-t2i-export-generator`;
--help lists its flags.

    python tools/export_generator.py --checkpoint runs/00000-demo-32/network-final.pt --out pretrained/demo-gan.pt
"""
from stylegan_t2i.cli.export_generator import main

if __name__ == "__main__":
    main()
