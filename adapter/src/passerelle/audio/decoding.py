"""Audio uploads → 16 kHz mono float32 PCM, with ffmpeg.

The content decides, never the declared MIME type or file name: ffprobe names the container,
and only the formats below are accepted. Uploads stay on disk (Starlette spools them) and ffmpeg
reads the file in place. Its output goes into a POSIX shared-memory object that Triton maps
(AUDIO_TRANSFER, Triton on this host), so the adapter never holds the PCM; or, when Triton is
remote, into the adapter's memory: one copy, streamed to Triton's HTTP binary protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from passerelle.core.config import Settings
from passerelle.core.errors import InvalidRequest, PayloadTooLarge

log = logging.getLogger("passerelle.audio")

SAMPLE_RATE = 16_000
_BYTES_PER_SAMPLE = 4
_READ_BLOCK = 1 << 20

# ffprobe's format names (comma-separated aliases) → the name we report.
SUPPORTED_FORMATS = {
    "wav": "wav",
    "flac": "flac",
    "mp3": "mp3",
    "ogg": "ogg",
    "mov": "m4a",
    "mp4": "m4a",
    "m4a": "m4a",
    "aac": "aac",
    "matroska": "webm",
    "webm": "webm",
}
# ffprobe and ffmpeg may use only these demuxers, and read only the upload's file: a playlist or a
# concat list disguised as audio (HLS, ffconcat) cannot make them open anything else.
_DEMUXERS = "wav,flac,mp3,ogg,mov,aac,matroska"
_CONTAINED = ("-format_whitelist", _DEMUXERS, "-protocol_whitelist", "file")
# The in-memory PCM buffer is sized from the declared duration, up to this: a header that lies
# about its length cannot make the adapter allocate for hours of audio up front.
_MAX_PREALLOCATION = 16 * 1024 * 1024
_DEMUXER = re.compile(r"\[([a-z0-9_,]+) @ 0x[0-9a-f]+\]\s*")
SUPPORTED_LIST = "wav, flac, mp3, ogg (Vorbis/Opus), m4a/mp4 (AAC), aac, webm/mkv (Opus/Vorbis)"


class UnsupportedFormat(InvalidRequest):
    def __init__(self, detail: str) -> None:
        super().__init__(f"Invalid file format. {detail} Supported formats: {SUPPORTED_LIST}.", param="file", code="unsupported_format")


@dataclass
class DecodedAudio:
    """16 kHz mono float32 PCM, either in the adapter's memory (`pcm`) or in a POSIX shared-memory
    object (`shared_memory`: its /dev/shm path) that Triton maps without the adapter reading it."""

    samples: int
    decode_s: float
    pcm: np.ndarray | None = None
    shared_memory: Path | None = None

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def byte_size(self) -> int:
        return self.samples * _BYTES_PER_SAMPLE

    @property
    def shared_memory_key(self) -> str:
        """The shm_open() name of the object, as Triton's registration takes it."""
        assert self.shared_memory is not None
        return "/" + self.shared_memory.name

    def close(self) -> None:
        if self.shared_memory is not None:
            self.shared_memory.unlink(missing_ok=True)


async def _run(*command: str, stdin_fd: int, timeout_s: float) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, pass_fds=(stdin_fd,)
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, stdout, stderr


class AudioDecoder:
    """ffprobe and ffmpeg, contained: a fixed set of demuxers, the upload's file as the only input,
    a time limit per run (AUDIO_DECODE_TIMEOUT_S), and at most AUDIO_DECODE_CONCURRENCY runs at once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.audio_decode_concurrency)

    def _timed_out(self, what: str) -> InvalidRequest:
        return InvalidRequest(
            f"The audio took longer than {self.settings.audio_decode_timeout_s:.0f} s to {what} (AUDIO_DECODE_TIMEOUT_S).",
            param="file",
            code="invalid_audio",
        )

    @property
    def max_samples(self) -> int:
        return math.ceil(self.settings.max_audio_duration_s * SAMPLE_RATE)

    async def probe(self, fd: int) -> tuple[str, float | None]:
        """The demuxer ffmpeg must use and the declared duration; 400 for anything unsupported."""
        try:
            async with self._slots:
                code, out, err = await _run(
                    self.settings.ffprobe_binary,
                    "-v", "error",
                    *_CONTAINED,
                    "-show_entries", "format=format_name,duration:stream=codec_type",
                    "-of", "json",
                    f"/dev/fd/{fd}",
                    stdin_fd=fd,
                    timeout_s=self.settings.audio_decode_timeout_s,
                )  # fmt: skip
        except TimeoutError as exc:
            raise self._timed_out("probe") from exc
        if code != 0:
            raise self._unreadable(err.decode(errors="replace"))
        info = json.loads(out or b"{}")
        names = str(info.get("format", {}).get("format_name", "")).split(",")
        known = [SUPPORTED_FORMATS[name] for name in names if name in SUPPORTED_FORMATS]
        if not known:
            raise UnsupportedFormat(f"The file is '{names[0] or 'unknown'}'.")
        if not any(stream.get("codec_type") == "audio" for stream in info.get("streams", [])):
            raise UnsupportedFormat(f"The {known[0]} file has no audio stream.")
        duration = info.get("format", {}).get("duration")
        return names[0], float(duration) if duration not in (None, "N/A") else None

    @staticmethod
    def _unreadable(stderr: str) -> InvalidRequest:
        """ffprobe failed. When it names one of our containers, the file is that format, but broken."""
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        demuxers = {name for match in _DEMUXER.finditer(stderr) for name in match.group(1).split(",")}
        known = sorted({SUPPORTED_FORMATS[name] for name in demuxers if name in SUPPORTED_FORMATS})
        if known:
            reason = _DEMUXER.sub("", lines[0]).strip() if lines else "unreadable"
            return InvalidRequest(
                f"The {known[0]} file is corrupted or truncated and cannot be decoded ({reason}).", param="file", code="invalid_audio"
            )
        return UnsupportedFormat("The file is not audio that ffmpeg recognises.")

    @asynccontextmanager
    async def decoded(self, upload: IO[bytes], size: int, *, shared_memory: bool | None = None) -> AsyncIterator[DecodedAudio]:
        """Probe and decode an upload already on disk (or spooled); raise the API's 4xx errors.
        The PCM (shared memory included) is released when the block ends. `shared_memory`: whether the
        PCM goes to a shared-memory object (default: AUDIO_TRANSFER for the default Triton)."""
        if size == 0:
            raise InvalidRequest("The uploaded file is empty.", param="file", code="empty_file")
        if size > self.settings.max_audio_upload_bytes:
            raise PayloadTooLarge(
                f"The file is {size} bytes; the limit is {self.settings.max_audio_upload_bytes} bytes (MAX_AUDIO_UPLOAD_BYTES).",
                param="file",
                code="file_too_large",
            )
        upload.flush()
        fd = upload.fileno()  # a spooled upload rolls over to a real file here, so ffmpeg can seek in it
        started = asyncio.get_running_loop().time()
        demuxer, declared = await self.probe(fd)
        if declared is not None and declared > self.settings.max_audio_duration_s:
            raise self._too_long(declared)
        audio = DecodedAudio(0, 0.0)
        try:
            if self.settings.audio_through_shared_memory if shared_memory is None else shared_memory:
                audio.shared_memory = self.settings.shared_memory_dir / f"passerelle-audio-{uuid.uuid4().hex}"
                # Created here, readable by this user only (ffmpeg then writes into it, keeping the mode).
                os.close(os.open(audio.shared_memory, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
                await self._ffmpeg(fd, str(audio.shared_memory), demuxer)
                audio.samples = audio.shared_memory.stat().st_size // _BYTES_PER_SAMPLE
            else:
                expected = min(round((declared or 0) * SAMPLE_RATE) * _BYTES_PER_SAMPLE, _MAX_PREALLOCATION)
                pcm = await self._ffmpeg(fd, "-", demuxer, expected_bytes=expected)
                audio.pcm = np.frombuffer(pcm, dtype=np.float32, count=len(pcm) // _BYTES_PER_SAMPLE)
                audio.samples = audio.pcm.size
            if audio.samples == 0:
                raise InvalidRequest("The file contains no decodable audio samples.", param="file", code="invalid_audio")
            if audio.samples > self.max_samples:
                raise self._too_long(audio.duration_s)
            audio.decode_s = asyncio.get_running_loop().time() - started
            yield audio
        finally:
            audio.close()

    async def decode_clip(self, data: bytes, max_seconds: float) -> np.ndarray:
        """A short clip held in memory (a known speaker's reference), probed and decoded as an upload is,
        into the adapter's memory; at most one second over `max_seconds` is decoded."""
        with tempfile.TemporaryFile() as handle:
            handle.write(data)
            handle.flush()
            fd = handle.fileno()
            demuxer, _ = await self.probe(fd)
            pcm = await self._ffmpeg(fd, "-", demuxer, limit_s=max_seconds + 1)
        return np.frombuffer(pcm, dtype=np.float32, count=len(pcm) // _BYTES_PER_SAMPLE).copy()

    def _too_long(self, seconds: float) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The audio lasts {seconds:.0f} s or more; the limit is {self.settings.max_audio_duration_s:.0f} s (MAX_AUDIO_DURATION_S).",
            param="file",
            code="audio_too_long",
        )

    async def _ffmpeg(self, fd: int, output: str, demuxer: str, expected_bytes: int = 0, limit_s: float | None = None) -> memoryview:
        """Decode to `output` (a file) or, for "-", into memory, with the demuxer the probe found (no
        second detection). At most one second over the duration limit is decoded, so that an
        over-long file without a declared duration is caught cheaply. In memory, a buffer sized from
        the declared duration (up to 16 MiB) takes the PCM, and grows if it must."""
        try:
            async with self._slots, asyncio.timeout(self.settings.audio_decode_timeout_s):
                return await self._decode(fd, output, demuxer, expected_bytes, limit_s)
        except TimeoutError as exc:
            raise self._timed_out("decode") from exc

    async def _decode(self, fd: int, output: str, demuxer: str, expected_bytes: int, limit_s: float | None) -> memoryview:
        process = await asyncio.create_subprocess_exec(
            self.settings.ffmpeg_binary,
            "-nostdin", "-hide_banner", "-v", "error",
            *_CONTAINED,
            "-f", demuxer,
            "-i", f"/dev/fd/{fd}",
            "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE),
            "-t", str(limit_s if limit_s is not None else self.settings.max_audio_duration_s + 1),
            "-f", "f32le", "-y", output,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(fd,),
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        errors = asyncio.ensure_future(process.stderr.read())
        pcm = bytearray(expected_bytes + SAMPLE_RATE * _BYTES_PER_SAMPLE)  # one second of slack
        filled = 0
        try:
            while block := await process.stdout.read(_READ_BLOCK):
                if filled + len(block) > len(pcm):
                    pcm.extend(bytes(max(len(block), len(pcm) // 4)))
                pcm[filled : filled + len(block)] = block
                filled += len(block)
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        stderr = (await errors).decode(errors="replace").strip()
        if code != 0:
            last = stderr.splitlines()[-1] if stderr else f"ffmpeg exited with {code}"
            raise InvalidRequest(f"The audio could not be decoded: {last}", param="file", code="invalid_audio")
        if stderr:
            log.info("ffmpeg decoded with warnings: %s", stderr.splitlines()[-1])
        return memoryview(pcm)[:filled]
