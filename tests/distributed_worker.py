"""One rank of the distributed-training tests (run by torchrun from tests/test_distributed.py, not collected).

``distributed_worker.py RECIPE OUT [DEVICE]``: trains ``RECIPE`` on ``DEVICE`` (default cpu) with
:func:`specgan.train.loop.train` and saves this rank's weights and the size of its share of a batch to
``OUT/rank_<rank>.pt``; writes its process id to ``OUT/pid_<rank>`` first. If training is interrupted
(Ctrl-C, SIGTERM), saves the step of the checkpoint it stopped at instead, and on a specgan error, that error's
class and message. In the environment, ``INTERRUPT_AT=RANK:STEP`` sends that rank Ctrl-C during that step,
(``INTERRUPT_WITH=SIGTERM``: SIGTERM instead), ``DIE_AT=RANK:STEP`` kills that rank at once during that step (as ``kill -9`` would), and ``NO_DATA_ON=RANK`` makes
that rank alone fail to load the data.
"""

import os
import signal
import sys
from pathlib import Path

import torch

from specgan.errors import DatasetError, SpecganError, TrainingInterrupted
from specgan.train.config import load_recipe
from specgan.train.loop import train

recipe_path, out = Path(sys.argv[1]), Path(sys.argv[2])
device = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")  # "cuda": each rank takes cuda:LOCAL_RANK
(out / f"pid_{os.environ['RANK']}").write_text(str(os.getpid()))
torch.set_num_threads(1)
this_rank = int(os.environ["RANK"])
interrupt_with = getattr(signal, os.environ.get("INTERRUPT_WITH", "SIGINT"))
for variable, action in [("INTERRUPT_AT", lambda: signal.raise_signal(interrupt_with)),  # the handler records it
                         ("DIE_AT", lambda: os._exit(9))]:
    if os.environ.get(variable):  # "RANK:STEP"
        from specgan.train.loop import TASKS

        rank, at = map(int, os.environ[variable].split(":"))
        for task_class in TASKS.values():
            def step(self, n, _step=task_class.step, _action=action, _rank=rank, _at=at):
                if n == _at and this_rank == _rank:
                    _action()
                return _step(self, n)
            task_class.step = step
if os.environ.get("NO_DATA_ON") == str(this_rank):
    from specgan.train import loop

    def no_data(*args, **kwargs):
        raise DatasetError("no data on this machine")
    loop.load_data = no_data
try:
    result = train(load_recipe(recipe_path), device=device)
except TrainingInterrupted as e:
    torch.save({"interrupted_at": e.step, "message": str(e)}, out / f"rank_{this_rank}.pt")
    sys.exit(0)
except SpecganError as e:
    torch.save({"error": type(e).__name__, "message": str(e)}, out / f"rank_{this_rank}.pt")
    sys.exit(0)
task = result.task
models = task.models if hasattr(task, "models") else {"G": task.G, "D": task.D}
batches = task.batches_a if hasattr(task, "batches_a") else task.batches
torch.save({"models": {name: module.state_dict() for name, module in models.items()},
            "shard": len(batches.next()[0]), "global_batch": batches.batch_size},
           out / f"rank_{result.rank}.pt")
