"""The generated parts of README.md: the recipe reference (from the recipe dataclasses) and the command reference
(from ``specgan COMMAND --help``), so the documentation cannot drift from the code.

Each part sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers. ``python -m specgan.readme``
rewrites them in place; a test fails when they are stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from specgan.atomic import atomic_path

#: Help is rendered at this width, whatever the terminal, so the README is reproducible.
HELP_WIDTH = 100

COMMANDS = (("prep",), ("reconstruct",), ("train",), ("convert",), ("sample",), ("eval",), ("data", "fetch"))


def recipe_reference() -> str:
    """Markdown tables of every recipe table's keys, defaults and meanings."""
    from specgan.audio.params import AudioParams
    from specgan.recipe import reference_table
    from specgan.train.config import DataConfig, LossConfig, ModelConfig, OutputConfig, TrainConfig

    tables = [(DataConfig, "data"), (ModelConfig, "model"), (TrainConfig, "train"), (LossConfig, "loss"),
              (OutputConfig, "output"), (AudioParams, "audio")]
    return "\n\n".join(reference_table(cls, table=name) for cls, name in tables)


def command_help(*words: str) -> str:
    """``specgan WORDS --help`` as printed at :data:`HELP_WIDTH` columns."""
    from typer.testing import CliRunner

    from specgan.cli import app

    result = CliRunner().invoke(app, [*words, "--help"], prog_name="specgan",
                                terminal_width=HELP_WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"specgan {' '.join(words)} --help failed: {result.output}")
    return result.output.rstrip()


def cli_reference() -> str:
    """One fenced block of ``--help`` output per command."""
    parts = []
    for words in COMMANDS:
        parts.append(f"#### `specgan {' '.join(words)}`\n\n```text\n{command_help(*words)}\n```")
    return "\n\n".join(parts)


def render(text: str) -> str:
    """``text`` (the README) with every generated part brought up to date."""
    for name, make in (("recipe-reference", recipe_reference), ("cli-reference", cli_reference)):
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> markers")
        content = make()
        text = pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), text)
    return text


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "README.md"
    old = path.read_text()
    new = render(old)
    if new != old:
        with atomic_path(path) as tmp:
            tmp.write_text(new)
        print(f"updated {path}")
    else:
        print(f"{path} is up to date")


if __name__ == "__main__":
    main()
