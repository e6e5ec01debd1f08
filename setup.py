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
        # stylegan_t2i/plot.py (Agg, no display); tested with 3.9.4 and 3.11.2.
        "matplotlib>=3.9",
    ],
    extras_require={
        # tools/export_onnx.py and generation without torch (README "ONNX export"); opset 17 needs
        # onnx >= 1.12 / onnxruntime >= 1.13; tested with onnx 1.23.2, onnxruntime 1.32.0.
        "onnx": ["onnx>=1.12", "onnxruntime>=1.13"],
        # The suite includes the ONNX parity test, so CI installs onnxruntime too.
        "test": ["pytest", "hypothesis", "onnx>=1.12", "onnxruntime>=1.13"],
    },
)
