"""``specgan prep`` on a hostile corpus (see conftest.py): every good file lands, every bad one is reported with
its reason, the counts add up, nothing crashes, and a 30-minute file is processed in bounded memory."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch
from typer.testing import CliRunner

import specgan.audio.io as audio_io
from specgan.audio.features import LogMel, mel_filterbank
from specgan.audio.io import audio_files
from specgan.cli import app
from specgan.data.dataset_dir import open_dataset
from specgan.data.prep import chunk_file, chunk_logmel, clip_logmel, prep

from .conftest import LONG_RATE, LONG_SECONDS, PARAM_FLAGS, PARAMS, TONE_HZ, UNREADABLE, voiced, wav_bytes

ROOT = Path(__file__).resolve().parents[2]
TONE_FILES = ["alpha/tone_44k.flac", "alpha/rate_8k.wav", "beta/rate_192k.wav"]


@pytest.fixture(scope="module")
def prepped(hostile, tmp_path_factory):
    """One prep of the hostile corpus with two worker threads: ``(report, dataset)``."""
    out = tmp_path_factory.mktemp("hostile-ds") / "ds"
    report = prep(hostile.root, out, params=PARAMS, workers=2)
    return report, open_dataset(out)


def test_every_good_file_lands(hostile, prepped):
    _, ds = prepped
    sources = {s["path"]: s for s in ds.manifest["sources"]}
    assert set(sources) == set(hostile.good)
    for path, rate in hostile.good.items():
        source = sources[path]
        assert source["sample_rate"] == rate, path
        assert source["chunks"] > 0, path
        rows = ds.positions[:, 0] == ds.manifest["sources"].index(source)
        assert rows.sum() == source["chunks"]
    assert sources["beta/long_30min.wav"]["seconds"] == LONG_SECONDS
    assert sources["beta/long_30min.wav"]["chunks"] > LONG_SECONDS / PARAMS.chunk_seconds  # chunks overlap by half
    assert sources["beta/rate_192k.wav"]["seconds"] == sources["alpha/rate_8k.wav"]["seconds"] == 2.5
    chunks = np.asarray(ds.chunks)
    assert chunks.shape == (len(ds.labels), PARAMS.n_mels, PARAMS.frames)
    assert np.isfinite(chunks).all() and chunks.min() >= -1 and chunks.max() <= 1


def test_every_bad_file_is_reported_with_its_reason(hostile, prepped):
    report, ds = prepped
    skipped = {s["path"]: s for s in ds.manifest["skipped"]}
    assert set(skipped) == set(hostile.bad)
    for path, fragment in hostile.bad.items():
        reason = skipped[path]["reason"]
        assert fragment in reason, (path, reason)
        assert "\n" not in reason and str(hostile.root) not in reason  # one line, the path is said once, outside
    assert skipped["alpha/loop_a.wav"]["sha256"] is None  # never opened, so nothing to remember it by
    assert report.skipped == ds.manifest["skipped"]


def test_counts_add_up(hostile, prepped):
    report, ds = prepped
    found = len(audio_files(hostile.root))
    assert found == report.found == len(hostile.good) + len(hostile.bad)
    assert report.processed + report.reused + len(report.skipped) == found
    assert (report.processed, report.reused) == (len(hostile.good), 0)
    domains = ds.manifest["domains"]
    assert sum(d["files"] for d in domains) == len(hostile.good)
    assert sum(d["skipped"] for d in domains) == len(hostile.bad)
    assert sum(d["chunks"] for d in domains) == len(ds.chunks)


def test_resampled_files_keep_their_pitch(prepped):
    # A 1 kHz tone written at 8, 44.1 and 192 kHz is loudest in the mel band of 1 kHz once prepped at 16 kHz: the
    # files were resampled, and from the rate each one declares.
    _, ds = prepped
    fbank = mel_filterbank(sample_rate=PARAMS.sample_rate, n_fft=PARAMS.n_fft, n_mels=PARAMS.n_mels)
    expected = int(fbank[round(TONE_HZ * PARAMS.n_fft / PARAMS.sample_rate)].argmax())
    for path in TONE_FILES:
        index = [s["path"] for s in ds.manifest["sources"]].index(path)
        spec = np.asarray(ds.chunks[ds.positions[:, 0] == index], dtype=np.float32)
        assert int(spec.mean(axis=(0, 2)).argmax()) == expected, path


def test_a_second_run_reuses_everything_and_rejudges_nothing(hostile, tmp_path):
    out = tmp_path / "ds"
    first = prep(hostile.root, out, params=PARAMS, workers=1)
    again = prep(hostile.root, out, params=PARAMS, workers=1)
    assert again.up_to_date
    assert (again.processed, again.reused, len(again.skipped)) == (0, len(hostile.good), len(hostile.bad))
    assert again.skipped == first.skipped


def test_long_file_is_streamed_in_bounded_memory(hostile):
    """Peak memory while prepping the 30-minute file stays far below what holding it whole would take.

    The file is 30 minutes at 8 kHz, 16-bit: 29 MB on disk, written in under a second. Prep resamples it to
    16 kHz, so the waveform at the target rate is 28.8 M samples (110 MB as float32) and a whole-file STFT is
    112 501 frames x 513 bins of complex64 (440 MB); the whole-file path this replaced grew the peak RSS by
    1.2 GB on this file. Streaming holds a few MB of audio at a time plus what it keeps: the float16 log-mel
    (14 MB) and the chunks (29 MB); measured growth 76 MB. The bound, half the whole-file STFT, fails any
    implementation that decodes, resamples or transforms the whole file at once. A 192 kHz file would show the
    same at 24 times the cost of writing and decoding it. Measured in a fresh process with ru_maxrss (the peak),
    after a short file has been through the same code so that one-off allocations are in the baseline.
    """
    script = textwrap.dedent(f"""
        import json, resource, sys
        from pathlib import Path
        import numpy as np, soundfile as sf, torch
        torch.set_num_threads(1)
        from specgan.audio.features import LogMel
        from specgan.audio.params import AudioParams
        from specgan.data.prep import chunk_file
        params = AudioParams(sample_rate={PARAMS.sample_rate}, n_mels={PARAMS.n_mels}, frames={PARAMS.frames})
        logmel = LogMel(params)
        warm = Path(sys.argv[2])
        t = np.arange(3 * {LONG_RATE}) / {LONG_RATE}
        sf.write(warm, (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), {LONG_RATE}, subtype="PCM_16")
        chunk_file(warm, params=params, logmel=logmel)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = chunk_file(Path(sys.argv[1]), params=params, logmel=logmel)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"growth_mb": (after - before) / 1024, "seconds": result.seconds,
                          "chunks": len(result.chunks)}}))
    """)
    warm = hostile.root.parent / "warm-up.wav"
    done = subprocess.run([sys.executable, "-c", script, str(hostile.root / "beta/long_30min.wav"), str(warm)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["seconds"] == LONG_SECONDS and measured["chunks"] > 3000
    samples = LONG_SECONDS * PARAMS.sample_rate
    whole_stft_mb = (1 + samples // PARAMS.hop_length) * PARAMS.n_freqs * 8 / 2**20
    assert measured["growth_mb"] < whole_stft_mb / 2, measured


@pytest.mark.parametrize("block_samples", [10007, audio_io.BLOCK_SAMPLES])
def test_streamed_log_mel_matches_the_whole_file(tmp_path, monkeypatch, block_samples):
    """Oracle: a 60 s stereo 44.1 kHz file streamed in blocks (odd-sized ones, too, that split frames and
    resampler steps anywhere) gives the chunks of decoding, resampling and transforming it whole."""
    rate = 44100
    stereo = np.stack([voiced(60, rate, f0=150), voiced(60, rate, f0=230, seed=1)], axis=1)
    path = tmp_path / "medium.wav"
    sf.write(path, stereo, rate, subtype="PCM_16")
    monkeypatch.setattr(audio_io, "WHOLE_SAMPLES", 0)  # stream even a file this short
    monkeypatch.setattr(audio_io, "BLOCK_SAMPLES", block_samples)
    logmel = LogMel(PARAMS)
    streamed = chunk_file(path, params=PARAMS, logmel=logmel)

    data, _ = sf.read(path, dtype="float32")
    wave = soxr.resample(data.mean(axis=1), rate, PARAMS.sample_rate, quality="HQ")
    chunks, starts = chunk_logmel(clip_logmel([torch.from_numpy(wave)], logmel=logmel), params=PARAMS)
    assert streamed.seconds == len(wave) / PARAMS.sample_rate == 60
    np.testing.assert_array_equal(streamed.starts, starts)
    assert streamed.chunks.shape == chunks.shape and len(chunks) > 100
    a, b = streamed.chunks.astype(np.float32), chunks.astype(np.float32)
    # float16 storage: at most one step of float16 (1/1024 near ±1) apart, where float32 rounding differs.
    np.testing.assert_allclose(a, b, rtol=0, atol=2 ** -10)
    assert (a == b).mean() > 0.99
    whole = LogMel(PARAMS)(torch.from_numpy(wave))  # and they are the log-mel of the whole file, at their positions
    frame = int(streamed.starts[7]) // PARAMS.hop_length
    np.testing.assert_allclose(a[7], whole[:, frame:frame + PARAMS.frames].numpy(), rtol=0, atol=2 ** -10)


# -- through the command line ----------------------------------------------------------------------------------
def run_cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_cli_reports_one_line_per_bad_file_and_a_summary(hostile, tmp_path):
    code, output = run_cli("prep", hostile.root, "-o", tmp_path / "ds", "--workers", "2", *PARAM_FLAGS)
    assert code == 0, output
    assert "Traceback" not in output and "internal error" not in output
    lines = output.splitlines()
    for path, fragment in hostile.bad.items():
        mine = [line for line in lines if line.strip().startswith(f"{path}: ")]
        assert len(mine) == 1 and fragment in mine[0], (path, mine)
    assert f"processed {len(hostile.good)} file(s), re-used 0 unchanged" in output
    assert f"skipped {len(hostile.bad)} file(s):" in output
    total = next(line for line in lines if "total" in line)
    assert str(len(hostile.good)) in total and str(len(hostile.bad)) in total


def test_cli_with_only_bad_files_is_a_one_line_error(hostile, tmp_path):
    src = tmp_path / "bad"
    (src / "alpha").mkdir(parents=True)
    for path in ["alpha/zero_bytes.wav", "alpha/random.wav", "alpha/truncated_data.wav", "alpha/one_sample.wav"]:
        shutil.copy(hostile.root / path, src / path)
    code, output = run_cli("prep", src, "-o", tmp_path / "ds", *PARAM_FLAGS)
    assert code == 2
    assert len(output.strip().splitlines()) == 1
    assert "none of the 4 audio files could be used" in output and "alpha/" in output
    assert not (tmp_path / "ds" / "manifest.json").exists()


def _drop_file_permission_bypass() -> None:
    """In the child, before exec: give up root's power to read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)
    by removing them from the capability bounding set, so that mode 000 means unreadable, as for any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_file_and_undecodable_name_through_the_real_command(hostile, tmp_path):
    """A file this user may not read (mode 000) is skipped with the system's reason, and a bad file whose name is
    not UTF-8 is listed by an escaped name, by ``python -m specgan prep`` writing to a strict UTF-8 stdout.

    Tests often run as root, which reads anything; the command then runs without root's permission-bypassing
    capabilities, so the kernel really refuses the read (no simulated ``open``)."""
    src = tmp_path / "src" / "alpha"
    src.mkdir(parents=True)
    (src / "good.wav").write_bytes(wav_bytes(voiced(2.0, 16000), 16000))
    shutil.copy(hostile.root / UNREADABLE, src / "unreadable.wav")
    os.chmod(src / "unreadable.wav", 0)
    with open(os.fsencode(src) + b"/d\xe9j\xe0-vu.wav", "wb") as f:
        f.write(b"junk")
    as_root = os.geteuid() == 0
    try:
        done = subprocess.run([sys.executable, "-m", "specgan", "prep", str(src.parent), "-o", str(tmp_path / "ds"),
                               *PARAM_FLAGS], capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
                              preexec_fn=_drop_file_permission_bypass if as_root else None)
    except subprocess.SubprocessError as e:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE to make a file unreadable ({e})")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "alpha/unreadable.wav: cannot open (Permission denied)" in done.stdout
    assert "alpha/d\\xe9j\\xe0-vu.wav: not readable audio" in done.stdout
    assert "processed 1 file(s)" in done.stdout and "skipped 2 file(s)" in done.stdout
    skipped = open_dataset(tmp_path / "ds").manifest["skipped"]
    assert [(s["path"], s["sha256"] is None) for s in skipped] == [("alpha/d\\xe9j\\xe0-vu.wav", False),
                                                                    ("alpha/unreadable.wav", True)]

