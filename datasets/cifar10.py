"""Convert the CIFAR-10 python archive to image_dir + label_dir with class-name captions.

The converter lives in stylegan_t2i/data/converters/cifar10.py; --help lists its flags.

    python datasets/cifar10.py --archive cifar-10-python.tar.gz --out data/cifar10 --split train
"""
from stylegan_t2i.data.converters.cifar10 import main

if __name__ == "__main__":
    main()
