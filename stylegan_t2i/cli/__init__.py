"""The command-line programs: one module per command, each with its parser and `main(argv=None)`.

    train.py               train_progan.py             stylegan-t2i-train
    train_ddpm.py          tools/train_ddpm.py         stylegan-t2i-ddpm
    train_text_encoder.py  tools/train_text_encoder.py stylegan-t2i-train-text-encoder
    generate.py            generate.py                 stylegan-t2i-generate
    evaluate.py            tools/evaluate.py           stylegan-t2i-evaluate
    compare.py             tools/compare.py            stylegan-t2i-compare
    sweep_ddpm.py          tools/sweep_ddpm.py         stylegan-t2i-sweep-ddpm
    project.py             tools/project.py            stylegan-t2i-project
    export_generator.py    tools/export_generator.py   stylegan-t2i-export-generator
    export_onnx.py         tools/export_onnx.py        stylegan-t2i-export-onnx
    plot_run.py            tools/plot_run.py           stylegan-t2i-plot-run

The scripts in the repository (middle column) and the console commands that setup.py installs
(right, through `console.py`) both call the module's `main`. What several commands share is defined once:
`common.py` (data and evaluation flags, the built-in demo data, JSON output) and `run_setup.py`
(run directory, frozen text encoder, resume and its checks, for the training commands). Imports
flow one way: the library (stylegan_t2i.*) -> cli -> the scripts; no command imports a script.
"""
