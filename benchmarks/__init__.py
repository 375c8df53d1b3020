"""The speed and memory benchmark of the Perceiver; ``benchmarks/bench.py`` is the entry point.

configs.py  what is measured: model configurations, the scaling study's settings, the goals, synthetic batches
variants.py the models compared (ours, its ablations, perceiver-pytorch) and their train / eval steps
machine.py  the machine: description, malloc tuning, device sync, the matmul rate used as "peak"
timing.py   round-robin timing of callables, median/min/max summaries, FLOP counting, time budgets
memory.py   peak memory: RSS probes in fresh subprocesses (CPU), max allocated bytes (CUDA)
speed.py    the ``speed`` section: every variant of a config timed together, ratios to perceiver-pytorch
scaling.py  the ``scaling`` section: one training step at growing N, Perceiver vs a transformer encoder
capture.py  the ``capture`` section: the cost of saving attention maps once per epoch
report.py   goals and the tables, one formatting for the console and markdown
gpu_check.py on its own, on one GPU: Experiment 1 through train.py and against its peers (docs/PERFORMANCE.md)
gpu_steps.py its in-process sections: MFU at large batches, the peer comparison, the step profile
run_lock.py on its own: what the run lock costs against an epoch of the 10-minute CIFAR-10 model
late_speed.py on its own: a trained checkpoint's training step against a fresh model's, with and without the
            guards against subnormal floats

Learning-quality scripts (each runs training, not the benchmark):
data_scaling.py  train.py at one budget on parts of the training split (sizes x seeds): plot and tables
peer_train.py    perceiver-pytorch trained through train.py's data path, step, schedule and evaluation
"""
