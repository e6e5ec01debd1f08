"""Pretrain the text encoder contrastively (CLIP-style) on captioned images.

The command lives in stylegan_t2i/cli/train_text_encoder.py, also installed as `stylegan-t2i-train-text-encoder`;
--help lists its flags.

    python tools/train_text_encoder.py                                   # the built-in demo scenes
"""
from stylegan_t2i.cli.train_text_encoder import main

if __name__ == "__main__":
    main()
