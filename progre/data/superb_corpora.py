"""Readers of the corpora SUPERB evaluates on, in the layouts their publishers distribute, so that
`progre shard` reads them as they are unpacked (`corpus.detect_format` recognises each;
`shard.input_format` names it). The splits and labels are those of s3prl's downstream recipes:

- **VoxCeleb1** (SID; ``voxceleb1``): ``wav/idNNNNN/VIDEO/NNNNN.wav`` (the dev and test archives
  extracted into one folder, or into ``dev/wav/`` and ``test/wav/`` as s3prl's instructions do) and the
  identification split ``iden_split.txt`` (lines ``1 id10001/1zcIwhmdeo4/00001.wav``: 1 train, 2 dev
  -> valid, 3 test), in the corpus folder or given with ``--metadata``. Speaker: ``idNNNNN``.
- **IEMOCAP** (ER; ``iemocap``): ``SessionN/sentences/wav/DIALOG/UTTERANCE.wav`` and the labels of
  ``SessionN/dialog/EmoEvaluation/*.txt`` (lines ``[START - END]<TAB>UTTERANCE<TAB>EMOTION<TAB>[V, A, D]``).
  SUPERB's four classes go to ``style``: neu, hap (with exc merged in), ang, sad; utterances of the
  other emotions are rejects. ``fold`` is the session number (ER's cross-validation over the five
  sessions); ``split`` is s3prl's default fold (``test_fold: fold1``): Session1 is test, and of the
  other sessions' utterances, sorted by key, every fifth of each session is valid (s3prl holds out a
  random fifth of the training sessions), the rest train. Speaker: the session and the gender letter
  of the utterance's last field (``Ses01F_impro01_M013`` -> ``Ses01M``: each session has one actress
  and one actor; the dialog's own letter says who wore the motion-capture markers).
- **VoiceBank-DEMAND** (SE; ``voicebank`` for the clean side, ``voicebank_noisy`` for the noisy one):
  ``clean_trainset_28spk_wav/``, ``noisy_trainset_28spk_wav/``, ``clean_testset_wav/``,
  ``noisy_testset_wav/`` (or the same names with ``_16k``, the resampled copies s3prl's
  ``enhancement_stft`` recipe reads). Both sides give the same keys (the file names), splits and
  speakers, so that `evaluate.se_noisy` pairs them: trainset -> train, except speakers p226 and p287
  -> valid (s3prl's Voicebank ``data_prepare.py``), testset -> test. A file without its twin on the
  other side is a reject on both sides. The noisy side's utterances have ``noise`` set.
- **VCC2020 task 1** (VC; ``vcc2020``): the database's archives unzipped in one folder (each into its
  own folder works too): ``source/SEF1/E10001.wav`` (training, source speakers SEF1 SEF2 SEM1 SEM2),
  ``target_task1/TEF1/E10051.wav`` (training, target speakers TEF1 TEF2 TEM1 TEM2),
  ``vcc2020_database_evaluation/SEF1/E30001.wav`` (the source speakers' evaluation sentences),
  ``vcc2020_database_groundtruth/TEF1/E30001.wav`` (the targets' readings of them) and
  ``vcc2020_database_transcriptions/`` (``NNNNN text`` lines). Text from the transcripts (training:
  the English file), so that VC matches conversions to the target's reading by text; evaluation and
  ground truth -> test, E10061-E10070 -> valid (s3prl's ``E_dev_list.txt``), the rest of the training
  utterances -> train; ``vc_role`` is source or target. Task 2's cross-lingual targets are not read.

Every reader returns (items, rejects) as `corpus.read_corpus` expects: a listed file that is missing,
audio that no label or split line names, or a label outside the task's classes is a reject with its
reason; a missing split, label or transcript file, a missing part of the layout or an unparsable line
is a one-line UserError naming the file (and line). Hidden files (``._*`` copies of archives packed
on macOS) are never read. Nothing here decodes audio.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import UserError
from ..io import read_utf8
from .corpus import CorpusItem, Reject, sanitize_key

Items = tuple[list[CorpusItem], list[Reject]]


def _visible(paths) -> list[Path]:
    """Files among `paths`, sorted, without hidden ones (``._name`` resource forks, ``.DS_Store``)."""
    return sorted(p for p in paths if not p.name.startswith(".") and p.is_file())


def _lines(path: Path) -> list[str]:
    return read_utf8(path).splitlines()


# --------------------------------------------------------------------------- VoxCeleb1

VOXCELEB1_SPLIT_FILE = "iden_split.txt"
VOXCELEB1_SPLITS = {"1": "train", "2": "valid", "3": "test"}


def _voxceleb1_wav_folders(root: Path) -> list[Path]:
    return [p for p in [root / "wav", *sorted(root.glob("*/wav"))] if p.is_dir()]


def is_voxceleb1(root: Path) -> bool:
    """A wav/ folder (or dev/wav, test/wav) of idNNNNN speaker folders."""
    return any(next(folder.glob("id[0-9][0-9][0-9][0-9][0-9]"), None) is not None
               for folder in _voxceleb1_wav_folders(root))


def read_voxceleb1(root: Path, split_file: Path | None = None) -> Items:
    split_file = Path(split_file) if split_file is not None else root / VOXCELEB1_SPLIT_FILE
    if not split_file.is_file():
        raise UserError(f"{split_file} does not exist: VoxCeleb1 needs its identification split "
                        f"({VOXCELEB1_SPLIT_FILE}) in the corpus folder, or given with --metadata")
    folders = _voxceleb1_wav_folders(root)
    if not folders:
        raise UserError(f"{root}: no wav/ folder (VoxCeleb1: wav/idNNNNN/VIDEO/NNNNN.wav, or dev/wav and test/wav)")
    found: dict[str, Path] = {}
    for folder in folders:
        for path in _visible(folder.rglob("*.wav")):
            found.setdefault(path.relative_to(folder).as_posix(), path)
    items, rejects, listed = [], [], set()
    for number, line in enumerate(_lines(split_file), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[0] not in VOXCELEB1_SPLITS or len(PurePosixPath(fields[1]).parts) != 3:
            raise UserError(f"{split_file}, line {number}: {line.strip()!r} is not 'SPLIT idNNNNN/VIDEO/NNNNN.wav' "
                            f"with SPLIT 1 (train), 2 (dev) or 3 (test)")
        relative = PurePosixPath(fields[1])
        key = sanitize_key(str(relative.with_suffix("")))
        listed.add(str(relative))
        path = found.get(str(relative))
        if path is None:
            rejects.append(Reject(str(folders[0] / relative), "audio file missing", key))
            continue
        items.append(CorpusItem(key, path, {"speaker": relative.parts[0], "split": VOXCELEB1_SPLITS[fields[0]]}))
    rejects += [Reject(str(path), f"not in {split_file.name}", sanitize_key(str(PurePosixPath(rel).with_suffix(""))))
                for rel, path in found.items() if rel not in listed]
    return items, rejects


# --------------------------------------------------------------------------- IEMOCAP

IEMOCAP_EMOTIONS = ("neu", "hap", "exc", "ang", "sad", "fru", "sur", "fea", "dis", "oth", "xxx")
"""Every category label of IEMOCAP's EmoEvaluation files (xxx: the annotators did not agree)."""
SUPERB_EMOTIONS = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
"""IEMOCAP label -> SUPERB's ER class (s3prl's ``IEMOCAP_preprocess.py`` merges excited into happy)."""
IEMOCAP_TEST_SESSION = 1  # s3prl's default test_fold: fold1
IEMOCAP_VALID_EVERY = 5  # every fifth utterance of a training session, by key: s3prl's valid_ratio 0.2
_IEMOCAP_LINE = re.compile(r"\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)")
_IEMOCAP_UTTERANCE = re.compile(r"Ses(\d\d)[FM]_\S*_([FM])\d+")
_IEMOCAP_SESSION = re.compile(r"Session(\d+)")


def is_iemocap(root: Path) -> bool:
    return any(p.is_dir() for p in root.glob("Session*/dialog/EmoEvaluation"))


def read_iemocap(root: Path) -> Items:
    sessions = [(int(m.group(1)), p) for p in sorted(root.iterdir())
                if p.is_dir() and (m := _IEMOCAP_SESSION.fullmatch(p.name))]
    if not sessions:
        raise UserError(f"{root}: no Session1 ... Session5 folders (IEMOCAP: SessionN/sentences/wav/ and "
                        f"SessionN/dialog/EmoEvaluation/)")
    items: list[CorpusItem] = []
    rejects: list[Reject] = []
    for session, folder in sessions:
        labels, wav_root = folder / "dialog" / "EmoEvaluation", folder / "sentences" / "wav"
        for needed in (labels, wav_root):
            if not needed.is_dir():
                raise UserError(f"{needed} does not exist (IEMOCAP: SessionN/sentences/wav/ and "
                                f"SessionN/dialog/EmoEvaluation/)")
        wavs = {p.stem: p for p in _visible(wav_root.rglob("*.wav"))}
        labelled: set[str] = set()
        session_items = []
        for label_file in _visible(labels.glob("*.txt")):
            for number, line in enumerate(_lines(label_file), start=1):
                if not line.startswith("["):  # headers, blank lines, the annotators' own lines
                    continue
                match = _IEMOCAP_LINE.match(line)
                if match is None:
                    raise UserError(f"{label_file}, line {number}: {line.strip()!r} is not "
                                    f"'[START - END]<TAB>UTTERANCE<TAB>EMOTION<TAB>[V, A, D]'")
                utterance, emotion = match.groups()
                labelled.add(utterance)
                key = sanitize_key(utterance)
                path = wavs.get(utterance)
                if path is None:
                    rejects.append(Reject(f"{label_file}:{number}", "audio file missing", key))
                elif emotion not in IEMOCAP_EMOTIONS:
                    rejects.append(Reject(str(path), f"unknown emotion ({emotion!r} at {label_file}:{number})", key))
                elif emotion not in SUPERB_EMOTIONS:
                    rejects.append(Reject(str(path), f"emotion outside SUPERB's four classes ({emotion})", key))
                elif (speaker := _IEMOCAP_UTTERANCE.fullmatch(utterance)) is None:
                    rejects.append(Reject(str(path), f"utterance id not SesNN[FM]_..._[FM]NNN ({utterance})", key))
                else:
                    session_items.append(CorpusItem(key, path, {
                        "speaker": f"Ses{speaker.group(1)}{speaker.group(2)}", "style": SUPERB_EMOTIONS[emotion],
                        "fold": session}))
        rejects += [Reject(str(path), "no line in dialog/EmoEvaluation", sanitize_key(stem))
                    for stem, path in wavs.items() if stem not in labelled]
        for i, item in enumerate(sorted(session_items, key=lambda it: it.key)):
            item.meta["split"] = ("test" if session == IEMOCAP_TEST_SESSION else
                                  "valid" if i % IEMOCAP_VALID_EVERY == IEMOCAP_VALID_EVERY - 1 else "train")
        items += session_items
    return items, rejects


# --------------------------------------------------------------------------- VoiceBank-DEMAND

VOICEBANK_SETS = (("trainset_28spk", "train"), ("testset", "test"))
VOICEBANK_VALID_SPEAKERS = ("p226", "p287")  # s3prl's enhancement_stft Voicebank data_prepare.py
VOICEBANK_NOISE = "demand"
_VOICEBANK_FOLDERS = "clean_trainset_28spk_wav, noisy_trainset_28spk_wav, clean_testset_wav, noisy_testset_wav"


def _voicebank_folder(root: Path, side: str, name: str) -> Path | None:
    """``{side}_{name}_wav`` as published, or ``..._wav_16k`` as s3prl's recipe resamples it; not both."""
    found = [root / f"{side}_{name}_wav{tail}" for tail in ("", "_16k") if (root / f"{side}_{name}_wav{tail}").is_dir()]
    if len(found) > 1:
        raise UserError(f"{root}: both {found[0].name} and {found[1].name}; keep one of them")
    return found[0] if found else None


def is_voicebank(root: Path) -> bool:
    return any((root / f"clean_{name}_wav{tail}").is_dir() for name, _ in VOICEBANK_SETS for tail in ("", "_16k"))


def read_voicebank(root: Path, side: str) -> Items:
    """The clean (`side` "clean") or noisy ("noisy") recordings, with the same keys either way."""
    other = {"clean": "noisy", "noisy": "clean"}[side]
    items, rejects = [], []
    for name, split in VOICEBANK_SETS:
        folders = {s: _voicebank_folder(root, s, name) for s in ("clean", "noisy")}
        for s, folder in folders.items():
            if folder is None:
                raise UserError(f"{root}: no {s}_{name}_wav folder (VoiceBank-DEMAND: {_VOICEBANK_FOLDERS})")
        files = {s: {p.stem: p for p in _visible(folder.glob("*.wav"))} for s, folder in folders.items()}  # type: ignore[union-attr]
        for stem in sorted(files[side].keys() | files[other].keys()):
            key = sanitize_key(stem)
            mine, twin = files[side].get(stem), files[other].get(stem)
            if mine is None:
                rejects.append(Reject(str(folders[side] / f"{stem}.wav"), f"audio file missing (its {other} twin "  # type: ignore[operator]
                                                                          f"{twin} exists)", key))
                continue
            if twin is None:
                rejects.append(Reject(str(mine), f"no {other} twin ({folders[other] / f'{stem}.wav'} missing)", key))  # type: ignore[operator]
                continue
            speaker = stem.split("_")[0]
            meta: dict[str, Any] = {"speaker": speaker,
                                    "split": "valid" if split == "train" and speaker in VOICEBANK_VALID_SPEAKERS else split}
            if side == "noisy":
                meta["noise"] = VOICEBANK_NOISE
            items.append(CorpusItem(key, mine, meta))
    return items, rejects


# --------------------------------------------------------------------------- VCC2020 task 1

VCC2020_SOURCES = ("SEF1", "SEF2", "SEM1", "SEM2")
VCC2020_TARGETS = ("TEF1", "TEF2", "TEM1", "TEM2")
VCC2020_PARTS = (  # folder as published, its speakers, whether it holds the evaluation sentences
    ("source", VCC2020_SOURCES, False),
    ("target_task1", VCC2020_TARGETS, False),
    ("vcc2020_database_evaluation", VCC2020_SOURCES, True),
    ("vcc2020_database_groundtruth", VCC2020_TARGETS, True),
)
VCC2020_TRANSCRIPTS = (
    "vcc2020_database_transcriptions/transcriptions_training/vcc2020_database_training_Eng_transcriptions.txt",
    "vcc2020_database_transcriptions/transcriptions_evaluation/vcc2020_database_evaluation_transcriptions.txt",
)
VCC2020_VALID = range(10061, 10071)  # s3prl's a2o-vc-vcc2020 data/lists/E_dev_list.txt
_VCC2020_LINE = re.compile(r"E?(\d{5})\s+(\S.*)")
_VCC2020_UTTERANCE = re.compile(r"E(\d{5})")


def _vcc2020_part(root: Path, relative: str, holding: str | None = None) -> Path | None:
    """`relative` in the corpus folder, or in a folder of its own there (an archive unzipped into a
    folder named after it): the first that holds `holding` (a speaker folder), else the first found."""
    found = [p for p in [root / relative, *sorted(root.glob(f"*/{relative}"))] if p.exists()]
    return next((p for p in found if holding is None or (p / holding).exists()), found[0] if found else None)


def is_vcc2020(root: Path) -> bool:
    return _vcc2020_part(root, VCC2020_TRANSCRIPTS[0]) is not None


def read_vcc2020(root: Path) -> Items:
    texts: dict[str, str] = {}
    for relative in VCC2020_TRANSCRIPTS:
        transcript = _vcc2020_part(root, relative)
        if transcript is None:
            raise UserError(f"{root / relative} does not exist (VCC2020: unzip vcc2020_database_transcriptions.zip "
                            f"in {root})")
        for number, line in enumerate(_lines(transcript), start=1):
            if not line.strip():
                continue
            match = _VCC2020_LINE.fullmatch(line.strip())
            if match is None:
                raise UserError(f"{transcript}, line {number}: {line.strip()!r} is not 'NNNNN sentence'")
            texts.setdefault(match.group(1), match.group(2).strip())
    items, rejects = [], []
    for name, speakers, evaluation in VCC2020_PARTS:
        part = _vcc2020_part(root, name, holding=speakers[0])
        if part is None:
            raise UserError(f"{root / name} does not exist (VCC2020 task 1: source/, target_task1/, "
                            f"vcc2020_database_evaluation/, vcc2020_database_groundtruth/, "
                            f"vcc2020_database_transcriptions/)")
        for speaker in speakers:
            if not (part / speaker).is_dir():
                raise UserError(f"{part / speaker} does not exist (a speaker of VCC2020 task 1)")
            for path in _visible((part / speaker).glob("*.wav")):
                key = sanitize_key(f"{speaker}_{path.stem}")
                match = _VCC2020_UTTERANCE.fullmatch(path.stem)
                if match is None:
                    rejects.append(Reject(str(path), "not a VCC2020 English sentence id (E and 5 digits)", key))
                    continue
                meta: dict[str, Any] = {
                    "speaker": speaker, "vc_role": "source" if speaker in VCC2020_SOURCES else "target",
                    "split": "test" if evaluation else "valid" if int(match.group(1)) in VCC2020_VALID else "train"}
                if texts.get(match.group(1)):
                    meta["text"] = texts[match.group(1)]
                items.append(CorpusItem(key, path, meta))
    return items, rejects


# --------------------------------------------------------------------------- all of them

DETECTORS = (("voxceleb1", is_voxceleb1), ("iemocap", is_iemocap), ("voicebank", is_voicebank),
             ("vcc2020", is_vcc2020))
"""Layout name -> whether a folder looks like it, in the order `corpus.detect_format` asks."""
FORMATS = ("voxceleb1", "iemocap", "voicebank", "voicebank_noisy", "vcc2020")


def read_superb_corpus(root: Path, fmt: str, split_file: Path | None = None) -> Items:
    """Items and rejects of one of `FORMATS` (`split_file`: VoxCeleb1's, when not in `root`)."""
    if not root.is_dir():
        raise UserError(f"{root}: the {fmt} layout is a folder")
    if fmt == "voxceleb1":
        return read_voxceleb1(root, split_file)
    if fmt == "iemocap":
        return read_iemocap(root)
    if fmt in ("voicebank", "voicebank_noisy"):
        return read_voicebank(root, "noisy" if fmt == "voicebank_noisy" else "clean")
    if fmt == "vcc2020":
        return read_vcc2020(root)
    raise ValueError(f"not a SUPERB corpus layout: {fmt}")
