"""Generate the built-in demo dataset of captioned synthetic scenes.

The generator lives in stylegan_t2i/data/demo_scenes.py; --help lists its flags.

    python datasets/demo_scenes.py --out datasets/demo --resolution 64 --num 4000
"""
from stylegan_t2i.data.demo_scenes import main

if __name__ == "__main__":
    main()
