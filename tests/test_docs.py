"""The documentation stays true to the code."""

from pathlib import Path

from specgan.audio.params import AudioParams
from specgan.recipe import reference_table
from specgan.readme import render

ROOT = Path(__file__).resolve().parents[1]


def test_readme_references_are_generated_from_the_code():
    """The recipe tables (from the dataclasses) and the command help in the README are current."""
    readme = (ROOT / "README.md").read_text()
    assert render(readme) == readme, "README is stale: run .venv/bin/python -m specgan.readme"
    assert reference_table(AudioParams, table="audio") in readme


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in (ROOT / "README.md").read_text()


def test_readme_lists_every_shipped_recipe_in_its_table():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Recipes"):readme.index("<!-- recipe-reference:start -->")]
    rows = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `recipes/")}
    assert rows == {f"recipes/{recipe.name}" for recipe in (ROOT / "recipes").glob("*.toml")}
