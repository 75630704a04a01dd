import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { load, close } from './load.mjs';

const { splitHighlights, money, bytes, locationLabel } = await load('/src/lib/format.ts');
after(close);

test('search highlights are counted in code points, not UTF-16 units', () => {
  // "😀 " is 2 code points but 3 UTF-16 units: offsets [2, 6) must cover "pass".
  const parts = splitHighlights('😀 pass the test', [[2, 6]]);
  assert.deepEqual(parts, [{ text: '😀 ', hit: false }, { text: 'pass', hit: true }, { text: ' the test', hit: false }]);
});

test('overlapping and out-of-range highlights are tolerated', () => {
  const parts = splitHighlights('abcdef', [[4, 99], [0, 2], [1, 3]]);
  assert.deepEqual(parts.map((p) => [p.text, p.hit]), [['ab', true], ['c', true], ['d', false], ['ef', true]]);
});

test('money and sizes read naturally', () => {
  assert.equal(money(1_230_000, 'USD'), '$1.23');
  assert.equal(money(1, 'USD'), '$0.000001');
  assert.equal(money(150, 'USD'), '$0.00015');
  assert.equal(money(0, 'USD'), '$0.00');
  assert.equal(bytes(1536), '1.5 KB');
  assert.equal(locationLabel({ page: 3, heading_path: ['A', 'B'] }), 'p. 3 · A › B');
});
