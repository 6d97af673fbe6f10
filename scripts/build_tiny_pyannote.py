#!/usr/bin/env python3
"""Build a tiny pyannote speaker-diarization bundle for offline tests.

    python scripts/build_tiny_pyannote.py --out DIR [--shape tiny|production --random-weights]

DIR receives the Hugging Face layout of ``pyannote/speaker-diarization-community-1``, loadable by
pyannote.audio 4 with ``Pipeline.from_pretrained(DIR)`` (or passerelle's ``DiarizationEngine``)
without any download::

    DIR/
      config.yaml                    SpeakerDiarization + VBxClustering, community-1's parameters;
                                     models referenced as $model/segmentation, $model/embedding, $model/plda
      segmentation/pytorch_model.bin PyanNet: SincNet, 1 x BiLSTM(16), 1 x Linear(16), powerset head
                                     (3 speakers, at most 2 at a time, 10 s chunks): segmentation-3.0's task
      embedding/pytorch_model.bin    pyannote's WeSpeakerResNet34 on 8 mel bins, 256-dim embeddings
      plda/xvec_transform.npz        mean1 (256,), mean2 (128,), lda (256, 128)
      plda/plda.npz                  mu (128,), tr (128, 128), psi (128,)

Checkpoints are written the way pyannote writes its own (see
``pyannote/audio/models/embedding/wespeaker/convert.py``): a ``torch.save``d dict with ``state_dict``,
``hyper_parameters`` and ``hparams_name`` (as Lightning's checkpoint connector adds them),
``pytorch-lightning_version``, and the ``pyannote.audio`` entry filled in by the model's own
``on_save_checkpoint`` (versions, architecture {module, class}, specifications).

Weights.  Everything is drawn from fixed seeds, so two builds are byte-identical for one torch
version (and one CPU code path: the embedding's fit runs on one thread).  The PLDA is random.  The
embedding model keeps its seeded random ResNet34 up to its statistics pooling; its last layer
(``seg_1``, pooled statistics to the 256-dim embedding) is fitted, see below.  A random segmentation model, though,
labels frames with no regard to the audio (with this seed mostly the overlap class {speaker#1,
speaker#3}, silence included), so two paths through it are set by hand:

* speech: SincNet's band-pass channels between 80 Hz and 4 kHz are averaged into one feature, which
  SincNet's instance norms and LeakyReLU turn into "speech-band level above this chunk's usual";
* voice: the 3.9-5.1 kHz channels minus that speech band, i.e. how bright the sound is compared with
  the rest of the chunk;
* one LSTM unit per feature and direction integrates it (about 0.25 s for speech, 0.85 s for voice),
  and the head maps a frame to powerset class {} (no speech), {speaker#1} (speech, not bright) or
  {speaker#2} (speech, bright); {speaker#3} and the overlap classes never win.

On espeak-ng's ``en`` and ``en+f3`` voices taking turns with pauses, about 94% of frames get the
right speech/non-speech class and about 97% of speech frames the same local speaker as the rest of
their voice within the 10 s chunk (the voice threshold was picked on those two voices).  The decisions
are relative to each chunk, so in a chunk holding one voice only the local label is arbitrary, and
matching local speakers across chunks is left to the fitted embeddings and the clustering.  The
other weights keep their seeded random values; nothing reads them.

Embedding.  Random weights give every voice nearly the same direction (cosine above 0.93 between
espeak-ng's ``en`` and ``en+f3``), so known speakers could not be told apart.  ``fit_embedding``
speaks FIT_UTTERANCES generated sentences (FIT_WORDS, speeds drawn in FIT_SPEEDS) in each of
FIT_VOICES: ``en`` and ``en+f3``, the tests' dialogue voices, and ``en+UniRobot``, a third voice that the
known-speaker tests use as one matching nobody (the random features hardly tell male voices apart, so
the third voice is one they do separate).  Each utterance is embedded alone (as a reference clip is)
and inside 10 s chunks where two voices take turns, weighted by that voice's frames (as the
diarization embeds a local speaker: the fbank is centred over the whole chunk).  The pooled statistics
are reduced to FIT_COMPONENTS principal components and mapped affinely so that each voice's mean goes
to a vertex of a regular simplex (cosine -0.5 between the three) with the least within-voice scatter
(covariance shrunk by FIT_SHRINK); those three coordinates are the embedding's first three
dimensions, the rest are zero.  ``check_embedding`` then embeds held-out sentences (CHECK_SENTENCES)
of each voice, alone and in chunks: every same-voice cosine must reach CHECK_SAME (0.7) and every
cross-voice cosine stay at most CHECK_CROSS (0.3), on either side of the Triton model's default
known-speaker threshold (0.5).  On the machine that wrote this, the held-out figures are: same-voice
at least 0.807, cross-voice at most -0.043 (``en`` against ``en+f3``: -0.043); float differences between
CPU code paths move them by far less than those margins.  The random PLDA and community-1's clustering
threshold are kept: with the fitted embedding the clustering finds the tests' two voices without being
told the number of speakers.  The fit takes about 15 s on one core (nearly all of it espeak-ng).

Production shape.  ``--shape production --random-weights`` writes the same layout with the real
architecture of community-1's models and seeded random weights, nothing planted, fitted or checked (for
``scripts/gpu_check``, which measures speed and memory, not speakers): segmentation-3.0's PyanNet (SincNet,
4 x BiLSTM(128), 2 x Linear(128), the same powerset head) and WeSpeaker ResNet34 on 80 mel bins, as
``pyannote/wespeaker-voxceleb-resnet34-LM``.  ``--random-weights`` alone gives the tiny shapes unplanted
and unfitted, in seconds.  Without either option the build is the tiny bundle described here, byte for byte.

Size: 23 MB (nearly all of it the ResNet34, whose width is fixed; 8 mel bins halve its compute
compared with 16); the build takes about 30 s after pyannote's import (about 10 s), the fit and the
checks' speech synthesis nearly all of it. Set
``embedding_batch_size`` low: community-1's 32 uses about 2 GB on CPU and is no faster.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

import lightning
import numpy as np
import torch
import yaml

from tiny_build_report import CheckFailed, build_report

with warnings.catch_warnings():
    # pyannote warns at import that torchcodec is missing; the bundle never decodes files.
    warnings.filterwarnings("ignore", message=r"(?s).*torchcodec")
    from pyannote.audio import Model
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34
    from pyannote.audio.models.segmentation import PyanNet

SEED = 1234
SAMPLE_RATE = 16000
SEGMENTATION_DURATION = 10.0  # seconds per chunk, as segmentation-3.0
EMBEDDING_DURATION = 5.0  # what pyannote's WeSpeaker conversion script records; unused at inference
NUM_MEL_BINS = 8  # the ResNet halves frequency three times: 8 is the least that keeps one bin
EMBEDDING_DIM = 256  # fixed by WeSpeakerResNet34
LDA_DIM = 128  # community-1's PLDA dimension (PLDA's default lda_dimension)
SPEECH_BAND_HZ = (80.0, 4000.0)
BRIGHT_BAND_HZ = (3900.0, 5100.0)  # where espeak-ng's en+f3 voice has clearly more energy than its en voice
SPEECH_INTEGRATOR = (4.0, 0.93)  # (input gain, forget gate): a time constant of about 14 frames, 0.25 s
VOICE_INTEGRATOR = (1.0, 0.98)  # about 50 frames, 0.85 s
SPEECH_HEAD = (40.0, 0.05)  # (gain, threshold) on the summed forward + backward integrators, in [-2, 2]
VOICE_HEAD = (3.0, 0.2)
LSTM_HIDDEN = 16
LINEAR_HIDDEN = 16
# segmentation-3.0's PyanNet and the WeSpeaker ResNet34 of community-1, for --shape production.
PRODUCTION_LSTM = {"hidden_size": 128, "num_layers": 4, "bidirectional": True, "monolithic": True, "dropout": 0.5}
PRODUCTION_LINEAR = {"hidden_size": 128, "num_layers": 2}
PRODUCTION_MEL_BINS = 80
POWERSET_CLASS = {"speaker#1": 1, "speaker#2": 2}

# The build's check (check_segmentation): speech it was not tuned on, and the share of frames that must be
# decided right with a margin of CHECK_MARGIN nats between the chosen powerset class and the next.
CHECK_LINES = (("en", "Good evening, the train leaves at nine."), ("en+f3", "Then we meet at the station after work."))
CHECK_GAP_S = 1.5
CHECK_EDGE_S = 0.6
CHECK_MARGIN = 1.0
CHECK_REQUIRED = {"silence": 0.95, "speaker#1 speech": 0.9, "speaker#2 speech": 0.9}

# The embedding's fit (fit_embedding): the ResNet34 keeps its seeded random weights up to its statistics pooling;
# only its last layer (seg_1) is set, from pooled features of espeak-ng voices spoken alone and within 10 s chunks.
FIT_VOICES = ("en", "en+f3", "en+UniRobot")  # the tests' two voices, and a third that known-speaker tests expect to match nobody
FIT_UTTERANCES = 30  # per voice, each embedded alone and inside FIT_CHUNKS chunks
FIT_CHUNKS = 12  # per voice: 10 s of that voice and another taking turns, as the diarization embeds them
FIT_SPEEDS = (140, 186)  # espeak-ng words per minute, drawn per utterance (the tests speak at 150, the check at 175)
FIT_COMPONENTS = 128  # principal components of the pooled features kept before the discriminant map
FIT_SHRINK = 0.01  # within-voice covariance shrinkage towards its mean variance
FIT_WORDS = (
    (
        "My neighbour",
        "The old captain",
        "A young teacher",
        "Our little dog",
        "The tired farmer",
        "Every student",
        "The night nurse",
        "His brother",
        "The baker",
        "A quiet painter",
        "The mayor",
        "Her cousin",
    ),
    ("carried", "painted", "forgot", "found", "repaired", "bought", "cleaned", "opened", "described", "borrowed", "sold", "dropped"),
    (
        "a wooden chair",
        "the blue bicycle",
        "seven yellow apples",
        "an old letter",
        "the kitchen window",
        "a heavy suitcase",
        "the silver key",
        "two paper boxes",
        "a small radio",
        "the green umbrella",
        "a warm blanket",
        "the broken clock",
    ),
    (
        "near the river",
        "before lunch",
        "in the garden",
        "after the storm",
        "at the market",
        "on a cold morning",
        "behind the library",
        "during the holidays",
        "next to the bridge",
        "late in the evening",
        "by the harbour",
        "at the station",
    ),
)
# The check (check_embedding): sentences neither the fit nor the tests use, each voice alone and in chunks; every
# same-voice cosine must reach CHECK_SAME and every cross-voice one stay under CHECK_CROSS (the Triton model's
# default known_speaker_threshold, 0.5, lies between them with a margin far above float differences between CPUs).
CHECK_SENTENCES = (
    "Fresh bread is sold every morning in the square.",
    "Nobody expected snow so early in October.",
    "The museum closes its doors at half past five.",
    "Turn left after the church and follow the canal.",
)
CHECK_SAME = 0.7
CHECK_CROSS = 0.3
CHUNK_SAMPLES = int(SEGMENTATION_DURATION * SAMPLE_RATE)

CONFIG: dict[str, Any] = {
    "dependencies": {"pyannote.audio": "4.0.0"},
    "pipeline": {
        "name": "pyannote.audio.pipelines.SpeakerDiarization",
        "params": {
            "clustering": "VBxClustering",
            "segmentation": "$model/segmentation",
            "segmentation_batch_size": 32,
            "embedding": "$model/embedding",
            "embedding_batch_size": 32,
            "embedding_exclude_overlap": True,
            "plda": "$model/plda",
        },
    },
    "params": {
        "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
        "segmentation": {"min_duration_off": 0.0},
    },
}


def checkpoint_of(model: Model) -> dict[str, Any]:
    """The dict Lightning's checkpoint connector would save for ``model`` (minus training state)."""
    checkpoint: dict[str, Any] = {
        "state_dict": model.state_dict(),
        "pytorch-lightning_version": lightning.__version__,
        "hyper_parameters": dict(model.hparams),
    }
    if hasattr(model, "_hparams_name"):
        checkpoint["hparams_name"] = model._hparams_name
    model.on_save_checkpoint(checkpoint)
    return checkpoint


def _gate_logit(probability: float) -> float:
    return math.log(probability / (1.0 - probability))


def plant_detector(model: PyanNet) -> None:
    """Overwrite two paths of ``model``: speech detection, and a "which voice" cue (see the module docstring)."""
    sincnet = model.sincnet
    filterbank = sincnet.conv1d[0].filterbank
    low = filterbank.min_low_hz + filterbank.low_hz_.detach().abs().flatten()
    high = low + filterbank.min_band_hz + filterbank.band_hz_.detach().abs().flatten()
    # SincNet's 80 output channels are the cosine filters, then the sine filters, of the same 40 bands.
    speech = torch.cat([(low >= SPEECH_BAND_HZ[0]) & (high <= SPEECH_BAND_HZ[1])] * 2)
    bright = torch.cat([(low >= BRIGHT_BAND_HZ[0]) & (high <= BRIGHT_BAND_HZ[1])] * 2)

    with torch.no_grad():
        for norm in sincnet.norm1d:
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        # Feature 0: speech-band level. Feature 1: bright-band level minus speech-band level.
        first, second = sincnet.conv1d[1], sincnet.conv1d[2]
        taps = first.kernel_size[0]
        first.weight[:2].zero_()
        first.bias[:2] = 0.0
        first.weight[0, speech, :] = 1.0 / (int(speech.sum()) * taps)
        first.weight[1, bright, :] = 1.0 / (int(bright.sum()) * taps)
        first.weight[1, speech, :] -= 1.0 / (int(speech.sum()) * taps)
        second.weight[:2].zero_()
        second.bias[:2] = 0.0
        for feature in (0, 1):
            second.weight[feature, feature, :] = 1.0 / second.kernel_size[0]

        # Unit k of each LSTM direction is a leaky integrator of feature k: forget gate f, input gate
        # 1 - f, output gate open, no recurrent weights. Gate rows are [input, forget, cell, output] blocks.
        lstm = model.lstm
        for suffix in ("l0", "l0_reverse"):
            weight_ih, weight_hh = getattr(lstm, f"weight_ih_{suffix}"), getattr(lstm, f"weight_hh_{suffix}")
            bias_ih, bias_hh = getattr(lstm, f"bias_ih_{suffix}"), getattr(lstm, f"bias_hh_{suffix}")
            for unit, (gain, forget) in enumerate((SPEECH_INTEGRATOR, VOICE_INTEGRATOR)):
                input_gate, forget_gate, cell_gate, output_gate = (gate * LSTM_HIDDEN + unit for gate in range(4))
                for row in (input_gate, forget_gate, cell_gate, output_gate):
                    weight_ih[row].zero_()
                    weight_hh[row].zero_()
                    bias_hh[row] = 0.0
                bias_ih[input_gate] = _gate_logit(1.0 - forget)
                bias_ih[forget_gate] = _gate_logit(forget)
                bias_ih[cell_gate] = 0.0
                bias_ih[output_gate] = 6.0
                weight_ih[cell_gate, unit] = gain

        # Linear unit k = forward + backward integrator k, shifted by +2 so that the LeakyReLU never bites.
        linear = model.linear[0]
        linear.weight[:2].zero_()
        for unit in (0, 1):
            linear.weight[unit, unit] = linear.weight[unit, LSTM_HIDDEN + unit] = 1.0
            linear.bias[unit] = 2.0

        # Powerset classes: {}, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}. With s = speech - threshold and
        # v = voice - threshold: {} scores -a*s, {1} a*s - b*v, {2} a*s + b*v, the rest never win.
        (speech_gain, speech_threshold), (voice_gain, voice_threshold) = SPEECH_HEAD, VOICE_HEAD
        classifier = model.classifier
        classifier.weight.zero_()
        classifier.bias.fill_(-20.0)
        speech_bias = speech_gain * (2.0 + speech_threshold)
        voice_bias = voice_gain * (2.0 + voice_threshold)
        classifier.weight[0, 0], classifier.bias[0] = -speech_gain, speech_bias
        classifier.weight[1, 0], classifier.weight[1, 1], classifier.bias[1] = speech_gain, -voice_gain, voice_bias - speech_bias
        classifier.weight[2, 0], classifier.weight[2, 1], classifier.bias[2] = speech_gain, voice_gain, -voice_bias - speech_bias


def build_segmentation(production: bool = False, planted: bool = True) -> PyanNet:
    torch.manual_seed(SEED)
    tiny_lstm = {"hidden_size": LSTM_HIDDEN, "num_layers": 1, "bidirectional": True, "monolithic": True, "dropout": 0.0}
    model = PyanNet(
        sincnet={"stride": 10},
        lstm=PRODUCTION_LSTM if production else tiny_lstm,
        linear=PRODUCTION_LINEAR if production else {"hidden_size": LINEAR_HIDDEN, "num_layers": 1},
        sample_rate=SAMPLE_RATE,
    )
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=SEGMENTATION_DURATION,
        warm_up=(0.0, 0.0),
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.build()
    if planted:
        plant_detector(model)
    return model.eval()


def build_embedding(production: bool = False) -> WeSpeakerResNet34:
    torch.manual_seed(SEED + 1)
    model = WeSpeakerResNet34(sample_rate=SAMPLE_RATE, num_mel_bins=PRODUCTION_MEL_BINS if production else NUM_MEL_BINS)
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=EMBEDDING_DURATION)
    return model.eval()


def orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def write_plda(directory: Path) -> None:
    """Random but well-conditioned VBx/PLDA files (the PLDA must be invertible for ``vbx_setup``)."""
    rng = np.random.default_rng(SEED + 2)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(
        directory / "xvec_transform.npz",
        mean1=(0.01 * rng.standard_normal(EMBEDDING_DIM)).astype(np.float64),
        mean2=(0.01 * rng.standard_normal(LDA_DIM)).astype(np.float64),
        lda=orthonormal(rng, EMBEDDING_DIM, LDA_DIM),
    )
    np.savez(
        directory / "plda.npz",
        mu=(0.01 * rng.standard_normal(LDA_DIM)).astype(np.float64),
        tr=orthonormal(rng, LDA_DIM, LDA_DIM),
        psi=np.logspace(1.0, -1.0, LDA_DIM),
    )


def save_model(model: Model, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pytorch_model.bin"
    torch.save(checkpoint_of(model), path)
    return path


def speak(voice: str, text: str, speed: int = 175) -> np.ndarray:
    """espeak-ng's speech (a set-up package, as for the tests), as 16 kHz mono float32 through ffmpeg."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True).stdout
    pcm = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", "pipe:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "pipe:1"],
        input=wav,
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(pcm, dtype=np.float32)


def check_segmentation(model: PyanNet) -> dict[str, Any]:
    """The planted paths must decide with a margin on speech they were not tuned on.

    One 10 s chunk: silence, espeak-ng's ``en`` voice, silence, its ``en+f3`` voice, silence, as in the tests'
    dialogue.  A speech frame counts as detected only when the best speech class beats "no speech" by
    CHECK_MARGIN (log-probability), and a silent frame only the other way round, so a decision that float
    differences between CPUs could flip counts as wrong.  Frames within CHECK_EDGE_S of a boundary are not
    judged (the bidirectional integrators smear decisions by about half a second); speech frames are those whose 20 ms level is within
    20 dB of their utterance's loudest.  The share of each voice's frames given its own local speaker with
    that margin is reported, not required: the tests check speech, not who speaks.
    """
    pieces: list[np.ndarray] = []
    spans: list[tuple[str, float, float]] = []
    gap = np.zeros(int(CHECK_GAP_S * SAMPLE_RATE), dtype=np.float32)
    for label, (voice, text) in zip(("speaker#1", "speaker#2"), CHECK_LINES, strict=True):
        pieces.append(gap)
        start = sum(len(x) for x in pieces) / SAMPLE_RATE
        pieces.append(speak(voice, text))
        spans.append((label, start, start + len(pieces[-1]) / SAMPLE_RATE))
    audio = np.concatenate([*pieces, gap])
    if len(audio) > SEGMENTATION_DURATION * SAMPLE_RATE:
        raise CheckFailed(f"tiny pyannote: the check's speech takes {len(audio) / SAMPLE_RATE:.1f} s, more than one chunk")
    audio = np.pad(audio, (0, int(SEGMENTATION_DURATION * SAMPLE_RATE) - len(audio)))
    with torch.no_grad():
        log_probs = model(torch.from_numpy(audio)[None, None, :])[0]
    frames = log_probs.shape[0]
    centres: np.ndarray = (np.arange(frames) + 0.5) * SEGMENTATION_DURATION / frames
    # Speech margin: the best speech class against no speech; voice margin: a class against the other speech classes.
    speech_margin = (log_probs[:, 1:].max(-1).values - log_probs[:, 0]).numpy()
    window = int(0.02 * SAMPLE_RATE)
    level = np.array([np.sqrt(np.mean(audio[max(0, int(t * SAMPLE_RATE) - window) : int(t * SAMPLE_RATE) + window] ** 2)) for t in centres])

    def inside(start: float, end: float) -> np.ndarray:
        return (centres >= start + CHECK_EDGE_S) & (centres <= end - CHECK_EDGE_S)

    figures: dict[str, Any] = {"margin": CHECK_MARGIN}
    silence = centres <= spans[-1][2] + CHECK_GAP_S - CHECK_EDGE_S
    for label, start, end in spans:
        silence &= (centres < start - CHECK_EDGE_S) | (centres > end + CHECK_EDGE_S)
        speech = inside(start, end) & (level >= level[inside(start, end)].max() * 0.1)
        own = POWERSET_CLASS[label]
        others = [k for k in range(1, log_probs.shape[1]) if k != own]
        voice_margin = (log_probs[:, own] - log_probs[:, others].max(-1).values).numpy()
        figures[f"{label} speech"] = round(float(np.mean(speech_margin[speech] >= CHECK_MARGIN)), 3)
        figures[f"{label} own voice"] = round(float(np.mean(voice_margin[speech] >= CHECK_MARGIN)), 3)
    figures["silence"] = round(float(np.mean(-speech_margin[silence] >= CHECK_MARGIN)), 3)
    print(f"segmentation check: {figures}", flush=True)
    for name, required in CHECK_REQUIRED.items():
        if figures[name] < required:
            raise CheckFailed(
                f"tiny pyannote: only {figures[name]:.0%} of the check's {name} frames are decided with a margin of "
                f"{CHECK_MARGIN} ({required:.0%} required)"
            )
    return figures


class _Pooled:
    """The embedding model's pooled statistics (what seg_1 maps to the embedding), for whole clips or weighted frames."""

    def __init__(self, model: WeSpeakerResNet34) -> None:
        self.model = model
        self.last: torch.Tensor | None = None
        model.resnet.pool.register_forward_hook(self._keep)

    def _keep(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.last = output.detach()

    def __call__(self, audio: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        waveform = torch.from_numpy(np.array(audio, dtype=np.float32))[None, None]
        with torch.no_grad():
            self.model(waveform, weights=None if weights is None else torch.from_numpy(weights)[None])
        assert self.last is not None
        features: np.ndarray = self.last[0].numpy().astype(np.float64)
        return features


def _chunk(utterances: list[list[np.ndarray]], voices: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """10 s cut at a random offset from two voices taking turns with pauses, and each voice's frame weights
    (as the diarization embeds a local speaker: fbank centred over the whole chunk, statistics over its frames)."""
    pieces: list[np.ndarray] = []
    spans: list[tuple[int, int, int]] = []
    position, turn = 0, 0
    while position < 1.5 * CHUNK_SAMPLES:
        pieces.append(np.zeros(int(rng.uniform(0.3, 1.5) * SAMPLE_RATE), dtype=np.float32))
        position += len(pieces[-1])
        voice = voices[turn % 2]
        turn += 1
        pieces.append(utterances[voice][int(rng.integers(len(utterances[voice])))])
        spans.append((voice, position, position + len(pieces[-1])))
        position += len(pieces[-1])
    offset = int(rng.integers(0, CHUNK_SAMPLES // 2))
    audio = np.concatenate(pieces)[offset : offset + CHUNK_SAMPLES]
    frames = CHUNK_SAMPLES // 160  # weights at 10 ms; pooling resamples them to its own frames
    weights = np.zeros((2, frames), dtype=np.float32)
    for voice, start, end in spans:
        start, end = max(0, start - offset) // 160, min(CHUNK_SAMPLES, end - offset) // 160
        if end > start:
            weights[voices.index(voice), start:end] = 1.0
    return audio, weights


def _examples(pooled: _Pooled, utterances: list[list[np.ndarray]], chunks: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and voice labels: every utterance alone, then ``chunks`` chunks per voice (with another voice)."""
    features: list[np.ndarray] = []
    labels: list[int] = []
    for voice, clips in enumerate(utterances):
        for clip in clips:
            features.append(pooled(clip))
            labels.append(voice)
    for _ in range(chunks):
        for voice in range(len(utterances)):
            other = (voice + 1 + int(rng.integers(len(utterances) - 1))) % len(utterances)
            audio, weights = _chunk(utterances, (voice, other), rng)
            present = [k for k in range(2) if weights[k].sum() >= 100]  # at least a second of speech
            for k, row in zip(present, pooled(audio, weights[present]), strict=True):
                features.append(row)
                labels.append((voice, other)[k])
    return np.array(features), np.array(labels)


def _cosines(embeddings: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The lowest cosine between two embeddings of one voice and the highest between two voices."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosines = unit @ unit.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return float(cosines[same & off_diagonal].min()), float(cosines[~same].max())


def fit_embedding(model: WeSpeakerResNet34) -> dict[str, Any]:
    """Set the embedding's last layer so that espeak-ng's FIT_VOICES get distinct directions (see the module docstring).

    Pooled features (512: mean and standard deviation of the random ResNet's channels) of every fit utterance,
    alone and inside chunks, are centred and reduced to FIT_COMPONENTS principal components; an affine map then
    sends each voice's mean to a vertex of a regular simplex (unit vectors, cosine -1/(K-1) between vertices) with
    the least within-voice scatter (shrunk covariance).  The K simplex coordinates are the embedding's first K
    dimensions; the others are zero.  Returns the fit's figures (on its own training examples).
    """
    threads = torch.get_num_threads()
    started = time.monotonic()
    rng = np.random.default_rng(SEED + 3)
    try:
        torch.set_num_threads(1)  # one thread: the same float reductions, hence the same weights, on one CPU code path
        utterances = [[speak(voice, _sentence(rng), int(rng.integers(*FIT_SPEEDS))) for _ in range(FIT_UTTERANCES)] for voice in FIT_VOICES]
        features, labels = _examples(_Pooled(model), utterances, FIT_CHUNKS, rng)
    finally:
        torch.set_num_threads(threads)
    voices = len(FIT_VOICES)
    mean = features.mean(axis=0)
    _, _, rows = np.linalg.svd(features - mean, full_matrices=False)
    basis = rows[:FIT_COMPONENTS].T  # (512, components)
    reduced = (features - mean) @ basis
    class_means = np.array([reduced[labels == k].mean(axis=0) for k in range(voices)])
    within = reduced - class_means[labels]
    scatter = within.T @ within / len(within)
    scatter = (1.0 - FIT_SHRINK) * scatter + FIT_SHRINK * np.trace(scatter) / FIT_COMPONENTS * np.eye(FIT_COMPONENTS)
    centre = class_means.mean(axis=0)
    spread = class_means - centre
    simplex = (np.eye(voices) - 1.0 / voices) / math.sqrt((voices - 1) / voices)  # unit vertices
    inverse = np.linalg.inv(scatter)
    # argmin tr(A S A^T) subject to A spread_k = simplex_k: A = simplex^T (M S^-1 M^T)^+ M S^-1
    mapping = simplex.T @ np.linalg.pinv(spread @ inverse @ spread.T) @ spread @ inverse  # (voices, components)
    weight = np.zeros((EMBEDDING_DIM, features.shape[1]))
    weight[:voices] = mapping @ basis.T
    bias = np.zeros(EMBEDDING_DIM)
    bias[:voices] = -(weight[:voices] @ mean) - mapping @ centre
    layer = model.resnet.seg_1
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight).to(layer.weight.dtype))
        layer.bias.copy_(torch.from_numpy(bias).to(layer.bias.dtype))
    same, cross = _cosines(features @ weight.T + bias, labels)
    return {
        "fit examples": len(labels),
        "fit same-voice min cosine": round(same, 3),
        "fit cross-voice max cosine": round(cross, 3),
        "fit seconds": round(time.monotonic() - started, 1),
    }


def _sentence(rng: np.random.Generator) -> str:
    subject, verb, thing, place = (words[int(rng.integers(len(words)))] for words in FIT_WORDS)
    return f"{subject} {verb} {thing} {place}."


def check_embedding(model: WeSpeakerResNet34) -> dict[str, Any]:
    """Held-out sentences (CHECK_SENTENCES) of every fit voice, alone and in chunks with another voice: every
    same-voice cosine must reach CHECK_SAME and every cross-voice cosine stay at most CHECK_CROSS."""
    rng = np.random.default_rng(SEED + 4)
    utterances = [[speak(voice, text) for text in CHECK_SENTENCES] for voice in FIT_VOICES]
    features, labels = _examples(_Pooled(model), utterances, 2, rng)
    layer = model.resnet.seg_1
    embeddings = features @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()
    same, cross = _cosines(embeddings, labels)
    # The tests' two voices, on their own (the pair that diarization must tell apart).
    pair = labels < 2
    _, pair_cross = _cosines(embeddings[pair], labels[pair])
    figures = {
        "check same-voice min cosine": round(same, 3),
        "check cross-voice max cosine": round(cross, 3),
        "check en vs en+f3 max cosine": round(pair_cross, 3),
        "check examples": len(labels),
    }
    print(f"embedding check: {figures}", flush=True)
    if same < CHECK_SAME or cross > CHECK_CROSS:
        raise CheckFailed(
            f"tiny pyannote: on held-out espeak-ng sentences the embedding's same-voice cosines go down to {same:.3f} "
            f"(at least {CHECK_SAME} required) and its cross-voice cosines up to {cross:.3f} (at most {CHECK_CROSS} allowed)"
        )
    return figures


def build(out: Path, production: bool = False, random_weights: bool = False) -> dict[str, Any]:
    """Write the bundle into ``out``; returns the checks' figures (none with ``random_weights``)."""
    out.mkdir(parents=True, exist_ok=True)
    segmentation = build_segmentation(production, planted=not random_weights)
    embedding = build_embedding(production)
    figures: dict[str, Any] = {}
    if not random_weights:
        figures.update(check_segmentation(segmentation))
        figures.update(fit_embedding(embedding))
        figures.update(check_embedding(embedding))
    checkpoints = [save_model(segmentation, out / "segmentation"), save_model(embedding, out / "embedding")]
    write_plda(out / "plda")
    (out / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False), encoding="utf-8")
    for path in checkpoints:  # round trip through pyannote's own loader
        Model.from_pretrained(path)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="bundle directory (created if missing)")
    parser.add_argument("--shape", choices=["tiny", "production"], default="tiny", help="production: community-1's architecture")
    parser.add_argument("--random-weights", action="store_true", help="plant, fit and check nothing (required with --shape production)")
    args = parser.parse_args(argv)
    if args.shape == "production" and not args.random_weights:
        parser.error("--shape production needs --random-weights: the planted paths and the fit are made for the tiny shapes")
    with build_report(args.out, "pyannote") as report:
        if args.shape != "tiny" or args.random_weights:  # the tiny build's report stays as it was
            report.update(shape=args.shape, random_weights=args.random_weights)
        report.update(build(args.out, production=args.shape == "production", random_weights=args.random_weights))
    size = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
