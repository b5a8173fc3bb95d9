"""`python -m rnnkit ...` (also what `torchrun -m rnnkit` runs)."""
from .cli.main import main

raise SystemExit(main())
