"""A small ctypes wrapper around eSpeak NG from the `espeakng-loader` wheel (no system install).

`speak(text, voice, ...)` returns float32 samples at 22050 Hz and the phone segmentation taken
from eSpeak's phoneme events.

How it works: the library is initialised in synchronous mode with phoneme events
(`espeak_Initialize(2, 0, data_path, 1)`); a synthesis callback collects the 16-bit samples and
the events. Each phoneme event (type 7) carries the phoneme's start in the audio
(`audio_position`, in ms) and its mnemonic (`id`, up to 8 bytes).

Determinism: eSpeak keeps synthesis state in C statics that neither `espeak_Terminate` nor
`espeak_Initialize` resets (the pitch-flutter phase, the gain control, the echo buffer) and
draws breath and Klatt noise from libc `rand()`. The same text would therefore come out
slightly different depending on what was spoken before it. `speak` loads a fresh copy of the
library for every utterance (dlopen, initialise, synthesise, terminate, dlclose: about 1 ms)
and seeds eSpeak's noise (`espeak_ng_SetRandSeed`), so its output depends only on its
arguments. This holds as long as nothing else in the process keeps the library loaded.

Phone inventory: eSpeak's own English phoneme mnemonics (ASCII, Kirshenbaum-like: `t`, `D`,
`tS`, `@`, `3:`, `aI`, `oU`, `i@3`, ...) with the stress marks `'` and `,` removed, plus `sil`
(see `PAUSE`). The exact set depends on the accent (each English accent has its own phoneme
table). Pause events (names starting with `_`) and the silence before the first phone and after
the last one become `sil`; adjacent pauses are merged. Word boundaries inside a phrase have no
pause in eSpeak, so `sil` appears only at the edges and at punctuation pauses. Other languages have
their own mnemonics (Mandarin: pinyin-like phones with Chao tone digits fused to the vowel, `o214`).

Languages: `voice_for_language` maps a corpus's ISO 639 code (``ru``, ``rus``, ``pt-BR``, ``zh``) to
the eSpeak NG voice that reads it, or None when the shipped data has none.
"""

from __future__ import annotations

import _ctypes
import ctypes
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import UserError

SAMPLE_RATE = 22050
"""Output sample rate of eSpeak NG's voices."""

PAUSE = "sil"
"""Label of silences: leading and trailing silence and eSpeak's pause phonemes (`_`, `_:`, `_!`)."""

STRESS_MARKS = "',"
"""Primary and secondary stress prefixes that eSpeak adds to vowel mnemonics."""

EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 1
POS_CHARACTER = 1
CHARS_UTF8 = 1
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4

RATE_LIMITS = (80, 450)
"""Speaking rate in words per minute that eSpeak accepts (default 175)."""

VOICED_THRESHOLD = 0.01
"""A sample counts as sound (not silence) above this fraction of the utterance's peak."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """`espeak_EVENT` from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class _Capture:
    """What the synthesis callback collects for one utterance."""

    chunks: list[np.ndarray]
    events: list[tuple[int, str]]  # (start in ms, phoneme mnemonic)


_capture = _Capture([], [])
_lock = threading.Lock()


def _on_synth(wav, num_samples: int, events) -> int:
    """eSpeak's synth callback: keep the samples and the phoneme events; 0 means continue."""
    if num_samples > 0:
        _capture.chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
    i = 0
    while events and events[i].type != EVENT_LIST_TERMINATED:
        event = events[i]
        if event.type == EVENT_PHONEME:
            name = event.id.string.decode("ascii", errors="replace")
            _capture.events.append((int(event.audio_position), name))
        i += 1
    return 0


_callback = _CALLBACK(_on_synth)  # kept alive for the life of the process


def _paths() -> tuple[str, str]:
    """The library and data folder of the espeakng-loader wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise UserError("eSpeak NG is missing: install the espeakng-loader package") from None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def _open_engine() -> ctypes.CDLL:
    """Load a fresh copy of libespeak-ng and initialise it."""
    library_path, data_path = _paths()
    try:
        lib = ctypes.CDLL(library_path)
    except OSError as exc:
        raise UserError(f"cannot load eSpeak NG from {library_path}: {exc}") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), INITIALIZE_PHONEME_EVENTS)
    if sample_rate <= 0:
        _close_engine(lib, initialised=False)
        raise UserError(f"cannot initialise eSpeak NG with the data in {data_path}")
    if sample_rate != SAMPLE_RATE:
        _close_engine(lib)
        raise UserError(f"eSpeak NG runs at {sample_rate} Hz; this toolkit expects {SAMPLE_RATE} Hz")
    lib.espeak_SetSynthCallback(_callback)
    return lib


def _close_engine(lib: ctypes.CDLL, initialised: bool = True) -> None:
    """Terminate eSpeak and unload the library, so the next utterance starts from a clean state."""
    if initialised:
        lib.espeak_Terminate()
    _ctypes.dlclose(lib._handle)


@lru_cache(maxsize=1)
def variant_names() -> tuple[str, ...]:
    """Names of the voice variants shipped with the wheel (files in `voices/!v`), sorted."""
    folder = Path(_paths()[1]) / "voices" / "!v"
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_file())) if folder.is_dir() else ()


LANGUAGE_CODES = {
    "afr": "af", "amh": "am", "arg": "an", "ara": "ar", "asm": "as", "aze": "az", "bak": "ba", "bel": "be",
    "bul": "bg", "ben": "bn", "bos": "bs", "cat": "ca", "ces": "cs", "cze": "cs", "cym": "cy", "wel": "cy",
    "dan": "da", "deu": "de", "ger": "de", "ell": "el", "gre": "el", "eng": "en", "epo": "eo", "spa": "es",
    "est": "et", "eus": "eu", "baq": "eu", "fas": "fa", "per": "fa", "fin": "fi", "fra": "fr", "fre": "fr",
    "gle": "ga", "gla": "gd", "grn": "gn", "guj": "gu", "heb": "he", "hin": "hi", "hrv": "hr", "hat": "ht",
    "hun": "hu", "hye": "hy", "arm": "hy", "ina": "ia", "ind": "id", "ido": "io", "isl": "is", "ice": "is",
    "ita": "it", "jpn": "ja", "kat": "ka", "geo": "ka", "kaz": "kk", "kal": "kl", "kan": "kn", "kor": "ko",
    "kur": "ku", "kir": "ky", "lat": "la", "ltz": "lb", "lit": "lt", "lav": "lv", "mri": "mi", "mao": "mi",
    "mkd": "mk", "mac": "mk", "mal": "ml", "mar": "mr", "msa": "ms", "may": "ms", "mlt": "mt", "mya": "my",
    "bur": "my", "nob": "nb", "nor": "nb", "no": "nb", "nep": "ne", "nld": "nl", "dut": "nl", "orm": "om",
    "ori": "or", "pan": "pa", "pol": "pl", "por": "pt", "que": "qu", "ron": "ro", "rum": "ro", "rus": "ru",
    "snd": "sd", "sin": "si", "slk": "sk", "slo": "sk", "slv": "sl", "sqi": "sq", "alb": "sq", "srp": "sr",
    "swe": "sv", "swa": "sw", "tam": "ta", "tel": "te", "tha": "th", "tir": "ti", "tuk": "tk", "tsn": "tn",
    "tur": "tr", "tat": "tt", "uig": "ug", "ukr": "uk", "urd": "ur", "uzb": "uz", "vie": "vi",
    "zho": "zh", "chi": "zh",
}
"""ISO 639-2/3 codes (and Norwegian `no`) -> the two-letter code eSpeak NG names its voice by."""

LANGUAGE_VOICES = {"en": "en-us", "en-us": "en-us", "en-gb": "en", "en-uk": "en", "zh": "cmn", "zh-cmn": "cmn", "zh-yue": "yue"}
"""Codes whose eSpeak NG voice is not the one of the same name: English is American English (the project's
default; eSpeak's `en` is British), Chinese is Mandarin (eSpeak has no `zh` voice), `zh-yue` is Cantonese."""


@lru_cache(maxsize=1)
def voice_names() -> dict[str, str]:
    """Lower-cased name -> name of every usable voice shipped with the wheel: the files under `lang/`
    (`en-US`, `cmn`, ...) whose pronunciation dictionary is there too. Its name is the voice file's
    `dictionary` line, else the primary subtag of its first `language` line; the wheel ships voice files
    without a dictionary (Faroese `fo`, Karakalpak `kaa`), which eSpeak would load and read with no rules."""
    data = Path(_paths()[1])
    voices = {}
    for path in sorted((data / "lang").rglob("*")):
        if not path.is_file():
            continue
        dictionary = language = None
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "dictionary":
                dictionary = words[1]
            elif len(words) >= 2 and words[0] == "language" and language is None:
                language = words[1].partition("-")[0]
        if (data / f"{dictionary or language}_dict").is_file():
            voices[path.name.lower()] = path.name
    return voices


@lru_cache(maxsize=None)
def voice_for_language(language: str) -> str | None:
    """The eSpeak NG voice that reads text in `language`, an ISO 639 code with optional subtags, or None
    when the shipped data has none.

    Case and ``_`` / ``-`` do not matter. A code in `LANGUAGE_VOICES` gets that voice; a code that names a
    voice is that voice (``es-419``, ``pt-BR``, ``fr-BE``, ``cmn``, ``yue``, also eSpeak names such as
    ``en-GB-x-rp``); three-letter codes become two-letter ones (`LANGUAGE_CODES`: ``rus`` -> ``ru``);
    ``es`` with a region other than Spain is Latin-American Spanish (``es-419``); other subtags (region,
    script) without a voice of their own are dropped (``fr-FR`` -> ``fr``, ``zh-Hans`` -> ``cmn``).
    "ru" -> "ru", "eng" -> "en-us", "zh-CN" -> "cmn", "xx" -> None.
    """
    voices = voice_names()
    tag = language.strip().lower().replace("_", "-")
    if not tag:
        return None
    if tag in LANGUAGE_VOICES:
        return LANGUAGE_VOICES[tag]
    if tag in voices:
        return voices[tag]
    primary, _, rest = tag.partition("-")
    primary = LANGUAGE_CODES.get(primary, primary)
    if rest:
        regional = f"{primary}-{rest}"
        if regional in LANGUAGE_VOICES:
            return LANGUAGE_VOICES[regional]
        if regional in voices:
            return voices[regional]
        if primary == "es" and rest.partition("-")[0] != "es" and "es-419" in voices:
            return voices["es-419"]
    if primary in LANGUAGE_VOICES:
        return LANGUAGE_VOICES[primary]
    return voices.get(primary)


def _set_voice(lib: ctypes.CDLL, voice: str, rate: int, pitch: int, pitch_range: int, volume: int) -> None:
    """Select `voice` ("en-us+f3": accent + variant) and the prosody parameters.

    eSpeak silently ignores an unknown variant, so the variant is checked against the data folder.
    """
    _, _, variant = voice.partition("+")
    if variant and variant not in variant_names():
        raise UserError(f"eSpeak NG has no voice variant {variant!r} (in {voice!r})")
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise UserError(f"eSpeak NG has no voice {voice!r}")
    settings = ((PARAM_RATE, rate, "rate"), (PARAM_VOLUME, volume, "volume"),
                (PARAM_PITCH, pitch, "pitch"), (PARAM_RANGE, pitch_range, "pitch_range"))
    for key, value, name in settings:
        if lib.espeak_SetParameter(key, int(value), 0) != 0:
            raise UserError(f"eSpeak NG rejected {name}={value}")


def speak(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int = 50,
          volume: int = 100, seed: int = 0) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Synthesise `text`; returns (samples, phones).

    samples: float32 in [-1, 1] at SAMPLE_RATE (22050 Hz).
    phones: (phone, start_s, end_s) covering the audio from 0 to its end without gaps (see the
    module docstring for the inventory). voice: accent and variant, e.g. "en-gb-scotland+m3".
    rate: words per minute (80-450); pitch and pitch_range: 0-100 (50 is the voice's own);
    volume: 0-200 (100 normal). seed: eSpeak's noise generator (breathy and Klatt voices).
    """
    if not text.strip():
        raise UserError("eSpeak NG: nothing to say (empty text)")
    rate = int(np.clip(rate, *RATE_LIMITS))
    pitch, pitch_range = int(np.clip(pitch, 0, 100)), int(np.clip(pitch_range, 0, 100))
    volume = int(np.clip(volume, 0, 200))
    with _lock:
        lib = _open_engine()
        try:
            _set_voice(lib, voice, rate, pitch, pitch_range, volume)
            lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
            _capture.chunks.clear()
            _capture.events.clear()
            data = text.encode("utf-8")
            status = lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            if status != 0 or lib.espeak_Synchronize() != 0:
                raise UserError(f"eSpeak NG failed to speak {text!r} (status {status})")
            pcm = np.concatenate(_capture.chunks) if _capture.chunks else np.zeros(0, np.int16)
            events = list(_capture.events)
        finally:
            _close_engine(lib)
    samples = pcm.astype(np.float32) / 32768.0
    return samples, phone_segments(events, samples, SAMPLE_RATE)


def normalise_phone(name: str) -> str:
    """An eSpeak mnemonic as a phone label: stress marks dropped, pauses as PAUSE, "" for nothing and for
    language-switch markers: text in another script switches eSpeak to that language's dictionary for the
    words and it emits markers such as ``(en)`` and ``(cmn)`` around them, which are not phones."""
    name = name.strip().strip("\x00")
    if name.startswith("_"):
        return PAUSE
    if name.startswith("(") and name.endswith(")"):
        return ""
    return name.lstrip(STRESS_MARKS)


def sound_end(samples: np.ndarray, sample_rate: int) -> float:
    """Time in seconds just after the last sample above VOICED_THRESHOLD of the peak (0 if silent)."""
    peak = float(np.max(np.abs(samples))) if len(samples) else 0.0
    if peak == 0.0:
        return 0.0
    loud = np.nonzero(np.abs(samples) > VOICED_THRESHOLD * peak)[0]
    return float(loud[-1] + 1) / sample_rate


def phone_segments(events: list[tuple[int, str]], samples: np.ndarray,
                   sample_rate: int) -> list[tuple[str, float, float]]:
    """Turn phoneme events (start ms, mnemonic) into contiguous (phone, start_s, end_s) segments.

    Each phone ends where the next event starts. The last phone ends at the end of the sound when
    no pause follows it. Silence before the first phone and after the last becomes PAUSE;
    consecutive pauses merge; empty mnemonics and zero-length pauses are dropped. Real phones are
    kept even when eSpeak gives them zero length, so the phone sequence stays complete.
    """
    duration = len(samples) / sample_rate
    starts, names = [], []
    for position_ms, name in events:
        label = normalise_phone(name)
        if label:
            starts.append(min(max(position_ms / 1000.0, starts[-1] if starts else 0.0), duration))
            names.append(label)
    if not names:
        return [(PAUSE, 0.0, duration)] if duration > 0 else []
    ends = starts[1:] + [duration]
    if names[-1] != PAUSE:
        ends[-1] = min(duration, max(starts[-1], sound_end(samples, sample_rate)))
    segments: list[tuple[str, float, float]] = []
    if starts[0] > 0:
        segments.append((PAUSE, 0.0, starts[0]))
    for name, start, end in zip(names, starts, ends):
        _append(segments, name, start, end)
    if segments[-1][2] < duration:
        _append(segments, PAUSE, segments[-1][2], duration)
    return segments


def _append(segments: list[tuple[str, float, float]], name: str, start: float, end: float) -> None:
    """Add a segment, merging a pause into a preceding pause and skipping empty pauses."""
    if name == PAUSE:
        if end <= start:
            return
        if segments and segments[-1][0] == PAUSE:
            segments[-1] = (PAUSE, segments[-1][1], end)
            return
    segments.append((name, start, end))


PHONEME_SEPARATOR_MODE = ord(" ") << 8
"""`espeak_TextToPhonemes` phoneme mode: eSpeak mnemonics (bit 1 clear: not IPA), one space between
phonemes (the separator goes in bits 8-23) and two between words."""


def phonemize(text: str, voice: str = "en-us") -> list[str]:
    """eSpeak NG's phone sequence for `text`, in the corpus's inventory style (see the module docstring):
    ASCII mnemonics with stress marks removed, e.g. "Don't stop!" -> ["d", "oU", "n", "t", "s", "t2",
    "0", "p"] for en-us.

    Uses `espeak_TextToPhonemes` (no synthesis, about as fast as reading the text). Its phonemes are the
    ones synthesis reports as phoneme events, except that it gives no pauses: the result holds no PAUSE
    and no word boundaries; and in tone languages (cmn, yue) it fuses the tone to the vowel (`o214`)
    where synthesis reports the bare vowel (`o`). Returns [] for text without speakable words. For the
    voice of a language code, see `voice_for_language`.
    """
    if not text.strip():
        return []
    phones: list[str] = []
    with _lock:
        lib = _open_engine()
        try:
            _set_voice(lib, voice, 175, 50, 50, 100)
            lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
            lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
            buffer = ctypes.create_string_buffer(text.encode("utf-8"))  # kept alive while eSpeak reads it
            position = ctypes.c_void_p(ctypes.addressof(buffer))
            while position.value:  # one clause per call; eSpeak sets the pointer to NULL at the end
                clause = lib.espeak_TextToPhonemes(ctypes.byref(position), CHARS_UTF8, PHONEME_SEPARATOR_MODE)
                for name in (clause or b"").decode("ascii", errors="replace").split():
                    label = normalise_phone(name)
                    if label and label != PAUSE:
                        phones.append(label)
        finally:
            _close_engine(lib)
    return phones
