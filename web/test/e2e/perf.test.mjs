// How the app feels: first load to a usable screen, and a conversation of 1,000 messages opened
// and scrolled. Prints what it measured; fails only far beyond the targets, since a loaded CI
// machine varies.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { startCairn } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
let cairn;
let browser;
let conversationId;
const owner = { email: 'olive@example.com', password: 'a long owner passphrase' };

before(async () => {
  cairn = await startCairn({ 'rate_limit.enabled': 'false' });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  // The owner, with a bearer session for seeding.
  const r = await fetch(`${cairn.apiUrl}/api/setup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ setup_token: cairn.setupToken(), ...owner }),
  });
  assert.equal(r.status, 201, await r.clone().text());
  const { access_token } = await r.json();
  const auth = { authorization: `Bearer ${access_token}`, 'content-type': 'application/json' };
  const conv = await (await fetch(`${cairn.apiUrl}/api/conversations`, { method: 'POST', headers: auth, body: JSON.stringify({ title: 'A long conversation', collections: [] }) })).json();
  conversationId = conv.id;
  // 500 questions and their answers: 1,000 messages.
  for (let i = 0; i < 500; i++) {
    const res = await fetch(`${cairn.apiUrl}/api/conversations/${conversationId}/messages`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ content: `Question ${i}: what does **item ${i}** mean, and how is \`x${i}\` used?` }),
    });
    assert.equal(res.status, 200);
    await res.text();
  }
});

after(async () => {
  await browser?.close();
  await cairn?.stop();
});

async function signedInPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${cairn.url}/sign-in`);
  await page.getByLabel('Email').fill(owner.email);
  await page.getByLabel('Password').fill(owner.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL('**/chat');
  return page;
}

test('first load: the sign-in form is usable well within a second', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${cairn.url}/sign-in`);
  await page.getByLabel('Email').waitFor();
  const ms = await page.evaluate(() => performance.now());
  const nav = await page.evaluate(() => JSON.stringify(performance.getEntriesByType('navigation')[0]?.toJSON?.() ?? {}));
  const bytes = await page.evaluate(() =>
    performance.getEntriesByType('resource').reduce((n, r) => n + (r.transferSize || 0), 0),
  );
  console.log(`# first load to an interactive sign-in form: ${Math.round(ms)} ms (resources ${bytes} bytes transferred; domContentLoaded ${Math.round(JSON.parse(nav).domContentLoadedEventEnd ?? 0)} ms)`);
  assert.ok(ms < 1000, `first load took ${ms} ms`);
  await context.close();
});

test('a 1,000-message conversation opens at its end and scrolls smoothly', async () => {
  const page = await signedInPage();
  const t0 = Date.now();
  await page.goto(`${cairn.url}/chat/${conversationId}`);
  await page.locator('article.msg').nth(999).waitFor({ state: 'attached', timeout: 30_000 });
  await page.locator('article.msg').last().getByRole('button', { name: 'Copy' }).waitFor();
  const openMs = Date.now() - t0;
  assert.equal(await page.locator('article.msg').count(), 1000);
  // Scroll from the end to the top and back in 3 s, recording the gap between frames.
  const frames = await page.evaluate(async () => {
    const el = document.querySelector('.messages');
    const gaps = [];
    let last = performance.now();
    const start = last;
    const total = el.scrollHeight;
    await new Promise((done) => {
      function step(now) {
        gaps.push(now - last);
        last = now;
        const t = (now - start) / 3000;
        if (t >= 1) return done();
        const pos = t < 0.5 ? 1 - t * 2 : (t - 0.5) * 2;
        el.scrollTop = pos * total;
        requestAnimationFrame(step);
      }
      requestAnimationFrame(step);
    });
    gaps.sort((a, b) => a - b);
    return { count: gaps.length, p50: gaps[Math.floor(gaps.length * 0.5)], p95: gaps[Math.floor(gaps.length * 0.95)], max: gaps[gaps.length - 1] };
  });
  console.log(`# 1,000 messages: opened in ${openMs} ms; scrolling ${frames.count} frames in 3 s, frame gap p50 ${frames.p50.toFixed(1)} ms, p95 ${frames.p95.toFixed(1)} ms, max ${frames.max.toFixed(1)} ms`);
  assert.ok(frames.p95 < 100, `p95 frame gap ${frames.p95} ms`);
  await page.context().close();
});
