import { interpretEvent, readEvents, SseParser, type StreamEvent } from "../src/pages/playground/sse";

function feed(chunks: string[]): string[] {
  const parser = new SseParser();
  const out: string[] = [];
  for (const chunk of chunks) out.push(...parser.push(chunk));
  out.push(...parser.end());
  return out;
}

function streamOf(chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(typeof chunk === "string" ? encoder.encode(chunk) : chunk);
      controller.close();
    },
  });
}

async function collect(body: ReadableStream<Uint8Array>): Promise<StreamEvent[]> {
  const events: StreamEvent[] = [];
  for await (const event of readEvents(body)) events.push(event);
  return events;
}

describe("SseParser", () => {
  it("returns one event per blank-line-terminated block", () => {
    expect(feed(['data: {"a":1}\n\n'])).toEqual(['{"a":1}']);
  });

  it("joins an event split across chunks at any point", () => {
    const text = 'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\ndata: {"choices":[{"delta":{"content":"lo"}}]}\n\ndata: [DONE]\n\n';
    const whole = feed([text]);
    expect(whole).toEqual(['{"choices":[{"delta":{"content":"Hel"}}]}', '{"choices":[{"delta":{"content":"lo"}}]}', "[DONE]"]);
    for (let cut = 1; cut < text.length; cut++) expect(feed([text.slice(0, cut), text.slice(cut)])).toEqual(whole);
    expect(feed([...text])).toEqual(whole); // one character at a time
  });

  it("returns several events from one chunk", () => {
    const parser = new SseParser();
    expect(parser.push("data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4")).toEqual(["1", "2", "3"]);
    expect(parser.push("\n\n")).toEqual(["4"]);
  });

  it("handles CRLF and CR line endings, even with CR and LF in different chunks", () => {
    expect(feed(["data: a\r\n\r\ndata: b\r\r"])).toEqual(["a", "b"]);
    expect(feed(["data: a\r", "\n\r", "\ndata: b\r\n\r\n"])).toEqual(["a", "b"]);
    // A CRLF cut between its CR and LF is one line ending, not two (which would end the event early).
    expect(feed(["data: a\r", "\ndata: b\r\n\r\n"])).toEqual(["a\nb"]);
  });

  it("skips comments and keep-alives, and ignores other fields", () => {
    expect(feed([": keep-alive\n\n", ":ping\n", "event: message\nid: 7\nretry: 100\ndata: x\n\n", "\n\n"])).toEqual(["x"]);
  });

  it("joins multi-line data with newlines and strips one leading space only", () => {
    expect(feed(["data:  two spaces\ndata:none\n\n"])).toEqual([" two spaces\nnone"]);
  });

  it("dispatches an unterminated last event when the stream ends", () => {
    expect(feed(["data: [DONE]"])).toEqual(["[DONE]"]);
  });
});

describe("interpretEvent", () => {
  it("recognises [DONE]", () => {
    expect(interpretEvent("[DONE]")).toEqual({ kind: "done" });
  });

  it("parses JSON data", () => {
    expect(interpretEvent('{"choices":[]}')).toEqual({ kind: "data", value: { choices: [] } });
  });

  it("turns an error payload into its message", () => {
    expect(interpretEvent('{"error":{"message":"Triton went away","type":"server_error","code":"triton_unavailable"}}')).toEqual({
      kind: "error",
      message: "Triton went away",
      code: "triton_unavailable",
    });
    expect(interpretEvent('{"error":"plain"}')).toEqual({ kind: "error", message: "plain" });
    expect(interpretEvent('{"error":{}}').kind).toBe("error");
  });

  it("reports data that is not JSON as an error", () => {
    const event = interpretEvent("not json");
    expect(event.kind).toBe("error");
  });
});

describe("readEvents", () => {
  it("decodes bytes split inside a multi-byte character and stops at [DONE]", async () => {
    const bytes = new TextEncoder().encode('data: {"t":"é€"}\n\ndata: [DONE]\n\ndata: {"after":true}\n\n');
    const cut = bytes.indexOf(0xe2) + 1; // inside "€"
    const events = await collect(streamOf([bytes.slice(0, cut), bytes.slice(cut)]));
    expect(events).toEqual([{ kind: "data", value: { t: "é€" } }, { kind: "done" }]);
  });

  it("yields an error event, then the rest", async () => {
    const events = await collect(streamOf(['data: {"a":1}\n\n: keep-alive\n\ndata: {"error":{"message":"boom"}}\n\n', "data: [DONE]\n\n"]));
    expect(events).toEqual([{ kind: "data", value: { a: 1 } }, { kind: "error", message: "boom", code: undefined }, { kind: "done" }]);
  });
});
