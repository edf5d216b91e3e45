"""The built-in demo corpus: labelled multi-speaker English speech synthesised with eSpeak NG.

`synthesize_corpus(settings, out)` writes

- ``out/audio/<key>.flac``: 16 kHz mono, 16-bit FLAC; keys like ``spk03_train_0007``;
- ``out/metadata.parquet``: one row per utterance (see METADATA_SCHEMA): path (relative to
  out), key, speaker, split, style, text, phones with start/end times in seconds of the 16 kHz
  audio, and voice, noise, snr_db (null when clean), duration;
- ``out/summary.json``: counts and minutes per split, the speakers with their voice settings,
  styles and the phone inventory.

Speakers are eSpeak voice variants (alternating male and female) with an accent, a base
pitch, a pitch range and a speaking rate, all drawn from the seed. Styles (an emotion stand-in)
shift the speaker's pitch level, pitch range, rate and volume (eSpeak) and change the voice
quality: formant shift, spectral tilt and breathiness, applied by WORLD resynthesis of every
utterance (see voice_quality.py; `synth.voice_quality: false` keeps eSpeak's output as is).
Without voice quality, pitch level and range were the styles' main cues, and the ProgRE input
removes both by design (GroupNorm after the first convolution removes level, the pitch branch
sees log F0 z-normalised per utterance). A fraction of the utterances gets
white, pink or brown noise (noise.py) at an SNR drawn from a range. Every speaker appears in every split;
train and valid utterances each have their own sentence, and every speaker reads the same test
sentences (`parallel_test`, for voice conversion), so test and valid sentences are unseen in training.
The same seed gives byte-identical files.

Speed: eSpeak speaks about 500x faster than real time; the WORLD analysis and resynthesis runs
at about 16x real time per core, so utterances are rendered in `synth.workers` processes (the
demo corpus, 30 minutes, in about a minute on two cores). Each utterance depends only on its own
plan, so the output is the same for any number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import torch
import torchaudio.functional as AF

from ..frames import SAMPLE_RATE
from ..errors import UserError
from ..log import logger, track
from ..parallel import ordered_map
from ..settings import setting
from . import espeak
from .corpus import SPLITS
from .demo_sentences import sentence_pools
from .noise import NOISE_COLOURS, add_noise
from .voice_quality import VoiceQuality, apply_voice_quality

# eSpeak variants that sound clearly different and stay voiced, by gender (not "whisper", nor
# "klatt"/"klatt2", in which DIO finds F0 in under 10% of frames). Speakers alternate between the
# two lists; those missing from the data folder are skipped.
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "croak", "klatt3", "klatt4", "klatt5", "klatt6",
                 "david", "paul", "travis", "Andy", "Lee", "Mike", "rob", "quincy", "michel")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "linda", "steph", "belinda", "aunty", "Annie", "grandma",
                   "Andrea", "shelby", "Alicia", "anika")
ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc")

# speaker prosody, in eSpeak's units (pitch and range 0-100 with 50 the variant's own; words per minute)
PITCH_RANGE_OF_SPEAKERS = (30, 70)
RANGE_RANGE_OF_SPEAKERS = (35, 75)
RATE_RANGE_OF_SPEAKERS = (145, 195)

RESAMPLE_BUCKET = espeak.SAMPLE_RATE // 4
"""Inputs are padded to a multiple of 0.25 s before resampling (see `resample_to_16k`)."""

RESYNTHESIS_GAIN = np.float32(0.5)
"""WORLD's resynthesis keeps the RMS but has higher peaks than eSpeak's output (up to 2x full scale
for loud styles); every resynthesised utterance is scaled alike, so the loud styles are not
peak-limited and the volume cue survives."""

PEAK_LIMIT = 0.99
"""Utterances louder than this after adding noise are scaled down (never clipped)."""


@dataclass(frozen=True)
class Style:
    """How a speaking style changes a speaker's prosody (eSpeak) and voice quality (WORLD)."""

    pitch_shift: int  # added to the speaker's pitch (eSpeak units, 0-100)
    range_scale: float  # multiplies the speaker's pitch range
    rate_scale: float  # multiplies the speaker's rate
    volume: int  # eSpeak volume, 100 = normal
    voice: VoiceQuality  # formant shift, spectral tilt, breathiness


# Directions follow the phonetics of emotional speech (smiling raises formants; anger is pressed,
# high-effort voice with a flat spectrum; sadness is soft, lax and breathy); sizes are moderate:
# formants move by 3-6%, the slope by 1-4 dB per octave.
STYLES = {
    "neutral": Style(0, 1.0, 1.0, 100, VoiceQuality()),
    "happy": Style(12, 1.6, 1.08, 120, VoiceQuality(formant_scale=1.06, tilt_db_per_octave=1.0)),
    "sad": Style(-12, 0.45, 0.8, 70, VoiceQuality(formant_scale=0.96, tilt_db_per_octave=-3.0, breathiness=0.25)),
    "angry": Style(5, 1.35, 1.15, 150, VoiceQuality(formant_scale=1.03, tilt_db_per_octave=4.0)),
    "calm": Style(-5, 0.7, 0.9, 85, VoiceQuality(formant_scale=0.99, tilt_db_per_octave=-1.5, breathiness=0.1)),
    "fearful": Style(18, 0.8, 1.22, 90, VoiceQuality(formant_scale=1.04, tilt_db_per_octave=-1.0, breathiness=0.2)),
}


PRESETS: dict[str, dict[str, int]] = {
    # speakers x (train + valid + test) utterances; tiny stays under a minute of audio
    "tiny": {"n_speakers": 4, "train_per_speaker": 2, "valid_per_speaker": 1, "test_per_speaker": 1},
    "demo": {"n_speakers": 24, "train_per_speaker": 16, "valid_per_speaker": 6, "test_per_speaker": 6},
}
"""Corpus sizes by name (`SynthSettings.preset`); explicit counts override them."""


@dataclass(frozen=True)
class SynthSettings:
    """The corpus to synthesise (the `synth` params section)."""

    preset: str = setting("demo", "corpus size preset; explicit counts below override it", choices=tuple(PRESETS))
    n_speakers: int | None = setting(None, "number of synthetic speakers (null: from preset)", min=1, max=200)
    train_per_speaker: int | None = setting(None, "training utterances per speaker (null: from preset)", min=1)
    valid_per_speaker: int | None = setting(None, "validation utterances per speaker (null: from preset)", min=1)
    test_per_speaker: int | None = setting(None, "test utterances per speaker (null: from preset)", min=1)
    styles: tuple[str, ...] = setting(("neutral", "happy", "sad", "angry"), "speaking styles (emotion stand-in)",
                                      choices=tuple(STYLES))
    snr_db_min: float = setting(15.0, "lowest SNR of the added noise in dB")
    snr_db_max: float = setting(30.0, "highest SNR of the added noise in dB")
    noise_fraction: float = setting(0.5, "fraction of utterances that get additive noise", min=0.0, max=1.0)
    voice_quality: bool = setting(True, "resynthesise every utterance with WORLD, applying its style's voice "
                                        "quality (formant shift, spectral tilt, breathiness); false: eSpeak prosody "
                                        "only")
    parallel_test: bool = setting(True, "every speaker reads the same test sentences (voice conversion is scored "
                                        "against the target speaker's rendering); false: one sentence per utterance")
    workers: int = setting(2, "worker processes (the output does not depend on it)", min=1)
    seed: int = setting(1234, "random seed: same seed, same corpus")

    def __post_init__(self) -> None:
        if self.snr_db_min > self.snr_db_max:
            raise UserError(f"snr_db_min ({self.snr_db_min}) is above snr_db_max ({self.snr_db_max})")
        if not self.styles:
            raise UserError("styles: give at least one style")
        unknown = [s for s in self.styles if s not in STYLES]
        if unknown:
            raise UserError(f"styles: unknown style {unknown[0]!r}; known: {', '.join(STYLES)}")

    def counts(self) -> dict[str, int]:
        """Speakers and utterances per speaker of each split: the preset's, where not given."""
        counts = dict(PRESETS[self.preset])
        for key in counts:
            if getattr(self, key) is not None:
                counts[key] = getattr(self, key)
        return counts



@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an eSpeak voice plus its own prosody."""

    id: str
    variant: str
    gender: str
    accent: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def voice(self) -> str:
        """The eSpeak voice name, accent + variant, e.g. "en-gb-scotland+m3"."""
        return f"{self.accent}+{self.variant}"


@dataclass(frozen=True)
class UtterancePlan:
    """Everything needed to render one utterance, fixed before any audio is made."""

    key: str
    speaker: Speaker
    split: str
    style: str
    text: str
    noise: str | None  # noise colour, None when clean
    snr_db: float | None
    seed: int  # seeds eSpeak's noise and the added noise


# --------------------------------------------------------------------------- planning


def make_speakers(n: int, seed: int) -> list[Speaker]:
    """`n` speakers drawn from the seed.

    Genders alternate; each gender's variants come in a seeded order and repeat (with other
    accents and prosody) once used up; consecutive pairs (one male, one female) share an accent.
    """
    available = set(espeak.variant_names())
    males = [v for v in MALE_VARIANTS if v in available]
    females = [v for v in FEMALE_VARIANTS if v in available]
    if not males or not females:
        raise UserError("eSpeak NG data has too few voice variants (voices/!v) for the demo corpus")
    rng = np.random.default_rng([seed, 1])
    males = [males[i] for i in rng.permutation(len(males))]
    females = [females[i] for i in rng.permutation(len(females))]
    accents = [ACCENTS[i] for i in rng.permutation(len(ACCENTS))]
    first_female = bool(rng.integers(2))
    width = max(2, len(str(n - 1)))
    speakers = []
    for i in range(n):
        female = (i % 2 == 1) != first_female
        pool = females if female else males
        speakers.append(Speaker(
            id=f"spk{i:0{width}d}",
            variant=pool[(i // 2) % len(pool)],
            gender="female" if female else "male",
            accent=accents[(i // 2) % len(accents)],
            pitch=int(rng.integers(PITCH_RANGE_OF_SPEAKERS[0], PITCH_RANGE_OF_SPEAKERS[1] + 1)),
            pitch_range=int(rng.integers(RANGE_RANGE_OF_SPEAKERS[0], RANGE_RANGE_OF_SPEAKERS[1] + 1)),
            rate=int(rng.integers(RATE_RANGE_OF_SPEAKERS[0], RATE_RANGE_OF_SPEAKERS[1] + 1)),
        ))
    return speakers


def _noise_plan(n: int, settings: SynthSettings, split_index: int) -> list[tuple[str | None, float | None]]:
    """(colour, SNR) for each of `n` utterances of a split; round(noise_fraction * n) are noisy."""
    rng = np.random.default_rng([settings.seed, 2, split_index])
    noisy = set(rng.permutation(n)[: int(round(settings.noise_fraction * n))].tolist())
    plan: list[tuple[str | None, float | None]] = []
    for i in range(n):
        colour = NOISE_COLOURS[int(rng.integers(len(NOISE_COLOURS)))]
        snr = round(float(rng.uniform(settings.snr_db_min, settings.snr_db_max)), 2)
        plan.append((colour, snr) if i in noisy else (None, None))
    return plan


def plan_corpus(settings: SynthSettings) -> tuple[list[Speaker], list[UtterancePlan]]:
    """The speakers and every utterance (text, style, noise), in output order: split, speaker, index."""
    counts = settings.counts()
    speakers = make_speakers(counts["n_speakers"], settings.seed)
    per_speaker = {split: counts[f"{split}_per_speaker"] for split in SPLITS}
    shared = {"test"} if settings.parallel_test else set()  # every speaker reads the same test sentences
    pools = sentence_pools(settings.seed, {split: n if split in shared else n * len(speakers)
                                           for split, n in per_speaker.items()})
    utterances = []
    for split_index, split in enumerate(SPLITS):
        n = per_speaker[split]
        noise = _noise_plan(n * len(speakers), settings, split_index)
        for s, speaker in enumerate(speakers):
            for j in range(n):
                k = s * n + j
                colour, snr = noise[k]
                utterances.append(UtterancePlan(
                    key=f"{speaker.id}_{split}_{j:04d}",
                    speaker=speaker,
                    split=split,
                    style=settings.styles[(s + j) % len(settings.styles)],
                    text=pools[split][j if split in shared else k],
                    noise=colour,
                    snr_db=snr,
                    seed=int(np.random.SeedSequence([settings.seed, 3, split_index, s, j]).generate_state(1)[0]),
                ))
    return speakers, utterances


# --------------------------------------------------------------------------- rendering


def style_prosody(speaker: Speaker, style: str) -> dict[str, int]:
    """eSpeak parameters (rate, pitch, pitch_range, volume) of `speaker` speaking in `style`."""
    if style not in STYLES:
        raise UserError(f"unknown speaking style {style!r}; known: {', '.join(STYLES)}")
    st = STYLES[style]
    return {
        "rate": int(round(speaker.rate * st.rate_scale)),
        "pitch": int(np.clip(speaker.pitch + st.pitch_shift, 0, 100)),
        "pitch_range": int(np.clip(round(speaker.pitch_range * st.range_scale), 0, 100)),
        "volume": st.volume,
    }


def resample_to_16k(samples: np.ndarray) -> np.ndarray:
    """eSpeak's 22050 Hz samples at 16 kHz (torchaudio's windowed-sinc resampler).

    The input is zero-padded to a multiple of RESAMPLE_BUCKET before resampling and the output is
    cut to ceil(n * 16000 / 22050) samples. The result is that of the unpadded input (the
    resampler pads with zeros anyway), but oneDNN, which caches one convolution per input length,
    sees few distinct lengths, so memory stays flat over thousands of utterances.
    """
    n = len(samples)
    n_out = -(-n * SAMPLE_RATE // espeak.SAMPLE_RATE)
    padded = np.zeros(-(-max(n, 1) // RESAMPLE_BUCKET) * RESAMPLE_BUCKET, dtype=np.float32)
    padded[:n] = samples
    return AF.resample(torch.from_numpy(padded), espeak.SAMPLE_RATE, SAMPLE_RATE).numpy()[:n_out]


def render(utt: UtterancePlan, voice_quality: bool = True) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """The 16 kHz float32 audio of `utt` and its phones (phone, start_s, end_s) within that audio.

    eSpeak speaks with the style's prosody; with `voice_quality` the clean speech is then
    resynthesised with the style's voice quality (before any noise is added).
    """
    samples, phones = espeak.speak(utt.text, utt.speaker.voice, seed=utt.seed,
                                   **style_prosody(utt.speaker, utt.style))
    wav = resample_to_16k(samples)
    if voice_quality:
        wav = apply_voice_quality(wav, STYLES[utt.style].voice, SAMPLE_RATE) * RESYNTHESIS_GAIN
    if utt.noise is not None:
        wav = add_noise(wav, utt.noise, utt.snr_db, np.random.default_rng([utt.seed, 4]))
    peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
    if peak > PEAK_LIMIT:
        wav = wav * np.float32(PEAK_LIMIT / peak)
    return wav.astype(np.float32), fit_phones(phones, len(wav) / SAMPLE_RATE)


def fit_phones(phones: list[tuple[str, float, float]], duration: float) -> list[tuple[str, float, float]]:
    """Clip phone times to `duration` and stretch the last phone to it (resampling rounds the length up)."""
    fitted = [(p, min(start, duration), min(end, duration)) for p, start, end in phones]
    if fitted:
        name, start, _ = fitted[-1]
        fitted[-1] = (name, start, duration)
    return fitted


# --------------------------------------------------------------------------- writing

METADATA_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("key", pa.string()),
    ("speaker", pa.string()),
    ("split", pa.string()),
    ("style", pa.string()),
    ("text", pa.string()),
    ("phones", pa.list_(pa.string())),
    ("phone_start", pa.list_(pa.float64())),
    ("phone_end", pa.list_(pa.float64())),
    ("voice", pa.string()),
    ("noise", pa.string()),
    ("snr_db", pa.float64()),
    ("duration", pa.float64()),
])


def write_utterance(utt: UtterancePlan, out: Path, voice_quality: bool = True) -> dict:
    """Render `utt`, write `out/audio/<key>.flac` and return its metadata row."""
    wav, phones = render(utt, voice_quality)
    rel = f"audio/{utt.key}.flac"
    sf.write(out / rel, wav, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return {
        "path": rel,
        "key": utt.key,
        "speaker": utt.speaker.id,
        "split": utt.split,
        "style": utt.style,
        "text": utt.text,
        "phones": [p for p, _, _ in phones],
        "phone_start": [round(s, 6) for _, s, _ in phones],
        "phone_end": [round(e, 6) for _, _, e in phones],
        "voice": utt.speaker.voice,
        "noise": utt.noise,
        "snr_db": utt.snr_db,
        "duration": len(wav) / SAMPLE_RATE,
    }


def summarise(rows: list[dict], speakers: list[Speaker], settings: SynthSettings) -> dict:
    """Counts per split, total duration, speakers, styles and phone inventory of the corpus."""
    splits = {}
    for split in SPLITS:
        in_split = [r for r in rows if r["split"] == split]
        seconds = sum(r["duration"] for r in in_split)
        splits[split] = {"utterances": len(in_split), "seconds": round(seconds, 3),
                         "minutes": round(seconds / 60, 3), "noisy": sum(r["noise"] is not None for r in in_split)}
    inventory = sorted({p for r in rows for p in r["phones"]})
    return {
        "seed": settings.seed,
        "sample_rate": SAMPLE_RATE,
        "utterances": len(rows),
        "total_seconds": round(sum(r["duration"] for r in rows), 3),
        "splits": splits,
        "speakers": [{**asdict(s), "voice": s.voice} for s in speakers],
        "styles": list(settings.styles),
        "phone_inventory": inventory,
        "phone_inventory_size": len(inventory),
        "counts": settings.counts(),
    }


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Resample with one torch thread: the signals are short, and with two threads OpenMP's
    spin-waiting made the loop several times slower whenever another process used the second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def synthesize_corpus(settings: SynthSettings, out: Path) -> dict:
    """Synthesise the corpus of `settings` into the folder `out` (audio/ and metadata.parquet); returns
    the summary."""
    out = Path(out)
    speakers, utterances = plan_corpus(settings)
    logger.info("synthesising %d utterances of %d speakers into %s", len(utterances), len(speakers), out)
    (out / "audio").mkdir(parents=True)
    with _one_torch_thread():
        render_one = partial(write_utterance, out=out, voice_quality=settings.voice_quality)
        rendered = ordered_map(render_one, utterances, settings.workers, chunksize=8)  # workers: one torch thread
        rows = list(track(rendered, "synth", total=len(utterances)))
    pq.write_table(pa.Table.from_pylist(rows, schema=METADATA_SCHEMA), out / "metadata.parquet")
    summary = summarise(rows, speakers, settings)
    logger.info("wrote %d utterances, %.1f minutes of audio, %d phones in the inventory",
                summary["utterances"], summary["total_seconds"] / 60, summary["phone_inventory_size"])
    return summary
