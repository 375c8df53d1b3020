"""train.py with injected faults (tests/faults.py): ``python tests/fault_run.py FAULTS <train.py arguments>``."""
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import faults  # noqa: E402
import train  # noqa: E402

if __name__ == "__main__":
    faults.install(sys.argv[1])
    sys.exit(train.main(sys.argv[2:]))
