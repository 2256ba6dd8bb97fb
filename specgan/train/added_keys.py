"""Recipe keys added after runs had been saved without them, and the value each such run trained with.

A run keeps its resolved recipe (its ``recipe.toml`` and every checkpoint), and continues, samples and converts by
it. A key added to the recipe later is missing there; its new default may differ from what the run did (a
conditional DCGAN embedded its labels in ``z_dim`` dimensions before ``model.embed_dim`` existed, and now in one
per class). :func:`complete_saved_recipe` fills such keys in with the run's own value whenever a saved recipe is
read (:func:`~specgan.train.checkpoint.load_checkpoint`, and :func:`~specgan.train.config.load_recipe` for a run's
``recipe.toml``), so an older run goes on as it trained.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping


def _embed_dim(table: Mapping[str, Any]) -> int:
    """A conditional DCGAN's label embedding had ``z_dim`` dimensions; 0 (the default) elsewhere."""
    model = table.get("model", {})
    conditional_generate = table.get("task", "generate") == "generate" and model.get("conditional", False)
    return int(model.get("z_dim", 100)) if conditional_generate else 0


#: ``(section, key)`` → the value a saved recipe without the key stands for, from the rest of that recipe.
ADDED_KEYS: dict[tuple[str, str], Callable[[Mapping[str, Any]], Any]] = {
    ("model", "embed_dim"): _embed_dim,
}


def complete_saved_recipe(table: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the saved recipe mapping ``table`` with every :data:`ADDED_KEYS` key it lacks filled in (a
    section that is not a table is left alone: the recipe's own checks report it)."""
    completed = copy.deepcopy(dict(table))
    for (section, key), value_of in ADDED_KEYS.items():
        values = completed.setdefault(section, {})
        if isinstance(values, dict) and key not in values:
            values[key] = value_of(table)
    return completed
