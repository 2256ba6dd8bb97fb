"""Typed config loading: every bad key or value is a one-line ConfigError naming the source and key."""

from dataclasses import dataclass

import pytest

from specgan.audio.params import AudioParams, image_values, resolve_audio_params
from specgan.errors import ConfigError
from specgan.recipe import from_mapping, merge, param, parse_overrides, read_toml, to_mapping


@dataclass(frozen=True)
class Inner:
    size: int = param(3, "a size", min=1)


@dataclass(frozen=True)
class Outer:
    name: str = param("a", "a name", choices=("a", "b"))
    rate: float = param(0.5, "a rate", min=0.0, max=1.0)
    sizes: tuple[int, ...] = param((1, 2), "sizes")
    maybe: int | None = param(None, "optional")
    inner: Inner = Inner()


def test_builds_frozen_dataclass_with_conversions():
    cfg = from_mapping(Outer, {"rate": 1, "sizes": [4, 5], "inner": {"size": 7}, "maybe": 2}, source="r.toml")
    assert cfg == Outer(rate=1.0, sizes=(4, 5), inner=Inner(size=7), maybe=2)
    assert isinstance(cfg.rate, float)
    with pytest.raises(AttributeError):
        cfg.rate = 0.1  # frozen
    assert to_mapping(cfg)["sizes"] == [4, 5]


@pytest.mark.parametrize("data,message", [
    ({"rat": 1}, "r.toml: unknown key 'rat'"),
    ({"rate": "x"}, "r.toml: rate = 'x': expected float, got str"),
    ({"rate": 2.0}, "r.toml: rate = 2.0: must be <= 1.0"),
    ({"name": "c"}, "r.toml: name = 'c': must be one of a, b"),
    ({"sizes": [1, "2"]}, "r.toml: sizes[1] = '2': expected int"),
    ({"inner": {"size": 0}}, "r.toml: inner.size = 0: must be >= 1"),
    ({"inner": {"colour": 1}}, "r.toml: unknown key 'inner.colour'"),
    ({"inner": 3}, "r.toml: inner must be a table"),
    ({"maybe": True}, "r.toml: maybe = true: expected int, got bool"),
])
def test_errors_name_file_key_and_value(data, message):
    with pytest.raises(ConfigError) as e:
        from_mapping(Outer, data, source="r.toml")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_cross_field_checks_become_config_errors():
    with pytest.raises(ConfigError, match="win_length = 2048 is larger than n_fft = 1024"):
        from_mapping(AudioParams, {"win_length": 2048}, source="x.toml", prefix="audio.")
    with pytest.raises(ConfigError, match="f_max"):
        from_mapping(AudioParams, {"sample_rate": 8000, "f_max": 6000.0}, source="x.toml")


def test_toml_files_and_overrides(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[audio]\nn_mels = 64\nsample_rate = 16000\n")
    params = resolve_audio_params(recipe=recipe, overrides={"n_mels": 40, "hop_length": None})
    assert (params.n_mels, params.sample_rate, params.hop_length) == (40, 16000, 256)
    # A bad --set value that a flag replaces is still an error (it had been dropped unchecked); checks between keys
    # (win_length <= n_fft) apply to the whole, so a --set the flags complete is fine.
    with pytest.raises(ConfigError, match="^command line: frames = 'abc': expected int, got str$"):
        resolve_audio_params(overrides={"frames": "abc"}, flags={"frames": 16})
    assert resolve_audio_params(overrides={"win_length": 2048}, flags={"n_fft": 4096}).win_length == 2048
    recipe.write_text("[audio]\nn_mel = 64\n")
    with pytest.raises(ConfigError, match=r"r\.toml: unknown key 'audio\.n_mel'"):
        resolve_audio_params(recipe=recipe)
    recipe.write_text("[audio\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml(recipe)
    with pytest.raises(ConfigError, match="recipe file not found"):
        read_toml(tmp_path / "missing.toml")


def test_a_byte_order_mark_is_passed_over_and_a_file_too_large_is_refused(tmp_path):
    """Windows Notepad starts a UTF-8 file with a byte-order mark, which TOML refused as an "Invalid statement" at
    line 1; a device given as a recipe (/dev/zero) had been read until memory ran out."""
    recipe = tmp_path / "r.toml"
    recipe.write_bytes(b"\xef\xbb\xbf[audio]\nn_mels = 64\n")
    assert read_toml(recipe) == {"audio": {"n_mels": 64}}
    recipe.write_bytes(b"\xef\xbb\xbfname = \"\xff\"\n")
    with pytest.raises(ConfigError, match=r"r\.toml: not valid TOML \(not UTF-8 text: byte 11\)$"):
        read_toml(recipe)
    recipe.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
    with pytest.raises(ConfigError, match=r"r\.toml: larger than 1 MB, not a recipe$"):
        read_toml(recipe)


def test_parse_overrides_reads_toml_values():
    tree = parse_overrides(["train.steps=100", "audio.f_max=7600.5", "model.name=dcgan", "a.flag=true",
                            "a.list=[1, 2]"])
    assert tree == {"train": {"steps": 100}, "audio": {"f_max": 7600.5}, "model": {"name": "dcgan"},
                    "a": {"flag": True, "list": [1, 2]}}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["novalue"])
    # A list, table or quoted string left unfinished is a typo, not a string: it had been refused later as
    # "expected a list", which hid the missing bracket.
    for broken, reason in (("train.betas=[0.5", "Unclosed array"), ('model.name="dcgan', "Unterminated string"),
                           ("a.t={x = 1", "Unclosed inline table")):
        with pytest.raises(ConfigError) as caught:
            parse_overrides([broken])
        assert str(caught.value) == (f"--set {broken!r}: not a TOML value ({reason}); a list is written [1, 2], a "
                                     f'string "text"')
    assert merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}}) == {"a": {"x": 1, "y": 3}, "b": 1}


@pytest.mark.parametrize("fields, message, at_bound", [
    ({"n_fft": 1024, "win_length": 1025}, "win_length = 1025 is larger than n_fft = 1024", {"win_length": 1024}),
    ({"n_fft": 1024, "win_length": 256, "hop_length": 257}, r"hop_length = 257 is larger than the window \(256\)",
     {"hop_length": 256}),
    ({"min_db": -20.0, "max_db": -20.0}, "max_db = -20.0 must be above min_db = -20.0", {"max_db": -19.999}),
])
def test_audio_params_refuse_the_first_value_past_each_bound(fields, message, at_bound):
    """Each cross-field bound is tight: one past it is refused (a hop longer than the window leaves samples no
    window covers; max_db = min_db divides by zero), and the bound itself is accepted."""
    with pytest.raises(ValueError, match=message):
        AudioParams(**fields)
    AudioParams(**{**fields, **at_bound})


def test_image_values_see_through_unset_values_and_tell_datasets_apart():
    """Two spellings of one dataset (unset values and what they stand for) have the same image values, also at an
    odd rate whose Nyquist frequency is not a whole number; a different window length is a different dataset."""
    for rate in (22050, 11025):
        unset = {"sample_rate": rate, "n_fft": 1024, "win_length": None, "f_max": None}
        spelled = {"sample_rate": rate, "n_fft": 1024, "win_length": 1024,
                   "f_max": AudioParams(sample_rate=rate).mel_f_max}
        assert image_values(unset) == image_values(spelled)
    assert image_values({"n_fft": 1024, "win_length": 512}) != image_values({"n_fft": 1024, "win_length": None})
