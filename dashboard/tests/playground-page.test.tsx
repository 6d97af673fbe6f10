import { act, cleanup, fireEvent, render, screen, waitFor, within } from "@testing-library/react";

// openapi-fetch keeps the fetch it finds when the client is made: replace it before any import.
const fetchMock = vi.hoisted(() => {
  const mock = vi.fn();
  globalThis.fetch = mock as unknown as typeof fetch;
  return mock;
});

import { Playground } from "../src/pages/Playground";

const MODELS = {
  object: "list",
  data: [
    { id: "canary", object: "model", created: 0, owned_by: "passerelle", root: "c", task: "transcription", state: "UNAVAILABLE", aliases: [] },
    { id: "qwen", object: "model", created: 0, owned_by: "passerelle", root: "q", task: "chat", state: "READY", aliases: [] },
  ],
};

const json = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

function sse(events: string[], options: { hang?: boolean; signal?: AbortSignal } = {}): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const event of events) controller.enqueue(encoder.encode(event));
      if (!options.hang) controller.close();
      else
        options.signal?.addEventListener("abort", () => {
          controller.error(new DOMException("The operation was aborted.", "AbortError"));
        });
    },
  });
  return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
}

function urlOf(input: unknown): string {
  return typeof input === "string" ? input : input instanceof Request ? input.url : String(input);
}

type Handler = (url: string, init: RequestInit | undefined) => Response | Promise<Response>;
function route(handler: Handler) {
  fetchMock.mockImplementation(async (input: unknown, init?: RequestInit) => {
    const url = urlOf(input);
    if (url.endsWith("/v1/models")) return json(MODELS);
    return handler(url, init);
  });
}

beforeEach(() => {
  fetchMock.mockReset();
  sessionStorage.clear();
});
afterEach(cleanup);

describe("Playground tabs", () => {
  it("switches tabs with the arrow keys", async () => {
    route(() => json({}));
    render(<Playground />);
    const chat = screen.getByRole("tab", { name: "Chat" });
    const audio = screen.getByRole("tab", { name: "Audio" });
    expect(chat.getAttribute("aria-selected")).toBe("true");
    expect(screen.getByRole("tabpanel", { name: "Chat" })).toBeTruthy();
    chat.focus();
    fireEvent.keyDown(chat, { key: "ArrowRight" });
    expect(audio.getAttribute("aria-selected")).toBe("true");
    expect(document.activeElement).toBe(audio);
    expect(screen.getByRole("tabpanel", { name: "Audio" })).toBeTruthy();
    expect(screen.queryByRole("tabpanel", { name: "Chat" })).toBeNull();
    fireEvent.keyDown(audio, { key: "ArrowRight" });
    expect(chat.getAttribute("aria-selected")).toBe("true");
    fireEvent.keyDown(chat, { key: "End" });
    expect(audio.getAttribute("aria-selected")).toBe("true");
    await waitFor(() => expect(fetchMock).toHaveBeenCalled());
  });
});

describe("Chat", () => {
  it("lists chat models, streams an answer as markdown and shows its stats", async () => {
    let sent: Record<string, unknown> = {};
    let headers: Headers = new Headers();
    route((url, init) => {
      expect(url).toMatch(/\/v1\/chat\/completions$/);
      sent = JSON.parse(String(init?.body));
      headers = new Headers(init?.headers);
      return sse([
        'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"**Hel"}}]}\n\n',
        ': keep-alive\n\ndata: {"choices":[{"index":0,"delta":{"content":"lo**"},"finish_reason":"stop"}]}\n\n',
        'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\ndata: [DONE]\n\n',
      ]);
    });
    sessionStorage.setItem("passerelle.apiKey", "sk-test");
    render(<Playground />);
    const select = screen.getByLabelText("Model") as HTMLSelectElement;
    await waitFor(() => expect([...select.options].map((option) => option.value)).toEqual(["qwen"]));
    expect(select.value).toBe("qwen");

    fireEvent.click(screen.getByLabelText("Ignore EOS"));
    fireEvent.change(screen.getByLabelText("Max tokens"), { target: { value: "50" } });
    const message = screen.getByLabelText("Message");
    fireEvent.change(message, { target: { value: "Say hello" } });
    fireEvent.keyDown(message, { key: "Enter" });

    const log = screen.getByRole("log", { name: "Conversation" });
    await waitFor(() => expect(within(log).getByText("Hello").tagName).toBe("STRONG"));
    await waitFor(() => expect(log.textContent).toContain("2 tokens"));
    expect(log.textContent).toContain("finished (stop)");
    expect(log.textContent).toContain("first token");
    expect(within(log).getByText("Say hello")).toBeTruthy();
    expect(sent).toMatchObject({
      model: "qwen",
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 50,
      ignore_eos: true,
      messages: [{ role: "user", content: "Say hello" }],
    });
    expect(headers.get("Authorization")).toBe("Bearer sk-test");
    expect(headers.get("Content-Type")).toBe("application/json");
    expect((screen.getByRole("button", { name: "Stop" }) as HTMLButtonElement).disabled).toBe(true);
    expect((message as HTMLTextAreaElement).value).toBe("");
  });

  it("Shift+Enter does not send", async () => {
    route(() => sse(["data: [DONE]\n\n"]));
    render(<Playground />);
    const message = screen.getByLabelText("Message");
    fireEvent.change(message, { target: { value: "line" } });
    fireEvent.keyDown(message, { key: "Enter", shiftKey: true });
    await waitFor(() => expect(fetchMock).toHaveBeenCalledTimes(1)); // the model list only
    expect((message as HTMLTextAreaElement).value).toBe("line");
  });

  it("Stop aborts the stream and marks the answer stopped", async () => {
    let signal: AbortSignal | undefined;
    route((_url, init) => {
      signal = init?.signal ?? undefined;
      return sse(['data: {"choices":[{"index":0,"delta":{"content":"partial answer"}}]}\n\n'], { hang: true, signal });
    });
    render(<Playground />);
    fireEvent.change(screen.getByLabelText("Message"), { target: { value: "Go on forever" } });
    fireEvent.click(screen.getByRole("button", { name: "Send" }));
    const stop = screen.getByRole("button", { name: "Stop" }) as HTMLButtonElement;
    await waitFor(() => expect(stop.disabled).toBe(false));
    await waitFor(() => expect(screen.getByRole("log").textContent).toContain("partial answer"));
    fireEvent.click(stop);
    expect(signal?.aborted).toBe(true);
    await waitFor(() => expect(screen.getByText("stopped")).toBeTruthy());
    expect(stop.disabled).toBe(true);
    expect(screen.queryByRole("alert")).toBeNull();
  });

  it("shows the server's error message in an alert", async () => {
    route(() => json({ error: { message: "'max_tokens' is too large", type: "invalid_request_error", param: "max_tokens", code: "context_length_exceeded" } }, 400));
    render(<Playground />);
    fireEvent.change(screen.getByLabelText("Message"), { target: { value: "Hi" } });
    fireEvent.click(screen.getByRole("button", { name: "Send" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toBe("'max_tokens' is too large"));
    // The question goes back into the box, to fix and send again.
    expect((screen.getByLabelText("Message") as HTMLTextAreaElement).value).toBe("Hi");
    expect(screen.getByRole("log").textContent).not.toContain("Hi");
  });

  it("shows an error event that arrives mid-stream", async () => {
    route(() => sse(['data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n', 'data: {"error":{"message":"Triton went away"}}\n\n', "data: [DONE]\n\n"]));
    render(<Playground />);
    fireEvent.change(screen.getByLabelText("Message"), { target: { value: "Hi" } });
    fireEvent.click(screen.getByRole("button", { name: "Send" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toBe("Triton went away"));
  });

  it("sends an attached image as an image_url part, and can remove it", async () => {
    let sent: { messages?: { content: unknown }[] } = {};
    route((_url, init) => {
      sent = JSON.parse(String(init?.body));
      return sse(["data: [DONE]\n\n"]);
    });
    render(<Playground />);
    const input = screen.getByLabelText("Attach image") as HTMLInputElement;
    const png = new File([new Uint8Array([137, 80, 78, 71])], "cat.png", { type: "image/png" });
    const other = new File([new Uint8Array([1])], "dog.png", { type: "image/png" });
    await act(async () => {
      fireEvent.change(input, { target: { files: [png, other] } });
    });
    await waitFor(() => expect(screen.getByRole("button", { name: "Remove image dog.png" })).toBeTruthy());
    fireEvent.click(screen.getByRole("button", { name: "Remove image dog.png" }));
    expect(screen.queryByRole("button", { name: "Remove image dog.png" })).toBeNull();
    fireEvent.change(screen.getByLabelText("Message"), { target: { value: "What is it?" } });
    fireEvent.click(screen.getByRole("button", { name: "Send" }));
    await waitFor(() => expect(sent.messages).toBeDefined());
    expect(sent.messages?.[0].content).toEqual([
      { type: "text", text: "What is it?" },
      { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw==" } },
    ]);
  });

  it("New chat clears the conversation", async () => {
    route(() => sse(['data: {"choices":[{"index":0,"delta":{"content":"Yo"}}]}\n\n', "data: [DONE]\n\n"]));
    render(<Playground />);
    fireEvent.change(screen.getByLabelText("Message"), { target: { value: "Hi" } });
    fireEvent.click(screen.getByRole("button", { name: "Send" }));
    await waitFor(() => expect(screen.getByRole("log").textContent).toContain("Yo"));
    fireEvent.click(screen.getByRole("button", { name: "New chat" }));
    expect(screen.getByRole("log").textContent).not.toContain("Yo");
  });
});

describe("Audio", () => {
  beforeAll(() => {
    let n = 0;
    URL.createObjectURL = vi.fn(() => `blob:test/${n++}`);
    URL.revokeObjectURL = vi.fn();
  });

  function openAudio(): HTMLInputElement {
    render(<Playground />);
    fireEvent.click(screen.getByRole("tab", { name: "Audio" }));
    const input = screen.getByLabelText("Audio file") as HTMLInputElement;
    fireEvent.change(input, { target: { files: [new File([new Uint8Array([1, 2, 3])], "talk.wav", { type: "audio/wav" })] } });
    return input;
  }

  it("transcribes with speakers: form fields, transcript, downloads, timeline", async () => {
    let form: FormData | undefined;
    let path = "";
    route((url, init) => {
      path = new URL(url).pathname;
      form = init?.body as FormData;
      return json({
        text: "Hello there. Hi!",
        sampling_rate: 16000,
        language: "en",
        target_language: "de",
        duration: 4,
        speech_detected: true,
        segments: [
          { start: 0, end: 1.5, text: "Hello there.", speaker: "SPEAKER_00" },
          { start: 2, end: 3.25, text: "Hi!", speaker: "SPEAKER_01" },
        ],
        speakers: [
          { speaker: "SPEAKER_00", start: 0, end: 1.5 },
          { speaker: "SPEAKER_01", start: 2, end: 3.25 },
        ],
      });
    });
    openAudio();
    expect(screen.getByLabelText("Audio", { selector: "audio" }).getAttribute("src")).toMatch(/^blob:/);
    fireEvent.click(screen.getByRole("radio", { name: "Translate" }));
    fireEvent.change(screen.getByLabelText("Language"), { target: { value: "fr" } });
    fireEvent.change(screen.getByLabelText("Target language"), { target: { value: "de" } });
    fireEvent.click(screen.getByRole("checkbox", { name: "Speakers" }));
    fireEvent.click(screen.getByRole("button", { name: "Run" }));

    const result = screen.getByRole("region", { name: "Result" });
    await waitFor(() => expect(within(result).getByText("Hello there. Hi!")).toBeTruthy());
    expect(path).toBe("/api/audio/transcribe");
    expect((form?.get("file") as File).name).toBe("talk.wav");
    expect(form?.get("timestamps")).toBe("true");
    expect(form?.get("diarization")).toBe("true");
    expect(form?.get("language")).toBe("fr");
    expect(form?.get("target_language")).toBe("de");

    const srt = await within(result).findByRole("link", { name: "Download SRT" });
    expect(srt.getAttribute("download")).toBe("talk.srt");
    expect(srt.getAttribute("href")).toMatch(/^blob:/);
    expect(within(result).getByRole("link", { name: "Download VTT" }).getAttribute("download")).toBe("talk.vtt");
    const timeline = within(result).getByRole("group", { name: "Speaker timeline" });
    expect(within(timeline).getByRole("button", { name: "SPEAKER_01, 2.00 s to 3.25 s" })).toBeTruthy();
  });

  it("diarizes, leaving out transcription fields", async () => {
    let form: FormData | undefined;
    let path = "";
    route((url, init) => {
      path = new URL(url).pathname;
      form = init?.body as FormData;
      return json({ segments: [{ speaker: "SPEAKER_00", start: 0.25, end: 2 }], speakers: ["SPEAKER_00"], num_speakers: 1, duration: 3, sampling_rate: 16000 });
    });
    openAudio();
    fireEvent.click(screen.getByRole("radio", { name: "Diarize" }));
    expect(screen.queryByLabelText("Language")).toBeNull();
    fireEvent.click(screen.getByRole("button", { name: "Run" }));
    const result = screen.getByRole("region", { name: "Result" });
    await waitFor(() => expect(within(result).getByRole("button", { name: "SPEAKER_00, 0.25 s to 2.00 s" })).toBeTruthy());
    expect(path).toBe("/api/diarization/process");
    expect([...(form?.keys() ?? [])]).toEqual(["file"]);
  });

  it("leaves language out when auto, and shows the server's error", async () => {
    let form: FormData | undefined;
    route((_url, init) => {
      form = init?.body as FormData;
      return json({ error: { message: "The spoken language was identified as 'tr'", type: "invalid_request_error", param: "language", code: "unsupported_language" } }, 400);
    });
    openAudio();
    fireEvent.click(screen.getByRole("button", { name: "Run" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toBe("The spoken language was identified as 'tr'"));
    expect(form?.has("language")).toBe(false);
    expect(form?.has("target_language")).toBe(false);
    expect(form?.get("diarization")).toBe("false");
  });

  it("explains a refused microphone", async () => {
    route(() => json({}));
    Object.defineProperty(navigator, "mediaDevices", {
      configurable: true,
      value: { getUserMedia: vi.fn(() => Promise.reject(new DOMException("Permission denied", "NotAllowedError"))) },
    });
    vi.stubGlobal("MediaRecorder", class {});
    render(<Playground />);
    fireEvent.click(screen.getByRole("tab", { name: "Audio" }));
    fireEvent.click(screen.getByRole("button", { name: "Record" }));
    await waitFor(() => expect(screen.getByRole("alert").textContent).toMatch(/Microphone access was refused/));
    vi.unstubAllGlobals();
  });
});
