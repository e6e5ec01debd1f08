"""Guidance x steps sweep of a DDPM checkpoint: a labelled grid per prompt and FD/alignment per cell.

The command lives in stylegan_t2i/cli/sweep_ddpm.py, also installed as `stylegan-t2i-sweep-ddpm`;
--help lists its flags.

    python tools/sweep_ddpm.py --checkpoint runs/00001-demo-ddpm-32/network-final.pt --guidance 1,3,5,7.5 --ddim_steps 10,20,30,50
"""
from stylegan_t2i.cli.sweep_ddpm import main

if __name__ == "__main__":
    main()
