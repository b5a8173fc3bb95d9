"""`rnnkit train` with float64 as torch's default dtype: tests/test_train.py runs it under torchrun, and the
one-process run in float64 as well, to compare the two (python tests/train_in_float64.py train ...)."""
import sys

import torch

from rnnkit.cli.main import main

if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    sys.exit(main(sys.argv[1:]))
