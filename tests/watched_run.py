"""train.py with its step loop watched for host reads (tests/host_reads.py); each process writes what it saw to
``<REPORT>.rank<RANK>.json``: ``python tests/watched_run.py REPORT <train.py arguments>`` (torchrun too)."""
import json
import os
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from host_reads import StepLoopWatch  # noqa: E402
import train  # noqa: E402

if __name__ == "__main__":
    watch = StepLoopWatch().install()
    code = train.main(sys.argv[2:])
    report = {"code": code, "found": watch.reads.found, "named": dict(watch.reads.named),
              "windows": watch.windows, "epoch_ends": watch.epoch_ends}
    Path(f"{sys.argv[1]}.rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(report))
    sys.exit(code)
