from setuptools import find_packages, setup

setup(
    name="stylegan_t2i",
    version="0.1.0",
    description="Text-to-image StyleGAN with a text-conditioned critic, plus a DDPM baseline.",
    packages=find_packages(include=["stylegan_t2i", "stylegan_t2i.*"]),
    package_data={"stylegan_t2i.ops": ["*.cu", "*.cpp", "*.h"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "numpy",
        "scipy",
        "tqdm",
        "tensorboard",
        "sentencepiece",
        "pillow",
    ],
    extras_require={"test": ["pytest", "hypothesis"]},
)
