"""Generate images from text with a trained checkpoint, or the shipped demo model.

The command lives in stylegan_t2i/cli/generate.py, also installed as `stylegan-t2i-generate`;
--help lists its flags.

    python generate.py --text "a small red circle on the left on a black background"
    python generate.py --text "a red square" --text "a blue circle" --seeds 0-7 --captions --out grid.png
"""
from stylegan_t2i.cli.generate import main

if __name__ == "__main__":
    main()
