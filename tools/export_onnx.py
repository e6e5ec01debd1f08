"""Export a GAN checkpoint to ONNX, for generation without PyTorch.

The command lives in stylegan_t2i/cli/export_onnx.py, also installed as `stylegan-t2i-export-onnx`;
--help lists its flags.

    python tools/export_onnx.py --out onnx/ --check                # the shipped demo model
"""
from stylegan_t2i.cli.export_onnx import main

if __name__ == "__main__":
    main()
