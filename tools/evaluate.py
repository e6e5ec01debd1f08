"""Score a GAN or DDPM checkpoint against its dataset.

The command lives in stylegan_t2i/cli/evaluate.py, also installed as `stylegan-t2i-evaluate`;
--help lists its flags.

    python tools/evaluate.py --checkpoint runs/00000-demo-32/network-final.pt          # demo data
"""
from stylegan_t2i.cli.evaluate import main

if __name__ == "__main__":
    main()
