// A scripted OpenAI-compatible model server: answers every chat completion with a fixed text,
// streamed word by word with a usage chunk, so tests decide exactly what "the model" says.

import { createServer } from 'node:http';

export async function startProvider(answer) {
  const calls = [];
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const c of req) body += c;
    const url = new URL(req.url, 'http://x');
    if (req.method === 'GET' && url.pathname.endsWith('/models')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ object: 'list', data: [{ id: 'scripted', object: 'model' }] }));
      return;
    }
    if (req.method === 'POST' && url.pathname.endsWith('/chat/completions')) {
      const request = JSON.parse(body || '{}');
      calls.push(request);
      const text = typeof answer === 'function' ? answer(request) : answer;
      const usage = { prompt_tokens: 50, completion_tokens: 20, total_tokens: 70 };
      const base = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 0, model: request.model };
      if (!request.stream) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ...base, object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }], usage }));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const send = (o) => res.write(`data: ${JSON.stringify(o)}\n\n`);
      send({ ...base, choices: [{ index: 0, delta: { role: 'assistant' }, finish_reason: null }] });
      // A question asking for it "slowly" gets a long answer, a token every 100 ms (to press stop).
      const last = [...(request.messages ?? [])].reverse().find((m) => m.role === 'user');
      const slow = typeof last?.content === 'string' && last.content.includes('slowly');
      const pieces = slow ? Array.from({ length: 100 }, (_, i) => `word${i} `) : (text.match(/\S+\s*|\s+/g) ?? []);
      for (const piece of pieces) {
        if (res.destroyed) return;
        send({ ...base, choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] });
        if (slow) await new Promise((r) => setTimeout(r, 100));
      }
      send({ ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
      send({ ...base, choices: [], usage });
      res.end('data: [DONE]\n\n');
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return { baseUrl: `http://127.0.0.1:${port}/v1`, calls, close: () => new Promise((r) => server.close(r)) };
}
