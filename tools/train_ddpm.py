"""Train the text-conditioned DDPM baseline.

The command lives in stylegan_t2i/cli/train_ddpm.py, also installed as `stylegan-t2i-ddpm`;
--help lists its flags.

    python tools/train_ddpm.py                                   # built-in demo data, CPU-sized UNet
    python tools/train_ddpm.py --image_dir imgs --label_dir txt  # your captioned images
"""
from stylegan_t2i.cli.train_ddpm import main

if __name__ == "__main__":
    main()
