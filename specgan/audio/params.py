"""The audio parameters that define a dataset's spectrograms; stored in every manifest and checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from specgan.audio.stft import centred_padding
from specgan.errors import ConfigError
from specgan.recipe import checked_fields, from_mapping, param, read_toml


@dataclass(frozen=True)
class AudioParams:
    """How waveforms become fixed-size normalised log-mel chunks (the recipe's ``[audio]`` table).

    Names follow torchaudio/librosa. The mel filterbank uses the slaney mel scale and slaney area
    normalisation (librosa's default). Log-mel is ``10·log10(max(mel_power, 1e-10))`` dB, mapped linearly from
    the *fixed* range ``[min_db, max_db]`` to ``[-1, 1]`` and clipped; it is never normalised per clip.
    """

    sample_rate: int = param(22050, "Target sample rate in Hz; every input is resampled to it.", min=1000, max=384000)
    n_fft: int = param(1024, "FFT size in samples.", min=16, max=65536)
    hop_length: int = param(256, "STFT hop in samples (one spectrogram frame).", min=1)
    win_length: int | None = param(None, "STFT window length in samples (Hann); unset means n_fft.", min=2)
    n_mels: int = param(80, "Number of mel bands (the image height).", min=4, max=1024)
    f_min: float = param(0.0, "Lowest mel filter edge in Hz.", min=0.0)
    f_max: float | None = param(None, "Highest mel filter edge in Hz; unset means sample_rate / 2.", min=1.0)
    min_db: float = param(-80.0, "Mel power in dB that maps to -1 (quieter is clipped).")
    max_db: float = param(40.0, "Mel power in dB that maps to +1 (louder is clipped).")
    frames: int = param(128, "Chunk width in frames (the image width).", min=4)
    chunk_hop: int | None = param(None, "Frames between chunk starts in prep; unset means frames // 2.", min=1)
    trim_silence: bool = param(True, "Trim leading and trailing silence before cutting chunks.")
    trim_top_db: float = param(60.0, "Trimming removes leading and trailing frames quieter than the clip's loudest "
                                     "frame minus this (dB).", min=1.0)
    silence_top_db: float = param(50.0, "A frame quieter than the clip's loudest frame minus this (dB) is silent.",
                                  min=1.0)
    min_active: float = param(0.5, "A chunk is kept when at least this fraction of its frames is not silent.",
                              min=0.0, max=1.0)
    pad_short: bool = param(False, "Pad a clip shorter than one chunk with silence instead of skipping it (one "
                                   "whose own frames are not min_active active is still skipped).")

    def __post_init__(self) -> None:
        if self.win_length is not None and self.win_length > self.n_fft:
            raise ValueError(f"win_length = {self.win_length} is larger than n_fft = {self.n_fft}")
        if self.hop_length > self.window_length:
            raise ValueError(f"hop_length = {self.hop_length} is larger than the window ({self.window_length})")
        if self.max_db <= self.min_db:
            raise ValueError(f"max_db = {self.max_db} must be above min_db = {self.min_db}")
        if self.mel_f_max > self.sample_rate / 2 or self.f_min >= self.mel_f_max:
            raise ValueError(f"f_min = {self.f_min} and f_max = {self.mel_f_max} must satisfy "
                             f"0 <= f_min < f_max <= sample_rate / 2 = {self.sample_rate / 2}")

    @property
    def window_length(self) -> int:
        return self.win_length or self.n_fft

    @property
    def mel_f_max(self) -> float:
        return self.f_max if self.f_max is not None else self.sample_rate / 2

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def min_samples(self) -> int:
        """The fewest samples a centred STFT can frame: a frame reaches ``n_fft // 2`` samples left of its centre
        and ``n_fft - n_fft // 2`` right of it (one more for an odd n_fft), and reflecting that many needs one
        more sample than that."""
        return centred_padding(self.n_fft)[1] + 1

    @property
    def hop_frames(self) -> int:
        """Frames between chunk starts in prep."""
        return self.chunk_hop or max(1, self.frames // 2)

    @property
    def chunk_seconds(self) -> float:
        return self.frames * self.hop_length / self.sample_rate


#: The parameters that decide what a chunk's values are (the others decide which chunks prep keeps).
IMAGE_KEYS = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "f_min", "f_max", "min_db", "max_db",
              "frames")


def resolved_values(audio: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping of :class:`AudioParams` (a recipe's, a manifest's, a checkpoint's) with the unset values as what
    they stand for (``win_length``: n_fft; ``f_max``: sample_rate / 2; ``chunk_hop``: frames // 2), and
    ``trim_top_db`` as None where ``trim_silence`` is off (it decides nothing then): two sets of parameters alike
    in these make the same dataset, however each was asked for."""
    values = dict(audio)
    if values.get("trim_silence") is False:
        values["trim_top_db"] = None
    if values.get("win_length") is None:
        values["win_length"] = values.get("n_fft")
    if values.get("f_max") is None and values.get("sample_rate") is not None:
        values["f_max"] = values["sample_rate"] / 2
    if values.get("chunk_hop") is None and values.get("frames") is not None:
        values["chunk_hop"] = max(1, values["frames"] // 2)
    return values


def image_values(audio: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`IMAGE_KEYS` of :func:`resolved_values`: two datasets alike in these hold alike chunks."""
    values = resolved_values(audio)
    return {key: values.get(key) for key in IMAGE_KEYS}


def resolve_audio_params(*, recipe: Path | None = None, overrides: Mapping[str, Any] | None = None,
                         flags: Mapping[str, Any] | None = None) -> AudioParams:
    """Defaults, then the recipe's ``[audio]`` table, then ``overrides`` (``--set``), then ``flags`` (``None``
    values are ignored in both). Any bad key or value is a one-line ConfigError naming where it came from, also one
    that a later layer replaces (``--set frames=abc --frames 16`` is an error, as a bad value in the recipe is).
    Checks between keys apply to the recipe's table alone (a recipe must hold together) and to the whole, not to
    ``--set`` alone: ``--set win_length=2048 --n-fft 4096`` is fine."""
    table: dict[str, Any] = {}
    if recipe is not None:
        audio = read_toml(recipe).get("audio", {})
        if not isinstance(audio, Mapping):
            raise ConfigError(f"{recipe}: audio must be a table")
        table = dict(audio)
        from_mapping(AudioParams, table, source=str(recipe), prefix="audio.")
    given = {}
    for layer in (overrides, flags):
        layer = {k: v for k, v in (layer or {}).items() if v is not None}
        checked_fields(AudioParams, layer, source="command line")  # also a value the next layer replaces
        given.update(layer)
    source = "command line" if given else (str(recipe) if recipe else "defaults")
    return from_mapping(AudioParams, {**table, **given}, source=source, prefix="audio." if not given else "")
