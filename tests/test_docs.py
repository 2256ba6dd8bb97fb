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
