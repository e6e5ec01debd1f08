"""Training curves of a run from its log.jsonl.

The command lives in stylegan_t2i/cli/plot_run.py, also installed as `stylegan-t2i-plot-run`;
--help lists its flags.

    python tools/plot_run.py --run runs/00000-demo-32
"""
from stylegan_t2i.cli.plot_run import main

if __name__ == "__main__":
    main()
