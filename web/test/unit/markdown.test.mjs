// Safe rendering of model output: raw HTML, dangerous links and remote images never become
// live markup. Runs the app's own renderer (marked + DOMPurify) over a jsdom document.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { installDom, load, close } from './load.mjs';

const dom = installDom();
const { renderMarkdown } = await load('/src/lib/markdown.ts');
after(close);

/** No element carries an event handler, a style or a source to fetch. */
function noActiveAttributes(root) {
  for (const el of root.querySelectorAll('*')) {
    for (const a of el.attributes) {
      if (/^on/i.test(a.name) || ['style', 'src', 'srcset'].includes(a.name)) return false;
    }
  }
  return true;
}

function parse(html) {
  const div = dom.window.document.createElement('div');
  div.innerHTML = html;
  return div;
}

test('raw HTML from a model is shown as text, never as elements', () => {
  const out = parse(renderMarkdown('Hello <script>alert(1)</script> <b onclick="x()">bold</b>\n\n<iframe src="https://evil.example"></iframe>'));
  assert.equal(out.querySelector('script, iframe, b'), null);
  assert.match(out.textContent, /<script>alert\(1\)<\/script>/);
  assert.equal(noActiveAttributes(out), true);
});

test('javascript: links lose their address, whatever their spelling', () => {
  for (const href of ['javascript:alert(1)', 'JavaScript:alert(1)', 'java\tscript:alert(1)', ' javascript:alert(1)', 'data:text/html,<script>alert(1)</script>', 'vbscript:x']) {
    const out = parse(renderMarkdown(`[click me](${href})`));
    for (const a of out.querySelectorAll('a')) {
      assert.doesNotMatch(a.getAttribute('href') ?? '', /script|data:/i, href);
    }
    assert.match(out.textContent, /click me/);
  }
  // Autolinks and reference links too.
  const ref = parse(renderMarkdown('[x][r]\n\n[r]: javascript:alert(1)'));
  assert.equal([...ref.querySelectorAll('a')].some((a) => /javascript/i.test(a.getAttribute('href') ?? '')), false);
});

test('images are never loaded: a remote image becomes a plain link', () => {
  const out = parse(renderMarkdown('![pixel](https://attacker.example/p.png) and <img src="https://attacker.example/q.png">'));
  assert.equal(out.querySelector('img'), null);
  assert.equal(out.querySelector('[src], [srcset]'), null);
  assert.match(out.textContent, /<img src=/);
  const a = out.querySelector('a.md-image');
  assert.equal(a.getAttribute('href'), 'https://attacker.example/p.png');
  assert.equal(a.getAttribute('rel'), 'noopener noreferrer nofollow');
  const js = parse(renderMarkdown('![x](javascript:alert(1))'));
  assert.equal(js.querySelector('a'), null);
});

test('ordinary links open safely in a new tab', () => {
  const out = parse(renderMarkdown('[docs](https://example.com/a)'));
  const a = out.querySelector('a');
  assert.equal(a.getAttribute('href'), 'https://example.com/a');
  assert.equal(a.getAttribute('target'), '_blank');
  assert.equal(a.getAttribute('rel'), 'noopener noreferrer nofollow');
});

test('citations link to the cited passage; unknown numbers stay plain', () => {
  const html = renderMarkdown('Monday at 10:00 [1]. Also [7].', [{ n: 1, document_id: 'd1', chunk_id: 'c1', title: 'On-call' }]);
  const out = parse(html);
  const a = out.querySelector('a.cite');
  assert.equal(a.getAttribute('href'), '/documents/d1?chunk=c1');
  assert.equal(a.textContent, '[1]');
  assert.equal(out.querySelectorAll('a.cite').length, 1);
  assert.match(out.textContent, /\[7\]/);
});

test('code blocks keep their text escaped and say their language', () => {
  const out = parse(renderMarkdown('```rust\nfn main() { println!("<b>"); }\n```'));
  const code = out.querySelector('pre code');
  assert.equal(code.dataset.lang, 'rust');
  assert.equal(code.querySelector('b'), null);
  assert.match(code.textContent, /<b>/);
});

test('style attributes and event handlers are removed', () => {
  const out = parse(renderMarkdown('<div style="position:fixed" onmouseover="x()">hi</div> <svg onload="x()"></svg> <form action="/x"><input></form>'));
  assert.equal(out.querySelector('[style], [onmouseover], svg, form'), null);
  assert.equal(noActiveAttributes(out), true);
});
