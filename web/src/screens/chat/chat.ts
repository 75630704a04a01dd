// Conversations and the answer stream, as the chat screens use them.

import { get, send, toApiError, ApiError, networkError, type Page } from '../../lib/api';
import { readEvents } from '../../lib/sse';
import type { CitationTarget } from '../../lib/markdown';

export interface Conversation {
  id: string;
  title: string;
  model: string;
  collections: string[] | null;
  created_at: string;
  updated_at: string;
}

export interface Source {
  n: number;
  chunk_id: string;
  document_id: string;
  collection_id: string;
  title: string | null;
  filename: string;
  kind: string;
  location: Record<string, unknown> | null;
  snippet: string;
}

export interface Citation extends CitationTarget {
  location?: Record<string, unknown> | null;
}

export interface Message {
  id: string;
  role: 'user' | 'assistant';
  content: string;
  status: 'complete' | 'incomplete' | 'failed' | 'streaming' | 'refused';
  model: string | null;
  error_code: string | null;
  sources: Source[] | null;
  citations: Citation[] | null;
  cost_micros?: number;
  output_tokens?: number;
  latency_ms?: number | null;
  first_token_ms?: number | null;
  created_at: string;
  /** Set on the web app's side: the error to show under an answer. */
  error?: ApiError | null;
  nothing_found?: boolean;
}

export interface ModelInfo {
  id: string;
  kind: string;
  provider: string | null;
  context_tokens: number;
  max_output_tokens: number;
  price: { input_micros: number; output_micros: number } | null;
  default: boolean;
}

export interface Models {
  items: ModelInfo[];
  default: string;
}

/** Every message of a conversation, oldest first, page after page. */
export async function loadAllMessages(id: string, signal?: AbortSignal, onPage?: (m: Message[]) => void): Promise<Message[]> {
  const all: Message[] = [];
  let cursor: string | null = null;
  do {
    const page: Page<Message> = await get<Page<Message>>(
      `/api/conversations/${encodeURIComponent(id)}/messages`,
      { limit: 200, cursor },
      signal,
    );
    all.push(...page.items);
    onPage?.(all);
    cursor = page.next_cursor;
  } while (cursor);
  return all;
}

export interface StreamHandlers {
  onSources(sources: Source[]): void;
  onToken(text: string): void;
  onUsage(u: { input_tokens: number; output_tokens: number; cost_micros: number; currency: string; estimated: boolean }): void;
  onDone(d: {
    message_id: string;
    model: string;
    status: Message['status'];
    citations: Citation[];
    invalid_citations: number[];
    nothing_found: boolean;
    first_token_ms: number | null;
    latency_ms: number | null;
  }): void;
  onError(e: ApiError & { partial?: boolean; messageId?: string }): void;
}

/**
 * Ask a question and read the answer stream. Refusals before the stream (402, 422, 404…) throw
 * an `ApiError`; a failure during the stream arrives through `onError`.
 */
export async function ask(
  conversationId: string,
  body: { content: string; model?: string; collections?: string[] | null },
  h: StreamHandlers,
  signal: AbortSignal,
): Promise<void> {
  const res = await send(`/api/conversations/${encodeURIComponent(conversationId)}/messages`, {
    method: 'POST',
    body,
    signal,
    accept: 'text/event-stream',
  });
  if (!res.ok) throw await toApiError(res);
  let finished = false;
  try {
    await readEvents(res, (ev) => {
      let data: Record<string, unknown>;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      switch (ev.event) {
        case 'sources':
          h.onSources((data.sources as Source[]) ?? []);
          break;
        case 'token':
          h.onToken(String(data.text ?? ''));
          break;
        case 'usage':
          h.onUsage(data as never);
          break;
        case 'done':
          finished = true;
          h.onDone(data as never);
          break;
        case 'error': {
          finished = true;
          const err = new ApiError(
            0,
            String(data.code ?? 'stream_error'),
            String(data.message ?? 'The answer failed.'),
            (data.details as Record<string, unknown>) ?? undefined,
          ) as ApiError & { partial?: boolean; messageId?: string };
          err.partial = !!data.partial;
          err.messageId = data.message_id as string | undefined;
          h.onError(err);
          break;
        }
      }
    });
  } catch (e) {
    if (signal.aborted) throw networkError(new DOMException('stopped', 'AbortError'));
    throw networkError(e);
  }
  if (!finished && !signal.aborted) {
    h.onError(new ApiError(0, 'stream_cut', 'The connection closed before the answer was complete.'));
  }
}

/** A question waiting to be asked once its new conversation's screen opens. */
export const pendingQuestion: { conversationId: string; content: string } = { conversationId: '', content: '' };
