"""train.py that reports, after ``train.main`` returns, how many DistributedDataParallel models are still alive
(without running the garbage collector): ``python tests/exit_run.py <train.py arguments>``."""
import gc
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

import torch  # noqa: E402

import train  # noqa: E402

if __name__ == "__main__":
    code = train.main(sys.argv[1:])
    alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
    print(f"DistributedDataParallel models alive after main: {alive}", file=sys.stderr, flush=True)
    sys.exit(code)
