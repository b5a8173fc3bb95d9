"""`rnnkit verify`: differential fuzzing of rnnkit against torch.nn and against its reference backend."""
from __future__ import annotations

import json
import sys
import time

from .main import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify", help="fuzz rnnkit against torch.nn (and its backends against each other)",
        description="Draw random layer configurations and inputs (every torch.nn option, every input form, "
                    "float32/float64, every backend; Recurrent over every rnnkit cell), run each on rnnkit and "
                    "on torch.nn (Recurrent: on the reference backend and a plain loop of cell calls), and "
                    "compare outputs, states and all gradients (tolerance 1e-5 float32, 1e-10 float64). "
                    "Exit code 1 on any mismatch, printing the configuration to replay it.")
    p.add_argument("--examples", type=int, default=100, help="configurations to check (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="example i is drawn from seed SEED+i, so --seed K --examples 1 replays example K "
                        "(default: %(default)s)")
    p.add_argument("--kinds", default="layer,recurrent",
                   help="layer (torch.nn-compatible layers vs torch.nn), recurrent (Recurrent over rnnkit.cells "
                        "vs the reference backend); comma-separated (default: %(default)s)")
    p.add_argument("--replay", metavar="JSON", default=None,
                   help="check this one configuration (as printed for a failure) and print its result")
    p.add_argument("--verbose", "-v", action="store_true", help="print every configuration's result")
    p.set_defaults(run=run)


def _print_failure(result) -> None:
    print(f"\nFAILED ({result.status}): {result.message}")
    print(f"  configuration: {result.replay()}")
    print(f"  replay with:   rnnkit verify --replay '{result.replay()}'")
    if "example_seed" in result.config:
        print(f"            or:   rnnkit verify --seed {result.config['example_seed']} --examples 1")


def run(args) -> int:
    import warnings

    from rnnkit.verify import fuzz

    # torch.nn (the reference) says it skips oneDNN for projections: not a finding of the fuzzer
    warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")

    if args.replay is not None:
        try:
            config = json.loads(args.replay)
        except json.JSONDecodeError as e:
            raise UsageError(f"--replay takes a configuration as JSON: {e}") from None
        if not isinstance(config, dict) or config.get("kind") not in fuzz.KINDS:
            raise UsageError(f"--replay takes a configuration (a JSON object whose kind is one of {', '.join(fuzz.KINDS)})")
        results = [fuzz.check(config)]
    else:
        if args.examples <= 0:
            raise UsageError(f"--examples must be greater than zero, got {args.examples}")
        kinds = tuple(k for k in args.kinds.split(",") if k)
        bad = [k for k in kinds if k not in fuzz.KINDS]
        if bad or not kinds:
            raise UsageError(f"unknown kind {', '.join(bad) or '(none)'}; choose from {', '.join(fuzz.KINDS)}")
        start = time.perf_counter()

        def progress(i, result):
            if args.verbose:
                print(f"[{i + 1}/{args.examples}] {result.status:11s} {fuzz.group_name(result.config):30s} "
                      f"out {result.out_diff:.2e} grad {result.grad_diff:.2e}  {result.replay()}")
            elif sys.stdout.isatty():
                print(f"\r{i + 1}/{args.examples}", end="", flush=True)

        results = fuzz.run(args.examples, args.seed, kinds, progress=progress)
        if sys.stdout.isatty() and not args.verbose:
            print("\r", end="")
        print(f"{len(results)} configuration{'' if len(results) == 1 else 's'} from seed {args.seed} "
              f"in {time.perf_counter() - start:.1f} s")
    print(fuzz.format_table(fuzz.summarize(results)))
    failures = [r for r in results if not r.ok]
    for r in failures:
        _print_failure(r)
    unsupported = sum(r.status == "unsupported" for r in results)
    if unsupported:
        print(f"\n{unsupported} configuration(s) named a backend that does not run them (not a failure)")
    print(f"\n{'FAIL' if failures else 'PASS'}: {len(results) - len(failures)} of {len(results)} agree "
          f"(tolerance 1e-5 float32, 1e-10 float64)")
    return 1 if failures else 0
