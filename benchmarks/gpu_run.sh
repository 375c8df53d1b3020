#!/usr/bin/env bash
# The GPU check in one call on a lent GPU machine: installs the carried wheels (.whl/), runs
# benchmarks/gpu_check.py on the carried CIFAR-10 (data/) within BUDGET_S seconds (default 400), and writes its JSON
# and log to benchmarks/results/ and, where $OUT is set, to $OUT (what the device machine sends back).
# docs/PERFORMANCE.md ("On a GPU") gives the call and what to carry.
#
#   bash benchmarks/gpu_run.sh                                        # on the GPU
#   bash benchmarks/gpu_run.sh --sections cudagraphs seeds profile    # a later call: the sections left over
#   PYTHON=.venv/bin/python bash benchmarks/gpu_run.sh --device cpu --smoke   # checks this script on a CPU
#                                                                   (its JSON and log go to $TMPDIR or /tmp)
# Extra arguments go to gpu_check.py; JSON=path changes where the figures go.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
case " $* " in  # a smoke check measures nothing: it must not replace the GPU's figures in benchmarks/results/
    *" --smoke "*) JSON=${JSON:-${TMPDIR:-/tmp}/gpu_smoke.json} ;;
    *) JSON=${JSON:-benchmarks/results/gpu.json} ;;
esac
LOG=${JSON%.json}.log
mkdir -p "$(dirname "$JSON")"
if compgen -G ".whl/*.whl" > /dev/null; then  # pure-Python peers the machine lacks (perceiver-pytorch)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    "$PY" benchmarks/gpu_check.py --data_dir data --json "$JSON" --budget_s "${BUDGET_S:-400}" "$@"
} 2>&1 | tee "$LOG"
code=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
    cp "$JSON" "$LOG" "$OUT"/ 2> /dev/null
fi
exit "$code"
