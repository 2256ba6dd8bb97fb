"""One rank of the distributed-training tests (run by torchrun from tests/test_distributed.py, not collected).

Trains ``RECIPE`` with :func:`specgan.train.loop.train` and saves this rank's weights and the size of its share of a
batch to ``OUT/rank_<rank>.pt``.
"""

import sys
from pathlib import Path

import torch

from specgan.train.config import load_recipe
from specgan.train.loop import train

recipe_path, out = Path(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(1)
result = train(load_recipe(recipe_path), device=torch.device("cpu"))
task = result.task
models = task.models if hasattr(task, "models") else {"G": task.G, "D": task.D}
batches = task.batches_a if hasattr(task, "batches_a") else task.batches
torch.save({"models": {name: module.state_dict() for name, module in models.items()},
            "shard": len(batches.next()[0]), "global_batch": batches.batch_size},
           out / f"rank_{result.rank}.pt")
