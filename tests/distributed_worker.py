"""One rank of the distributed-training tests (run by torchrun from tests/test_distributed.py, not collected).

``distributed_worker.py RECIPE OUT [DEVICE]``: trains ``RECIPE`` on ``DEVICE`` (default cpu) with
:func:`specgan.train.loop.train` and saves this rank's weights and the size of its share of a batch to
``OUT/rank_<rank>.pt``; writes its process id to ``OUT/pid_<rank>`` first. If training is interrupted
(Ctrl-C), saves the step of the checkpoint it stopped at instead. ``INTERRUPT_AT=RANK:STEP`` in the environment
sends that rank Ctrl-C during that step.
"""

import os
import signal
import sys
from pathlib import Path

import torch

from specgan.errors import TrainingInterrupted
from specgan.train.config import load_recipe
from specgan.train.loop import train

recipe_path, out = Path(sys.argv[1]), Path(sys.argv[2])
device = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")  # "cuda": each rank takes cuda:LOCAL_RANK
(out / f"pid_{os.environ['RANK']}").write_text(str(os.getpid()))
torch.set_num_threads(1)
if os.environ.get("INTERRUPT_AT"):  # "RANK:STEP": that rank gets Ctrl-C during that step
    from specgan.train.loop import TASKS

    rank, at = map(int, os.environ["INTERRUPT_AT"].split(":"))
    for task_class in TASKS.values():
        def step(self, n, _step=task_class.step):
            if n == at and int(os.environ["RANK"]) == rank:
                signal.raise_signal(signal.SIGINT)  # the loop's handler only records it
            return _step(self, n)
        task_class.step = step
try:
    result = train(load_recipe(recipe_path), device=device)
except TrainingInterrupted as e:
    torch.save({"interrupted_at": e.step}, out / f"rank_{os.environ['RANK']}.pt")
    sys.exit(0)
task = result.task
models = task.models if hasattr(task, "models") else {"G": task.G, "D": task.D}
batches = task.batches_a if hasattr(task, "batches_a") else task.batches
torch.save({"models": {name: module.state_dict() for name, module in models.items()},
            "shard": len(batches.next()[0]), "global_batch": batches.batch_size},
           out / f"rank_{result.rank}.pt")
