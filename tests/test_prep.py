"""``specgan prep`` end to end on real recordings with planted bad files, and its incremental behaviour."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import soundfile as sf
import torch
from typer.testing import CliRunner

import specgan.data.dataset_dir as dataset_dir
import specgan.data.prep as prep_module
from specgan.audio.features import LogMel
from specgan.audio.io import AUDIO_SUFFIXES, audio_files, load_audio
from specgan.audio.params import AudioParams
from specgan.cli import app
from specgan.data.dataset_dir import open_dataset
from specgan.data.prep import ClipLogMel, chunk_logmel, prep
from specgan.data.spectrogram_data import load_spectrogram_data
from specgan.errors import AudioError, DatasetError, InterruptedWithWorkKept, SpecganWarning, Terminated
from helpers import one_line_error

ROOT = Path(__file__).resolve().parents[1]
SPEAKERS = {"SF1": ["100001.flac", "100003.flac"], "TM3": ["100001.flac", "100004.flac"]}
# 16 kHz keeps the tests quick (no resampling of the VCC files) without changing any code path.
FAST = ["--sample-rate", "16000", "--n-mels", "64", "--frames", "64", "--quiet"]
FAST_PARAMS = AudioParams(sample_rate=16000, n_mels=64, frames=64)


def run(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture
def corpus(vcc, tmp_path) -> Path:
    """Two speakers of real speech, plus planted bad files in one of them."""
    src = tmp_path / "wavs"
    for speaker, names in SPEAKERS.items():
        (src / speaker).mkdir(parents=True)
        for name in names:
            shutil.copy(vcc / "vcc2016_training" / speaker / name, src / speaker / name)
    bad = src / "SF1"
    raw = (vcc / "vcc2016_training" / "SF1" / "100002.flac").read_bytes()
    wave, rate = sf.read(vcc / "vcc2016_training" / "SF1" / "100002.flac")
    sf.write(bad / "full.wav", wave, rate)
    (bad / "truncated.wav").write_bytes((bad / "full.wav").read_bytes()[:20000])
    (bad / "full.wav").unlink()
    (bad / "truncated.flac").write_bytes(raw[: len(raw) // 3])
    (bad / "noise.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    (bad / "empty.wav").write_bytes(b"")
    sf.write(bad / "silent.wav", np.zeros(3 * rate), rate)
    sf.write(bad / "short.wav", wave[: rate // 4], rate)
    (bad / "notes.txt").write_text("not audio, and not named like audio: ignored")
    return src


BAD = {"truncated.wav": "truncated WAV", "truncated.flac": "not readable audio", "noise.wav": "not readable audio",
       "empty.wav": "empty file", "silent.wav": "silent", "short.wav": "too short"}


def test_prep_end_to_end(corpus, tmp_path):
    out = tmp_path / "ds"
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST)
    assert code == 0, output
    for name, reason in BAD.items():
        assert f"SF1/{name}: {reason}" in output
    ds = open_dataset(out)
    m = ds.manifest
    assert ds.domains == ("SF1", "TM3")
    assert sorted(s["path"] for s in m["sources"]) == sorted(f"{k}/{n}" for k, v in SPEAKERS.items() for n in v)
    assert {s["path"] for s in m["skipped"]} == {f"SF1/{n}" for n in BAD}
    assert ds.chunks.dtype == np.float16 and ds.chunks.shape == (len(ds.labels), 64, 64) == tuple(m["shape"])
    assert ds.chunks.min() >= -1 and ds.chunks.max() <= 1
    assert m["audio"]["sample_rate"] == 16000 and m["normalization"]["min_db"] == -80.0
    assert [d["files"] for d in m["domains"]] == [2, 2]
    assert [d["skipped"] for d in m["domains"]] == [len(BAD), 0]
    assert sum(d["chunks"] for d in m["domains"]) == len(ds.chunks)
    for label, row in enumerate(m["domains"]):
        assert row["label"] == label and row["name"] == ds.domains[label]
        assert row["chunks"] == int((ds.labels == label).sum())
        assert row["seconds"] == pytest.approx(sum(s["seconds"] for s in m["sources"] if s["domain"] == row["name"]),
                                               abs=1e-3)

    # Every chunk is exactly the log-mel of its source at its stored position (oracle: the front end on the file).
    params = ds.audio
    for source_index, source in enumerate(m["sources"]):
        wave, _ = load_audio(corpus / source["path"], sample_rate=params.sample_rate)
        full = LogMel(params)(wave)
        rows = np.flatnonzero(ds.positions[:, 0] == source_index)
        assert len(rows) == source["chunks"] > 0
        assert (ds.labels[rows] == ds.domains.index(source["domain"])).all()
        for row in rows:
            frame = ds.positions[row, 1] // params.hop_length
            expected = full[:, frame:frame + params.frames].to(torch.float16).numpy()
            np.testing.assert_array_equal(ds.chunks[row], expected)


def test_trimming_records_positions_in_the_untrimmed_file(corpus, tmp_path):
    # Pad a real clip with a second of silence: trimming removes it, and positions still point into the file.
    wave, rate = sf.read(corpus / "TM3" / "100001.flac")
    padded = np.concatenate([np.zeros(rate), wave])
    src = tmp_path / "one"
    src.mkdir()
    sf.write(src / "padded.wav", padded, rate)
    report = prep(src, tmp_path / "ds", params=FAST_PARAMS, workers=1)
    ds = open_dataset(report.out)
    assert ds.domains == ("one",)  # files directly in SRC form one domain named after it
    assert ds.positions[0, 1] >= 0.9 * rate
    # Trimming works on the frame grid of the whole clip, so each chunk is an exact slice of its log-mel.
    full = LogMel(FAST_PARAMS)(torch.from_numpy(padded.astype(np.float32)))
    for row in range(len(ds.chunks)):
        frame = ds.positions[row, 1] // FAST_PARAMS.hop_length
        np.testing.assert_array_equal(ds.chunks[row], full[:, frame:frame + FAST_PARAMS.frames].half().numpy())


def test_incremental_rerun_and_changes(corpus, vcc, tmp_path):
    out = tmp_path / "ds"
    first = prep(corpus, out, params=FAST_PARAMS, workers=1)
    # Every file found is processed, re-used or skipped: exactly one of them.
    assert (first.found, first.processed, first.reused, len(first.skipped)) == (4 + len(BAD), 4, 0, len(BAD))
    before = json.loads((out / "manifest.json").read_text())

    again = prep(corpus, out, params=FAST_PARAMS, workers=1)
    assert again.processed == 0 and again.up_to_date
    assert (again.reused, len(again.skipped)) == (4, len(BAD))  # skip verdicts are remembered by content hash
    assert json.loads((out / "manifest.json").read_text()) == before
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST)
    assert code == 0 and "up to date" in output

    # A new file is processed alone; the others are re-used with identical chunks.
    shutil.copy(vcc / "vcc2016_training" / "SF1" / "100005.flac", corpus / "SF1" / "new.flac")
    old = open_dataset(out)
    old_chunks = {s["path"]: np.asarray(old.chunks[s["first_chunk"]:s["first_chunk"] + s["chunks"]])
                  for s in old.manifest["sources"]}
    update = prep(corpus, out, params=FAST_PARAMS, workers=1)
    assert (update.processed, update.reused, len(update.skipped)) == (1, 4, len(BAD))
    new = open_dataset(out)
    for s in new.manifest["sources"]:
        if s["path"] in old_chunks:
            np.testing.assert_array_equal(new.chunks[s["first_chunk"]:s["first_chunk"] + s["chunks"]],
                                          old_chunks[s["path"]])
    assert len(list(out.glob("chunks-*.npy"))) == 1  # the superseded generation is gone

    # A removed file leaves the dataset; a fixed bad file enters it.
    (corpus / "TM3" / "100004.flac").unlink()
    shutil.copy(vcc / "vcc2016_training" / "SF1" / "100006.flac", corpus / "SF1" / "empty.wav")
    update = prep(corpus, out, params=FAST_PARAMS, workers=1)
    assert (update.found, update.processed, update.reused, len(update.skipped)) == (4 + len(BAD), 1, 4, len(BAD) - 1)
    paths = {s["path"] for s in update.manifest["sources"]}
    assert "TM3/100004.flac" not in paths and "SF1/empty.wav" in paths
    assert update.removed == ["TM3/100004.flac"] and update.removed_domains == []


def test_an_update_processes_a_recording_changed_in_place_again(vcc, tmp_path):
    """A file whose content changed under the same name is decoded again (by its hash, not its name): re-using its
    old chunks, or leaving it out, would train on audio that is no longer there."""
    src = tmp_path / "src"
    (src / "SF1").mkdir(parents=True)
    for name in ("100001.flac", "100003.flac"):
        shutil.copy(vcc / "vcc2016_training" / "SF1" / name, src / "SF1" / name)
    out = tmp_path / "ds"
    prep(src, out, params=FAST_PARAMS, workers=1)
    shutil.copy(vcc / "vcc2016_training" / "SF1" / "100005.flac", src / "SF1" / "100003.flac")  # re-recorded
    update = prep(src, out, params=FAST_PARAMS, workers=1)
    assert (update.processed, update.reused, update.unfinished) == (1, 1, 0)
    data = open_dataset(out)
    row = next(s for s in data.manifest["sources"] if s["path"] == "SF1/100003.flac")
    assert row["sha256"] == hashlib.sha256((src / "SF1" / "100003.flac").read_bytes()).hexdigest()
    fresh = prep_module.chunk_file(src / "SF1" / "100003.flac", params=FAST_PARAMS, logmel=LogMel(FAST_PARAMS))
    np.testing.assert_array_equal(data.chunks[row["first_chunk"]:row["first_chunk"] + row["chunks"]], fresh.chunks)


def test_an_update_names_a_domain_whose_recordings_are_all_gone(vcc, tmp_path):
    src = tmp_path / "src"
    for speaker in ("SF1", "TM3"):
        (src / speaker).mkdir(parents=True)
        shutil.copy(vcc / "vcc2016_training" / speaker / "100001.flac", src / speaker / "100001.flac")
    out = tmp_path / "ds"
    prep(src, out, params=FAST_PARAMS, workers=1)
    shutil.rmtree(src / "TM3")
    update = prep(src, out, params=FAST_PARAMS, workers=1)
    assert update.removed == ["TM3/100001.flac"] and update.removed_domains == ["TM3"]
    assert [d["name"] for d in update.manifest["domains"]] == ["SF1"]


def test_manifest_holds_each_files_sha256_whether_read_whole_or_streamed(corpus, tmp_path, monkeypatch):
    """A fresh prep hashes the bytes it decodes (files up to SMALL_FILE_BYTES) or streams the file through the
    hash (larger ones); both are the file's SHA-256, which an update computes again to find what changed."""
    monkeypatch.setattr(prep_module, "SMALL_FILE_BYTES", 50_000)
    out = tmp_path / "ds"
    report = prep(corpus, out, params=FAST_PARAMS, workers=2)
    rows = report.manifest["sources"] + [s for s in report.manifest["skipped"] if s["sha256"] is not None]
    sizes = [(corpus / row["path"]).stat().st_size for row in rows]
    assert min(sizes) <= 50_000 < max(sizes) and len(rows) == 4 + len(BAD)
    for row in rows:
        assert row["sha256"] == hashlib.sha256((corpus / row["path"]).read_bytes()).hexdigest(), row["path"]
    assert prep(corpus, out, params=FAST_PARAMS, workers=2).up_to_date


class _ChunkedReads:
    """A file whose reads return at most ``limit`` bytes each, as a network file system's may."""

    def __init__(self, path: Path, *, limit: int):
        self.file = open(path, "rb", buffering=0)
        self.limit = limit

    def fileno(self):
        return self.file.fileno()

    def read(self, n):
        return self.file.read(min(n, self.limit))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_read_small_reads_the_whole_file_however_the_reads_come(tmp_path, monkeypatch):
    path = tmp_path / "x.wav"
    data = np.random.default_rng(0).bytes(10_000)
    path.write_bytes(data)
    assert prep_module.read_small(path) == data
    monkeypatch.setattr(prep_module, "open_regular", lambda p: _ChunkedReads(p, limit=999))
    assert prep_module.read_small(path) == data
    monkeypatch.setattr(prep_module, "SMALL_FILE_BYTES", 9_999)
    assert prep_module.read_small(path) is None  # larger than SMALL_FILE_BYTES: streamed instead


def test_read_small_declines_a_file_that_grew_after_its_size_was_taken(tmp_path, monkeypatch):
    path = tmp_path / "x.wav"
    path.write_bytes(bytes(10_000))
    real_fstat = os.fstat
    monkeypatch.setattr(prep_module.os, "fstat",
                        lambda fd: os.stat_result((*real_fstat(fd)[:6], 4_000, *real_fstat(fd)[7:])))
    assert prep_module.read_small(path) is None


def test_plain_flac_and_wav_files_are_decoded_without_libsndfile_and_the_others_with_it(corpus, tmp_path,
                                                                                        monkeypatch):
    opened = []

    class RecordingAudioFile(prep_module.AudioFile):
        def __enter__(self):
            opened.append(Path(self.path).name)
            return super().__enter__()

    monkeypatch.setattr(prep_module, "AudioFile", RecordingAudioFile)
    report = prep(corpus, tmp_path / "ds", params=FAST_PARAMS, workers=1)
    assert report.processed == 4
    # Good FLAC files and 16-bit WAVs (silent.wav and short.wav too: their samples are read, then judged) never
    # reach libsndfile; the truncated FLAC decodes short, and the others are not plain WAV files.
    assert sorted(opened) == ["empty.wav", "noise.wav", "truncated.flac", "truncated.wav"]


def test_discovery_finds_files_in_pathlib_order(tmp_path):
    """Discovery works on strings; its order is still that of sorted Path objects (part by part, which is not
    the order of the strings: "a-b/x" sorts after "a/x" as paths, before it as text)."""
    names = ["a/b.wav", "a-b/c.wav", "a.b/d.flac", "a b/e.wav", "A/f.WAV", "a/b/c.mp3", "ab.wav", "a.wav",
             "é/x.ogg", "a/b-c.wav", "a/b.c.wav", "a/b/c/d.opus", "z/.hidden.wav", ".h/x.wav", "a/notes.txt",
             "a/x.wav.", "b/\udcff.flac"]
    for name in names:
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    src = tmp_path / "src"
    expected = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                      and not any(part.startswith(".") for part in p.relative_to(src).parts))
    assert len(expected) == 13
    assert audio_files(src) == expected
    sources = prep_module.discover(src)
    assert [s.path for s in sources] == expected
    assert [s.relpath for s in sources] == [prep_module.printable(p.relative_to(src).as_posix()) for p in expected]
    assert [s.domain for s in sources][:3] == ["A", "a", "a"]
    assert sources[expected.index(src / "ab.wav")].domain == "src"  # directly in the source folder


def test_a_domain_pattern_is_searched_in_the_file_name_not_its_folders(tmp_path):
    """--domain-pattern labels a file by its own name, wherever it lies: recordings kept in folders by session
    (FSDD's ``7_jackson_3.wav`` under ``day1/``) are labelled by digit, not by the folder."""
    src = tmp_path / "src"
    for name in ("day1/7_jackson_0.wav", "day1/3_theo_1.wav", "day2_x/7_nicolas_2.wav", "5_lucas_0.wav"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"")
    sources = prep_module.discover(src, domain_pattern=r"^(\d+)_")
    assert [(s.relpath, s.domain) for s in sources] == [("5_lucas_0.wav", "5"), ("day1/3_theo_1.wav", "3"),
                                                        ("day1/7_jackson_0.wav", "7"), ("day2_x/7_nicolas_2.wav", "7")]


def test_domain_folders_may_be_links_and_link_loops_end(tmp_path):
    """A domain folder linked from where the recordings live is searched; a folder reached again through a link
    (a loop, or a second link to it) is searched once."""
    store = tmp_path / "store"
    for speaker in ("SF1", "TM3"):
        (store / speaker).mkdir(parents=True)
        (store / speaker / "1.wav").write_bytes(b"")
    src = tmp_path / "src"
    src.mkdir()
    (src / "SF1").symlink_to(store / "SF1", target_is_directory=True)
    (src / "TM3").symlink_to(store / "TM3", target_is_directory=True)
    (store / "TM3" / "again").symlink_to(store / "TM3", target_is_directory=True)   # a loop
    (src / "up").symlink_to(src, target_is_directory=True)                           # another loop
    assert [f.relative_to(src).as_posix() for f in audio_files(src)] == ["SF1/1.wav", "TM3/1.wav"]
    assert [s.domain for s in prep_module.discover(src)] == ["SF1", "TM3"]
    (src / "again").symlink_to(store / "SF1", target_is_directory=True)               # a second link
    notes = []
    assert [s.domain for s in prep_module.discover(src, notes=notes)] == ["SF1", "TM3"]
    # The loops are said too (harmless), and the domain that the second link would have been.
    assert f"{src / 'again'}: the same folder as {src / 'SF1'} (through a link), so its files count once, as " \
           f"{src / 'SF1'}'s" in notes


def test_prep_says_what_it_passed_over(tmp_path):
    """Files not named as audio, and a domain folder holding none, were left out without a word: a speaker
    recorded as .m4a vanished from the dataset."""
    src = tmp_path / "src"
    for name in ("A/1.wav", "A/notes.txt", "B/1.m4a", "B/2.M4A", "B/take.aac", "C/readme", "D/x.wav"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"")
    notes = []
    assert [s.domain for s in prep_module.discover(src, notes=notes)] == ["A", "D"]
    assert notes == [f"{src}: passed over 5 file(s) not named as audio (2 .m4a, 1 without a suffix, 1 .aac, 1 .txt); "
                     "convert .aac, .m4a files to .wav or .flac to use them",
                     f"{src / 'B'}: no audio files in it, so no domain B",
                     f"{src / 'C'}: no audio files in it, so no domain C"]
    notes = []
    prep_module.discover(src, domains=("A",), notes=notes)  # files and folders of other domains are not news
    assert notes == [f"{src}: passed over 1 file(s) not named as audio (1 .txt)"]
    (src / "about.txt").write_bytes(b"")  # beside the domain folders: domain "src", if it were audio
    notes = []
    prep_module.discover(src, domains=("A", "D"), notes=notes)
    assert notes == [f"{src}: passed over 1 file(s) not named as audio (1 .txt)"]
    notes = []
    prep_module.discover(src, domain_pattern="^(\\w)", notes=notes)   # domains from names: no folder notes
    assert len(notes) == 1
    # A hidden folder of recordings was passed over without a word, and --domains called it empty.
    (src / ".E").mkdir()
    (src / ".E" / "e.wav").write_bytes(b"")
    notes = []
    prep_module.discover(src, domains=("A",), notes=notes)  # not one of the domains asked for: not news
    assert not [line for line in notes if "hidden" in line]
    with pytest.raises(DatasetError, match=re.escape(f"no domain '.E' (domains found: A, D; hidden folders are passed "
                                                     f"over: rename {src / '.E'} without its leading dot)")):
        prep_module.discover(src, domains=(".E",))
    # Deeper down too; a hidden link to a folder searched anyway (here the source itself) is no news.
    (src / "A" / ".old").mkdir()
    (src / "A" / ".old" / "z.wav").write_bytes(b"")
    (src / ".all").symlink_to(src, target_is_directory=True)
    (src / "D" / ".again").symlink_to(src / ".E", target_is_directory=True)  # the same hidden folder: named once
    (src / ".alias").symlink_to(src / "A" / ".old", target_is_directory=True)  # named as itself, not by a link
    notes = []
    prep_module.discover(src, notes=notes)
    assert [line for line in notes if "hidden" in line] == [
        f"{src / '.E'}: a hidden folder, passed over with the audio files in it; rename it without its leading dot "
        f"to use them",
        f"{src / 'A' / '.old'}: a hidden folder, passed over with the audio files in it; rename it without its "
        f"leading dot to use them"]



def test_loose_recordings_that_share_a_domain_with_a_sub_folder_are_noted(tmp_path):
    src = tmp_path / "voices"
    for relative in ("loose.wav", "voices/a.wav", "other/b.wav"):
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        sf.write(src / relative, np.zeros(100), 8000)
    notes = []
    found = prep_module.discover(src, notes=notes)
    assert [f.domain for f in found] == ["voices", "other", "voices"]
    assert notes == [f"{src}: its 1 recording(s) outside sub-folders are domain voices, as are those of its "
                     f"sub-folder voices; move them into a sub-folder of their own to keep them apart"]
    (src / "voices" / "a.wav").unlink()
    (src / "voices").rmdir()
    notes.clear()
    prep_module.discover(src, notes=notes)
    assert notes == []


def test_a_link_to_a_domain_folder_never_takes_its_recordings(tmp_path):
    """The folder itself keeps its files, wherever a link to it sorts: a link A_alias → B (sorting first) had made
    B's recordings domain A_alias, and a link inside domain C had made them C's."""
    src = tmp_path / "src"
    for name in ("B/b1.wav", "C/c1.wav"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"")
    (src / "A_alias").symlink_to(src / "B", target_is_directory=True)
    (src / "C" / "more").symlink_to(src / "B", target_is_directory=True)
    notes = []
    assert [(s.relpath, s.domain) for s in prep_module.discover(src, notes=notes)] == [("B/b1.wav", "B"),
                                                                                      ("C/c1.wav", "C")]
    assert notes == [f"{src / 'A_alias'}: the same folder as {src / 'B'} (through a link), so its files count once, "
                     f"as {src / 'B'}'s",
                     f"{src / 'C' / 'more'}: the same folder as {src / 'B'} (through a link), so its files count "
                     f"once, as {src / 'B'}'s"]
    with pytest.raises(DatasetError, match=re.escape(f"no domain 'A_alias' (domains found: B, C; {src / 'A_alias'} "
                                                     f"is the folder {src / 'B'} (through a link), whose files count "
                                                     f"as domain B)")):  # it had said "holds no audio files"
        prep_module.discover(src, domains=("A_alias",))


def test_a_dataset_written_inside_its_source_folder_is_not_news(corpus, tmp_path):
    """prep SRC -o SRC/ds: the second run had warned about the dataset's own .npy and .json files, and about a
    domain folder 'ds' without audio."""
    out = corpus / "ds"
    for _ in range(2):
        code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST)
        assert code == 0, output
        assert ".npy" not in output and ".json" not in output and "so no domain ds" not in output, output
    assert "ds" not in {d["name"] for d in open_dataset(out).manifest["domains"]}


def test_a_dataset_among_the_recordings_is_refused(corpus, tmp_path):
    """prep SRC -o SRC/DOMAIN left that domain's recordings out without a word (discovery skips the output folder)
    and wrote the dataset among them; prep SRC -o SRC said "no audio files found"."""
    before = sorted(p.name for p in (corpus / "TM3").iterdir())
    code, output = run("prep", corpus, "-o", corpus / "TM3", "--workers", "1", *FAST)
    one_line_error(code, output, f"{corpus / 'TM3'}: holds 2 recording(s) of {corpus} (e.g. 100001.flac), which the "
                                 f"dataset would leave out; write it to a folder of its own")
    assert sorted(p.name for p in (corpus / "TM3").iterdir()) == before
    # The same domain reached through a link: it had been left out without a word, the dataset among its files.
    linked = tmp_path / "linked"
    linked.mkdir()
    for domain in ("SF1", "TM3"):
        (linked / domain).symlink_to(corpus / domain)
    code, output = run("prep", linked, "-o", corpus / "TM3", "--workers", "1", *FAST)
    one_line_error(code, output, f"{corpus / 'TM3'}: holds 2 recording(s) of {linked} (as {linked / 'TM3'}) (e.g. "
                                 f"100001.flac), which the dataset would leave out; write it to a folder of its own")
    assert sorted(p.name for p in (corpus / "TM3").iterdir()) == before
    code, output = run("prep", corpus, "-o", corpus, "--workers", "1", *FAST)
    one_line_error(code, output, f"{corpus}: is the source folder; the dataset needs a folder of its own (e.g. -o "
                                 f"{tmp_path / 'wavs-dataset'})")


def test_parameters_spelled_out_as_their_defaults_update_the_same_dataset(corpus, tmp_path):
    """f_max = sample_rate / 2, win_length = n_fft and chunk_hop = frames // 2 make the dataset their unset forms
    make: an update with them had been refused as 'other audio parameters' (train already took them as fitting)."""
    out = tmp_path / "ds"
    prep(corpus, out, params=FAST_PARAMS, workers=1)
    before = open_dataset(out).chunks.copy()
    spelled = dataclasses.replace(FAST_PARAMS, f_max=FAST_PARAMS.sample_rate / 2, win_length=FAST_PARAMS.n_fft,
                                  chunk_hop=FAST_PARAMS.frames // 2)
    prep(corpus, out, params=spelled, workers=1)
    np.testing.assert_array_equal(open_dataset(out).chunks, before)
    with pytest.raises(DatasetError, match=r"other audio parameters \(f_max: \(not set\) → 3000.0\)"):
        prep(corpus, out, params=dataclasses.replace(FAST_PARAMS, f_max=3000.0), workers=1)


def test_a_manifest_key_this_version_does_not_have_is_named_in_the_refusal(corpus, tmp_path):
    """A dataset made by a version with an audio parameter since removed had been refused with an empty list of
    changes ('other audio parameters ()')."""
    out = tmp_path / "ds"
    prep(corpus, out, params=FAST_PARAMS, workers=1)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["audio"]["preemphasis"] = 0.97
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"other audio parameters \(preemphasis: 0.97 → \(not set\)\); to add"):
        prep(corpus, out, params=FAST_PARAMS, workers=1)


def test_trim_top_db_decides_nothing_while_trimming_is_off(corpus, tmp_path):
    """Without trimming, its threshold changes no chunk: an update that changed only it had been refused."""
    out = tmp_path / "ds"
    untrimmed = dataclasses.replace(FAST_PARAMS, trim_silence=False)
    prep(corpus, out, params=untrimmed, workers=1)
    before = open_dataset(out).chunks.copy()
    prep(corpus, out, params=dataclasses.replace(untrimmed, trim_top_db=20.0), workers=1)
    np.testing.assert_array_equal(open_dataset(out).chunks, before)
    with pytest.raises(DatasetError, match=r"other audio parameters \(trim_silence: false → true\)"):
        prep(corpus, out, params=dataclasses.replace(untrimmed, trim_silence=True), workers=1)


def test_a_dataset_beside_an_image_sets_files_is_refused(corpus, tmp_path):
    """A dataset written into MNIST's folder had made those files unloadable (the IDX loader refuses a folder
    holding a prep dataset); fetch refuses the other way round."""
    images = tmp_path / "mnist"
    images.mkdir()
    (images / "train-images-idx3-ubyte.gz").write_bytes(b"stands for the set")
    code, output = run("prep", corpus, "-o", images, "--workers", "1", *FAST)
    one_line_error(code, output, f"{images}: holds an image set's IDX files (train-images-idx3-ubyte.gz); write the "
                                 f"dataset to a folder of its own")
    assert [p.name for p in images.iterdir()] == ["train-images-idx3-ubyte.gz"]


@pytest.mark.parametrize("flags,rebuilt", [(["--n-fft", "1023"], True), (["--sample-rate", "11025"], True),
                                           ([], False)])
def test_chunks_of_an_older_filterbank_are_made_again_where_it_differed(corpus, tmp_path, flags, rebuilt):
    """Before features version 2 the mel filterbank was torchaudio's, whose bins are wrong for an odd n_fft or an
    odd rate: an update there re-makes every chunk (mixing old and new rows differed by 0.3 dB), and elsewhere
    re-uses them (the same numbers)."""
    out = tmp_path / "ds"
    assert run("prep", corpus, "-o", out, "--workers", "1", *FAST, *flags)[0] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["features"] == dataset_dir.FEATURES_VERSION == 2
    del manifest["features"]                                          # as an older specgan wrote it
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST, *flags)
    assert code == 0, output
    said = "its chunks were made by an older specgan, whose mel filterbank differed"
    assert (said in output) == rebuilt and ("re-used 0 unchanged" in output) == rebuilt, output
    assert ("up to date" in output) == (not rebuilt)


def test_an_unreadable_manifest_says_how_to_rebuild(corpus, tmp_path):
    out = tmp_path / "ds"
    assert run("prep", corpus, "-o", out, "--workers", "1", *FAST)[0] == 0
    (out / "manifest.json").write_text("{garbage")
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST)
    one_line_error(code, output, f"{out / 'manifest.json'}: ", "; to rebuild the dataset from the recordings, run "
                                                              "the same command with --overwrite")
    assert run("prep", corpus, "-o", out, "--workers", "1", *FAST, "--overwrite")[0] == 0


@pytest.mark.parametrize("suffix,fmt", [(".caf", "CAF"), (".w64", "W64"), (".rf64", "RF64"), (".sph", "NIST"),
                                        (".voc", "VOC"), (".snd", "AU"), (".bwf", "WAV"), (".wave", "WAV")])
def test_every_listed_suffix_reads(tmp_path, suffix, fmt):
    """The suffixes looked for are formats libsndfile reads, and the header check lets each one through (a CAF
    file was refused as 'no known audio header', and a .w64 file was read alone but not found in a folder)."""
    tone = (0.3 * np.sin(np.arange(8000) * 2 * np.pi * 440 / 16000)).astype(np.float32)
    path = tmp_path / f"a{suffix}"
    sf.write(path, tone, 16000, format=fmt, subtype="PCM_16")
    assert suffix in AUDIO_SUFFIXES and audio_files(tmp_path) == [path]
    wave, rate = load_audio(path, sample_rate=16000)
    assert rate == 16000
    np.testing.assert_allclose(wave.numpy(), tone, atol=2 / 32768)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(manifest=st.dictionaries(st.text(), json_values | st.lists(st.dictionaries(st.text(), json_values), max_size=4)))
def test_manifest_text_is_json_of_the_manifest(manifest):
    assert json.loads(dataset_dir.manifest_text(manifest)) == manifest


def test_the_manifest_has_a_line_for_each_source(corpus, tmp_path):
    report = prep(corpus, tmp_path / "ds", params=FAST_PARAMS, workers=1)
    lines = (tmp_path / "ds" / "manifest.json").read_text().splitlines()
    assert json.loads("\n".join(lines)) == report.manifest
    for row in report.manifest["sources"] + report.manifest["skipped"]:
        assert sum(json.dumps(row["path"]) in line for line in lines) == 1


def test_array_files_are_handed_to_the_disk_in_ranges_as_they_are_written(tmp_path, monkeypatch):
    ranges = []
    monkeypatch.setattr(dataset_dir, "WRITEBACK_BYTES", 10_000)
    monkeypatch.setattr(dataset_dir.os, "posix_fadvise", lambda fd, start, length, advice: ranges.append(
        (start, length, advice, os.fstat(fd).st_size)), raising=False)
    parts = [np.random.default_rng(i).normal(size=(i % 5 + 1, 8, 64)).astype(np.float16) for i in range(40)]
    dataset_dir.write_npy(tmp_path / "a.npy", parts, dtype=np.float16, tail=(8, 64))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.concatenate(parts))
    assert len(ranges) >= 10 and all(advice == os.POSIX_FADV_DONTNEED for _, _, advice, _ in ranges)
    assert [start for start, *_ in ranges] == [0] + [start + length for start, length, *_ in ranges[:-1]]
    assert all(start + length == size and length >= 10_000 for start, length, _, size in ranges)  # what was written


def test_other_parameters_need_overwrite(corpus, tmp_path):
    out = tmp_path / "ds"
    assert run("prep", corpus, "-o", out, "--workers", "1", *FAST)[0] == 0
    before = (out / "manifest.json").read_bytes()
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST, "--n-fft", "512")
    assert code == 2
    assert "n_fft: 1024 → 512" in output and "--overwrite" in output and len(output.strip().splitlines()) == 1
    assert "prep with the parameters it was made with (the same --recipe or flags)" in output
    assert (out / "manifest.json").read_bytes() == before
    # An image recipe has no audio parameters: refused, rather than prepped with the defaults.
    code, output = run("prep", corpus, "-o", tmp_path / "other", "--recipe", ROOT / "recipes" / "mnist_dcgan.toml")
    assert code == 2 and "mnist_dcgan.toml: a recipe for images (data.kind = \"mnist\"), not spectrograms" in output
    assert not (tmp_path / "other").exists()
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST, "--n-fft", "512", "--overwrite")
    assert code == 0, output
    assert open_dataset(out).audio.n_fft == 512



def test_a_damaged_dataset_is_refused_and_overwrite_rebuilds_it(corpus, tmp_path):
    """A missing array file stops an update (whose unchanged rows it would copy) with the way out; damaged values
    stop training's load; --overwrite rebuilds from the recordings, re-using nothing, in both cases."""
    out = tmp_path / "ds"
    assert run("prep", corpus, "-o", out, "--workers", "1", *FAST)[0] == 0
    good = open_dataset(out)
    want = np.asarray(good.chunks).copy()
    chunks_file = out / good.manifest["files"]["chunks"]
    del good
    chunks_file.unlink()
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST)
    one_line_error(code, output, f"{chunks_file}: missing or damaged dataset array",
                   "to rebuild the dataset from the recordings, run the same command with --overwrite")
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST, "--overwrite")
    assert code == 0 and "re-used 0 unchanged" in output, output
    np.testing.assert_array_equal(open_dataset(out).chunks, want)

    chunks_file = out / open_dataset(out).manifest["files"]["chunks"]
    values = np.load(chunks_file, mmap_mode="r+")
    values[0, 0, :3] = [np.nan, np.inf, 2.0]                      # a damaged file: prep only writes [-1, 1]
    values.flush()
    del values
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(chunks_file))}: 3 values are not numbers in \[-1, 1\] "
                                           r"\(the file is damaged\); make the dataset again with: specgan prep SRC "
                                           rf"-o {re.escape(str(out))} --overwrite$"):
        load_spectrogram_data(out)
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST)   # not "up to date": the rows are bad
    one_line_error(code, output, f"{chunks_file}: 3 values are not numbers in [-1, 1] (the file is damaged); to "
                                 f"rebuild the dataset from the recordings, run the same command with --overwrite")
    assert run("prep", corpus, "-o", out, "--workers", "1", *FAST, "--overwrite")[0] == 0
    np.testing.assert_array_equal(load_spectrogram_data(out).images[:, 0].numpy(), want.astype(np.float32))


def test_worker_processes_give_the_same_dataset(corpus, tmp_path):
    one = prep(corpus, tmp_path / "one", params=FAST_PARAMS, workers=1)
    two = prep(corpus, tmp_path / "two", params=FAST_PARAMS, workers=2)
    a, b = open_dataset(one.out), open_dataset(two.out)
    np.testing.assert_array_equal(a.chunks, b.chunks)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.manifest["skipped"] == b.manifest["skipped"]


def test_interrupted_prep_keeps_the_previous_dataset(corpus, vcc, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    prep(corpus, out, params=FAST_PARAMS, workers=1)
    before = open_dataset(out)
    expected = np.asarray(before.chunks)
    shutil.copy(vcc / "vcc2016_training" / "TM3" / "100005.flac", corpus / "TM3" / "new.flac")

    class Crash(Exception):
        pass

    real_atomic_path = dataset_dir.atomic_path

    def crash_at_commit(path):
        if Path(path).name == "manifest.json":
            raise Crash("the run dies just before the manifest is replaced")
        return real_atomic_path(path)

    monkeypatch.setattr(dataset_dir, "atomic_path", crash_at_commit)
    with pytest.raises(Crash):
        prep(corpus, out, params=FAST_PARAMS, workers=1)
    monkeypatch.undo()
    after = open_dataset(out)  # still the complete previous dataset
    np.testing.assert_array_equal(after.chunks, expected)
    assert [f.name for f in out.glob("chunks-*.npy")] == [before.manifest["files"]["chunks"]]  # new arrays removed
    # A run killed outright (no clean-up) leaves orphans and temporary files; the next run removes them.
    orphans = [out / "chunks-0123456789ab.npy", out / ".chunks-0123456789ab.npy.x1y2.tmp", out / ".manifest.json.z.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half-written")
    prep(corpus, out, params=FAST_PARAMS, workers=1)
    assert len(list(out.glob("chunks-*.npy"))) == 1 and not any(o.exists() for o in orphans)
    assert "TM3/new.flac" in {s["path"] for s in open_dataset(out).manifest["sources"]}


def test_prep_leaves_the_users_own_files_in_the_output_folder_alone(corpus, tmp_path):
    """Only names prep makes are removed as orphans: not a user's arrays that merely start the same way."""
    out = tmp_path / "mine"
    out.mkdir()
    own = {"labels-final.npy": b"mine", "chunks-v2.npy": b"mine too", "chunks-0123456789AB.npy": b"upper case",
           "positions-0123456789ab.npy.bak": b"a backup", "notes.txt": b"notes"}
    for name, data in own.items():
        (out / name).write_bytes(data)
    for overwrite in (False, False, True):  # a new dataset, an update, a rebuild
        prep(corpus, out, params=FAST_PARAMS, workers=1, overwrite=overwrite)
        assert {name: (out / name).read_bytes() for name in own} == own
    assert len(list(out.glob("chunks-*.npy"))) == 3  # the dataset's own, and the user's two


@pytest.mark.parametrize("make,message", [
    (lambda root: root / "missing", "source folder does not exist"),
    (lambda root: (root / "empty").mkdir() or root / "empty", "no audio files found"),
])
def test_bad_source_is_a_one_line_error(tmp_path, make, message):
    src = make(tmp_path)
    code, output = run("prep", src, "-o", tmp_path / "ds", "--quiet")
    assert code == 2
    assert message in output and str(src) in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_domain_filter(corpus, tmp_path):
    report = prep(corpus, tmp_path / "ds", params=FAST_PARAMS, workers=1, domains=("TM3",))
    assert [d["name"] for d in report.manifest["domains"]] == ["TM3"]
    # On a dataset that holds other domains, a selection does not drop them without --overwrite.
    full = tmp_path / "full"
    prep(corpus, full, params=FAST_PARAMS, workers=1)
    before = (full / "manifest.json").read_bytes()
    with pytest.raises(DatasetError, match=f"^{re.escape(str(full))}: holds domain\\(s\\) SF1, which --domains TM3 "
                                           r"leaves out; to update it, prep without --domains \(or with all of its "
                                           r"domains\); to keep only TM3, add --overwrite$"):
        prep(corpus, full, params=FAST_PARAMS, workers=1, domains=("TM3",))
    assert (full / "manifest.json").read_bytes() == before
    report = prep(corpus, full, params=FAST_PARAMS, workers=1, domains=("TM3",), overwrite=True)
    assert [d["name"] for d in report.manifest["domains"]] == ["TM3"]
    assert prep(corpus, full, params=FAST_PARAMS, workers=1, domains=("TM3",)).up_to_date
    code, output = run("prep", corpus, "-o", tmp_path / "ds2", "--domains", "XX", "--quiet")
    assert code == 2 and "no domain 'XX'" in output and "SF1, TM3" in output
    (corpus / "XX").mkdir()
    (corpus / "XX" / "take1.m4a").write_bytes(b"")                # a folder of it, but nothing read as audio
    code, output = run("prep", corpus, "-o", tmp_path / "ds2", "--domains", "XX", "--quiet")
    one_line_error(code, output, f"{corpus}: no domain 'XX' (domains found: SF1, TM3; {corpus / 'XX'} holds no "
                                 f"audio files)")


def test_only_bad_files_is_an_error(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "a.wav").write_bytes(b"RIFF....garbage")
    code, output = run("prep", src, "-o", tmp_path / "ds", "--quiet")
    assert code == 2 and "none of the 1 audio files could be used" in output and "a.wav" in output
    assert not (tmp_path / "ds").exists()  # the folder made for it is not left behind holding only its lock
    (tmp_path / "mine").mkdir()
    code, output = run("prep", src, "-o", tmp_path / "mine", "--quiet")
    assert code == 2 and (tmp_path / "mine").is_dir()  # a folder that was there stays


def test_worker_tasks_hold_a_bounded_number_of_bytes_and_files(tmp_path):
    """Tasks take files largest first, up to max_bytes (a larger file alone) and max_files; every file once."""
    sizes = [5000, 300, 300, 300, 2500, 1200, 50, 50, 50, 50, 50, 7000]
    paths = []
    for i, size in enumerate(sizes):
        paths.append(tmp_path / f"{i}.wav")
        paths[-1].write_bytes(b"x" * size)
    batches = prep_module._batches(paths, max_files=3, max_bytes=2600)
    assert sorted(p for batch in batches for p in batch) == sorted(paths)
    flat = [p.stat().st_size for batch in batches for p in batch]
    assert flat == sorted(sizes, reverse=True)
    for batch in batches:
        total = sum(p.stat().st_size for p in batch)
        assert len(batch) <= 3 and (total <= 2600 or len(batch) == 1)
    # 7000 | 5000 | 2500 (each over the budget with the one before) | 1200 300 300 | 300 50 50 | 50 50 50
    assert [len(b) for b in batches] == [1, 1, 1, 3, 3, 3]


def _partitions(items: list[int]):
    """Every way to split ``items`` into groups (a slow oracle for the best grouping)."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _partitions(rest):
        yield [[first], *partition]
        for i in range(len(partition)):
            yield [*partition[:i], [first, *partition[i]], *partition[i + 1:]]


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(1, 120_000), min_size=1, max_size=7))
def test_resampling_groups_cost_least_of_all_groupings(lengths):
    """Each signal in one group; the padded samples plus a call's cost per group are the least of every grouping."""
    def cost(groups):
        return sum(prep_module.RESAMPLE_CALL_SAMPLES + max(lengths[k] for k in g) * len(g) for g in groups)
    groups = prep_module.resample_groups(lengths)
    assert sorted(k for g in groups for k in g) == list(range(len(lengths)))
    assert cost(groups) == min(cost(p) for p in _partitions(list(range(len(lengths)))))


def test_files_resampled_in_several_groups_give_the_chunks_each_gives_alone(tmp_path, monkeypatch):
    """Files of one rate and very different lengths are resampled in groups; each file's chunks are its own, the
    same as one group for all (soxr filters each padded channel alone) and as chunk_file of the file alone."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i, seconds in enumerate([0.7, 0.75, 2.9, 3.0, 3.1, 6.0, 11.0]):
        t = np.arange(int(seconds * 16000)) / 16000
        wave = np.sin(2 * np.pi * (200 + 40 * i) * t) * 0.3 + rng.normal(0, 0.01, len(t))
        sf.write(src / "a" / f"{i}.wav", wave.astype(np.float32), 16000, subtype="PCM_16")
    params = AudioParams(sample_rate=22050, n_mels=32, frames=16)
    resample_whole, calls = prep_module.resample_whole, []
    monkeypatch.setattr(prep_module, "resample_whole", lambda signals, **kw: calls.append(len(signals)) or
                        resample_whole(signals, **kw))
    datasets = {}
    for name, call_samples in [("one group", 10**12), ("groups", 0)]:
        monkeypatch.setattr(prep_module, "RESAMPLE_CALL_SAMPLES", call_samples)
        datasets[name] = open_dataset(prep(src, tmp_path / name.replace(" ", "_"), params=params, workers=1).out)
    assert calls == [7, 1, 1, 1, 1, 1, 1, 1]  # at no cost per call, one group per length
    a, b = datasets.values()
    np.testing.assert_array_equal(a.chunks, b.chunks)
    np.testing.assert_array_equal(a.positions, b.positions)
    logmel = LogMel(params)
    for row in b.manifest["sources"]:
        alone = prep_module.chunk_file(src / row["path"], params=params, logmel=logmel)
        np.testing.assert_array_equal(b.chunks[row["first_chunk"]:row["first_chunk"] + row["chunks"]], alone.chunks)


def _clip(frame_db: list[float], n_mels: int = 8) -> ClipLogMel:
    """A clip's log-mel whose frame ``i`` holds the value ``i / 100`` in every band, with the given loudness."""
    spec = (torch.arange(len(frame_db)) / 100).expand(n_mels, -1).to(torch.float16)
    return ClipLogMel(spec, torch.tensor(frame_db, dtype=torch.float32), samples=len(frame_db) * 64, peak=0.5)


def test_pad_short_keeps_a_short_clip_judged_by_its_own_frames():
    """With pad_short, a clip shorter than a chunk is padded with silence (-1) and kept when min_active of its own
    frames are active: counting the padding as silence had rejected every clip under min_active of a chunk."""
    params = AudioParams(n_mels=8, hop_length=64, frames=64, min_active=0.5, trim_silence=False, pad_short=True)
    chunks, starts = chunk_logmel(_clip([0.0] * 20), params=params)           # 20 active frames of 64
    assert chunks.shape == (1, 8, 64) and starts.tolist() == [0]
    np.testing.assert_array_equal(chunks[0, :, :20], _clip([0.0] * 20).spec.numpy())
    assert (chunks[0, :, 20:] == -1).all()
    with pytest.raises(AudioError, match="near-silent"):                    # 6 of 20 frames active
        chunk_logmel(_clip([0.0] * 6 + [-90.0] * 14), params=params)
    with pytest.raises(AudioError, match="^too short: 20 frames, one chunk is 64"):  # not trimmed: not said so
        chunk_logmel(_clip([0.0] * 20), params=dataclasses.replace(params, pad_short=False))
    with pytest.raises(AudioError, match="^too short: 20 frames after trimming, one chunk is 64"):
        chunk_logmel(_clip([0.0] * 20), params=dataclasses.replace(params, pad_short=False, trim_silence=True))
    # Trimmed first: the start is that of the first frame kept.
    trimmed = dataclasses.replace(params, trim_silence=True, trim_top_db=30.0)
    clip = _clip([-90.0] * 5 + [0.0] * 20 + [-90.0] * 3)
    chunks, starts = chunk_logmel(clip, params=trimmed)
    assert starts.tolist() == [5 * 64]
    np.testing.assert_array_equal(chunks[0, :, :20], clip.spec[:, 5:25].numpy())


def test_chunks_are_kept_with_at_least_min_active_frames_and_the_last_is_aligned_to_the_end():
    """The chunking against a slow reference of what the docs say: windows every chunk_hop frames, the last aligned
    to the clip's end (no frame left out), each kept when *at least* min_active of its frames are active (exactly
    half, at min_active 0.5, is kept)."""
    params = AudioParams(n_mels=8, hop_length=64, frames=8, chunk_hop=4, min_active=0.5, trim_silence=False)
    loud, quiet = 0.0, -90.0
    #          frames 0-7: 4 active     8-11: 1     12-15: 4            16-21: 6 (the end)
    frame_db = [loud] * 4 + [quiet] * 4 + [loud] + [quiet] * 3 + [quiet] * 2 + [loud] * 2 + [quiet] * 2 + [loud] * 4
    clip = _clip(frame_db)
    chunks, starts = chunk_logmel(clip, params=params)
    active = [db > params.min_db for db in frame_db]
    windows = [0, 4, 8, 12, len(frame_db) - 8]
    expected = [s for s in windows if sum(active[s:s + 8]) >= 0.5 * 8]
    assert expected == [0, 12, 14]
    assert starts.tolist() == [s * params.hop_length for s in expected]
    for chunk, start in zip(chunks, expected):
        np.testing.assert_array_equal(chunk, clip.spec[:, start:start + 8].numpy())


def test_another_domain_pattern_relabels_the_same_chunks_and_says_so(vcc, tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    for speaker, names in SPEAKERS.items():
        for name in names:
            shutil.copy(vcc / "vcc2016_training" / speaker / name, src / f"{speaker}_{name}")
    out = tmp_path / "ds"
    first = prep(src, out, params=FAST_PARAMS, workers=1, domain_pattern=r"^(\w+?)_")
    assert [d["name"] for d in first.manifest["domains"]] == ["SF1", "TM3"] and not first.notes
    chunks = open_dataset(out).chunks[:].copy()
    report = prep(src, out, params=FAST_PARAMS, workers=1, domain_pattern=r"_\d{5}(\d)\.")  # the last digit
    assert report.notes == ["4 file(s) changed domain since the previous dataset (first: SF1_100001.flac: SF1 → 1); "
                            "their chunks are relabelled"]
    assert report.reused == 4 and report.processed == 0
    data = open_dataset(out)
    assert np.array_equal(data.chunks[:], chunks)
    assert [d["name"] for d in report.manifest["domains"]] == ["1", "3", "4"]
    assert [s["domain"] for s in report.manifest["sources"]] == ["1", "3", "1", "4"]
    for row, label in zip(report.manifest["sources"], [0, 1, 0, 2]):
        assert set(np.asarray(data.labels[row["first_chunk"]:row["first_chunk"] + row["chunks"]])) == {label}
    again = prep(src, out, params=FAST_PARAMS, workers=1, domain_pattern=r"_\d{5}(\d)\.")
    assert again.up_to_date and not again.notes
    # Without the pattern (forgotten, adding recordings) every file had been relabelled by folder, one domain.
    with pytest.raises(DatasetError, match=re.escape(f"{out}: was made with --domain-pattern '_\\d{{5}}(\\d)\\.' "
                                                     f"(domains 1, 3, 4); to update it, give it again; to take the "
                                                     f"domains from the folders instead, add --overwrite")):
        prep(src, out, params=FAST_PARAMS, workers=1)
    assert [d["name"] for d in open_dataset(out).manifest["domains"]] == ["1", "3", "4"]
    with pytest.raises(DatasetError, match=re.escape("SF1_100001.flac: --domain-pattern '^(x?)' matches this name, "
                                                     "but its first group, the domain, captures nothing")):
        prep(src, out, params=FAST_PARAMS, workers=1, domain_pattern="^(x?)")


def _stop_after(monkeypatch, n: int, error: type[BaseException] = KeyboardInterrupt) -> None:
    """Make prep's file processing raise ``error`` (as Ctrl-C or SIGTERM would) once ``n`` files are done."""
    real_process = prep_module._process

    def process_then_stop(*args, **kwargs):
        for i, item in enumerate(real_process(*args, **kwargs)):
            if i == n:
                raise error()
            yield item

    monkeypatch.setattr(prep_module, "_process", process_then_stop)


def test_an_interrupted_prep_keeps_the_files_it_finished_and_the_next_run_finishes_it(corpus, tmp_path, monkeypatch):
    """Ctrl-C after 5 of the 10 files (4 usable, 6 bad) commits those 5; the next prep processes only the rest and
    ends with the dataset an uninterrupted prep makes."""
    complete = prep(corpus, tmp_path / "complete", params=FAST_PARAMS, workers=1).manifest
    out = tmp_path / "ds"
    _stop_after(monkeypatch, 5)
    # counted as the summary counts: usable files processed, those found unusable apart
    with pytest.raises(InterruptedWithWorkKept, match=f"^kept the 4 file\\(s\\) processed so far in "
                                                      f"{re.escape(str(out))} \\(5 not yet; 1 more found unusable\\); "
                                                      f"run the same command again to finish it$") as caught:
        prep(corpus, out, params=FAST_PARAMS, workers=1)
    monkeypatch.undo()
    assert caught.value.exit_code == 130
    partial = open_dataset(out)
    m = partial.manifest
    assert m["unfinished"] == 5 and len(m["sources"]) + len(m["skipped"]) == 5
    assert [d["name"] for d in m["domains"]] == ["SF1", "TM3"]  # every domain found, so labels stay as they will be
    assert len(partial.chunks) == sum(s["chunks"] for s in m["sources"]) == m["shape"][0]
    with pytest.warns(SpecganWarning, match=r"an interrupted prep left 5 file\(s\) of its source out; run the same"):
        load_spectrogram_data(out)

    report = prep(corpus, out, params=FAST_PARAMS, workers=1)
    assert report.unfinished == 0 and report.processed + len(report.skipped) - len(m["skipped"]) == 5
    finished = open_dataset(out)
    assert "unfinished" not in finished.manifest
    for key in ("sources", "skipped", "domains", "shape"):
        assert finished.manifest[key] == complete[key]
    reference = open_dataset(tmp_path / "complete")
    np.testing.assert_array_equal(finished.chunks, reference.chunks)
    np.testing.assert_array_equal(finished.labels, reference.labels)
    np.testing.assert_array_equal(finished.positions, reference.positions)


def test_an_interrupted_overwrite_keeps_the_dataset_it_was_to_replace(corpus, tmp_path, monkeypatch):
    """--overwrite rebuilds whole or not at all: Ctrl-C after 5 of the 10 files leaves the previous dataset (of other
    parameters here) as it was. Into a folder with no dataset, the files done are kept, and the command without
    --overwrite (which would re-use none of them) finishes them."""
    out = tmp_path / "ds"
    prep(corpus, out, params=FAST_PARAMS, workers=1)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = dataclasses.replace(FAST_PARAMS, hop_length=FAST_PARAMS.hop_length * 2)
    _stop_after(monkeypatch, 5)
    with pytest.raises(InterruptedWithWorkKept, match=f"^{re.escape(str(out))} holds the dataset it held before \\(an "
                                                      r"interrupted --overwrite replaces nothing\); run the same command "
                                                      r"again to rebuild it$"):
        prep(corpus, out, params=other, workers=1, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    fresh = tmp_path / "fresh"
    with pytest.raises(InterruptedWithWorkKept, match=r"\(5 not yet; 1 more found unusable\); run the same command "
                                                      r"again without --overwrite to finish it$"):
        prep(corpus, fresh, params=other, workers=1, overwrite=True)
    monkeypatch.undo()
    partial = open_dataset(fresh).manifest
    assert partial["unfinished"] == 5
    report = prep(corpus, fresh, params=other, workers=1)
    assert report.unfinished == 0 and report.processed + len(report.skipped) - len(partial["skipped"]) == 5
    np.testing.assert_array_equal(open_dataset(fresh).chunks,
                                  open_dataset(prep(corpus, tmp_path / "whole", params=other, workers=1).out).chunks)


def test_an_update_interrupted_before_any_file_is_done_keeps_the_dataset_as_it_was(corpus, vcc, tmp_path,
                                                                                    monkeypatch):
    out = tmp_path / "ds"
    prep(corpus, out, params=FAST_PARAMS, workers=1)
    before = (out / "manifest.json").read_bytes()
    shutil.copy(vcc / "vcc2016_training" / "TM3" / "100005.flac", corpus / "TM3" / "new.flac")
    shutil.copy(vcc / "vcc2016_training" / "TM3" / "100006.flac", corpus / "TM3" / "newer.flac")
    # A file that cannot even be hashed is set aside before processing starts: it had been counted as processed
    # ("kept the 1 file(s)" when none was, and a new dataset version committed).
    (corpus / "TM3" / "broken.wav").symlink_to("nowhere")
    _stop_after(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt) as caught:
        prep(corpus, out, params=FAST_PARAMS, workers=1)
    assert type(caught.value) is KeyboardInterrupt  # nothing kept, so nothing to say about it
    assert (out / "manifest.json").read_bytes() == before
    # An interruption after one of the two new files: the other is counted as not yet processed.
    monkeypatch.undo()
    _stop_after(monkeypatch, 1)
    with pytest.raises(InterruptedWithWorkKept, match=r"kept the 1 file\(s\) processed so far .*\(1 not yet\)"):
        prep(corpus, out, params=FAST_PARAMS, workers=1)
    monkeypatch.undo()
    m = open_dataset(out).manifest
    assert m["unfinished"] == 1 and len(m["sources"]) == 5  # the 4 it had and one new
    assert not prep(corpus, out, params=FAST_PARAMS, workers=1).up_to_date
    assert "unfinished" not in open_dataset(out).manifest and len(open_dataset(out).manifest["sources"]) == 6
    assert "TM3/broken.wav" in {s["path"] for s in open_dataset(out).manifest["skipped"]}


@pytest.mark.parametrize("error, exit_code, what", [(KeyboardInterrupt, 130, "interrupted"),
                                                     (Terminated, 143, "stopped by SIGTERM")])
def test_the_command_line_says_what_an_interrupted_prep_kept(corpus, tmp_path, monkeypatch, error, exit_code, what):
    _stop_after(monkeypatch, 3, error)
    out = tmp_path / "ds"
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST)
    assert code == exit_code
    assert output.strip() == (f"{what}; kept the 2 file(s) processed so far in {out} (7 not yet; 1 more found "
                              f"unusable); run the same command again to finish it")
    assert open_dataset(out).manifest["unfinished"] == 7


def test_another_source_folder_does_not_replace_a_dataset_without_overwrite(corpus, tmp_path):
    """An update from another folder that lacks some of the dataset's recordings (a typo, a disk not mounted) had
    replaced the dataset with that folder's, while --domains, which drops files the same way, was refused."""
    out = tmp_path / "ds"
    prep(corpus, out, params=FAST_PARAMS, workers=1)
    before = (out / "manifest.json").read_bytes()
    other = tmp_path / "other"
    (other / "SF1").mkdir(parents=True)
    shutil.copy(corpus / "SF1" / "100001.flac", other / "SF1" / "100001.flac")
    code, output = run("prep", other, "-o", out, "--workers", "1", *FAST)
    one_line_error(code, output, f"{out}: was made from {corpus}, and {other} lacks 3 of its 4 recordings (e.g. "
                                 f"SF1/100003.flac); to replace it with a dataset of {other}, add --overwrite")
    assert (out / "manifest.json").read_bytes() == before
    assert prep(other, out, params=FAST_PARAMS, workers=1, overwrite=True).manifest["source"] == str(other)
    # A source folder that moved, with every recording still in it, updates the dataset as before.
    prep(corpus, out, params=FAST_PARAMS, workers=1, overwrite=True)
    moved = corpus.rename(tmp_path / "moved")
    report = prep(moved, out, params=FAST_PARAMS, workers=1)
    assert (report.processed, report.reused) == (0, 4) and report.manifest["source"] == str(moved)


def test_the_same_recording_in_two_domains_is_noted(corpus, tmp_path):
    (corpus / "SF1" / "borrowed.flac").symlink_to(corpus / "TM3" / "100004.flac")
    shutil.copy(corpus / "SF1" / "100001.flac", corpus / "SF1" / "copy.flac")   # twice in one domain: no note
    report = prep(corpus, tmp_path / "ds", params=FAST_PARAMS, workers=1)
    assert report.notes[1:] == ["1 recording(s) are in more than one domain (first: SF1/borrowed.flac in SF1 and "
                                "TM3/100004.flac in TM3 hold the same audio)"]
    assert report.notes[0].endswith("passed over 1 file(s) not named as audio (1 .txt)")  # the corpus's notes.txt


def test_a_folder_with_someone_elses_manifest_is_not_offered_to_overwrite(corpus, tmp_path):
    """A manifest.json that is not a dataset's, with no dataset arrays beside it, is the user's: prep had advised
    --overwrite, which replaced it."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"name": "my project", "version": 3}\n')
    for overwrite in ([], ["--overwrite"]):
        code, output = run("prep", corpus, "-o", mine, "--workers", "1", *FAST, *overwrite)
        one_line_error(code, output, f"{mine / 'manifest.json'}: not a specgan dataset manifest")
        assert "so the file is not prep's to replace: write the dataset to a folder of its own" in output
        assert "--overwrite" not in output
    assert (mine / "manifest.json").read_text() == '{"name": "my project", "version": 3}\n'
    # prep's own dataset with a damaged manifest: --overwrite rebuilds it, as before.
    out = tmp_path / "ds"
    prep(corpus, out, params=FAST_PARAMS, workers=1)
    (out / "manifest.json").write_text("{ half")
    code, output = run("prep", corpus, "-o", out, "--workers", "1", *FAST)
    assert code == 2 and "run the same command with --overwrite" in output
    assert prep(corpus, out, params=FAST_PARAMS, workers=1, overwrite=True).processed == 4


def test_the_summary_gives_each_domain_its_duration_readably(corpus, tmp_path):
    from specgan.cli import _duration

    assert [_duration(s) for s in (0.84, 59.94, 60.4, 3723.0, 36000.0)] == ["0.8 s", "59.9 s", "0:01:00", "1:02:03",
                                                                           "10:00:00"]
    code, output = run("prep", corpus, "-o", tmp_path / "ds", "--workers", "1", *FAST[:-1])
    assert code == 0 and "duration" in output
    m = open_dataset(tmp_path / "ds").manifest
    for d in m["domains"]:
        assert _duration(d["seconds"]) in output


def test_a_second_ctrl_c_does_not_cut_the_wait_for_the_workers_short(capsys):
    """The first Ctrl-C makes prep wait for its workers' batches; a second one had ended that wait (on Python 3.11 a
    Ctrl-C inside Thread.join marks the thread finished while it runs on), and the process exited with workers
    inside native code (SIGABRT or SIGSEGV, exit 134 or 139). A real SIGINT, while a real worker is busy."""
    import concurrent.futures as cf
    import signal
    import threading
    import time

    finished = threading.Event()

    def batch():
        time.sleep(1.0)
        finished.set()

    pool = cf.ThreadPoolExecutor(max_workers=1)
    futures = [pool.submit(batch), pool.submit(batch)]  # the second is cancelled: never started
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    started = time.perf_counter()
    prep_module.wait_for_workers(pool, futures)
    assert finished.is_set() and time.perf_counter() - started >= 0.9 and futures[1].cancelled()
    assert "waiting for the files in progress to finish" in capsys.readouterr().err


def test_ctrl_c_twice_more_stops_prep_at_once_when_a_worker_is_stuck(tmp_path):
    """A worker stuck (a hung file system) must not make prep deaf to Ctrl-C: two more end it at once, exit 130."""
    script = """
import concurrent.futures as cf, os, signal, threading, time
from specgan.data.prep import wait_for_workers
pool = cf.ThreadPoolExecutor(max_workers=1)
futures = [pool.submit(time.sleep, 60)]
for at in (0.3, 0.6):
    threading.Timer(at, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
wait_for_workers(pool, futures)
"""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and time.perf_counter() - started < 30, done.stderr
    assert done.stderr.strip().endswith("stopped at once: nothing of this prep was kept"), done.stderr


def test_files_written_atomically_get_the_permissions_of_a_plain_open(tmp_path):
    """atomic_path's temporary file is made private (0600) by mkstemp; the file it becomes must follow the umask like
    any other, or a dataset written for a group cannot be read by it."""
    from specgan.atomic import atomic_path
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no temporary file left beside it
