// Microphone recording with MediaRecorder: start, then stop() gives one Blob (audio/webm in Chromium
// and Firefox, audio/mp4 in Safari), handled like an uploaded file.

export interface Recording {
  /** Stops recording and releases the microphone; resolves to the recorded audio. */
  stop(): Promise<Blob>;
  /** Stops and drops the recording, releasing the microphone. */
  cancel(): void;
  mimeType: string;
}

const PREFERRED = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"];

/** The recording format: the first that this browser's MediaRecorder supports, or its default (""). */
export function pickMimeType(isSupported: (type: string) => boolean): string {
  return PREFERRED.find((type) => isSupported(type)) ?? "";
}

/** A file extension for a recorded (or uploaded) audio type. */
export function extensionFor(mimeType: string): string {
  const base = mimeType.split(";")[0].trim().toLowerCase();
  if (base.includes("webm")) return "webm";
  if (base.includes("ogg")) return "ogg";
  if (base.includes("mp4") || base.includes("m4a") || base.includes("aac")) return "m4a";
  if (base.includes("wav")) return "wav";
  if (base.includes("mpeg") || base.includes("mp3")) return "mp3";
  return "webm";
}

/** Why the microphone cannot be used, in words. */
export function microphoneError(error: unknown): string {
  const name = error instanceof DOMException || error instanceof Error ? error.name : "";
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was refused. Allow the microphone for this site in the browser (the icon in the address bar), then try again, or upload a file instead.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect one, or upload a file instead.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone is busy or could not be started (another application may be using it).";
    case "Unsupported":
      return error instanceof Error ? error.message : "Recording is not available in this browser.";
    default:
      return `The microphone could not be used${error instanceof Error && error.message ? `: ${error.message}` : "."}`;
  }
}

function unsupported(message: string): Error {
  const error = new Error(message);
  error.name = "Unsupported";
  return error;
}

/** Asks for the microphone and starts recording. Rejects with an error that `microphoneError` explains. */
export async function startRecording(): Promise<Recording> {
  if (typeof navigator === "undefined" || !navigator.mediaDevices?.getUserMedia) {
    throw unsupported(
      window.isSecureContext === false
        ? "The microphone is only available on a secure page (HTTPS or localhost). Upload a file instead."
        : "This browser cannot record audio. Upload a file instead.",
    );
  }
  if (typeof MediaRecorder === "undefined") throw unsupported("This browser cannot record audio (no MediaRecorder). Upload a file instead.");
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const release = () => stream.getTracks().forEach((track) => track.stop());
  let recorder: MediaRecorder;
  try {
    const mimeType = pickMimeType((type) => MediaRecorder.isTypeSupported(type));
    recorder = mimeType ? new MediaRecorder(stream, { mimeType }) : new MediaRecorder(stream);
  } catch (error) {
    release();
    throw error;
  }
  const chunks: Blob[] = [];
  recorder.addEventListener("dataavailable", (event) => {
    if (event.data.size > 0) chunks.push(event.data);
  });
  recorder.start(250);
  return {
    mimeType: recorder.mimeType,
    stop: () =>
      new Promise<Blob>((resolve) => {
        recorder.addEventListener(
          "stop",
          () => {
            release();
            resolve(new Blob(chunks, { type: recorder.mimeType || chunks[0]?.type || "audio/webm" }));
          },
          { once: true },
        );
        if (recorder.state !== "inactive") recorder.stop();
        else {
          release();
          resolve(new Blob(chunks, { type: recorder.mimeType || "audio/webm" }));
        }
      }),
    cancel: () => {
      if (recorder.state !== "inactive") recorder.stop();
      release();
    },
  };
}
