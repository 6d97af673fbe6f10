// Chat with the LLM: streamed answers (SSE read here), images, sampling controls, Stop.
import { type ClipboardEvent, type DragEvent, type FormEvent, type KeyboardEvent, useEffect, useId, useMemo, useRef, useState } from "react";
import { ApiError, api, apiHeaders, errorMessage, must, rootUrl, type Schemas } from "../../api/client";
import {
  applyChunk,
  type ChatImage,
  type ChatMessage,
  type Chunk,
  MAX_TOKENS_LIMIT,
  parseSampling,
  requestMessages,
  type StreamState,
  statsLine,
  streamStats,
} from "./chat";
import { renderMarkdown } from "./markdown";
import { readEvents } from "./sse";

type ModelCard = Schemas["ModelCard"];

let counter = 0;
const newId = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${(counter++).toString(36)}`;

function readDataUrl(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error ?? new Error("The file could not be read."));
    reader.readAsDataURL(file);
  });
}

/** How long streamed text waits before the next render: markdown is parsed and sanitised again on
 * each render, so a long answer arriving token by token is redrawn less often and the page (its
 * Stop button first) stays responsive. */
export function renderDelayMs(length: number): number {
  return Math.min(1000, 100 + Math.floor(length / 20));
}

function Markdown({ text }: { text: string }) {
  const html = useMemo(() => renderMarkdown(text), [text]);
  return <div className="pg-md" dangerouslySetInnerHTML={{ __html: html }} />;
}

function Message({ message }: { message: ChatMessage }) {
  const mine = message.role === "user";
  return (
    <article className={`pg-msg ${mine ? "pg-msg-user" : "pg-msg-assistant"}`} aria-label={mine ? "You" : "Assistant"}>
      <div className="pg-msg-who" aria-hidden="true">
        {mine ? "You" : "Assistant"}
      </div>
      {message.images?.length ? (
        <ul className="pg-thumbs" aria-label="Images">
          {message.images.map((image) => (
            <li key={image.id}>
              <img src={image.url} alt={image.name} />
            </li>
          ))}
        </ul>
      ) : null}
      {mine ? (
        message.text && <p className="pg-user-text">{message.text}</p>
      ) : message.text ? (
        <Markdown text={message.text} />
      ) : message.state === "streaming" ? (
        <p className="muted">Waiting for the first token…</p>
      ) : message.state === "stopped" ? (
        <p className="muted">(no text before it was stopped)</p>
      ) : message.state === "done" ? (
        <p className="muted">(empty answer)</p>
      ) : null}
      {message.state === "streaming" && message.text && <span className="pg-caret" aria-hidden="true" />}
      {message.role === "assistant" && message.state !== "streaming" && (
        <p className="pg-stats">
          {message.state === "stopped" && <span className="pg-badge">stopped</span>}
          {message.state === "error" && <span className="pg-badge pg-badge-bad">error</span>}
          {message.stats && <span>{statsLine(message.stats)}</span>}
        </p>
      )}
    </article>
  );
}

export function Chat() {
  const [models, setModels] = useState<ModelCard[]>([]);
  const [model, setModel] = useState("qwen");
  const [modelsError, setModelsError] = useState<string | null>(null);
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [draft, setDraft] = useState("");
  const [images, setImages] = useState<ChatImage[]>([]);
  const [system, setSystem] = useState("");
  const [maxTokens, setMaxTokens] = useState("512");
  const [temperature, setTemperature] = useState("0.7");
  const [topP, setTopP] = useState("0.8");
  const [ignoreEos, setIgnoreEos] = useState(false);
  const [streaming, setStreaming] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [dragging, setDragging] = useState(false);
  const abort = useRef<AbortController | null>(null);
  const logRef = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const fileInput = useRef<HTMLInputElement>(null);
  const ids = useId();

  useEffect(() => {
    const controller = new AbortController();
    must(api.GET("/v1/models", { signal: controller.signal }))
      .then((list) => {
        const chat = list.data.filter((card) => card.task === "chat");
        const usable = chat.length ? chat : list.data;
        setModels(usable);
        setModel((current) => (usable.some((card) => card.id === current) ? current : (usable[0]?.id ?? current)));
        setModelsError(null);
      })
      .catch((cause: unknown) => {
        if (cause instanceof DOMException && cause.name === "AbortError") return;
        setModelsError(`The models could not be listed: ${cause instanceof Error ? cause.message : String(cause)}`);
      });
    return () => controller.abort();
  }, []);

  // Stops a stream still running when the page goes away.
  useEffect(() => () => abort.current?.abort(), []);

  // Follows the answer as it grows, unless the person scrolled up to read.
  useEffect(() => {
    const log = logRef.current;
    if (log && stick.current) log.scrollTop = log.scrollHeight;
  }, [messages]);

  const onScroll = () => {
    const log = logRef.current;
    if (log) stick.current = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  };

  async function addImages(files: Iterable<File>) {
    const list = [...files];
    const accepted = list.filter((file) => file.type.startsWith("image/"));
    if (accepted.length < list.length) setError("Only images can be attached to a chat message.");
    else setError(null);
    try {
      const added = await Promise.all(accepted.map(async (file) => ({ id: newId("img"), name: file.name || "pasted image", url: await readDataUrl(file) })));
      setImages((current) => [...current, ...added]);
    } catch (cause) {
      setError(cause instanceof Error ? cause.message : "The image could not be read.");
    }
  }

  function updateAssistant(id: string, patch: Partial<ChatMessage>) {
    setMessages((current) => current.map((message) => (message.id === id ? { ...message, ...patch } : message)));
  }

  async function send() {
    if (streaming) return;
    const text = draft.trim();
    if (!text && !images.length) return;
    const sampling = parseSampling({ maxTokens, temperature, topP, ignoreEos });
    if (typeof sampling === "string") {
      setError(sampling);
      return;
    }
    const user: ChatMessage = { id: newId("user"), role: "user", text, images };
    const assistant: ChatMessage = { id: newId("assistant"), role: "assistant", text: "", state: "streaming" };
    const history = [...messages, user];
    setMessages([...history, assistant]);
    setDraft("");
    setImages([]);
    setError(null);
    stick.current = true;

    const controller = new AbortController();
    abort.current = controller;
    setStreaming(true);
    const sent = performance.now();
    let first: number | null = null;
    let state: StreamState = { text: "", finishReason: null, usage: null };
    let frame = 0;
    const flush = () => {
      frame = 0;
      updateAssistant(assistant.id, { text: state.text });
    };
    try {
      const response = await fetch(`${rootUrl()}/v1/chat/completions`, {
        method: "POST",
        headers: apiHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({
          model,
          messages: requestMessages(history, system),
          stream: true,
          stream_options: { include_usage: true },
          ...sampling,
        }),
        signal: controller.signal,
      });
      if (!response.ok) {
        let body: unknown;
        try {
          body = await response.json();
        } catch {
          body = undefined;
        }
        throw errorMessage(response.status, body);
      }
      if (!response.body) throw new ApiError(response.status, "The server's answer has no body to stream.");
      let streamError: string | null = null;
      for await (const event of readEvents(response.body)) {
        if (event.kind === "done") break;
        if (event.kind === "error") {
          streamError = event.message;
          break;
        }
        const before = state.text.length;
        state = applyChunk(state, event.value as Chunk);
        if (first === null && state.text.length > before) first = performance.now();
        if (!frame) frame = window.setTimeout(flush, renderDelayMs(state.text.length));
      }
      window.clearTimeout(frame);
      const stats = streamStats(state, sent, first, performance.now());
      updateAssistant(assistant.id, { text: state.text, state: streamError ? "error" : "done", stats });
      if (streamError) setError(streamError);
    } catch (cause) {
      window.clearTimeout(frame);
      const stats = streamStats(state, sent, first, performance.now());
      if (controller.signal.aborted) {
        updateAssistant(assistant.id, { text: state.text, state: "stopped", stats });
      } else if (!state.text) {
        // Refused before any text (a 4xx, the adapter down): take the question back into the box, to fix and resend.
        setMessages((current) => current.filter((message) => message.id !== user.id && message.id !== assistant.id));
        setDraft((current) => current || text);
        setImages((current) => (current.length ? current : user.images ?? []));
        setError(
          cause instanceof ApiError ? cause.message : cause instanceof TypeError ? "The adapter did not answer: is it running?" : String(cause),
        );
      } else {
        updateAssistant(assistant.id, { text: state.text, state: "error", stats });
        setError(
          cause instanceof ApiError ? cause.message : cause instanceof TypeError ? "The adapter did not answer: is it running?" : String(cause),
        );
      }
    } finally {
      if (abort.current === controller) abort.current = null;
      setStreaming(false);
    }
  }

  function stop() {
    abort.current?.abort();
  }

  function newChat() {
    abort.current?.abort();
    setMessages([]);
    setImages([]);
    setDraft("");
    setError(null);
  }

  function onSubmit(event: FormEvent) {
    event.preventDefault();
    void send();
  }

  function onKeyDown(event: KeyboardEvent<HTMLTextAreaElement>) {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      void send();
    }
  }

  function onDrop(event: DragEvent) {
    event.preventDefault();
    setDragging(false);
    if (event.dataTransfer.files.length) void addImages(event.dataTransfer.files);
  }

  function onDragOver(event: DragEvent) {
    if (![...event.dataTransfer.types].includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    setDragging(true);
  }

  function onPaste(event: ClipboardEvent) {
    const files = [...event.clipboardData.files].filter((file) => file.type.startsWith("image/"));
    if (files.length) {
      event.preventDefault();
      void addImages(files);
    }
  }

  const canSend = !streaming && (draft.trim() !== "" || images.length > 0);

  return (
    <div className="pg-chat">
      <div className="pg-controls" role="group" aria-label="Chat settings">
        <label className="pg-field">
          Model
          <select value={model} onChange={(event) => setModel(event.target.value)}>
            {!models.some((card) => card.id === model) && <option value={model}>{model}</option>}
            {models.map((card) => (
              <option key={card.id} value={card.id}>
                {card.id}
                {card.state && card.state !== "READY" ? ` (${card.state.toLowerCase()})` : ""}
              </option>
            ))}
          </select>
        </label>
        <label className="pg-field">
          Max tokens
          <input type="number" inputMode="numeric" min={1} max={MAX_TOKENS_LIMIT} step={1} value={maxTokens} onChange={(event) => setMaxTokens(event.target.value)} />
        </label>
        <label className="pg-field">
          Temperature
          <input type="number" inputMode="decimal" min={0} max={2} step={0.1} value={temperature} onChange={(event) => setTemperature(event.target.value)} />
        </label>
        <label className="pg-field">
          Top p
          <input type="number" inputMode="decimal" min={0.01} max={1} step={0.05} value={topP} onChange={(event) => setTopP(event.target.value)} />
        </label>
        <label className="pg-check" title="Generate up to Max tokens even after the end-of-sequence token: useful to measure speed">
          <input type="checkbox" checked={ignoreEos} onChange={(event) => setIgnoreEos(event.target.checked)} />
          Ignore EOS
        </label>
        <button type="button" className="secondary pg-push" onClick={newChat} disabled={!messages.length && !draft && !images.length}>
          New chat
        </button>
      </div>
      <details className="pg-system">
        <summary>System prompt</summary>
        <label className="pg-field pg-wide">
          System prompt
          <textarea rows={3} value={system} onChange={(event) => setSystem(event.target.value)} placeholder="Optional instructions sent before the conversation" />
        </label>
      </details>
      {modelsError && (
        <p className="error" role="alert">
          {modelsError}
        </p>
      )}

      <div
        ref={logRef}
        className="pg-log"
        role="log"
        aria-label="Conversation"
        aria-busy={streaming}
        tabIndex={0}
        onScroll={onScroll}
      >
        {messages.length ? (
          messages.map((message) => <Message key={message.id} message={message} />)
        ) : (
          <p className="muted pg-empty">
            Ask the model something. Enter sends, Shift+Enter starts a new line; drop or paste images to ask about them.
          </p>
        )}
      </div>

      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}

      <form className={dragging ? "pg-composer pg-dragging" : "pg-composer"} onSubmit={onSubmit} onDragOver={onDragOver} onDragLeave={() => setDragging(false)} onDrop={onDrop}>
        {images.length > 0 && (
          <ul className="pg-thumbs pg-attached" aria-label="Attached images">
            {images.map((image) => (
              <li key={image.id}>
                <img src={image.url} alt={image.name} />
                <button type="button" className="pg-remove" aria-label={`Remove image ${image.name}`} title="Remove" onClick={() => setImages((current) => current.filter((item) => item.id !== image.id))}>
                  ×
                </button>
              </li>
            ))}
          </ul>
        )}
        <label htmlFor={`${ids}-message`} className="pg-visually-hidden">
          Message
        </label>
        <textarea
          id={`${ids}-message`}
          className="pg-message"
          rows={3}
          value={draft}
          placeholder={dragging ? "Drop images here" : "Message (Enter sends, Shift+Enter for a new line)"}
          onChange={(event) => setDraft(event.target.value)}
          onKeyDown={onKeyDown}
          onPaste={onPaste}
        />
        <div className="row pg-composer-actions">
          <label className="pg-file-button">
            <input
              ref={fileInput}
              type="file"
              accept="image/*"
              multiple
              className="pg-visually-hidden"
              onChange={(event) => {
                if (event.target.files) void addImages(event.target.files);
                event.target.value = "";
              }}
            />
            Attach image
          </label>
          <span className="muted pg-hint">or drop images here</span>
          <span className="pg-push row">
            <button type="button" className="danger" onClick={stop} disabled={!streaming}>
              Stop
            </button>
            <button type="submit" disabled={!canSend}>
              Send
            </button>
          </span>
        </div>
      </form>
    </div>
  );
}
