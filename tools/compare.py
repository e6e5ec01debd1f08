"""GAN vs DDPM on the same work: quality, sampling speed and peak memory.

The command lives in stylegan_t2i/cli/compare.py, also installed as `stylegan-t2i-compare`;
--help lists its flags.

    python tools/compare.py --gan runs/00000-demo-32/network-final.pt --ddpm runs/00001-demo-ddpm-32/network-final.pt
"""
from stylegan_t2i.cli.compare import main

if __name__ == "__main__":
    main()
