"""The documentation stays true to the code."""

from pathlib import Path

from specgan.audio.params import AudioParams
from specgan.recipe import reference_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_documents_every_audio_parameter_with_its_default():
    readme = (ROOT / "README.md").read_text()
    assert reference_table(AudioParams, table="audio") in readme, \
        "README's [audio] table is stale: paste the output of specgan.recipe.reference_table(AudioParams, table='audio')"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in (ROOT / "README.md").read_text()


def test_readme_documents_every_recipe_table():
    from specgan.train.config import DataConfig, LossConfig, ModelConfig, OutputConfig, TrainConfig

    readme = (ROOT / "README.md").read_text()
    for cls, table in [(DataConfig, "data"), (ModelConfig, "model"), (TrainConfig, "train"),
                       (LossConfig, "loss"), (OutputConfig, "output")]:
        assert reference_table(cls, table=table) in readme, f"README's [{table}] table is stale"


def test_readme_lists_every_shipped_recipe():
    readme = (ROOT / "README.md").read_text()
    for recipe in (ROOT / "recipes").glob("*.toml"):
        assert f"recipes/{recipe.name}" in readme
