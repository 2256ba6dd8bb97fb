"""Training: recipes, the loop, tasks and checkpoints."""
