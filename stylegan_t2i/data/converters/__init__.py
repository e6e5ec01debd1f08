"""Converters of public captioned-image sources to image_dir + label_dir: a captions file
(COCO JSON, CSV/TSV), CIFAR-10 and Twemoji. Each module's `main` is the command of the thin
script of the same name in the repository's datasets/ folder."""
