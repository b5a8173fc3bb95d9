"""Benchmarks of rnnkit against torch.nn (``rnnkit bench``): the measuring code lives here,
the command line in rnnkit.cli.bench.  Imported only by the command, never by ``import rnnkit``."""
