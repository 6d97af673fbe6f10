#!/usr/bin/env python3
"""Build a tiny pyannote speaker-diarization bundle for offline tests.

    python scripts/build_tiny_pyannote.py --out DIR

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
version.  The embedding model and the PLDA are random.  A random segmentation model, though,
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
matching local speakers across chunks is left to the random embeddings and the clustering.  The
other weights keep their seeded random values; nothing reads them.

Size: 23 MB (nearly all of it the ResNet34, whose width is fixed; 8 mel bins halve its compute
compared with 16); the build takes under a second after pyannote's import (about 10 s). Set
``embedding_batch_size`` low: community-1's 32 uses about 2 GB on CPU and is no faster.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
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
POWERSET_CLASS = {"speaker#1": 1, "speaker#2": 2}

# The build's check (check_segmentation): speech it was not tuned on, and the share of frames that must be
# decided right with a margin of CHECK_MARGIN nats between the chosen powerset class and the next.
CHECK_LINES = (("en", "Good evening, the train leaves at nine."), ("en+f3", "Then we meet at the station after work."))
CHECK_GAP_S = 1.5
CHECK_EDGE_S = 0.6
CHECK_MARGIN = 1.0
CHECK_REQUIRED = {"silence": 0.95, "speaker#1 speech": 0.9, "speaker#2 speech": 0.9}

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


def build_segmentation() -> PyanNet:
    torch.manual_seed(SEED)
    model = PyanNet(
        sincnet={"stride": 10},
        lstm={"hidden_size": LSTM_HIDDEN, "num_layers": 1, "bidirectional": True, "monolithic": True, "dropout": 0.0},
        linear={"hidden_size": LINEAR_HIDDEN, "num_layers": 1},
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
    plant_detector(model)
    return model.eval()


def build_embedding() -> WeSpeakerResNet34:
    torch.manual_seed(SEED + 1)
    model = WeSpeakerResNet34(sample_rate=SAMPLE_RATE, num_mel_bins=NUM_MEL_BINS)
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


def speak(voice: str, text: str) -> np.ndarray:
    """espeak-ng's speech (a set-up package, as for the tests), as 16 kHz mono float32 through ffmpeg."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
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


def build(out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    segmentation = build_segmentation()
    figures = check_segmentation(segmentation)
    checkpoints = [save_model(segmentation, out / "segmentation"), save_model(build_embedding(), out / "embedding")]
    write_plda(out / "plda")
    (out / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False), encoding="utf-8")
    for path in checkpoints:  # round trip through pyannote's own loader
        Model.from_pretrained(path)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="bundle directory (created if missing)")
    args = parser.parse_args(argv)
    with build_report(args.out, "pyannote") as report:
        report.update(build(args.out))
    size = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
