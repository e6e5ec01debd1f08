from setuptools import find_packages, setup

setup(
    name="stylegan_t2i",
    version="0.1.0",
    description="Text-to-image StyleGAN with a text-conditioned critic, plus a DDPM baseline.",
    packages=find_packages(include=["stylegan_t2i", "stylegan_t2i.*"]),
    # The demo model is package data, so that an installed copy (`pip install .`, not editable) generates
    # with no checkpoint: stylegan_t2i/pretrained/demo-gan.pt links to pretrained/demo-gan.pt, and the
    # wheel gets a copy of the file.
    package_data={"stylegan_t2i.ops": ["*.cu", "*.cpp", "*.h"], "stylegan_t2i": ["pretrained/*.pt"]},
    # The repository's scripts (train_progan.py, generate.py, tools/*.py) run the same commands
    # (stylegan_t2i/cli/console.py says why the entry points are not the modules' `main`s).
    entry_points={"console_scripts": [
        "stylegan-t2i-train = stylegan_t2i.cli.console:train",
        "stylegan-t2i-generate = stylegan_t2i.cli.console:generate",
        "stylegan-t2i-ddpm = stylegan_t2i.cli.console:train_ddpm",
        "stylegan-t2i-evaluate = stylegan_t2i.cli.console:evaluate",
        "stylegan-t2i-compare = stylegan_t2i.cli.console:compare",
        "stylegan-t2i-sweep-ddpm = stylegan_t2i.cli.console:sweep_ddpm",
        "stylegan-t2i-train-text-encoder = stylegan_t2i.cli.console:train_text_encoder",
        "stylegan-t2i-project = stylegan_t2i.cli.console:project",
        "stylegan-t2i-export-generator = stylegan_t2i.cli.console:export_generator",
        "stylegan-t2i-export-onnx = stylegan_t2i.cli.console:export_onnx",
        "stylegan-t2i-plot-run = stylegan_t2i.cli.console:plot_run",
        "stylegan-t2i-demo-data = stylegan_t2i.data.demo_scenes:main",
        # Needs the [demo] extra (stylegan_t2i/web_demo.py).
        "stylegan-t2i-serve = stylegan_t2i.web_demo:main",
    ]},
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
        # stylegan-t2i-serve, the local web demo (README "Web demo"); it uses Gradio 6's launch(theme=...)
        # and buttons=; tested with gradio 6.31.0 (which pins pillow < 13). Not in "test": its tests skip without it.
        "demo": ["gradio>=6,<7"],
        # The suite includes the ONNX parity test, so CI installs onnxruntime too; CI also runs
        # `ruff check .` (settings in pyproject.toml; rules move between ruff's minor versions).
        "test": ["pytest", "hypothesis", "onnx>=1.12", "onnxruntime>=1.13", "ruff>=0.17,<0.18"],
    },
)
