"""`rnnkit predict`: run a trained checkpoint on your input."""
from __future__ import annotations

from .main import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="run a model trained by `rnnkit train` on your input",
                       description="Print a trained model's output for TEXT (dates: the ISO date; "
                                   "lm: a continuation of TEXT; digits: the digit of a held-out image index or of "
                                   "64 pixel values 0..16; date-tags: each character's field; spell-numbers: the "
                                   "words of a number 0..999; forecast: the next value after TEXT's values).")
    p.add_argument("text", help='e.g. "3 March 1998", "17", "342", "50, 80, 120"')
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by rnnkit train")
    p.add_argument("--plot", help="draw the prediction to this PNG: dates, the attention; digits (attention pooling), "
                                  "the weight of each row; date-tags, each character's tag probabilities; "
                                  "spell-numbers, each step's character probabilities; forecast, the values read "
                                  "and the forecast")
    p.add_argument("--length", type=int, default=200, help="lm: characters to generate")
    p.set_defaults(run=run)


def run(args) -> int:
    from rnnkit.training.checkpoint import CheckpointError
    from rnnkit.training.inference import Predictor
    from rnnkit.training.structure_task import NothingToDraw

    if args.length <= 0:
        raise UsageError(f"--length must be greater than zero, got {args.length}")
    try:
        predictor = Predictor(args.checkpoint)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    try:
        output, weights = predictor.predict(args.text, args.length)
    except ValueError as e:
        raise UsageError(f"the input cannot be read by this model: {e}") from None
    print(output)
    if args.plot:
        try:
            draw = predictor.picture(args.text, output, weights)
        except NothingToDraw as e:
            raise UsageError(f"--plot: {e}") from None
        try:
            draw(args.plot)
        except OSError as e:
            raise UsageError(f"--plot {args.plot}: {e.strerror or e}") from None
    return 0
