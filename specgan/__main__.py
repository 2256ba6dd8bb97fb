"""``python -m specgan`` is the ``specgan`` command."""

from specgan.cli import main

main()
