#!/usr/bin/env python3
"""Build a tiny spoken-language-identification model (.nemo) of AmberNet's class for offline tests.

    python scripts/build_tiny_langid.py --out DIR

DIR receives ``langid-tiny.nemo``: a NeMo ``EncDecSpeakerLabelModel``, the class of NVIDIA's AmberNet
(``nvidia/langid_ambernet``, 107 VoxLingua107 languages), restored in about a second on CPU.  Nothing is
downloaded.  As in AmberNet, the labels are ISO 639 codes stored in ``cfg.train_ds.labels``, in the order of
the logits (what NeMo's own ``get_label`` reads).

Architecture (AmberNet's, shrunk): ``AudioToMelSpectrogramPreprocessor`` (16 kHz, 64 mel bins, 25 ms window,
10 ms stride), a ``ConvASREncoder`` of four 1-D depthwise-separable Jasper blocks with squeeze-and-excitation
(64, 64, 64 and 128 channels, no subsampling), and a ``SpeakerDecoder`` with attentive statistics pooling,
a 64-dimensional embedding and one logit per label.

Labels and fit.  The model knows ``LABELS``: four languages Canary speaks (en, de, fr, es) and one it does not
(tr), so that tests can see a detected language that Canary cannot transcribe.  Random weights say one
label for every input, so the model is fitted (one thread, fixed seeds) on speech of espeak-ng (a set-up
package, as for the tests): sentences drawn from a word list of each language (``WORDS``), spoken by
several voice variants of each language, at several speeds, cut into random crops of 1.5-4 s.  The fit is
checked, not trusted: on held-out sentences (other draws from the word lists, two voice variants, as the
tests' dialogue has), the right label must beat every other by ``MARGIN`` nats (log-softmax) on each whole
utterance, so that the float differences of other CPUs cannot flip it.  It runs in rounds until the check
passes (and for at least ``MIN_FIT_STEPS``), for at most ``MAX_FIT_STEPS`` steps; a failed check exits with
code 3 and one line.  Then the saved file, restored by the Triton model's own engine, must hear each language
in a held-out two-voice dialogue.  The figures go to ``build-report.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import soundfile
import torch
from scipy.signal import resample_poly

from tiny_build_report import CheckFailed, build_report

SEED = 4321
NEMO_NAME = "langid-tiny.nemo"
SAMPLE_RATE = 16000
N_MELS = 64
LABELS = ["en", "de", "fr", "es", "tr"]
# espeak-ng voice of each label, and the variants the fit hears (the check hears "" and "+f3", as the tests).
VOICES = {"en": "en", "de": "de", "fr": "fr", "es": "es", "tr": "tr"}
FIT_VARIANTS = ["", "+f3", "+m3", "+f2"]
CHECK_VARIANTS = ["", "+f3"]
FIT_SPEEDS = [140, 165]
FIT_SENTENCES = 16
CHECK_SENTENCES = 6
WORDS_PER_SENTENCE = (6, 11)
CROP_S = (1.5, 4.0)
BATCH = 24
MARGIN = 3.0
MIN_FIT_STEPS = 150  # a first round that just passes leaves too little room for speech the check never heard
FIT_ROUND_STEPS = 50
MAX_FIT_STEPS = 1500
LR_DECAY_PER_ROUND = 0.8  # the held-out margin swings by nats from round to round at a constant rate

# Common words of each language: sentences are random draws from these (espeak-ng speaks them with the
# language's phonology, which is what the model must learn; the words themselves do not matter).
WORDS = {
    "en": "the weather is very nice today and we would like to walk through the old town with our friends before "
    "dinner because everybody thinks that this small village has beautiful houses gardens and quiet streets where "
    "children play after school while their parents work in the shops or drive home",
    "de": "das Wetter ist heute sehr schön und wir möchten mit unseren Freunden durch die Altstadt gehen bevor wir "
    "zu Abend essen weil jeder denkt dass dieses kleine Dorf wunderschöne Häuser Gärten und ruhige Straßen hat wo "
    "Kinder nach der Schule spielen während ihre Eltern in den Geschäften arbeiten oder nach Hause fahren",
    "fr": "le temps est très beau aujourd'hui et nous voudrions marcher dans la vieille ville avec nos amis avant "
    "le dîner parce que tout le monde pense que ce petit village a de belles maisons des jardins et des rues "
    "calmes où les enfants jouent après l'école pendant que leurs parents travaillent dans les magasins",
    "es": "el tiempo está muy bonito hoy y nos gustaría caminar por el casco antiguo con nuestros amigos antes de "
    "la cena porque todo el mundo piensa que este pequeño pueblo tiene casas bonitas jardines y calles tranquilas "
    "donde los niños juegan después de la escuela mientras sus padres trabajan en las tiendas",
    "tr": "bugün hava çok güzel ve akşam yemeğinden önce arkadaşlarımızla eski şehirde yürümek istiyoruz çünkü "  # noqa: RUF001
    "herkes bu küçük köyün güzel evleri bahçeleri ve sessiz sokakları olduğunu düşünüyor çocuklar okuldan sonra "  # noqa: RUF001
    "oynuyor anneleri ve babaları dükkanlarda çalışıyor ya da eve gidiyor",  # noqa: RUF001
}


def sentences(language: str, count: int, seed: int) -> list[str]:
    words = WORDS[language].split()
    rng = random.Random(f"{seed}-{language}")
    return [" ".join(rng.choices(words, k=rng.randint(*WORDS_PER_SENTENCE))) for _ in range(count)]


def speak(voice: str, text: str, speed: int = 150) -> np.ndarray:
    """espeak-ng's speech as 16 kHz mono float32, leading and trailing silence trimmed."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True).stdout
    audio: np.ndarray
    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    if rate != SAMPLE_RATE:
        divisor = np.gcd(SAMPLE_RATE, rate)
        audio = resample_poly(audio, SAMPLE_RATE // divisor, rate // divisor).astype(np.float32)
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def corpus(count: int, seed: int, variants: list[str], speeds: list[int]) -> list[tuple[int, np.ndarray]]:
    """(label index, audio) for every language, sentence, voice variant and speed."""
    items = []
    for label, language in enumerate(LABELS):
        for text in sentences(language, count, seed):
            for variant in variants:
                for speed in speeds:
                    items.append((label, speak(VOICES[language] + variant, text, speed)))
    return items


def model_config() -> dict[str, Any]:
    def block(filters: int, kernel: int, repeat: int, residual: bool) -> dict[str, Any]:
        return {
            "filters": filters,
            "repeat": repeat,
            "kernel": [kernel],
            "stride": [1],
            "dilation": [1],
            "dropout": 0.0,
            "residual": residual,
            "separable": True,
            "se": True,
            "se_context_size": -1,
        }

    return {
        "sample_rate": SAMPLE_RATE,
        # AmberNet keeps its labels here; defer_setup: there is no manifest to read them from.
        "train_ds": {"manifest_filepath": None, "sample_rate": SAMPLE_RATE, "labels": LABELS, "batch_size": BATCH, "defer_setup": True},
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "normalize": "per_feature",
            "window_size": 0.025,
            "sample_rate": SAMPLE_RATE,
            "window_stride": 0.01,
            "window": "hann",
            "features": N_MELS,
            "n_fft": 512,
            "frame_splicing": 1,
            "dither": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConvASREncoder",
            "feat_in": N_MELS,
            "activation": "relu",
            "conv_mask": True,
            "jasper": [block(64, 3, 1, False), block(64, 7, 2, True), block(64, 11, 2, True), block(128, 1, 1, False)],
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.SpeakerDecoder",
            "feat_in": 128,
            "num_classes": len(LABELS),
            "pool_mode": "attention",
            "attention_channels": 32,
            "emb_sizes": 64,
        },
        "loss": {"_target_": "nemo.collections.common.losses.cross_entropy.CrossEntropyLoss"},
    }


def log_probs(model: Any, audio: list[np.ndarray]) -> torch.Tensor:
    """Log-softmax over the labels for each clip (zero-padded into one batch, with its true lengths)."""
    lengths = torch.tensor([len(clip) for clip in audio])
    batch = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(clip) for clip in audio], batch_first=True)
    logits, _ = model.forward(input_signal=batch, input_signal_length=lengths)
    return torch.log_softmax(logits, dim=-1)


def margins(model: Any, items: list[tuple[int, np.ndarray]]) -> tuple[float, float, str]:
    """The smallest margin (right label's log-probability minus the best other's) over ``items``, one clip at
    a time as the Triton model classifies them; the accuracy; and where the smallest margin is."""
    worst, where, right = float("inf"), "", 0
    model.eval()
    with torch.no_grad():
        for index, (label, audio) in enumerate(items):
            scores = log_probs(model, [audio])[0]
            others = torch.cat([scores[:label], scores[label + 1 :]])
            margin = float(scores[label] - others.max())
            right += margin > 0
            if margin < worst:
                worst, where = margin, f"{LABELS[label]} clip {index}, heard as {LABELS[int(scores.argmax())]}"
    return worst, right / len(items), where


def _crops(items: list[tuple[int, np.ndarray]], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    length = int(rng.uniform(*CROP_S) * SAMPLE_RATE)
    labels, clips = [], []
    for index in rng.integers(len(items), size=BATCH):
        label, audio = items[int(index)]
        if len(audio) < length:
            audio = np.pad(audio, (0, length - len(audio)))
        start = int(rng.integers(len(audio) - length + 1))
        labels.append(label)
        clips.append(audio[start : start + length])
    return torch.tensor(labels), torch.from_numpy(np.stack(clips))


def recalibrate_batch_norms(model: Any, items: list[tuple[int, np.ndarray]]) -> None:
    """Running statistics from the whole training set (a cumulative average), so that eval mode sees the
    statistics of the data rather than of the last steps."""
    norms = [module for module in model.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    with torch.no_grad():
        for label_start in range(0, len(items), BATCH):
            log_probs(model, [audio for _, audio in items[label_start : label_start + BATCH]])
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def fit(model: Any) -> dict[str, Any]:
    threads = torch.get_num_threads()
    started = time.monotonic()
    train = corpus(FIT_SENTENCES, SEED, FIT_VARIANTS, FIT_SPEEDS)
    held_out = corpus(CHECK_SENTENCES, SEED + 1, CHECK_VARIANTS, [150])
    print(f"langid fit: {len(train)} training utterances, {len(held_out)} held-out", flush=True)
    rng = np.random.default_rng(SEED)
    try:
        torch.set_num_threads(1)
        torch.manual_seed(SEED)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=LR_DECAY_PER_ROUND)
        steps, loss, margin, accuracy, where = 0, torch.tensor(float("nan")), float("-inf"), 0.0, "not fitted"
        while steps < MAX_FIT_STEPS:
            model.train()
            for _ in range(FIT_ROUND_STEPS):
                labels, clips = _crops(train, rng)
                logits, _ = model.forward(input_signal=clips, input_signal_length=torch.full((len(clips),), clips.shape[1]))
                loss = torch.nn.functional.cross_entropy(logits, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            steps += FIT_ROUND_STEPS
            scheduler.step()
            recalibrate_batch_norms(model, train)
            # The check runs with the caller's thread count: only the fit is pinned to one thread.
            torch.set_num_threads(threads)
            margin, accuracy, where = margins(model, held_out)
            torch.set_num_threads(1)
            print(
                f"langid fit: {steps} steps, loss {loss.item():.4f}, held-out accuracy {accuracy:.3f}, "
                f"smallest margin {margin:.2f} ({where})",
                flush=True,
            )
            if margin >= MARGIN and steps >= MIN_FIT_STEPS:
                break
    finally:
        torch.set_num_threads(threads)
    figures = {
        "steps": steps,
        "final_loss": round(loss.item(), 6),
        "held_out_utterances": len(held_out),
        "held_out_accuracy": round(accuracy, 3),
        "margin": round(margin, 3),
        "required_margin": MARGIN,
        "fit_seconds": round(time.monotonic() - started, 1),
    }
    if margin < MARGIN:
        raise CheckFailed(
            f"tiny langid: after {steps} fitting steps the smallest held-out margin is {margin:.2f} nats ({where}); {MARGIN} is required"
        )
    return figures


def check_served(nemo_path: Path) -> dict[str, Any]:
    """Through the Triton model's own engine (passerelle_triton.langid: NeMo's restore, silero-vad windows), a
    held-out dialogue of each language (two voices, a pause between them) is heard as that language."""
    from passerelle_triton.langid import LanguageIdentifier

    engine = LanguageIdentifier(str(nemo_path))
    if engine.labels != LABELS:
        raise CheckFailed(f"tiny langid: the restored labels are {engine.labels}, expected {LABELS}")
    pause = np.zeros(SAMPLE_RATE, dtype=np.float32)
    lowest = 1.0
    for language in LABELS:
        first, second = sentences(language, 2, SEED + 2)
        dialogue = np.concatenate([pause, speak(VOICES[language], first), pause, speak(VOICES[language] + "+f3", second), pause])
        heard = engine.identify(dialogue)
        if heard.language != language or not heard.windows:
            raise CheckFailed(
                f"tiny langid: the served model hears {heard.language!r} in {len(heard.windows)} windows of {language} speech"
            )
        lowest = min(lowest, heard.probabilities[0])
    return {"served_check_lowest_probability": round(lowest, 4)}


def _pack(model: Any, nemo_path: Path) -> None:
    """NeMo's unpacked save, packed deterministically (sorted members, zeroed times and owners)."""
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    with tempfile.TemporaryDirectory(prefix="tiny-langid-") as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        connector = SaveRestoreConnector()
        connector.pack_nemo_file = False
        connector.save_to(model, str(folder / "unused.nemo"))

        def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if info.isdir() else 0o644
            return info

        tmp_path = nemo_path.with_suffix(".nemo.tmp")
        with tarfile.open(tmp_path, "w:", format=tarfile.PAX_FORMAT) as tar:
            tar.add(folder, arcname=".", recursive=False, filter=normalize)
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=f"./{path.name}", filter=normalize)
        tmp_path.replace(nemo_path)


def build(out_dir: Path) -> dict[str, Any]:
    from nemo.collections.asr.models import EncDecSpeakerLabelModel
    from nemo.utils import logging as nemo_logging
    from omegaconf import OmegaConf

    nemo_logging.setLevel(logging.ERROR)
    out_dir.mkdir(parents=True, exist_ok=True)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    model = EncDecSpeakerLabelModel(cfg=OmegaConf.create(model_config()))
    figures = fit(model)
    model.eval()
    nemo_path = out_dir / NEMO_NAME
    _pack(model, nemo_path)
    figures.update(check_served(nemo_path))
    figures["parameters"] = sum(p.numel() for p in model.parameters())
    figures["labels"] = LABELS
    figures["sha256"] = hashlib.sha256(nemo_path.read_bytes()).hexdigest()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory; receives " + NEMO_NAME)
    args = parser.parse_args(argv)
    with build_report(args.out, "langid") as report:
        report.update(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
