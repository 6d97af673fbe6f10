"""Speaker diarization with pyannote.audio 4 on a local bundle, for the Triton Python backend.

A bundle is a directory in the Hugging Face layout of ``pyannote/speaker-diarization-community-1``
(``config.yaml``, ``segmentation/``, ``embedding/``, ``plda/``; ``scripts/build_tiny_pyannote.py``
builds a tiny one). Nothing is ever downloaded: ``HF_HUB_OFFLINE=1`` and
``PYANNOTE_METRICS_ENABLED=false`` (pyannote 4's telemetry is on by default) are set, unless already
set, before pyannote is imported, and the bundle must reference its three components locally.

Bundle references. pyannote expands only lowercase ``$model/<sub>`` strings, and only relative to the
directory holding the ``config.yaml`` it is given; our seed documents write ``$MODEL/<sub>``.
:func:`resolve_bundle_config` rewrites both forms into ``{"checkpoint": "<bundle>/<sub>"}`` mappings,
absolute and checked to stay inside the bundle. The mapping is what pyannote's own expansion
produces, and it matters for the embedding: pyannote picks the embedding loader by substring of a
*string* reference ("pyannote", "speechbrain", "nvidia", "wespeaker", in that order), so a plain path
such as ``/opt/nvidia/models/...`` would go to NeMo, while a mapping always goes to pyannote's loader.

Which diarization to use. pyannote returns two: ``speaker_diarization`` (overlapping speech has
several speakers at once) and ``exclusive_speaker_diarization`` (at most one speaker at any instant,
the most likely one, meant by pyannote for aligning with transcripts). :class:`Diarization` carries
both: ``segments`` and ``rttm`` come from the regular one, what a diarization API returns;
``exclusive_segments`` are the ones to pass to :func:`passerelle_triton.attribution.assign_speakers`,
so that each word has one clear owner.

Known speakers. Given reference clips (:class:`passerelle_triton.speakers.KnownSpeakers`),
``diarize`` embeds each with the pipeline's own embedding model and matches them with pyannote's
speaker centroids (:func:`passerelle_triton.speakers.match_speakers`); matched speakers carry the
given name in ``segments``, ``exclusive_segments`` and ``rttm`` (where whitespace becomes ``_``),
the others keep ``SPEAKER_nn``. :class:`Diarization` also carries the similarities and the mapping.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import re
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from passerelle_triton.attribution import Turn
from passerelle_triton.speakers import DEFAULT_THRESHOLD, KnownSpeakers, match_speakers, rttm_label

if TYPE_CHECKING:
    from pyannote.core import Annotation

__all__ = ["SAMPLE_RATE", "Diarization", "DiarizationEngine", "Turn", "check_pyannote_version", "resolve_bundle_config"]

SAMPLE_RATE = 16000
MODEL_REFERENCE_PREFIXES = ("$MODEL/", "$model/")
BUNDLE_COMPONENTS = ("segmentation", "embedding", "plda")
MIN_PYANNOTE_MAJOR = 4


@dataclass(frozen=True)
class Diarization:
    """Result of :meth:`DiarizationEngine.diarize`.

    ``segments`` and ``exclusive_segments`` are sorted by (start, end), clipped to
    ``[0, duration]``, with segments left empty by the clipping dropped. ``rttm`` has one line per
    entry of ``segments``, in the same order (``SPEAKER <uri> 1 <start> <duration> <NA> <NA>
    <speaker> <NA> <NA>``, millisecond precision). ``speakers`` lists the labels found
    (``SPEAKER_00``, ``SPEAKER_01``, ...), sorted. ``duration`` is the input's length in seconds.

    ``original_speakers`` lists pyannote's own labels (sorted), ``labels`` maps each to the label the
    turns carry (itself unless a known speaker matched), and ``similarities`` has one row per original
    speaker and one column per known speaker: their cosine similarity (NaN without a centroid;
    no columns without known speakers).
    """

    segments: list[Turn]
    exclusive_segments: list[Turn]
    rttm: str
    speakers: list[str]
    duration: float
    original_speakers: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    similarities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))


def check_pyannote_version() -> str:
    """Return the installed pyannote.audio version; ``RuntimeError`` if it is missing or older than 4."""
    try:
        version = importlib.metadata.version("pyannote.audio")
    except importlib.metadata.PackageNotFoundError as error:
        raise RuntimeError("pyannote.audio is not installed; diarization needs pyannote.audio >= 4") from error
    match = re.match(r"\d+", version)
    if match is None or int(match.group()) < MIN_PYANNOTE_MAJOR:
        raise RuntimeError(
            f"pyannote.audio {version} is installed, but diarization needs pyannote.audio >= {MIN_PYANNOTE_MAJOR} "
            "(community-1 bundles: VBx clustering, PLDA, exclusive diarization)"
        )
    return version


def _resolve_reference(bundle_dir: Path, reference: str) -> dict[str, str]:
    prefix = next(prefix for prefix in MODEL_REFERENCE_PREFIXES if reference.startswith(prefix))
    subpath = reference[len(prefix) :]
    if "@" in subpath:
        raise ValueError(f"{reference!r}: revisions (@...) cannot be used with a local bundle")
    # Lexical check, so that a bundle inside a Hugging Face cache snapshot (whose files are symlinks
    # into ../../blobs) still resolves.
    target = Path(os.path.normpath(bundle_dir / subpath))
    if bundle_dir not in target.parents:
        raise ValueError(f"{reference!r} must point inside the bundle directory {bundle_dir}")
    if not target.exists():
        raise FileNotFoundError(f"{reference!r}: {target} does not exist")
    return {"checkpoint": str(target)}


def _rewrite_references(node: Any, bundle_dir: Path) -> Any:
    if isinstance(node, str) and node.startswith(MODEL_REFERENCE_PREFIXES):
        return _resolve_reference(bundle_dir, node)
    if isinstance(node, dict):
        return {key: _rewrite_references(value, bundle_dir) for key, value in node.items()}
    if isinstance(node, list):
        return [_rewrite_references(value, bundle_dir) for value in node]
    return node


def resolve_bundle_config(bundle_dir: Path, out_dir: Path | None = None) -> Path:
    """Write ``bundle_dir/config.yaml`` with its bundle references made absolute; return the new file.

    Every string value, at any depth, that starts with ``$MODEL/`` or ``$model/`` (other spellings
    are left alone) becomes the mapping ``{"checkpoint": "<bundle_dir>/<rest>"}``, with
    ``<bundle_dir>`` absolute and ``<rest>`` normalised. ``ValueError`` if the result is not strictly
    inside ``bundle_dir`` (``..`` components, an absolute ``<rest>``, or the bundle itself) or if the
    reference names a revision (``@``); ``FileNotFoundError`` if it does not exist. The check is
    lexical: symlinks inside the bundle are followed wherever they point. Everything else in the
    config is copied as is.

    The file is written as ``out_dir/config.yaml``, or, when ``out_dir`` is None, in a new private
    temporary directory that the caller owns (and should delete once the pipeline is loaded): the
    bundle itself may be read-only. Since no reference is relative any more, the file loads from
    anywhere with ``Pipeline.from_pretrained(path)``.
    """
    bundle_dir = Path(bundle_dir).resolve()
    source = bundle_dir / "config.yaml"
    if not source.is_file():
        raise FileNotFoundError(f"no config.yaml in pyannote bundle {bundle_dir}")
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"{source} is not a YAML mapping")
    resolved = _rewrite_references(config, bundle_dir)

    target_dir = Path(tempfile.mkdtemp(prefix="passerelle-pyannote-")) if out_dir is None else Path(out_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / "config.yaml"
    target.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    return target


def _require_local_components(config_path: Path, bundle_dir: Path) -> None:
    """Refuse a config whose pipeline would fetch a component from the hub (offline: an obscure failure)."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    params = (config.get("pipeline") or {}).get("params") or {}
    for component in BUNDLE_COMPONENTS:
        reference = params.get(component)
        if not (isinstance(reference, dict) and Path(str(reference.get("checkpoint"))).is_relative_to(bundle_dir)):
            raise ValueError(
                f"{bundle_dir / 'config.yaml'}: pipeline.params.{component} must be a $model/... reference "
                f"to the bundle (got {reference!r}); anything else would be downloaded"
            )


def _import_pipeline_class() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    with warnings.catch_warnings():
        # pyannote warns at import when torchcodec is missing; we only pass in-memory waveforms.
        warnings.filterwarnings("ignore", message=r"(?s).*torchcodec")
        from pyannote.audio import Pipeline

    return Pipeline


def _positive_or_none(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _validate_speaker_counts(num_speakers: int | None, min_speakers: int | None, max_speakers: int | None) -> None:
    for name, value in (("num_speakers", num_speakers), ("min_speakers", min_speakers), ("max_speakers", max_speakers)):
        _positive_or_none(name, value)
    if num_speakers is not None and (min_speakers is not None or max_speakers is not None):
        raise ValueError("num_speakers cannot be combined with min_speakers or max_speakers")
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise ValueError(f"min_speakers ({min_speakers}) must not exceed max_speakers ({max_speakers})")


def _clipped_turns(annotation: Annotation, duration: float) -> tuple[list[Turn], Annotation]:
    """Turns of ``annotation`` clipped to [0, duration] (empty ones dropped), in the Annotation's (start, end) order,
    and the clipped Annotation itself, whose ``write_rttm`` lists the same turns in the same order."""
    from pyannote.core import Annotation, Segment

    clipped = Annotation(uri=annotation.uri)
    for segment, track, speaker in annotation.itertracks(yield_label=True):
        inside = Segment(max(0.0, segment.start), min(duration, segment.end))
        if inside:  # pyannote.core: a segment shorter than 1 µs is empty
            clipped[inside, track] = speaker
    turns = [Turn(str(speaker), segment.start, segment.end) for segment, _, speaker in clipped.itertracks(yield_label=True)]
    return turns, clipped


class DiarizationEngine:
    """A pyannote ``SpeakerDiarization`` pipeline loaded from a local bundle.

    Construction loads the models (seconds; pyannote's import alone takes several). ``diarize`` is
    serialised by a lock, so one engine may be shared between threads. The caller chooses torch's
    thread count (``torch.set_num_threads``): on a shared CPU one thread is the steady choice.
    """

    def __init__(
        self,
        bundle_dir: str,
        device: str = "cpu",
        embedding_batch_size: int = 4,
        segmentation_batch_size: int = 8,
        known_speaker_threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        if not -1.0 <= known_speaker_threshold <= 1.0:
            raise ValueError(f"known_speaker_threshold is a cosine similarity, in [-1, 1]; got {known_speaker_threshold}")
        self.known_speaker_threshold = known_speaker_threshold
        _positive_or_none("embedding_batch_size", embedding_batch_size)
        _positive_or_none("segmentation_batch_size", segmentation_batch_size)
        self.version = check_pyannote_version()
        self.bundle_dir = Path(bundle_dir).resolve()
        pipeline_class = _import_pipeline_class()
        import torch

        with tempfile.TemporaryDirectory(prefix="passerelle-pyannote-") as scratch:
            config_path = resolve_bundle_config(self.bundle_dir, Path(scratch))
            _require_local_components(config_path, self.bundle_dir)
            pipeline = pipeline_class.from_pretrained(config_path)
        if pipeline is None:
            raise RuntimeError(f"pyannote could not load the pipeline in {self.bundle_dir}")
        pipeline.to(torch.device(device))
        pipeline.legacy = False  # a config may ask for the bare Annotation; diarize() needs the full DiarizeOutput
        # community-1 says 32, which on CPU costs about 2 GB and is no faster per window.
        pipeline.embedding_batch_size = embedding_batch_size
        pipeline.segmentation_batch_size = segmentation_batch_size
        self.device = device
        self._pipeline = pipeline
        self._lock = threading.Lock()

    def diarize(
        self,
        pcm: np.ndarray,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        uri: str = "audio",
        known_speakers: KnownSpeakers | None = None,
    ) -> Diarization:
        """Diarize ``pcm``: 16 kHz mono samples in [-1, 1], a 1-D float array (converted to float32).

        ``num_speakers`` fixes the number of speakers; otherwise ``min_speakers`` and/or
        ``max_speakers`` bound it. ``ValueError`` for non-positive counts, ``num_speakers`` combined
        with a bound, ``min_speakers > max_speakers``, empty, non-finite or non-1-D audio, and a
        ``uri`` that is empty or holds whitespace (RTTM is space-separated). pyannote may still find
        fewer speakers than ``min_speakers`` in short audio (it warns). ``known_speakers`` (checked by
        :func:`passerelle_triton.speakers.parse_known_speakers`) names the speakers they match.
        """
        _validate_speaker_counts(num_speakers, min_speakers, max_speakers)
        if not uri or any(character.isspace() for character in uri):
            raise ValueError(f"uri must be non-empty and without whitespace, got {uri!r}")
        samples = np.asarray(pcm)
        if samples.ndim != 1:
            raise ValueError(f"pcm must be 1-D (mono samples), got shape {samples.shape}")
        if samples.size == 0:
            raise ValueError("pcm is empty")
        samples = samples.astype(np.float32, copy=False)
        if not np.isfinite(samples).all():
            raise ValueError("pcm holds NaN or infinite samples")
        duration = samples.size / SAMPLE_RATE

        import torch

        audio = {"waveform": torch.from_numpy(np.ascontiguousarray(samples)).unsqueeze(0), "sample_rate": SAMPLE_RATE, "uri": uri}
        with self._lock:
            output = self._pipeline(audio, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers)
            references = self._embed(known_speakers.clips) if known_speakers is not None else None

        original = [str(label) for label in output.speaker_diarization.labels()]
        if known_speakers is None or references is None:
            labels = {label: label for label in original}
            similarities = np.zeros((len(original), 0), dtype=np.float32)
            regular_annotation, exclusive_annotation = output.speaker_diarization, output.exclusive_speaker_diarization
        else:
            match = match_speakers(original, output.speaker_embeddings, references, known_speakers.names, self.known_speaker_threshold)
            labels, similarities = match.labels, match.similarities
            regular_annotation = output.speaker_diarization.rename_labels(mapping=labels)
            exclusive_annotation = output.exclusive_speaker_diarization.rename_labels(mapping=labels)

        segments, regular = _clipped_turns(regular_annotation, duration)
        exclusive_segments, _ = _clipped_turns(exclusive_annotation, duration)
        rttm = io.StringIO()
        regular.rename_labels(mapping={label: rttm_label(str(label)) for label in regular.labels()}).write_rttm(rttm)
        return Diarization(
            segments=segments,
            exclusive_segments=exclusive_segments,
            rttm=rttm.getvalue(),
            speakers=sorted({turn.speaker for turn in segments}),
            duration=duration,
            original_speakers=original,
            labels=labels,
            similarities=similarities,
        )

    def _embed(self, clips: list[np.ndarray]) -> np.ndarray:
        """Speaker embeddings of ``clips`` (one row each) by the pipeline's own embedding model, one clip at a time:
        padding clips to one length would change their features (the fbank is centred over the whole input)."""
        import torch

        embedding = self._pipeline._embedding
        rows = [np.asarray(embedding(torch.from_numpy(np.array(clip, dtype=np.float32))[None, None]))[0] for clip in clips]
        return np.stack(rows)
