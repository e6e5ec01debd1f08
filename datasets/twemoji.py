"""Convert the Twemoji emoji art of the npm package emoji-datasource-twitter to image_dir + label_dir.

The converter lives in stylegan_t2i/data/converters/twemoji.py; --help lists its flags.

    python datasets/twemoji.py --fetch --out data/twemoji
    python datasets/twemoji.py --archive emoji-datasource-twitter-16.0.0.tgz \
        --names_archive emojibase-data-17.0.0.tgz --out data/twemoji --resolution 64
"""
from stylegan_t2i.data.converters.twemoji import main

if __name__ == "__main__":
    main()
