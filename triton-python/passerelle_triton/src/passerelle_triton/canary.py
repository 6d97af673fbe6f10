"""Canary speech recognition and translation, as run by passerelle's Triton Python-backend model.

``CanaryEngine`` wraps a NeMo ``EncDecMultiTaskModel`` (nvidia/canary-1b-v2 or a model of the same class, such
as the one ``scripts/build_tiny_canary.py`` builds) restored from a ``.nemo`` file.  One ``transcribe`` call
takes a whole recording (16 kHz mono float32) and:

1. runs silero-vad over it (about 1 % of the audio's duration on one CPU core, so it is done for short audio
   too: silence-only input then returns an empty transcript without running the model, which would otherwise
   hallucinate on it);
2. plans windows of at most ``max_chunk_s`` cut in silence (``vad.plan_chunks``); audio no longer than
   ``max_chunk_s`` is one window;
3. transcribes every window that holds speech in a single ``model.transcribe`` call, ``batch_size`` windows at
   a time; a window is a view of the caller's array, not a copy;
4. joins the windows' texts and shifts their word and segment times by the window's start, so that the times
   are global, clipped to ``[0, duration]`` and non-decreasing.

``fixed_decode_tokens_per_second`` (off by default; ``scripts/gpu_check`` sets it on random-weight models, whose
decodes stop at arbitrary lengths) makes every window decode exactly ``round(N x its seconds)`` tokens, then
end-of-text (``FixedDecodeLength``), so that speed figures count a known amount of decoder work.

Timestamps come from the CTC aligner that canary-1b-v2 ships inside its ``.nemo``: NeMo restores it as
``model.timestamps_asr_model`` and forced-aligns the decoded text with it.  A model without one (canary-1b,
canary-1b-flash) is asked for timestamps through the prompt instead.

NeMo 3.0 details this module works around:

- ``model.transcribe`` on a list of arrays with ``batch_size=1`` turns on NeMo's own long-audio chunking and
  then merges *all* results into one hypothesis, because tensor inputs share the id ``audio_0``; with
  ``batch_size > 1`` it logs a warning instead.  Calls here pass a ``MultiTaskTranscriptionConfig`` with
  ``enable_chunking=False`` (and the prompt in it, since ``**prompt`` keywords are ignored with an
  ``override_config``).
- Inputs shorter than 1 s are padded by NeMo on both sides, which would shift their timestamps; shorter
  windows are padded here, on the right only.
- ``restore_from`` needs ``tarfile``'s ``filter="data"`` (Python 3.11.4+): ``nemo_models.restore`` works
  around it (a directory holding an extracted ``.nemo`` is accepted as ``nemo_path`` too).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from passerelle_triton import vad
from passerelle_triton.nemo_models import quiet_nemo, restore

SAMPLE_RATE = vad.SAMPLE_RATE
# NeMo pads tensor inputs shorter than this on both sides (TranscriptionTensorDataset.pad_min_duration).
_MIN_INPUT_SAMPLES = SAMPLE_RATE

_LANGUAGE_TAG = re.compile(r"<\|([a-z]{2}(?:-[A-Z]{2})?)\|>")

Interval = tuple[float, float]


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Segment:
    text: str
    start: float
    end: float


_Timed = TypeVar("_Timed", Word, Segment)


@dataclass
class Transcript:
    """Result of ``CanaryEngine.transcribe``; times are seconds from the start of the audio."""

    text: str
    words: list[Word] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    # Windows of the plan, contiguous over [0, duration]; those without speech were not sent to the model.
    chunks: list[Interval] = field(default_factory=list)
    speech_regions: list[Interval] = field(default_factory=list)
    duration: float = 0.0


@dataclass(frozen=True)
class WindowPlan:
    """How a recording is decoded: ``chunks`` cover ``[0, duration]``; ``selected`` are those with speech."""

    duration: float
    regions: list[Interval]
    chunks: list[Interval]
    selected: list[Interval]


def plan_windows(audio: np.ndarray, max_chunk_s: float) -> WindowPlan:
    """The windows ``CanaryEngine.transcribe`` decodes (``canary_stream`` streams the same ones)."""
    duration = audio.size / SAMPLE_RATE
    regions = vad.speech_regions(audio)
    chunks = vad.plan_chunks(regions, duration, max_chunk_s)
    return WindowPlan(duration, regions, chunks, [chunks[i] for i in vad.windows_with_speech(chunks, regions)])


class FixedDecodeLength:
    """Forces each decoded window to ``round(tokens_per_second x window seconds)`` tokens, then end-of-text.

    NeMo's AED generators (beam and greedy) call the decoder and the token classifier through ``.forward`` once per
    step; both bound methods are wrapped on the model's own modules.  The decoder call without cached states starts
    a batch: each row's target comes from its encoder length (frames x ``frame_seconds``).  Each classifier call is
    one step: rows below their target cannot end (end-of-text and pad pushed down), rows at it can only end.
    ``generated`` and ``expected`` count forced tokens, so that a cap NeMo applies first (``max_generation_delta``,
    ``max_sequence_length``) shows as a shortfall instead of passing unnoticed.
    """

    _EXCLUDED = -1.0e4  # far below any log-probability, finite in half precision

    def __init__(self, model: Any, tokens_per_second: float) -> None:
        if not tokens_per_second > 0:
            raise ValueError(f"fixed_decode_tokens_per_second must be positive, got {tokens_per_second}")
        self.tokens_per_second = float(tokens_per_second)
        self.frame_seconds = float(model.cfg.preprocessor.window_stride) * int(model.encoder.subsampling_factor)
        self.ending = [int(model.tokenizer.eos_id), int(model.tokenizer.pad_id)]
        self.eos = self.ending[0]
        self.step = 0
        self.targets: Any = None
        self.generated = 0
        self.expected = 0
        decoder, classifier = model.transf_decoder.decoder, model.log_softmax
        decoder_forward, classifier_forward = decoder.forward, classifier.forward

        def decoder_step(*args: Any, **kwargs: Any) -> Any:
            mems = kwargs["decoder_mems_list"] if "decoder_mems_list" in kwargs else (args[4] if len(args) > 4 else None)
            if mems is None:
                encoder_mask = kwargs["encoder_mask"] if "encoder_mask" in kwargs else args[3]
                seconds = encoder_mask.sum(dim=1).float() * self.frame_seconds
                self.targets = (seconds * self.tokens_per_second).round().clamp(min=1).long()
                self.expected += int(self.targets.sum())
                self.step = 0
            return decoder_forward(*args, **kwargs)

        def classifier_step(*args: Any, **kwargs: Any) -> Any:
            scores = classifier_forward(*args, **kwargs)
            if self.targets is None:
                return scores
            ending = (self.step >= self.targets).to(scores.device)
            self.generated += int((~ending).sum())
            scores = scores.clone()
            scores[~ending, :, self.ending[0]] = self._EXCLUDED
            scores[~ending, :, self.ending[1]] = self._EXCLUDED
            scores[ending] = self._EXCLUDED
            scores[ending, :, self.eos] = 0.0
            self.step += 1
            return scores

        decoder.forward = decoder_step
        classifier.forward = classifier_step

    def take_counts(self) -> tuple[int, int]:
        """``(expected, generated)`` forced tokens since the last call."""
        counts = (self.expected, self.generated)
        self.expected = self.generated = 0
        self.targets = None
        return counts


class CanaryEngine:
    """A restored Canary model plus VAD-based chunking; ``transcribe`` calls are serialized."""

    def __init__(
        self,
        nemo_path: str,
        device: str = "cpu",
        max_chunk_s: float = 30.0,
        batch_size: int = 4,
        fixed_decode_tokens_per_second: float | None = None,
    ) -> None:
        if not max_chunk_s > 0:
            raise ValueError(f"max_chunk_s must be positive, got {max_chunk_s}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.max_chunk_s = float(max_chunk_s)
        self.batch_size = batch_size
        self._lock = threading.Lock()

        quiet_nemo()
        self.model = restore(nemo_path, device)
        self.model.eval()
        sample_rate = int(self.model.cfg.sample_rate)
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"{nemo_path}: model expects {sample_rate} Hz audio, this engine feeds {SAMPLE_RATE} Hz")
        self.languages: frozenset[str] = _language_tags(self.model.tokenizer)
        if not self.languages:
            raise ValueError(f"{nemo_path}: no language tags (<|xx|>) in the model's tokenizer")
        self.has_aligner = getattr(self.model, "timestamps_asr_model", None) is not None
        self.fixed_decode = FixedDecodeLength(self.model, fixed_decode_tokens_per_second) if fixed_decode_tokens_per_second else None

    @property
    def supported_languages(self) -> list[str]:
        return sorted(self.languages)

    def transcribe(self, pcm: np.ndarray, source_lang: str, target_lang: str, punctuation: bool, timestamps: bool) -> Transcript:
        """Transcribe (``source_lang == target_lang``) or translate 16 kHz mono float32 ``pcm``.

        Raises ``ValueError`` for a language the model has no tag for, or for PCM that is not one-dimensional.
        """
        for role, lang in (("source", source_lang), ("target", target_lang)):
            if lang not in self.languages:
                supported = ", ".join(self.supported_languages)
                raise ValueError(f"unsupported {role} language {lang!r}; this model supports: {supported}")
        audio = vad.as_pcm(pcm)
        plan = plan_windows(audio, self.max_chunk_s)
        duration, regions, chunks, selected = plan.duration, plan.regions, plan.chunks, plan.selected
        if not selected:
            return Transcript(text="", chunks=chunks, speech_regions=regions, duration=duration)

        offsets = [round(start * SAMPLE_RATE) for start, _ in selected]
        inputs = [_model_input(audio, offset, round(end * SAMPLE_RATE)) for offset, (_, end) in zip(offsets, selected, strict=True)]
        with self._lock:
            hypotheses = self._run(inputs, source_lang, target_lang, punctuation, timestamps)

        texts: list[str] = []
        words: list[Word] = []
        segments: list[Segment] = []
        for hypothesis, offset, (_, window_end) in zip(hypotheses, offsets, selected, strict=True):
            text = (hypothesis.text or "").strip()
            if text:
                texts.append(text)
            if timestamps:
                stamps = getattr(hypothesis, "timestamp", None) or {}
                start_s, end_s = offset / SAMPLE_RATE, min(window_end, duration)
                words.extend(Word(*item) for item in _shift(stamps.get("word", []), "word", start_s, end_s))
                segments.extend(Segment(*item) for item in _shift(stamps.get("segment", []), "segment", start_s, end_s))
        return Transcript(
            text=" ".join(texts),
            words=_monotonic(words),
            segments=_monotonic(segments),
            chunks=chunks,
            speech_regions=regions,
            duration=duration,
        )

    def _run(self, inputs: list[np.ndarray], source_lang: str, target_lang: str, punctuation: bool, timestamps: bool) -> list[Any]:
        from nemo.collections.asr.models.aed_multitask_models import MultiTaskTranscriptionConfig

        # With an aligner NeMo times the words itself; without one, Canary must emit timestamp tokens.
        timestamp_slot = "yes" if timestamps and not self.has_aligner else "no"
        config = MultiTaskTranscriptionConfig(
            batch_size=self.batch_size,
            return_hypotheses=True,
            num_workers=0,
            verbose=False,
            enable_chunking=False,
            prompt={
                "source_lang": source_lang,
                "target_lang": target_lang,
                "pnc": "yes" if punctuation else "no",
                "timestamp": timestamp_slot,
            },
        )
        hypotheses = self.model.transcribe(inputs, override_config=config, timestamps=timestamps)
        if len(hypotheses) != len(inputs):
            raise RuntimeError(f"NeMo returned {len(hypotheses)} hypotheses for {len(inputs)} audio windows")
        return list(hypotheses)


def _model_input(audio: np.ndarray, start: int, end: int) -> np.ndarray:
    window = audio[start:end]
    if window.size >= _MIN_INPUT_SAMPLES:
        return window
    return np.pad(window, (0, _MIN_INPUT_SAMPLES - window.size))


def _shift(items: Sequence[dict[str, Any]], key: str, offset: float, limit: float) -> Iterator[tuple[str, float, float]]:
    """NeMo timestamp entries of one window as (text, start, end) in global seconds, clipped to the window."""
    for item in items:
        start, end = float(item.get("start", -1.0)), float(item.get("end", -1.0))
        # The aligner marks what it could not place with -1: such an entry goes to the window start, then _monotonic
        # moves it after the previous entry.
        start = min(offset + start, limit) if start >= 0 else offset
        end = min(offset + end, limit) if end >= 0 else start
        yield str(item.get(key, "")), round(start, 3), round(end, 3)


def _monotonic(items: list[_Timed]) -> list[_Timed]:
    """Make starts non-decreasing and each item start no earlier than the previous one's end."""
    result: list[_Timed] = []
    previous_end = 0.0
    for item in items:
        start = max(item.start, previous_end)
        end = max(item.end, start)
        result.append(dataclasses.replace(item, start=start, end=end))
        previous_end = end
    return result


def _language_tags(tokenizer: Any) -> frozenset[str]:
    return frozenset(match.group(1) for piece in tokenizer.vocab if (match := _LANGUAGE_TAG.fullmatch(str(piece))))
