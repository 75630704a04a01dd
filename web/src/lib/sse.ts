// A Server-Sent Events parser over a fetch body (EventSource cannot POST). Follows the
// WHATWG event-stream rules: lines end in LF, CR or CRLF; `event`, `data` (joined by LF), `id`;
// comments (`: keep-alive`) are skipped; an event is dispatched at a blank line.

export interface SseEvent {
  event: string;
  data: string;
  id?: string;
}

export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | undefined;
  private sawCr = false;

  constructor(private onEvent: (e: SseEvent) => void) {}

  push(chunk: string) {
    let text = chunk;
    // A CR that ended the previous chunk may be followed by this chunk's LF.
    if (this.sawCr && text.startsWith('\n')) text = text.slice(1);
    this.sawCr = false;
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c === '\n' || c === '\r') {
        this.line(this.buffer.slice(start, i));
        if (c === '\r') {
          if (i + 1 < this.buffer.length) {
            if (this.buffer[i + 1] === '\n') i++;
          } else {
            this.sawCr = true;
          }
        }
        start = i + 1;
      }
    }
    this.buffer = this.buffer.slice(start);
  }

  /** The stream ended: an event without its blank line is dropped, as the standard says. */
  end() {
    this.buffer = '';
    this.data = [];
    this.event = '';
  }

  private line(line: string) {
    if (line === '') {
      if (this.data.length) {
        this.onEvent({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
      }
      this.data = [];
      this.event = '';
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    let field = line;
    let value = '';
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
    }
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id') this.id = value;
  }
}

/** Read a response body as events until it ends or `signal` aborts. */
export async function readEvents(res: Response, onEvent: (e: SseEvent) => void): Promise<void> {
  if (!res.body) return;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser(onEvent);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
  } finally {
    parser.end();
    reader.releaseLock();
  }
}
