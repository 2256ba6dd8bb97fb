"""bench/convert_speed.py and bench/convert_memory.py with a tiny model on the CPU: every code path the real
benchmarks take (a warm-up and a timed conversion to the same output, the stage breakdown, the naive pipeline), so
that `make bench` and a GPU session spend their time measuring, not failing."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import convert_speed  # noqa: E402


def test_convert_speed_converts_its_input_repeatedly_and_times_each_stage(tmp_path):
    result = convert_speed.main(["--tiny", "--device", "cpu", "--seconds", "4", "--repeats", "2",
                                 "--naive-seconds", "3", "--out", str(tmp_path)])
    assert len(result["file_s"]) == len(result["call_s"]) == 2  # the warm-up is not timed; both repeats are
    assert all(0 < f <= c for f, c in zip(result["file_s"], result["call_s"]))
    assert result["rtf"] > 0 and result["naive"]["rtf"] > 0
    assert set(result["stages_s"]) and all(v >= 0 for v in result["stages_s"].values())
    assert json.loads((tmp_path / "convert_speed_tiny.json").read_text())["rtf"] == result["rtf"]


def test_convert_memory_measures_both_ways_on_the_same_input(tmp_path):
    import convert_memory

    result = convert_memory.main(["--tiny", "--minutes", "0.1", "--out", str(tmp_path)])
    row, = result["rows"]
    for variant in ("blocks", "one_pass"):
        assert row[variant]["peak_mb"] >= row[variant]["before_mb"] > 0 and row[variant]["wall_s"] > 0
    # An input shorter than a block is one Griffin-Lim pass either way: the same waveform.
    assert row["waveform_difference"] == 0.0
    assert (tmp_path / "convert_memory_tiny.json").exists()
