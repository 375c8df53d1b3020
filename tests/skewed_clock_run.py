"""train.py with rank 1's clock running ahead of rank 0's: ``python tests/skewed_clock_run.py OUT <train.py args>``.

Rank 1's training clock (`perceiver.stopping.StopConditions.elapsed`) reads twice the real time plus 300 s, as
if that process had been started earlier or ran on a slower machine. Each rank writes ``OUT/rank<R>.pt``: the
learning rate it applied at every optimizer step and its final weights.
"""
import os
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import torch  # noqa: E402

import perceiver.step as step  # noqa: E402
import perceiver.stopping as stopping  # noqa: E402
import perceiver.trainer as trainer  # noqa: E402
import train  # noqa: E402

SKEW_S = 300.0


def main(out: Path, argv: list[str]) -> int:
    rank = int(os.environ.get("RANK", "0"))
    rates: list[float] = []
    if rank == 1:
        real_elapsed = stopping.StopConditions.elapsed
        stopping.StopConditions.elapsed = lambda self: 2 * real_elapsed(self) + SKEW_S
    real_update, real_fit = step.TrainStep.update, trainer.Trainer.fit

    def update(self, lr):
        rates.append(float(lr))
        return real_update(self, lr)

    def fit(self):
        code = real_fit(self)
        torch.save({"rates": rates, "model": self.parts.model.state_dict()}, out / f"rank{rank}.pt")
        return code

    step.TrainStep.update, trainer.Trainer.fit = update, fit
    return train.main(argv)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
