#!/usr/bin/env python3
"""Regenerate specgan's embedded demo corpus (data/demo): two synthetic voices and two synthetic music styles.

    python3 data/make_demo.py [--out data/demo] [--only voices|music] [--jobs 2] [--seed 5]

What it writes (see data/README.md):

- ``voices/{kal,slt}/sNNN.flac``: the same sentences spoken by two festival voices (a parallel corpus),
  16 kHz mono; the last sentences go to ``voices_heldout/{kal,slt}/`` instead, for the demo to convert a sentence
  the model never heard and score it against the other voice's recording of it; ``sentences.tsv`` lists them.
- ``music/{classical,jazz}/NNN.flac``: short pieces composed here with a seeded random generator, written as
  standard MIDI files and rendered by fluidsynth with the FluidR3 General MIDI sound font, 22.05 kHz mono;
  a few more per style in ``music_heldout/{classical,jazz}/``; ``pieces.tsv`` describes each piece.

Debian packages it runs (it installs nothing and needs no network):

    apt-get install festival festvox-kallpc16k festvox-us-slt-hts fluidsynth fluid-soundfont-gm

Python: the standard library, numpy and soundfile (the project's virtual environment has both:
``.venv/bin/python data/make_demo.py``).

Determinism: the same seed gives the same sentences, the same MIDI files and, with the same festival and
fluidsynth builds, the same samples (fluidsynth renders to float, so no dither noise is involved). Random
choices use only ``random.Random.random()``, whose sequence Python guarantees across versions.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

try:
    import numpy as np
    import soundfile as sf
except ImportError as e:  # pragma: no cover - depends on the interpreter
    sys.exit(f"make_demo.py: needs numpy and soundfile ({e}); run it with the project's .venv/bin/python")

ROOT = Path(__file__).resolve().parent
SOUND_FONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")

#: (what must exist, the Debian package that provides it)
REQUIREMENTS = {
    "voices": [
        ("text2wave", "festival"),
        ("/usr/share/festival/voices/english/kal_diphone", "festvox-kallpc16k"),
        ("/usr/share/festival/voices/us/cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
    ],
    "music": [
        ("fluidsynth", "fluidsynth"),
        (str(SOUND_FONT), "fluid-soundfont-gm"),
    ],
}

# -- the corpus' shape ----------------------------------------------------------------------------------------------

#: Folder name -> festival voice. kal: male US English diphone voice; slt: female US English HTS voice (CMU ARCTIC).
VOICES = {"kal": "voice_kal_diphone", "slt": "voice_cmu_us_slt_arctic_hts"}
VOICE_RATE = 16000
MUSIC_RATE = 22050
PEAK_DBFS = -3.0
HELDOUT_SENTENCES = 6
PIECES_PER_STYLE = 40
HELDOUT_PIECES = 4
VOICE_SECONDS = (2.0, 5.0)
MUSIC_SECONDS = (5.0, 10.0)
PIECE_SECONDS = (5.0, 6.0)  # how long the notes last; the final chord's reverb tail comes on top

#: Everyday sentences of 6 to 14 words, spoken by both voices; the last HELDOUT_SENTENCES are held out.
SENTENCES = [
    "The bakery on the corner opens at seven every morning.",
    "Please remember to water the plants while I am away.",
    "My brother bought a red bicycle last summer.",
    "The train to the city leaves from platform four.",
    "We walked along the river until the sun went down.",
    "Could you pass me the salt and the pepper?",
    "The library closes early on Sundays and holidays.",
    "She keeps her keys in a small blue bowl by the door.",
    "It rained all night, and the garden is full of puddles.",
    "The children built a snowman in the park.",
    "I usually drink a cup of tea after lunch.",
    "The meeting has been moved to Thursday afternoon.",
    "A cold wind blew across the empty beach.",
    "He fixed the kitchen tap with an old wrench.",
    "Our neighbours have a friendly black and white cat.",
    "The museum is free on the first Sunday of the month.",
    "Turn left at the traffic lights and park behind the bank.",
    "The soup needs a little more salt and pepper.",
    "They painted the garden fence green over the weekend.",
    "My phone battery always runs out in the evening.",
    "The market sells fresh fish and vegetables on Fridays.",
    "Please write your name at the top of the page.",
    "The old clock in the hall stopped at midnight.",
    "We are planning a picnic by the lake next week.",
    "The number nine bus was late again this morning.",
    "She plays the piano for an hour every evening.",
    "The printer on the second floor is out of paper.",
    "A small boat drifted slowly towards the harbour.",
    "I found an old photograph inside a library book.",
    "The farmer drove his tractor across the muddy field.",
    "Dinner will be ready in about twenty minutes.",
    "He forgot his umbrella on the train yesterday.",
    "The hotel room had a lovely view of the mountains.",
    "Fresh bread smells wonderful early in the morning.",
    "The dog barked at the postman as usual.",
    "We need to buy milk, eggs and a loaf of bread.",
    "The road along the coast is closed for repairs.",
    "My grandmother grows tomatoes in her back garden.",
    "The football match was cancelled because of the storm.",
    "Please turn off the lights when you leave the room.",
    "The kettle is on, so sit down and relax.",
    "A flock of geese flew low over the village.",
    "The shop on the high street sells second hand books.",
    "He wrote a long letter to his best friend.",
    "The students waited quietly outside the exam hall.",
    "Our flight was delayed by almost three hours.",
    "The baby finally fell asleep after a warm bath.",
    "There is a new cafe next to the cinema.",
    "The window cleaner comes once a month.",
    "She lost her glove somewhere between home and work.",
    "The orange juice is in the fridge on the top shelf.",
    "Every spring the cherry trees in the square are covered in blossom.",
    "The mechanic said the car needs new brakes.",
    "I would like a table for two near the window.",
    "The river rose quickly after the heavy rain.",
    "My sister is learning to speak Japanese.",
    "The night sky was full of bright stars.",
    "We moved into a small flat near the station.",
    "The teacher read a funny story to the class.",
    "Do not forget to lock the back door tonight.",
    "The parcel arrived a day earlier than expected.",
    "A young fox was sleeping under the garden shed.",
    "The swimming pool is closed for cleaning on Mondays.",
    "He always takes the stairs instead of the lift.",
    "The lemon cake was gone before anyone noticed.",
    "Please call me when you get home safely.",
    "The ferry crossed the bay in less than an hour.",
    "My uncle repairs old radios in his spare time.",
    "The street lamps came on one by one.",
    "We shared a pot of coffee and talked for hours.",
    "The market was busy despite the cold weather.",
    "She hung the washing out to dry in the sunshine.",
]


# -- checks and small helpers ---------------------------------------------------------------------------------------

def check_requirements(parts: list[str]) -> None:
    """Exit with a one-line message naming the Debian package when a program, voice or sound font is missing."""
    for part in parts:
        for thing, package in REQUIREMENTS[part]:
            present = Path(thing).exists() if thing.startswith("/") else shutil.which(thing) is not None
            if not present:
                sys.exit(f"make_demo.py: {thing} not found; install it with: apt-get install {package}")


def run_quietly(command: list[str]) -> None:
    """Run a program; on failure exit with its command line and the last lines of its error output."""
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        sys.exit(f"make_demo.py: {command[0]} failed (exit {result.returncode}): {tail}")


class Dice:
    """Seeded random choices built on ``random.Random.random()`` alone, the one method whose sequence Python
    promises to keep across versions (``choice``/``randint`` may change)."""

    def __init__(self, *key: object):
        self._random = random.Random(zlib.crc32(repr(key).encode()))

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self._random.random()

    def integer(self, low: int, high: int) -> int:
        """A whole number in [low, high], both included."""
        return low + min(int(self._random.random() * (high - low + 1)), high - low)

    def choice(self, items):
        return items[self.integer(0, len(items) - 1)]

    def weighted(self, items, weights):
        """One of ``items``, drawn with the relative ``weights``."""
        point = self._random.random() * sum(weights)
        for item, weight in zip(items, weights):
            point -= weight
            if point < 0:
                return item
        return items[-1]

    def chance(self, probability: float) -> bool:
        return self._random.random() < probability


# -- audio post-processing --------------------------------------------------------------------------------------------

def to_mono(audio: np.ndarray) -> np.ndarray:
    """The mean of the channels, as float64."""
    audio = np.asarray(audio, dtype=np.float64)
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def frame_rms(audio: np.ndarray, rate: int, frame_s: float = 0.02) -> tuple[np.ndarray, int]:
    """RMS of consecutive frames of ``frame_s`` seconds, and the frame length in samples."""
    hop = max(1, int(rate * frame_s))
    n = max(1, math.ceil(len(audio) / hop))
    padded = np.zeros(n * hop)
    padded[:len(audio)] = audio
    return np.sqrt(np.mean(padded.reshape(n, hop) ** 2, axis=1)), hop


def trim_silence(audio: np.ndarray, rate: int, floor_db: float = -40.0, margin_s: float = 0.1) -> np.ndarray:
    """Cut leading and trailing stretches quieter than ``floor_db`` below the loudest frame, keeping ``margin_s``."""
    rms, hop = frame_rms(audio, rate)
    loud = np.flatnonzero(rms > rms.max() * 10 ** (floor_db / 20))
    if loud.size == 0:
        return audio
    margin = int(margin_s * rate)
    start = max(0, loud[0] * hop - margin)
    end = min(len(audio), (loud[-1] + 1) * hop + margin)
    return audio[start:end]


def fade_out(audio: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """The audio with a raised-cosine fade over its last ``seconds``."""
    n = min(len(audio), int(seconds * rate))
    if n == 0:
        return audio
    faded = audio.copy()
    faded[-n:] *= 0.5 * (1 + np.cos(np.linspace(0, np.pi, n)))
    return faded


def trim_tail(audio: np.ndarray, rate: int, max_s: float, floor_db: float = -45.0, fade_s: float = 0.3) -> np.ndarray:
    """End a rendered piece where its reverb tail falls ``floor_db`` below the loudest frame (at most ``max_s``
    seconds), fading out over the last ``fade_s`` seconds; leading silence is cut too."""
    audio = trim_silence(audio, rate, floor_db=floor_db, margin_s=0.0)
    rms, hop = frame_rms(audio, rate)
    last_loud = np.flatnonzero(rms > rms.max() * 10 ** (floor_db / 20))[-1]
    end = min(len(audio), (last_loud + 1) * hop + int(fade_s * rate), int(max_s * rate))
    return fade_out(audio[:end], rate, fade_s)


def peak_normalise(audio: np.ndarray, peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
    """Scale so that the largest absolute sample is ``peak_dbfs`` dB below full scale."""
    peak = np.max(np.abs(audio))
    return audio if peak == 0 else audio * (10 ** (peak_dbfs / 20) / peak)


def write_flac(path: Path, audio: np.ndarray, rate: int) -> None:
    """Write mono 16-bit FLAC; quantised here (round to nearest) so the samples do not depend on libsndfile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
    sf.write(path, samples, rate, format="FLAC", subtype="PCM_16")


# -- voices ---------------------------------------------------------------------------------------------------------

def sentence_ids() -> list[str]:
    """File stems of the sentences: s001, s002, ..."""
    return [f"s{i + 1:03d}" for i in range(len(SENTENCES))]


def synthesize(text: str, voice: str, wav_path: Path) -> None:
    """Speak ``text`` with a festival voice into a 16 kHz WAV file (festival's text2wave)."""
    text_path = wav_path.with_suffix(".txt")
    text_path.write_text(text + "\n")
    run_quietly(["text2wave", "-eval", f"({voice})", "-F", str(VOICE_RATE), "-o", str(wav_path), str(text_path)])


def make_voice_file(text: str, voice: str, out_path: Path, work: Path) -> None:
    """Synthesize one sentence, trim its silences, normalise its peak and write it as FLAC."""
    wav_path = work / f"{out_path.parent.name}-{out_path.stem}.wav"
    synthesize(text, voice, wav_path)
    audio, rate = sf.read(wav_path, dtype="float64")
    assert rate == VOICE_RATE, f"text2wave wrote {rate} Hz"
    write_flac(out_path, peak_normalise(trim_silence(to_mono(audio), rate)), rate)


def voice_jobs(out: Path) -> list[tuple]:
    """(text, festival voice, output path) of every voice file, held-out sentences in voices_heldout."""
    jobs = []
    first_heldout = len(SENTENCES) - HELDOUT_SENTENCES
    for index, (stem, text) in enumerate(zip(sentence_ids(), SENTENCES)):
        folder = "voices_heldout" if index >= first_heldout else "voices"
        for name, voice in VOICES.items():
            jobs.append((text, voice, out / folder / name / f"{stem}.flac"))
    return jobs


def write_sentence_list(out: Path) -> None:
    """sentences.tsv: id, split (train or heldout) and text of every sentence."""
    first_heldout = len(SENTENCES) - HELDOUT_SENTENCES
    rows = ["id\tsplit\ttext"] + [
        f"{stem}\t{'heldout' if i >= first_heldout else 'train'}\t{text}"
        for i, (stem, text) in enumerate(zip(sentence_ids(), SENTENCES))]
    (out / "sentences.tsv").write_text("\n".join(rows) + "\n")


# -- a standard MIDI file writer ------------------------------------------------------------------------------------

TICKS_PER_BEAT = 480
DRUMS = 9  # General MIDI percussion channel (channel 10 counted from 1)


@dataclass
class Note:
    """A note: start and length in beats, MIDI pitch and velocity, channel 0-15."""
    start: float
    length: float
    pitch: int
    velocity: int
    channel: int


@dataclass
class Song:
    """What a MIDI file holds: tempo, the program and mix (volume, reverb send) of each channel, the notes."""
    tempo_bpm: float
    programs: dict[int, int] = field(default_factory=dict)
    mix: dict[int, tuple[int, int]] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    description: str = ""

    def add(self, start: float, length: float, pitch: int, velocity: int, channel: int) -> None:
        self.notes.append(Note(start, length, int(pitch), int(max(1, min(127, velocity))), channel))

    def end_beat(self) -> float:
        return max(n.start + n.length for n in self.notes)


def variable_length(value: int) -> bytes:
    """MIDI's variable-length quantity: 7 bits a byte, most significant first, high bit set on all but the last."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(groups))


def to_ticks(beats: float) -> int:
    return int(round(beats * TICKS_PER_BEAT))


def without_overlaps(notes: list[Note]) -> list[tuple[int, int, Note]]:
    """(on tick, off tick, note), with a note cut short where the same pitch restarts on its channel (a MIDI
    note-off would otherwise end the newer note)."""
    timed = sorted(((to_ticks(n.start), to_ticks(n.start + n.length), n) for n in notes),
                   key=lambda t: (t[0], t[2].channel, t[2].pitch))
    next_start: dict[tuple[int, int], int] = {}
    result = []
    for on, off, note in reversed(timed):
        key = (note.channel, note.pitch)
        if key in next_start:
            off = min(off, next_start[key])
        if off > on:
            result.append((on, off, note))
        next_start[key] = on
    return result[::-1]


def midi_file_bytes(song: Song, tail_s: float = 2.0) -> bytes:
    """A format-0 standard MIDI file of ``song``; the track ends ``tail_s`` seconds after the last note so that
    a renderer keeps the release and reverb tail."""
    events: list[tuple[int, int, bytes]] = []  # (tick, order at that tick, message)
    microseconds_per_beat = int(round(60_000_000 / song.tempo_bpm))
    events.append((0, 0, b"\xff\x51\x03" + microseconds_per_beat.to_bytes(3, "big")))
    for channel, program in sorted(song.programs.items()):
        events.append((0, 1, bytes([0xC0 | channel, program])))
    for channel, (volume, reverb) in sorted(song.mix.items()):
        events.append((0, 1, bytes([0xB0 | channel, 7, volume])))
        events.append((0, 1, bytes([0xB0 | channel, 91, reverb])))
        events.append((0, 1, bytes([0xB0 | channel, 93, 0])))
    last = 0
    for on, off, note in without_overlaps(song.notes):
        events.append((on, 3, bytes([0x90 | note.channel, note.pitch, note.velocity])))
        events.append((off, 2, bytes([0x80 | note.channel, note.pitch, 0])))
        last = max(last, off)
    events.append((last + to_ticks(tail_s * song.tempo_bpm / 60), 9, b"\xff\x2f\x00"))
    track, now = bytearray(), 0
    for tick, _, message in sorted(events):
        track += variable_length(tick - now) + message
        now = tick
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_BEAT)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


# -- music theory shared by both styles -------------------------------------------------------------------------------

MAJOR = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def nearest(candidates: list[int], target: float) -> int:
    """The candidate closest to ``target`` (the lower one on a tie)."""
    return min(candidates, key=lambda c: (abs(c - target), c))


def pitches_in_range(pitch_classes, low: int, high: int) -> list[int]:
    """Every MIDI pitch in [low, high] whose pitch class is one of ``pitch_classes``."""
    classes = {pc % 12 for pc in pitch_classes}
    return [p for p in range(low, high + 1) if p % 12 in classes]


def fitting_tempo(dice: Dice, beats: float, seconds: tuple[float, float]) -> float:
    """The tempo (beats per minute) at which ``beats`` beats last a duration drawn from ``seconds``."""
    return beats * 60 / dice.uniform(*seconds)


# -- classical: a melody over diatonic triads -------------------------------------------------------------------------

#: Which scale degree (0 = I) may follow which: a plain functional-harmony walk.
CLASSICAL_NEXT = {
    "major": {0: [3, 4, 5, 1, 2], 1: [4, 6], 2: [5, 3], 3: [4, 1, 0], 4: [0, 5], 5: [1, 3], 6: [0]},
    "minor": {0: [3, 4, 5, 1], 1: [4, 6], 3: [4, 1, 0], 4: [0, 5], 5: [1, 3], 6: [0]},
}

#: name -> (melody program, chord program, bass program, accompaniment patterns, melody range)
CLASSICAL_ENSEMBLES = {
    "piano": (0, 0, 0, ("alberti", "block", "arpeggio"), (67, 86)),
    "violin and piano": (40, 0, 0, ("alberti", "block", "arpeggio"), (67, 88)),
    "violin and strings": (40, 48, 48, ("sustained", "pulse"), (67, 88)),
    "string quartet": (40, 41, 42, ("sustained", "pulse"), (67, 88)),
}


@dataclass
class Key:
    """A key: tonic pitch class and a seven-note scale; steps count scale degrees upward from the tonic at
    MIDI pitch ``tonic`` (step 7 is the tonic an octave up)."""
    tonic: int
    scale: tuple[int, ...]

    def pitch(self, step: int) -> int:
        octave, degree = divmod(step, 7)
        return self.tonic + 12 * octave + self.scale[degree]

    def steps_between(self, low: int, high: int) -> list[int]:
        """Every step whose pitch lies in [low, high]."""
        return [s for s in range(0, 100) if low <= self.pitch(s) <= high]


def triad(key: Key, degree: int, low: int) -> list[int]:
    """Root-position triad on scale ``degree`` with its root the lowest such pitch at or above ``low``."""
    root = next(s for s in range(degree, 100, 7) if key.pitch(s) >= low)
    return [key.pitch(root), key.pitch(root + 2), key.pitch(root + 4)]


def classical_progression(dice: Dice, mode: str, slots: int) -> list[int]:
    """Scale degrees of ``slots`` chords: starting on I, walking functionally, ending on V (the final bar, I, is
    added by the caller)."""
    chords = [0]
    while len(chords) < slots - 1:
        chords.append(dice.choice(CLASSICAL_NEXT[mode][chords[-1]]))
    if slots > 1:
        chords.append(4)
    return chords


def melody_rhythm(dice: Dice, beats: int) -> list[tuple[float, float]]:
    """(offset, length) in beats of the notes of one bar, straight (no swing)."""
    cells = [((1,), 3), ((0.5, 0.5), 3), ((2,), 1), ((1.5, 0.5), 1), ((0.5, 0.5, 0.5, 0.5), 1)]
    notes, t = [], 0.0
    while t < beats:
        fitting = [(c, w) for c, w in cells if sum(c) <= beats - t]
        cell = dice.weighted([c for c, _ in fitting], [w for _, w in fitting])
        for length in cell:
            notes.append((t, length))
            t += length
    return notes


def classical_melody(dice: Dice, key: Key, chords: list[int], chord_beats: int, beats_per_bar: int,
                     pitch_range: tuple[int, int]) -> list[tuple[float, float, int]]:
    """(start, length, pitch) of a melody: chord tones on the beats, scale steps between, ending on the tonic."""
    steps = key.steps_between(*pitch_range)
    step = nearest(steps, (steps[0] + steps[-1]) / 2)
    direction = dice.choice([-1, 1])
    body_beats = len(chords) * chord_beats
    notes = []
    for bar_start in range(0, body_beats, beats_per_bar):
        for offset, length in melody_rhythm(dice, beats_per_bar):
            t = bar_start + offset
            degree = chords[int(t // chord_beats)]
            if dice.chance(0.25) or not steps[0] + 1 < step + direction < steps[-1] - 1:
                direction = -direction
            if offset == int(offset):
                tones = [s for s in steps if (s - degree) % 7 in (0, 2, 4) and (s != step or dice.chance(0.2))]
                step = nearest(tones, step + direction * dice.integer(1, 3))
            else:
                step = min(max(step + direction, steps[0]), steps[-1])
            notes.append((t, length, key.pitch(step)))
    tonics = [s for s in steps if s % 7 == 0]
    notes.append((body_beats, beats_per_bar, key.pitch(nearest(tonics, step))))
    return notes


def classical_accompaniment(key: Key, degree: int, start: float, beats: float, pattern: str) -> tuple[list, list]:
    """(chord notes, bass notes) as (start, length, pitch) for one chord held ``beats`` beats."""
    chord, bass = [], []
    low = triad(key, degree, 48)
    if pattern == "alberti":  # root, fifth, third, fifth in eighths
        order = [low[0], low[2], low[1], low[2]]
        chord = [(start + i / 2, 0.5, order[i % 4]) for i in range(int(beats * 2))]
    elif pattern == "arpeggio":  # up and down the chord in eighths
        order = [low[0], low[1], low[2], low[0] + 12, low[2], low[1]]
        chord = [(start + i / 2, 0.5, order[i % 6]) for i in range(int(beats * 2))]
    elif pattern == "block":  # the chord on every beat over a held bass
        upper = triad(key, degree, 53)
        chord = [(start + i, 0.9, p) for i in range(int(beats)) for p in upper]
        bass = [(start, beats, triad(key, degree, 36)[0])]
    elif pattern == "pulse":  # repeated eighth-note chords, strings
        upper = triad(key, degree, 53)
        chord = [(start + i / 2, 0.45, p) for i in range(int(beats * 2)) for p in upper]
        bass = [(start + i, 0.9, triad(key, degree, 36)[0]) for i in range(int(beats))]
    else:  # "sustained": held chord over a held bass
        chord = [(start, beats, p) for p in triad(key, degree, 53)]
        bass = [(start, beats, triad(key, degree, 36)[0])]
    return chord, bass


def compose_classical(dice: Dice) -> Song:
    """A short diatonic piece: melody over block, Alberti or arpeggiated triads (piano) or string chords."""
    mode = dice.weighted(["major", "minor"], [3, 1])
    key = Key(dice.choice([0, 2, 3, 5, 7, 9, 10]), MAJOR if mode == "major" else HARMONIC_MINOR)
    ensemble = dice.choice(list(CLASSICAL_ENSEMBLES))
    melody_program, chord_program, bass_program, patterns, melody_range = CLASSICAL_ENSEMBLES[ensemble]
    pattern = dice.choice(patterns)
    beats_per_bar = dice.weighted([4, 3], [2, 1])
    bars = 3 if beats_per_bar == 4 else dice.choice([4, 5])  # the last bar is the final chord
    tempo = fitting_tempo(dice, bars * beats_per_bar, PIECE_SECONDS)
    chord_beats = dice.choice([2, 4]) if beats_per_bar == 4 else 3
    chords = classical_progression(dice, mode, (bars - 1) * beats_per_bar // chord_beats)

    song = Song(tempo, programs={0: melody_program, 1: chord_program, 2: bass_program},
                mix={0: (110, 50), 1: (96, 50), 2: (96, 50)},
                description=f"classical {ensemble}, {pattern}, {KEY_NAMES[key.tonic]} {mode}, "
                            f"{beats_per_bar}/4, {tempo:.0f} bpm, {bars} bars")
    for start, length, pitch in classical_melody(dice, key, chords, chord_beats, beats_per_bar, melody_range):
        song.add(start, length * 0.95, pitch, dice.integer(78, 92) + (6 if start % beats_per_bar == 0 else 0), 0)
    for i, degree in enumerate(chords + [0]):
        held = pattern if i < len(chords) else "sustained"
        beats = chord_beats if i < len(chords) else beats_per_bar
        chord, bass = classical_accompaniment(key, degree, i * chord_beats, beats, held)
        for start, length, pitch in chord:
            song.add(start, length, pitch, dice.integer(50, 62), 1)
        for start, length, pitch in bass:
            song.add(start, length, pitch, dice.integer(58, 68), 2)
    return song


# -- jazz: swung melody over seventh chords, walking bass and brushes -------------------------------------------------

#: quality -> (chord tones, the scale a line over it uses), in semitones above the root
QUALITIES = {
    "maj7": ((0, 4, 7, 11), (0, 2, 4, 5, 7, 9, 11)),
    "6": ((0, 4, 7, 9), (0, 2, 4, 5, 7, 9, 11)),
    "m7": ((0, 3, 7, 10), (0, 2, 3, 5, 7, 9, 10)),
    "m6": ((0, 3, 7, 9), (0, 2, 3, 5, 7, 9, 11)),
    "7": ((0, 4, 7, 10), (0, 2, 4, 5, 7, 9, 10)),
    "7b9": ((0, 4, 7, 10), (0, 1, 4, 5, 7, 8, 10)),
    "m7b5": ((0, 3, 6, 10), (0, 1, 3, 5, 6, 8, 10)),
}

#: Chords by function, (root above the tonic, quality), in a major and a minor key.
JAZZ_CHORDS = {
    "major": {"I": (0, "maj7"), "I6": (0, "6"), "ii": (2, "m7"), "iii": (4, "m7"), "IV": (5, "maj7"),
              "V": (7, "7"), "VI7": (9, "7"), "vi": (9, "m7"), "II7": (2, "7")},
    "minor": {"I": (0, "m7"), "I6": (0, "m6"), "ii": (2, "m7b5"), "iv": (5, "m7"), "bVI": (8, "maj7"),
              "V": (7, "7b9")},
}

#: One-bar fillers before the cadence: (function, beats) pairs.
JAZZ_FILLERS = {
    "major": [[("I", 4)], [("I", 2), ("VI7", 2)], [("iii", 2), ("VI7", 2)], [("IV", 4)], [("ii", 2), ("V", 2)],
              [("II7", 4)], [("vi", 4)], [("I6", 4)]],
    "minor": [[("I", 4)], [("I", 2), ("I6", 2)], [("iv", 4)], [("bVI", 4)], [("ii", 2), ("V", 2)]],
}

#: Cadences ending on the tonic bar, which the piece ends on.
JAZZ_CADENCES = [[("ii", 4), ("V", 4), ("I", 4)], [("ii", 2), ("V", 2), ("I", 4)]]

#: name -> (melody program, comping program, melody range, comping volume)
JAZZ_ENSEMBLES = {
    "alto sax": (65, 26, (60, 82), 100),
    "tenor sax": (66, 26, (52, 74), 100),
    "jazz guitar": (26, 4, (57, 79), 84),
}

SWING = 2 / 3  # the off-beat eighth falls two thirds into the beat


@dataclass
class Chord:
    """A chord of the progression: absolute root pitch class, quality, start and length in beats."""
    root: int
    quality: str
    start: float
    beats: float

    def tones(self) -> list[int]:
        return [self.root + i for i in QUALITIES[self.quality][0]]

    def scale(self) -> list[int]:
        return [self.root + i for i in QUALITIES[self.quality][1]]


def jazz_progression(dice: Dice, mode: str, tonic: int, bars: int) -> list[Chord]:
    """Fillers then a ii-V-I cadence, ``bars`` bars of 4/4 in all (at least the cadence)."""
    cadence = dice.choice(JAZZ_CADENCES)
    cadence_bars = sum(b for _, b in cadence) // 4
    functions = [("I", 4)] if bars > cadence_bars else []
    while len(functions) and sum(b for _, b in functions) // 4 < bars - cadence_bars:
        functions += dice.choice(JAZZ_FILLERS[mode])
    chords, t = [], 0.0
    for function, beats in functions + cadence:
        offset, quality = JAZZ_CHORDS[mode][function]
        chords.append(Chord((tonic + offset) % 12, quality, t, beats))
        t += beats
    return chords


def chord_at(chords: list[Chord], t: float) -> Chord:
    """The chord sounding at beat ``t``."""
    return next((c for c in reversed(chords) if c.start <= t + 1e-9), chords[0])


def walking_bass(dice: Dice, chords: list[Chord]) -> list[tuple[float, float, int]]:
    """(start, length, pitch) quarter notes: root on the chord's first beat, chord or scale tones after, and a
    chromatic or scale approach into the next root; the last chord's root is held."""
    low, high = 36, 55
    pitch, notes = 43, []
    for i, chord in enumerate(chords):
        root = nearest(pitches_in_range([chord.root], low, high), pitch)
        if i == len(chords) - 1:
            notes.append((chord.start, 3.0, root))
            break
        next_root = nearest(pitches_in_range([chords[i + 1].root], low, high), root)
        pitch = root
        for beat in range(int(chord.beats)):
            t = chord.start + beat
            if beat == 0:
                pitch = root
            elif beat == chord.beats - 1:
                pitch = next_root + dice.weighted([-1, 1, -2, 2], [3, 3, 1, 1])
            else:
                pool = pitches_in_range(chord.tones() if dice.chance(0.6) else chord.scale(), low, high)
                pool = [p for p in pool if p != pitch and abs(p - pitch) <= 7] or [pitch]
                pitch = nearest(pool, pitch + (next_root - pitch) / 2 + dice.uniform(-3, 3))
            notes.append((t, 0.92, pitch))
            if dice.chance(0.08) and beat < chord.beats - 1:  # a swung ghost note, a bassist's "skip"
                notes.append((t + SWING, 0.3, pitch))
    return notes


def brush_drums(dice: Dice, bars: int, kick: bool) -> list[tuple[float, float, int, int]]:
    """(start, length, pitch, velocity) on the GM Brush kit: swung ride, hi-hat foot on 2 and 4, brush taps and
    the odd snare comp; the last bar is one ride-and-kick hit."""
    hits = []
    for bar in range(bars - 1):
        b = bar * 4
        for offset, velocity in [(0, 72), (1, 88), (1 + SWING, 62), (2, 72), (3, 88), (3 + SWING, 62)]:
            hits.append((b + offset, 0.3, 51, velocity + dice.integer(-6, 6)))
        for beat in range(4):
            hits.append((b + beat, 0.3, 38, dice.integer(30, 42)))  # brush taps
            if beat % 2 == 1:
                hits.append((b + beat, 0.2, 44, dice.integer(55, 68)))  # hi-hat foot
            if kick:
                hits.append((b + beat, 0.2, 36, dice.integer(28, 38)))  # feathered kick
            if dice.chance(0.18):
                hits.append((b + beat + SWING, 0.2, 40, dice.integer(55, 75)))  # snare comp
    end = (bars - 1) * 4
    hits += [(end, 1.0, 51, 95), (end, 0.5, 36, 80)]
    return hits


#: Comping rhythms per bar, (offset, length) in beats: Charleston, 2 and 4, four to the bar, anticipations.
COMP_RHYTHMS = [
    [(0, 1.2), (1 + SWING, 0.5)],
    [(1, 0.5), (3, 0.5)],
    [(0, 0.45), (1, 0.45), (2, 0.45), (3, 0.45)],
    [(0, 0.8), (2 + SWING, 0.5)],
]


def comp_voicing(chord: Chord) -> list[int]:
    """A close shell voicing (third, fifth or ninth, seventh) between MIDI 52 and 63."""
    intervals = QUALITIES[chord.quality][0]
    colour = 14 if chord.quality in ("maj7", "m7", "7", "6") else intervals[2]
    return sorted(52 + (chord.root + i - 52) % 12 for i in (intervals[1], colour, intervals[3]))


def jazz_comping(dice: Dice, chords: list[Chord], bars: int) -> list[tuple[float, float, int]]:
    """(start, length, pitch) of comped chords, one rhythm for the piece, held chord in the last bar."""
    rhythm = dice.choice(COMP_RHYTHMS)
    notes = []
    for bar in range(bars - 1):
        for offset, length in rhythm:
            t = bar * 4 + offset
            notes += [(t, length, p) for p in comp_voicing(chord_at(chords, t))]
    notes += [(chords[-1].start, 3.0, p) for p in comp_voicing(chords[-1])]
    return notes


def swing_beat(dice: Dice) -> list[tuple[float, float]]:
    """(offset, length) of the melody notes within one beat: swung eighths, a quarter, a triplet or a rest."""
    kind = dice.weighted(["eighths", "quarter", "triplet", "rest", "upbeat"], [5, 2, 1, 1.5, 1])
    return {"eighths": [(0, SWING * 0.95), (SWING, (1 - SWING) * 0.95)], "quarter": [(0, 0.9)],
            "triplet": [(0, 0.3), (1 / 3, 0.3), (2 / 3, 0.3)], "rest": [],
            "upbeat": [(SWING, 1 - SWING)]}[kind]


def jazz_melody(dice: Dice, chords: list[Chord], bars: int,
                pitch_range: tuple[int, int]) -> list[tuple[float, float, int, int]]:
    """(start, length, pitch, velocity) of a swung line: chord tones on the beats, scale or chromatic steps off
    them, accented off-beats, a breath mid-phrase, a held chord tone in the last bar."""
    low, high = pitch_range
    pitch = (low + high) // 2
    direction = dice.choice([-1, 1])
    notes = []
    breath = dice.integer(4, 4 * (bars - 1) - 1)
    for beat in range(4 * (bars - 1)):
        if beat == breath:
            continue
        chord = chord_at(chords, beat)
        for offset, length in swing_beat(dice):
            if dice.chance(0.15) or not low + 2 < pitch + direction * 2 < high - 2:
                direction = -direction
            if offset == 0:
                pool = [p for p in pitches_in_range(chord.tones(), low, high) if p != pitch]
                pitch = nearest(pool, pitch + direction * dice.integer(2, 5))
            elif dice.chance(0.2):
                pitch = min(max(pitch + direction, low), high)  # chromatic passing tone
            else:
                pool = [p for p in pitches_in_range(chord.scale(), low, high) if (p - pitch) * direction > 0]
                pitch = min(pool, key=lambda p: abs(p - pitch)) if pool else pitch
            accent = 10 if offset > 0 else 0
            notes.append((beat + offset, length, pitch, dice.integer(72, 84) + accent))
    final = chords[-1]
    targets = [final.root + i for i in QUALITIES[final.quality][0][1:]] + [final.root + 2]
    pitch = nearest(pitches_in_range(targets, low, high), pitch)
    start = final.start - (1 - SWING) if dice.chance(0.5) else final.start  # often anticipated
    notes = [(t, min(length, start - t), p, v) for t, length, p, v in notes if t < start - 1e-6]
    notes.append((start, final.start + 3.0 - start, pitch, 90))
    return notes


def compose_jazz(dice: Dice) -> Song:
    """A short swing tune: sax or guitar melody, comping, walking bass and brushes over ii-V-I changes."""
    mode = dice.weighted(["major", "minor"], [3, 1])
    tonic = dice.choice([0, 2, 3, 5, 7, 8, 10])  # the horn-friendly keys
    ensemble = dice.choice(list(JAZZ_ENSEMBLES))
    melody_program, comp_program, melody_range, comp_volume = JAZZ_ENSEMBLES[ensemble]
    chords = jazz_progression(dice, mode, tonic, dice.weighted([3, 4, 5], [1, 2, 1]))
    bars = int(chords[-1].start // 4) + 1
    tempo = fitting_tempo(dice, bars * 4 - 1, PIECE_SECONDS)  # the final chord is held three beats
    song = Song(tempo, programs={0: melody_program, 1: comp_program, 2: 32, DRUMS: 40},
                mix={0: (108, 40), 1: (comp_volume, 35), 2: (92, 20), DRUMS: (127, 30)},
                description=f"jazz {ensemble}, {KEY_NAMES[tonic]} {mode}, 4/4 swing, {tempo:.0f} bpm, {bars} bars")
    for start, length, pitch, velocity in jazz_melody(dice, chords, bars, melody_range):
        song.add(start, length, pitch, velocity, 0)
    for start, length, pitch in jazz_comping(dice, chords, bars):
        song.add(start, length, pitch, dice.integer(60, 72), 1)
    for start, length, pitch in walking_bass(dice, chords):
        song.add(start, length, pitch, dice.integer(88, 100), 2)
    for start, length, pitch, velocity in brush_drums(dice, bars, kick=dice.chance(0.5)):
        song.add(start, length, pitch, velocity, DRUMS)
    return song


# -- rendering music --------------------------------------------------------------------------------------------------

COMPOSERS = {"classical": compose_classical, "jazz": compose_jazz}


def render_midi(midi_path: Path, wav_path: Path, rate: int, gain: float = 0.5) -> None:
    """Render a MIDI file with fluidsynth and FluidR3_GM to a float WAV (reverb on, chorus off; float output
    needs no dither and cannot clip, and the peak is normalised afterwards)."""
    run_quietly(["fluidsynth", "-q", "-n", "-i", "-R", "1", "-C", "0", "-g", str(gain), "-r", str(rate),
                 "-O", "float", "-T", "wav", "-F", str(wav_path), str(SOUND_FONT), str(midi_path)])


def make_music_file(song: Song, out_path: Path, work: Path) -> None:
    """Write ``song`` as MIDI, render it, mix to mono, trim the tail, normalise the peak and write FLAC."""
    stem = f"{out_path.parent.parent.name}-{out_path.parent.name}-{out_path.stem}"
    midi_path, wav_path = work / f"{stem}.mid", work / f"{stem}.wav"
    midi_path.write_bytes(midi_file_bytes(song))
    render_midi(midi_path, wav_path, MUSIC_RATE)
    audio, rate = sf.read(wav_path, dtype="float64")
    audio = trim_tail(to_mono(audio), rate, max_s=MUSIC_SECONDS[1])
    write_flac(out_path, peak_normalise(audio), rate)


def music_jobs(out: Path, seed: int) -> list[tuple]:
    """(song, output path) of every piece; each piece has its own seeded composer, the last few held out."""
    jobs = []
    for style, compose in COMPOSERS.items():
        for index in range(PIECES_PER_STYLE + HELDOUT_PIECES):
            folder = "music_heldout" if index >= PIECES_PER_STYLE else "music"
            jobs.append((compose(Dice(seed, style, index)), out / folder / style / f"{index + 1:03d}.flac"))
    return jobs


def write_piece_list(out: Path, jobs: list[tuple]) -> None:
    """pieces.tsv: path, split and a description (instruments, key, metre, tempo) of every piece."""
    rows = ["path\tsplit\tdescription"] + [
        f"{path.relative_to(out).as_posix()}\t{'heldout' if 'heldout' in path.parent.parent.name else 'train'}"
        f"\t{song.description}" for song, path in jobs]
    (out / "pieces.tsv").write_text("\n".join(rows) + "\n")


# -- driver -----------------------------------------------------------------------------------------------------------

def remove_stale(folders: list[Path], keep: set[Path]) -> None:
    """Delete FLAC files in ``folders`` that this run does not write (left over from an older corpus)."""
    for folder in folders:
        for path in folder.glob("*.flac") if folder.is_dir() else []:
            if path not in keep:
                path.unlink()


def run_all(function, jobs: list[tuple], work: Path, processes: int) -> None:
    """Call ``function(*job, work)`` for every job, ``processes`` at a time (each job runs one external program)."""
    with ThreadPoolExecutor(max_workers=processes) as pool:
        for future in [pool.submit(function, *job, work) for job in jobs]:
            future.result()


def describe(folder: Path) -> dict:
    """Count, duration range (s), highest peak (dBFS) and lowest RMS (dBFS) of the FLAC files in ``folder``."""
    stats = []
    for path in sorted(folder.glob("*.flac")):
        audio, rate = sf.read(path, dtype="float64")
        stats.append((len(audio) / rate, np.max(np.abs(audio)), np.sqrt(np.mean(audio ** 2))))
    durations, peaks, rms = zip(*stats)
    return {"files": len(stats), "seconds": (min(durations), max(durations)),
            "peak_dbfs": 20 * math.log10(max(peaks)), "min_rms_dbfs": 20 * math.log10(min(rms))}


def report(out: Path, parts: list[str]) -> None:
    """Print a line per folder and warn about durations outside the intended range."""
    limits = {"voices": VOICE_SECONDS, "music": MUSIC_SECONDS}
    for part in parts:
        for folder in sorted(out.glob(f"{part}*/*")):
            if not folder.is_dir():
                continue
            d = describe(folder)
            low, high = limits[part]
            flag = "" if low <= d["seconds"][0] and d["seconds"][1] <= high else f"  WARNING: not within {low}-{high} s"
            print(f"{folder.relative_to(out)}: {d['files']} files, {d['seconds'][0]:.2f}-{d['seconds'][1]:.2f} s, "
                  f"peak {d['peak_dbfs']:.1f} dBFS, lowest RMS {d['min_rms_dbfs']:.1f} dBFS{flag}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "demo", help="corpus folder [default: data/demo]")
    parser.add_argument("--only", choices=["voices", "music"], help="regenerate only one half")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="programs run at once [default: 2]")
    parser.add_argument("--seed", type=int, default=5, help="seed of the music composer [default: 5]")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    parts = [args.only] if args.only else ["voices", "music"]
    check_requirements(parts)
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="make_demo-") as tmp:
        work = Path(tmp)
        if "voices" in parts:
            jobs = voice_jobs(args.out)
            remove_stale([p.parent for *_, p in jobs], {p for *_, p in jobs})
            run_all(make_voice_file, jobs, work, args.jobs)
            write_sentence_list(args.out)
        if "music" in parts:
            jobs = music_jobs(args.out, args.seed)
            remove_stale([p.parent for _, p in jobs], {p for _, p in jobs})
            run_all(make_music_file, jobs, work, args.jobs)
            write_piece_list(args.out, jobs)
    report(args.out, parts)
    print(f"done in {time.monotonic() - began:.0f} s: {args.out}")


if __name__ == "__main__":
    main()
