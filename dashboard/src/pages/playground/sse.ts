// A small server-sent-events reader for OpenAI-style streams: `data: {...}` events, `data: [DONE]`,
// comments (`: keep-alive`), events split anywhere across network chunks, CRLF or LF line endings.

/** Splits a text stream into SSE events and returns each event's `data` (its data lines joined by "\n"). */
export class SseParser {
  private buffer = "";
  private data: string[] = [];

  /** Feeds one decoded chunk; returns the data of every event the chunk completed. */
  push(chunk: string): string[] {
    this.buffer += chunk;
    const out: string[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const char = this.buffer[i];
      if (char !== "\n" && char !== "\r") continue;
      // A lone "\r" at the end of the buffer may be the first half of "\r\n": wait for the next chunk.
      if (char === "\r" && i === this.buffer.length - 1) break;
      this.line(this.buffer.slice(start, i), out);
      if (char === "\r" && this.buffer[i + 1] === "\n") i++;
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  /** The stream ended: an event not closed by a blank line is dispatched (as browsers do not, but servers forget). */
  end(): string[] {
    const out: string[] = [];
    if (this.buffer) this.line(this.buffer.replace(/\r$/, ""), out);
    this.buffer = "";
    if (this.data.length) out.push(this.data.join("\n"));
    this.data = [];
    return out;
  }

  private line(line: string, out: string[]): void {
    if (line === "") {
      if (this.data.length) out.push(this.data.join("\n"));
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return; // a comment: keep-alive
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    // `event`, `id`, `retry`: OpenAI's chat stream does not use them.
  }
}

export type StreamEvent =
  | { kind: "done" }
  | { kind: "error"; message: string; code?: string }
  | { kind: "data"; value: unknown };

/** What one event's data means: the end, an error payload `{"error": {...}}`, or a JSON value. */
export function interpretEvent(data: string): StreamEvent {
  const trimmed = data.trim();
  if (trimmed === "[DONE]") return { kind: "done" };
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch {
    return { kind: "error", message: `The server sent an event that is not JSON: ${trimmed.slice(0, 120)}` };
  }
  if (value && typeof value === "object" && "error" in value) {
    const error = (value as { error: unknown }).error;
    if (error && typeof error === "object") {
      const { message, code } = error as { message?: unknown; code?: unknown };
      return {
        kind: "error",
        message: typeof message === "string" && message ? message : "The server reported an error during the stream.",
        code: typeof code === "string" ? code : undefined,
      };
    }
    return { kind: "error", message: typeof error === "string" && error ? error : "The server reported an error during the stream." };
  }
  return { kind: "data", value };
}

/** Reads a fetch body as SSE events, decoded and interpreted, until it ends (or `[DONE]`). */
export async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<StreamEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      const payloads = done ? [...parser.push(decoder.decode()), ...parser.end()] : parser.push(decoder.decode(value, { stream: true }));
      for (const data of payloads) {
        const event = interpretEvent(data);
        yield event;
        if (event.kind === "done") return;
      }
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}
