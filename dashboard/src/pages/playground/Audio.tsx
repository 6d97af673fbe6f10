// Audio: transcribe, translate or diarize an uploaded file or a microphone recording.
import { useEffect, useMemo, useRef, useState } from "react";
import { ApiError, apiHeaders, errorMessage, rootUrl, type SeedDiarization, type SeedTranscription } from "../../api/client";
import { useRangePlayer } from "./player";
import { extensionFor, microphoneError, type Recording, startRecording } from "./recorder";
import { SpeakerTimeline } from "./SpeakerTimeline";
import { type Cue, diarizationCues, toSrt, toVtt, transcriptionCues } from "./subtitles";
import { formatClock, layoutTimeline, type Turn } from "./timeline";

type Task = "transcribe" | "translate" | "diarize";

// Canary-1b-v2's languages (adapter/src/passerelle/audio/languages.py).
export const LANGUAGES: [string, string][] = [
  ["en", "English"],
  ["de", "German"],
  ["fr", "French"],
  ["es", "Spanish"],
  ["it", "Italian"],
  ["pt", "Portuguese"],
  ["nl", "Dutch"],
  ["pl", "Polish"],
  ["ru", "Russian"],
  ["uk", "Ukrainian"],
  ["bg", "Bulgarian"],
  ["cs", "Czech"],
  ["da", "Danish"],
  ["el", "Greek"],
  ["et", "Estonian"],
  ["fi", "Finnish"],
  ["hr", "Croatian"],
  ["hu", "Hungarian"],
  ["lt", "Lithuanian"],
  ["lv", "Latvian"],
  ["mt", "Maltese"],
  ["ro", "Romanian"],
  ["sk", "Slovak"],
  ["sl", "Slovenian"],
  ["sv", "Swedish"],
];
const languageName = (code: string) => LANGUAGES.find(([value]) => value === code)?.[1] ?? code;

interface Source {
  blob: Blob;
  name: string;
  recorded: boolean;
}

type Result =
  | { kind: "transcription"; task: "transcribe" | "translate"; data: SeedTranscription; seconds: number; source: Source }
  | { kind: "diarization"; data: SeedDiarization; seconds: number; source: Source };

/** An object URL for a blob (or text), revoked when it changes or the component goes. */
function useObjectUrl(content: Blob | string | null, type = "text/plain"): string | null {
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    if (content === null) {
      setUrl(null);
      return;
    }
    const made = URL.createObjectURL(typeof content === "string" ? new Blob([content], { type }) : content);
    setUrl(made);
    return () => URL.revokeObjectURL(made);
  }, [content, type]);
  return url;
}

function useElapsed(running: boolean): number {
  const [elapsed, setElapsed] = useState(0);
  useEffect(() => {
    if (!running) return;
    const start = Date.now();
    setElapsed(0);
    const timer = window.setInterval(() => setElapsed(Math.floor((Date.now() - start) / 1000)), 250);
    return () => window.clearInterval(timer);
  }, [running]);
  return elapsed;
}

const stem = (name: string) => name.replace(/\.[^./]+$/, "") || "audio";

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function Audio() {
  const [source, setSource] = useState<Source | null>(null);
  const [task, setTask] = useState<Task>("transcribe");
  const [language, setLanguage] = useState("auto");
  const [target, setTarget] = useState("en");
  const [speakers, setSpeakers] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [result, setResult] = useState<Result | null>(null);
  const [recording, setRecording] = useState<Recording | null>(null);
  const [starting, setStarting] = useState(false);
  const [audioEl, setAudioEl] = useState<HTMLAudioElement | null>(null);
  const request = useRef<AbortController | null>(null);
  const recordingRef = useRef<Recording | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const audioUrl = useObjectUrl(source?.blob ?? null);
  const player = useRangePlayer(audioEl);
  const runElapsed = useElapsed(busy);
  const recordElapsed = useElapsed(recording !== null);

  // Releases the microphone and cancels a request when the page goes away.
  useEffect(
    () => () => {
      recordingRef.current?.cancel();
      request.current?.abort();
    },
    [],
  );

  function choose(next: Source | null) {
    request.current?.abort();
    setSource(next);
    setResult(null);
    setError(null);
  }

  async function toggleRecording() {
    if (recording) {
      const blob = await recording.stop();
      recordingRef.current = null;
      setRecording(null);
      if (blob.size === 0) {
        setError("Nothing was recorded: the microphone gave no sound data.");
        return;
      }
      if (fileInput.current) fileInput.current.value = "";
      const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
      choose({ blob, name: `recording-${stamp}.${extensionFor(blob.type)}`, recorded: true });
      return;
    }
    setError(null);
    setStarting(true);
    try {
      const started = await startRecording();
      recordingRef.current = started;
      setRecording(started);
    } catch (cause) {
      setError(microphoneError(cause));
    } finally {
      setStarting(false);
    }
  }

  async function run() {
    if (!source || busy) return;
    const form = new FormData();
    form.append("file", source.blob, source.name);
    let path: string;
    if (task === "diarize") {
      path = "/api/diarization/process";
    } else {
      path = "/api/audio/transcribe";
      form.append("timestamps", "true");
      form.append("diarization", speakers ? "true" : "false");
      if (language !== "auto") form.append("language", language);
      if (task === "translate") form.append("target_language", target);
    }
    const controller = new AbortController();
    request.current = controller;
    setBusy(true);
    setError(null);
    const started = performance.now();
    try {
      const response = await fetch(`${rootUrl()}${path}`, { method: "POST", headers: apiHeaders(), body: form, signal: controller.signal });
      let body: unknown;
      try {
        body = await response.json();
      } catch {
        body = undefined;
      }
      if (!response.ok) throw errorMessage(response.status, body);
      if (body === undefined) throw new ApiError(response.status, "The server's answer is not JSON.");
      const seconds = (performance.now() - started) / 1000;
      setResult(
        task === "diarize"
          ? { kind: "diarization", data: body as SeedDiarization, seconds, source }
          : { kind: "transcription", task, data: body as SeedTranscription, seconds, source },
      );
    } catch (cause) {
      if (controller.signal.aborted) return;
      setError(cause instanceof ApiError ? cause.message : cause instanceof TypeError ? "The adapter did not answer: is it running?" : String(cause));
    } finally {
      if (request.current === controller) {
        request.current = null;
        setBusy(false);
      }
    }
  }

  function cancel() {
    request.current?.abort();
    request.current = null;
    setBusy(false);
  }

  return (
    <div className="pg-audio">
      <section className="card pg-audio-input" aria-labelledby="pg-audio-input-title">
        <h2 id="pg-audio-input-title">Input</h2>
        <div className="row pg-source">
          <label className="pg-field">
            Audio file
            <input
              ref={fileInput}
              type="file"
              accept="audio/*,video/*"
              disabled={recording !== null}
              onChange={(event) => {
                const file = event.target.files?.[0];
                if (file) choose({ blob: file, name: file.name, recorded: false });
              }}
            />
          </label>
          <span className="muted" aria-hidden="true">
            or
          </span>
          <button type="button" className={recording ? "danger" : "secondary"} onClick={() => void toggleRecording()} disabled={starting || busy}>
            {recording ? "Stop recording" : "Record"}
          </button>
          {recording && (
            <span className="pg-recording">
              <span className="pg-rec-dot" aria-hidden="true" />
              Recording <span role="timer">{recordElapsed} s</span>
            </span>
          )}
        </div>
        <p className="pg-visually-hidden" aria-live="polite">
          {recording ? "Recording started." : ""}
        </p>

        {source && (
          <div className="pg-source-info">
            <p className="muted">
              {source.recorded ? "Recorded" : "File"}: <strong className="pg-filename">{source.name}</strong> ({formatBytes(source.blob.size)}
              {source.blob.type ? `, ${source.blob.type}` : ""})
            </p>
            {audioUrl && <audio ref={setAudioEl} controls src={audioUrl} aria-label="Audio" preload="metadata" className="pg-player" />}
          </div>
        )}

        <fieldset className="pg-task">
          <legend>Task</legend>
          {(
            [
              ["transcribe", "Transcribe"],
              ["translate", "Translate"],
              ["diarize", "Diarize"],
            ] as const
          ).map(([value, label]) => (
            <label key={value} className="pg-check">
              <input type="radio" name="pg-audio-task" value={value} checked={task === value} onChange={() => setTask(value)} />
              {label}
            </label>
          ))}
        </fieldset>

        <div className="pg-controls">
          {task !== "diarize" && (
            <label className="pg-field">
              Language
              <select value={language} onChange={(event) => setLanguage(event.target.value)}>
                <option value="auto">Auto (identify)</option>
                {LANGUAGES.map(([code, name]) => (
                  <option key={code} value={code}>
                    {name} ({code})
                  </option>
                ))}
              </select>
            </label>
          )}
          {task === "translate" && (
            <label className="pg-field">
              Target language
              <select value={target} onChange={(event) => setTarget(event.target.value)}>
                {LANGUAGES.map(([code, name]) => (
                  <option key={code} value={code}>
                    {name} ({code})
                  </option>
                ))}
              </select>
            </label>
          )}
          {task !== "diarize" && (
            <label className="pg-check">
              <input type="checkbox" checked={speakers} onChange={(event) => setSpeakers(event.target.checked)} />
              Speakers
            </label>
          )}
        </div>
        <p className="muted pg-task-help">
          {task === "transcribe" && "Writes down what is said, with timestamps; Speakers also tells who says it."}
          {task === "translate" && "Writes what is said in the target language, with timestamps; Speakers also tells who says it."}
          {task === "diarize" && "Finds who speaks when, without transcribing."}
        </p>

        <div className="row">
          <button type="button" onClick={() => void run()} disabled={!source || busy || recording !== null}>
            Run
          </button>
          {busy && (
            <>
              <button type="button" className="secondary" onClick={cancel}>
                Cancel
              </button>
              <span className="pg-busy" role="status">
                <span className="pg-spinner" aria-hidden="true" />
                Working… {runElapsed} s
                {runElapsed >= 5 && <span className="muted"> (the first request loads the audio models: it can take a minute or two)</span>}
              </span>
            </>
          )}
          {!source && !recording && <span className="muted">Choose a file or record to start.</span>}
        </div>
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
      </section>

      <section className="card pg-result" aria-label="Result" aria-busy={busy}>
        <h2>Result</h2>
        {result ? <ResultView result={result} player={player} /> : <p className="muted">Run a task to see its result here.</p>}
      </section>
    </div>
  );
}

function ResultView({ result, player }: { result: Result; player: ReturnType<typeof useRangePlayer> }) {
  const cues: Cue[] = useMemo(() => (result.kind === "diarization" ? diarizationCues(result.data) : transcriptionCues(result.data)), [result]);
  const srt = useMemo(() => toSrt(cues), [cues]);
  const vtt = useMemo(() => toVtt(cues), [cues]);
  const srtUrl = useObjectUrl(srt, "application/x-subrip");
  const vttUrl = useObjectUrl(vtt, "text/vtt");
  const base = stem(result.source.name);

  const turns: Turn[] = useMemo(() => {
    if (result.kind === "diarization") return result.data.segments;
    if (result.data.speakers?.length) return result.data.speakers;
    return (result.data.segments ?? []).filter((segment) => segment.speaker).map(({ speaker, start, end }) => ({ speaker: speaker as string, start, end }));
  }, [result]);
  const duration = result.data.duration;
  const colors = useMemo(() => new Map(layoutTimeline(turns, duration).rows.map((row) => [row.speaker, row.color])), [turns, duration]);
  const speakerCount = result.kind === "diarization" ? result.data.num_speakers : colors.size;

  return (
    <>
      <dl className="facts pg-facts">
        <dt>Task</dt>
        <dd>{result.kind === "diarization" ? "Diarize" : result.task === "translate" ? "Translate" : "Transcribe"}</dd>
        {result.kind === "transcription" && (
          <>
            <dt>Language</dt>
            <dd>
              {result.data.language ? languageName(result.data.language) : "none (no speech)"}
              {result.data.target_language && result.data.target_language !== result.data.language && ` → ${languageName(result.data.target_language)}`}
            </dd>
          </>
        )}
        <dt>Duration</dt>
        <dd>{duration.toFixed(2)} s</dd>
        {(result.kind === "diarization" || turns.length > 0) && (
          <>
            <dt>Speakers</dt>
            <dd>{speakerCount}</dd>
          </>
        )}
        <dt>Answered in</dt>
        <dd>{result.seconds.toFixed(2)} s</dd>
      </dl>

      {result.kind === "transcription" && (
        <>
          <h3>Transcript</h3>
          {result.data.text.trim() ? (
            <p className="pg-transcript">{result.data.text}</p>
          ) : (
            <p className="muted">{result.data.speech_detected ? "(empty transcript)" : "No speech was detected."}</p>
          )}
        </>
      )}

      {cues.length > 0 && (
        <>
          <h3>{result.kind === "diarization" ? "Turns" : "Segments"}</h3>
          <ol className="pg-segments">
            {cues.map((cue, index) => {
              const id = `cue-${index}`;
              const playingNow =
                player.activeId === id ||
                (!player.activeId?.startsWith("cue-") && player.playing && cue.start <= player.currentTime && player.currentTime < cue.end);
              return (
                <li key={id} className={playingNow ? "pg-segment-active" : undefined} aria-current={playingNow ? "true" : undefined}>
                  <button
                    type="button"
                    className="secondary pg-seg-time"
                    aria-label={`Play ${formatClock(cue.start, 2)} to ${formatClock(cue.end, 2)}`}
                    onClick={() => player.playRange(cue.start, cue.end, id)}
                  >
                    {formatClock(cue.start, 1)}–{formatClock(cue.end, 1)}
                  </button>
                  {result.kind === "diarization" ? (
                    <span className="pg-speaker" style={{ borderColor: colors.get(cue.text) }}>
                      {cue.text}
                    </span>
                  ) : (
                    <>
                      {cue.speaker && (
                        <span className="pg-speaker" style={{ borderColor: colors.get(cue.speaker) }}>
                          {cue.speaker}
                        </span>
                      )}
                      <span className="pg-seg-text">{cue.text}</span>
                    </>
                  )}
                </li>
              );
            })}
          </ol>
        </>
      )}

      <div className="row pg-downloads">
        {srtUrl && cues.length > 0 && (
          <a href={srtUrl} download={`${base}.srt`} className="pg-link-button">
            Download SRT
          </a>
        )}
        {vttUrl && cues.length > 0 && (
          <a href={vttUrl} download={`${base}.vtt`} className="pg-link-button">
            Download VTT
          </a>
        )}
        {cues.length === 0 && <span className="muted">No timed segments: nothing to download as subtitles.</span>}
      </div>

      {turns.length > 0 && (
        <>
          <h3>Speaker timeline</h3>
          <p className="muted pg-hint">Select a turn to hear it.</p>
          <SpeakerTimeline turns={turns} duration={duration} player={player} />
        </>
      )}
      {result.kind === "transcription" && turns.length === 0 && result.data.speakers !== undefined && result.data.speakers !== null && (
        <p className="muted">No speaker turns were found.</p>
      )}
    </>
  );
}
