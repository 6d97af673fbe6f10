// The chat request and the stream's bookkeeping, as pure functions (tested).

export interface ChatImage {
  id: string;
  name: string;
  /** A data: URL. */
  url: string;
}

export interface Stats {
  finishReason: string | null;
  promptTokens: number | null;
  completionTokens: number | null;
  /** Seconds from sending to the first text. */
  ttft: number | null;
  /** Seconds from sending to the end. */
  elapsed: number;
  /** Completion tokens per second after the first one, when usage is known. */
  tokensPerSecond: number | null;
}

export interface ChatMessage {
  id: string;
  role: "user" | "assistant";
  text: string;
  images?: ChatImage[];
  state?: "streaming" | "done" | "stopped" | "error";
  stats?: Stats;
}

export type ContentPart = { type: "text"; text: string } | { type: "image_url"; image_url: { url: string } };
export type RequestMessage = { role: "system" | "user" | "assistant"; content: string | ContentPart[] };

/** The conversation as OpenAI messages: images as `image_url` parts; failed or empty answers left out. */
export function requestMessages(history: readonly ChatMessage[], system = ""): RequestMessage[] {
  const out: RequestMessage[] = system.trim() ? [{ role: "system", content: system.trim() }] : [];
  for (const message of history) {
    if (message.role === "assistant") {
      if (message.state === "error" || !message.text) continue;
      out.push({ role: "assistant", content: message.text });
    } else if (message.images?.length) {
      const parts: ContentPart[] = message.text ? [{ type: "text", text: message.text }] : [];
      for (const image of message.images) parts.push({ type: "image_url", image_url: { url: image.url } });
      out.push({ role: "user", content: parts });
    } else {
      out.push({ role: "user", content: message.text });
    }
  }
  return out;
}

export interface SamplingInput {
  maxTokens: string;
  temperature: string;
  topP: string;
  ignoreEos: boolean;
}

export interface Sampling {
  max_tokens: number;
  temperature: number;
  top_p: number;
  ignore_eos?: true;
}

export const MAX_TOKENS_LIMIT = 8192;

/** The sampling fields from the form's inputs, or a sentence saying which one is wrong. */
export function parseSampling(input: SamplingInput): Sampling | string {
  const maxTokens = Number(input.maxTokens);
  if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > MAX_TOKENS_LIMIT)
    return `Max tokens must be a whole number from 1 to ${MAX_TOKENS_LIMIT}.`;
  const temperature = Number(input.temperature);
  if (input.temperature.trim() === "" || !Number.isFinite(temperature) || temperature < 0 || temperature > 2)
    return "Temperature must be a number from 0 to 2.";
  const topP = Number(input.topP);
  if (input.topP.trim() === "" || !Number.isFinite(topP) || topP <= 0 || topP > 1) return "Top p must be a number above 0, at most 1.";
  return { max_tokens: maxTokens, temperature, top_p: topP, ...(input.ignoreEos ? { ignore_eos: true as const } : {}) };
}

/** One streamed chunk's part that matters here (OpenAI's `chat.completion.chunk`). */
export interface Chunk {
  choices?: { index?: number; delta?: { content?: string | null }; finish_reason?: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number } | null;
}

export interface StreamState {
  text: string;
  finishReason: string | null;
  usage: { prompt_tokens: number; completion_tokens: number } | null;
}

/** Adds one chunk to the answer so far (choice 0: the playground asks for one). */
export function applyChunk(state: StreamState, chunk: Chunk): StreamState {
  let { text, finishReason } = state;
  for (const choice of chunk.choices ?? []) {
    if ((choice.index ?? 0) !== 0) continue;
    if (choice.delta?.content) text += choice.delta.content;
    if (choice.finish_reason) finishReason = choice.finish_reason;
  }
  return { text, finishReason, usage: chunk.usage ?? state.usage };
}

/** Times in milliseconds (performance.now()): sent, first text (or null), end. */
export function streamStats(state: StreamState, sent: number, first: number | null, end: number): Stats {
  const completion = state.usage?.completion_tokens ?? null;
  const decoding = first !== null ? (end - first) / 1000 : 0;
  return {
    finishReason: state.finishReason,
    promptTokens: state.usage?.prompt_tokens ?? null,
    completionTokens: completion,
    ttft: first !== null ? (first - sent) / 1000 : null,
    elapsed: (end - sent) / 1000,
    tokensPerSecond: completion !== null && completion > 1 && decoding > 0 ? (completion - 1) / decoding : null,
  };
}

const FINISH: Record<string, string> = {
  stop: "finished",
  length: "max tokens reached",
  tool_calls: "tool call",
  content_filter: "filtered",
};

/** The line shown under an answer: "finished · 50 tokens · 83.1 tokens/s · first token 0.21 s". */
export function statsLine(stats: Stats, stopped = false): string {
  const parts: string[] = [];
  if (stopped) parts.push("stopped");
  else if (stats.finishReason) parts.push(FINISH[stats.finishReason] ? `${FINISH[stats.finishReason]} (${stats.finishReason})` : stats.finishReason);
  if (stats.completionTokens !== null) parts.push(`${stats.completionTokens} tokens`);
  if (stats.promptTokens !== null) parts.push(`prompt ${stats.promptTokens} tokens`);
  if (stats.tokensPerSecond !== null) parts.push(`${stats.tokensPerSecond.toFixed(1)} tokens/s`);
  if (stats.ttft !== null) parts.push(`first token ${stats.ttft.toFixed(2)} s`);
  parts.push(`total ${stats.elapsed.toFixed(2)} s`);
  return parts.join(" · ");
}
