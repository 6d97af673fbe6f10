"""Spoken-language identification with a NeMo ``EncDecSpeakerLabelModel`` (NVIDIA's AmberNet, or a model of the
same class such as the one ``scripts/build_tiny_langid.py`` builds), as run by the ``langid`` Triton model.

``LanguageIdentifier.identify`` listens to a few speech windows, not the whole recording:

1. silero-vad runs over the recording in blocks of ``scan_s`` seconds, from the start, and stops as soon as it
   has ``max_windows`` speech regions of at least ``min_window_s`` (an hour-long file costs one block, not an
   hour of VAD); a region longer than ``window_s`` is cut to its first ``window_s`` seconds;
2. each window is classified on its own (the model sees speech only, no silences between turns);
3. the windows' label probabilities are averaged, weighted by their durations, and the most probable label
   is the language.

A recording without speech has no language: ``language`` is ``""``.  Labels are the model's own
(``cfg.train_ds.labels``, the logits' order, as NeMo's ``get_label`` reads them); VoxLingua107's retired ISO
639 codes (``iw``, ``jw``, ``in``) are reported as today's (``he``, ``jv``, ``id``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from passerelle_triton import vad
from passerelle_triton.nemo_models import quiet_nemo, restore

SAMPLE_RATE = vad.SAMPLE_RATE
_CURRENT_CODES = {"iw": "he", "jw": "jv", "in": "id"}

Interval = tuple[float, float]


@dataclass
class Identification:
    """``languages`` holds every label, most probable first, with ``probabilities`` beside it."""

    language: str
    languages: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    windows: list[Interval] = field(default_factory=list)
    duration: float = 0.0


class LanguageIdentifier:
    """A restored language-identification model; ``identify`` calls are serialized."""

    def __init__(
        self,
        nemo_path: str,
        device: str = "cpu",
        max_windows: int = 3,
        window_s: float = 10.0,
        min_window_s: float = 1.0,
        scan_s: float = 30.0,
    ) -> None:
        if max_windows < 1:
            raise ValueError(f"max_windows must be at least 1, got {max_windows}")
        if not 0 < min_window_s <= window_s:
            raise ValueError(f"need 0 < min_window_s <= window_s, got {min_window_s} and {window_s}")
        self.max_windows = max_windows
        self.window_s = float(window_s)
        self.min_window_s = float(min_window_s)
        self.scan_s = float(scan_s)
        self._lock = threading.Lock()
        from nemo.collections.asr.models import EncDecSpeakerLabelModel

        quiet_nemo()
        self.model = restore(nemo_path, device, EncDecSpeakerLabelModel)
        self.model.eval()
        self.device = device
        labels = self.model.cfg.get("train_ds", {}).get("labels")
        if not labels:
            raise ValueError(f"{nemo_path}: the model has no labels (cfg.train_ds.labels)")
        self.labels = [_CURRENT_CODES.get(str(label), str(label)) for label in labels]

    def speech_windows(self, audio: np.ndarray, max_windows: int) -> list[Interval]:
        """Up to ``max_windows`` speech windows from the start of ``audio`` (see the module docstring)."""
        found: list[Interval] = []
        short: list[Interval] = []
        block = round(self.scan_s * SAMPLE_RATE)
        for offset in range(0, audio.size, block):
            base = offset / SAMPLE_RATE
            for start, end in vad.speech_regions(audio[offset : offset + block]):
                window = (base + start, base + min(end, start + self.window_s))
                (found if window[1] - window[0] >= self.min_window_s else short).append(window)
            if len(found) >= max_windows:
                return found[:max_windows]
        # Short speech only: better a short window than no answer.
        return (found + sorted(short, key=lambda w: w[0] - w[1]))[:max_windows]

    def identify(self, pcm: np.ndarray, max_windows: int | None = None) -> Identification:
        import torch

        audio = vad.as_pcm(pcm)
        duration = audio.size / SAMPLE_RATE
        count = self.max_windows if max_windows is None else max_windows
        if count < 1:
            raise ValueError(f"max_windows must be at least 1, got {count}")
        windows = self.speech_windows(audio, count)
        if not windows:
            return Identification(language="", duration=duration)
        weights = np.array([end - start for start, end in windows])
        probabilities = np.zeros(len(self.labels))
        with self._lock, torch.inference_mode():
            for (start, end), weight in zip(windows, weights, strict=True):
                clip = torch.from_numpy(np.ascontiguousarray(audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]))
                logits, _ = self.model.forward(
                    input_signal=clip[None].to(self.device), input_signal_length=torch.tensor([clip.numel()], device=self.device)
                )
                probabilities += weight * torch.softmax(logits[0].float(), dim=-1).cpu().numpy()
        probabilities /= weights.sum()
        order = np.argsort(-probabilities, kind="stable")
        return Identification(
            language=self.labels[int(order[0])],
            languages=[self.labels[i] for i in order],
            probabilities=[round(float(probabilities[i]), 6) for i in order],
            windows=[(round(start, 3), round(end, 3)) for start, end in windows],
            duration=duration,
        )
