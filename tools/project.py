"""Project a picture into a GAN checkpoint's latent space, then re-render it under other words.

The command lives in stylegan_t2i/cli/project.py, also installed as `stylegan-t2i-project`;
--help lists its flags.

    python tools/project.py --target pic.png --caption "..." --edit "..." --outdir projection/
"""
from stylegan_t2i.cli.project import main

if __name__ == "__main__":
    main()
