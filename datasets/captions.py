"""Convert a captions file (COCO-style JSON, or CSV/TSV) plus an image folder to image_dir + label_dir.

The converter lives in stylegan_t2i/data/converters/captions.py; --help lists its flags.

    python datasets/captions.py --captions captions_train2017.json --images train2017 --out data/coco
"""
from stylegan_t2i.data.converters.captions import main

if __name__ == "__main__":
    main()
