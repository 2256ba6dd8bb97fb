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
    # what was added, and on which machine and commit (results.md names it)
    assert result["merged"] == [{"variants": ["default", "fp32"], "rounds": 1, "reference": True,
                                 "machine": result["machine"]}]


def test_a_goal_rests_on_the_lower_figure_when_few_rounds_were_paired():
    """One paired round against the slowest of four reference runs had read 4.56x (the ratio of medians: 3.76x)."""
    one_round = {"round_speedups": [4.56], "round_speedup": 4.56, "speedup": 3.76}
    assert train_throughput.goal_speedup(one_round) == 3.76
    three = {"round_speedups": [1.5, 1.6, 1.7], "round_speedup": 1.6, "speedup": 1.55}
    assert train_throughput.goal_speedup(three) == 1.6
    assert train_throughput.goal_speedup({"speedup": 2.0}) == 2.0
