"""Train a progressively grown, text-conditioned StyleGAN with WGAN-GP.

The command lives in stylegan_t2i/cli/train.py, also installed as `stylegan-t2i-train`;
--help lists its flags.

    python train_progan.py                                   # built-in demo data, CPU preset
    python train_progan.py --image_dir imgs --label_dir txt  # your captioned images
"""
from stylegan_t2i.cli.train import main

if __name__ == "__main__":
    main()
