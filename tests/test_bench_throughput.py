"""bench/train_throughput.py's bookkeeping, with the tiny CycleGAN step (synthetic chunks: no dataset needed)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import train_throughput  # noqa: E402


def test_merge_pools_the_rounds_of_two_calls_into_the_same_file(tmp_path):
    args = ["cyclegan", "--device", "cpu", "--size", "tiny", "--rounds", "1", "--variants", "default,fp32",
            "--out", str(tmp_path)]
    train_throughput.main(args)
    train_throughput.main([*args, "--merge"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_cyclegan_tiny.json"]
    result = json.loads((tmp_path / "train_cyclegan_tiny.json").read_text())
    assert sorted(run["round"] for run in result["reference"]["runs"]) == [0, 1]
    for variant in ("default", "fp32"):
        runs = result["variants"][variant]["runs"]
        assert sorted(run["round"] for run in runs) == [0, 1] and all(run["images_per_s"] > 0 for run in runs)
        assert len(result["variants"][variant]["round_speedups"]) == 2
