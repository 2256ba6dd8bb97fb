"""bench/scaling.py, the several-GPU benchmark, checked on the CPU (gloo processes) so that the first machine with
several GPUs spends its time measuring, not debugging: its dataset of random chunks is one ``specgan train``
reads, its runs are the user's torchrun command, and its speed-ups pair each run with the one-process run of the
same round."""

import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scaling  # noqa: E402

from specgan.data.spectrogram_data import load_spectrogram_data  # noqa: E402
from specgan.train.config import load_recipe  # noqa: E402


def test_speedups_pair_each_run_with_the_one_process_run_of_its_round():
    runs = {"1": [{"round": 0, "images_per_s": 100.0}, {"round": 1, "images_per_s": 50.0}],
            "2": [{"round": 0, "images_per_s": 180.0}, {"round": 1, "images_per_s": 95.0}],
            "4": [{"round": 1, "images_per_s": None}]}
    summary = scaling.summarise(runs)
    assert summary["1"] == {"images_per_s": 75.0, "speedup": 1.0, "efficiency": 1.0}
    # Round by round 1.8 and 1.9: the median is 1.85, not the ratio of the medians (137.5 / 75 = 1.83).
    assert summary["2"]["speedup"] == pytest.approx(1.85) and summary["2"]["efficiency"] == pytest.approx(0.925)
    assert summary["4"] == {"images_per_s": None, "speedup": None, "efficiency": None}


@pytest.mark.parametrize("gpus, expected", [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])])
def test_process_counts_double_up_to_every_gpu(monkeypatch, gpus, expected):
    monkeypatch.setattr(scaling.torch.cuda, "device_count", lambda: gpus)
    assert scaling.default_ranks("cuda") == expected


def test_the_random_chunks_are_a_dataset_of_the_recipes_shape(tmp_path):
    recipe = load_recipe(scaling.RECIPES["cyclegan"])
    scaling.random_chunks_dataset(tmp_path / "chunks", scaling.RECIPES["cyclegan"])
    data = load_spectrogram_data(tmp_path / "chunks", domains=recipe.data.domains)
    assert data.class_names == tuple(recipe.data.domains)
    assert len(data) == 2 * scaling.CHUNKS
    assert data.image_shape == (1, recipe.audio.n_mels, recipe.audio.frames)
    assert -1 <= float(data.images.min()) < float(data.images.max()) <= 1


def test_one_and_two_processes_train_and_are_compared(tmp_path):
    result = scaling.measure(["cyclegan"], device="cpu", ranks=[1, 2], size_name="tiny", rounds=1, log=lambda _: None)
    assert result["errors"] == {} and result["skipped"] == []
    entry = result["kinds"]["cyclegan"]
    for n in ("1", "2"):
        [run] = entry["runs"][n]
        # Windows after the warm-up only: the tiny size times one window of LOG_EVERY steps.
        assert len(run["rates"]) == 1 and run["images_per_s"] > 0
    assert entry["summary"]["1"]["speedup"] == 1.0
    two = entry["summary"]["2"]
    assert two["speedup"] == pytest.approx(entry["runs"]["2"][0]["images_per_s"] / entry["runs"]["1"][0]["images_per_s"])
    assert two["efficiency"] == pytest.approx(two["speedup"] / 2)


def test_a_run_that_would_not_fit_in_the_budget_is_skipped(monkeypatch):
    calls = []

    def fake_run(kind, *, ranks, device, size, data, work, timeout_s):
        calls.append((ranks, timeout_s))
        return {"rates": [10.0], "images_per_s": 10.0, "wall_s": 1e6}  # far longer than the budget

    monkeypatch.setattr(scaling, "run", fake_run)
    monkeypatch.setattr(scaling, "random_chunks_dataset", lambda path, recipe: None)
    result = scaling.measure(["cyclegan"], device="cpu", ranks=[1, 2], size_name="tiny", rounds=1, budget_s=60,
                             log=lambda _: None)
    assert [n for n, _ in calls] == [1] and 0 < calls[0][1] <= 60  # the first run is killed at the budget's end
    assert result["skipped"] == ["cyclegan/2/round 0"]


def test_a_run_past_its_time_is_killed_with_its_ranks(tmp_path):
    """At the budget's end torchrun and every rank it started are killed (torchrun starts each rank in a session of
    its own: they would stay on their GPUs, and keep the benchmark waiting on their output), and the run is reported
    as killed."""
    scaling.random_chunks_dataset(tmp_path / "chunks", scaling.RECIPES["cyclegan"])
    endless = dict(scaling.SIZES["tiny"]["cyclegan"], steps=10 ** 6)
    raised = []

    def run():
        try:
            scaling.run("cyclegan", ranks=2, device="cpu", size=endless, data=tmp_path / "chunks", work=tmp_path,
                        timeout_s=20)
        except RuntimeError as e:
            raised.append(str(e))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    [run_dir] = tmp_path.glob("cyclegan_2_*")
    if thread.is_alive():  # left waiting on ranks that hold its pipes: clean them up, then fail
        subprocess.run(["pkill", "-9", "-f", f"output.dir={run_dir}"])
        pytest.fail("the benchmark was still waiting 100 s after the budget's end: ranks were left running")
    assert raised == ["cyclegan on 2 process(es): killed at the end of the budget (20 s)"]
    assert (run_dir / "metrics.jsonl").read_text()  # the ranks were training when the budget ended
    leftover = subprocess.run(["pgrep", "-f", f"output.dir={run_dir}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""
