import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { load, close } from './load.mjs';

const { SseParser } = await load('/src/lib/sse.ts');
after(close);

function parseAll(chunks) {
  const events = [];
  const p = new SseParser((e) => events.push(e));
  for (const c of chunks) p.push(c);
  p.end();
  return events;
}

test('events are split at blank lines, with names and data', () => {
  const ev = parseAll(['event: token\ndata: {"text":"a"}\n\nevent: done\ndata: {}\n\n']);
  assert.deepEqual(ev.map((e) => [e.event, e.data]), [['token', '{"text":"a"}'], ['done', '{}']]);
});

test('events cut anywhere across chunks arrive whole', () => {
  const text = 'event: token\r\ndata: {"text":"héllo"}\r\n\r\n: keep-alive\n\nevent: token\ndata: {"text":"x"}\n\n';
  for (let i = 1; i < text.length; i++) {
    const ev = parseAll([text.slice(0, i), text.slice(i)]);
    assert.deepEqual(ev.map((e) => e.data), ['{"text":"héllo"}', '{"text":"x"}'], `cut at ${i}`);
  }
});

test('comments are skipped and multi-line data is joined', () => {
  const ev = parseAll([': hi\ndata: a\ndata: b\n\n']);
  assert.deepEqual(ev, [{ event: 'message', data: 'a\nb', id: undefined }]);
});

test('an event without its blank line at the end is dropped', () => {
  assert.deepEqual(parseAll(['event: token\ndata: x\n']), []);
});
