"""The parts of `benchmarks/bench_generator.py`, one job a module:

  harness   : the networks of a config, a GanTrainer without a run dir, one training iteration as
              its two phases, and their timing.
  flops     : the FLOPs of a config's synthesis convolutions, counted from its GeneratorConfig.
  report    : markdown tables and the JSON file every mode can write.
  table     : the default mode: one row per network and resolution, with the machine's conv ceiling.
  scaling   : --scaling: time per image and peak memory against resolution and batch, one fresh
              process per cell.
  profiling : --profile: the top ops of the training step by self CPU time.

The entry script imports this package by its own name, `generator_bench`: Python puts the script's
folder, benchmarks/, first on sys.path, and pytest.ini adds the same folder for the tests, so
the script and the tests load the same modules (and nothing here imports the script).
"""
