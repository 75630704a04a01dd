// The web app in a real browser against a real `cairn serve`: first run, approval, upload, a
// streamed answer with a citation opened at its source, search, budgets refusing an answer,
// two-factor sign-in, and safe rendering of hostile documents and model output. Saves a
// screenshot of each main screen into docs/screenshots/.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startCairn } from './harness.mjs';
import { startProvider } from './provider.mjs';
import { totp } from './totp.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const shots = join(here, '..', '..', '..', 'docs', 'screenshots');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ATTACKER = 'attacker.invalid';

const OWNER = { email: 'olive@example.com', password: 'owner password for tests', name: 'Olive Owner' };
const MEMBER = { email: 'mel@example.com', password: 'member password for tests', name: 'Mel Member' };

const HOSTILE_ANSWER = [
  'Here is the answer [1].',
  '',
  '<script>window.__pwned = "script"</script>',
  '<img src="http://attacker.invalid/raw.png" onerror="window.__pwned = \'img\'">',
  '',
  '[a harmless-looking link](javascript:window.__pwned="link")',
  '',
  '![tracking pixel](http://attacker.invalid/pixel.png)',
  '',
  '```js',
  'const x = "<b>not bold</b>";',
  '```',
].join('\n');

let cairn;
let browser;
let provider;
let tmp;
const attackerRequests = [];

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'cairn-web-files-'));
  mkdirSync(shots, { recursive: true });
  // Many sign-ins from one address in a minute: the test raises the sign-in rate limits.
  cairn = await startCairn({ 'rate_limit.auth_per_minute': 200, 'rate_limit.account_per_minute': 100 });
  console.log(`# web app served by ${cairn.servesApp ? 'the cairn binary (embedded build equals web/dist)' : 'the test front server from web/dist (the binary embeds another build)'}`);
  provider = await startProvider(HOSTILE_ANSWER);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--font-render-hinting=none'],
  });
});

after(async () => {
  await browser?.close();
  await provider?.close();
  await cairn?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

async function newPage(opts = {}) {
  const context = await browser.newContext({
    viewport: opts.viewport ?? { width: 1280, height: 800 },
    deviceScaleFactor: 1,
    colorScheme: opts.colorScheme ?? 'light',
    reducedMotion: 'reduce',
    timezoneId: 'UTC',
    locale: 'en-GB',
  });
  // Anything aimed at the attacker's host is recorded and never answered.
  await context.route(`**/*${ATTACKER}*/**`, (route) => {
    attackerRequests.push(route.request().url());
    route.abort();
  });
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  page.on('request', (r) => {
    if (r.url().includes(ATTACKER)) attackerRequests.push(r.url());
  });
  page.on('pageerror', (e) => console.error('page error:', e.message));
  return page;
}

/** Every visible control on the page has a name a screen reader can say. */
async function assertLabelled(page, name) {
  const unnamed = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll('input, select, textarea, button, a[href]')) {
      if (el.type === 'hidden' || el.closest('[aria-hidden="true"]')) continue;
      const r = el.getBoundingClientRect();
      const hiddenInput = el.classList.contains('visually-hidden');
      if (!hiddenInput && (r.width === 0 || r.height === 0)) continue;
      const named =
        el.getAttribute('aria-label') ||
        el.getAttribute('aria-labelledby') ||
        (el.labels && el.labels.length > 0) ||
        (['BUTTON', 'A'].includes(el.tagName) && el.textContent.trim()) ||
        el.getAttribute('title');
      if (!named) out.push(el.outerHTML.slice(0, 120));
    }
    return out;
  });
  assert.deepEqual(unnamed, [], `unlabelled controls on ${name}`);
}

/** A screenshot with times, ids and secrets masked, so runs differ as little as possible. */
async function shot(page, name, extraMask = []) {
  await assertLabelled(page, name);
  await page.evaluate(() => document.fonts?.ready);
  await page.screenshot({
    path: join(shots, name),
    animations: 'disabled',
    caret: 'hide',
    mask: [page.locator('.secret, code.secret'), ...extraMask],
    maskColor: '#d0d0d0',
    // Passing notices come and go with timing: never in the picture.
    // Times, durations and costs that differ from run to run are left blank.
    style: '.notices { display: none !important; } [data-volatile], .when { visibility: hidden !important; } textarea, input { caret-color: transparent !important; }',
  });
}

const file = (name, text) => {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
};

// What each page showed at the end of each test, for looking into failures.
let step = 0;
afterEach(async () => {
  step++;
  const dir = join(here, '..', 'tmp', 'e2e');
  mkdirSync(dir, { recursive: true });
  for (const [name, p] of [['owner', owner], ['member', member]]) {
    if (p && !p.isClosed()) await p.screenshot({ path: join(dir, `${String(step).padStart(2, '0')}-${name}.png`) }).catch(() => {});
  }
});

let owner; // the owner's page
let member; // the member's page

test('first run: the setup page creates the owner with the token from the data directory', async () => {
  owner = await newPage();
  await owner.goto(cairn.url);
  await owner.waitForURL('**/setup');
  await owner.getByLabel('Workspace name').fill('Acme');
  await owner.getByLabel('Your name').fill(OWNER.name);
  await owner.getByLabel('Email').fill(OWNER.email);
  await owner.getByLabel('Password').fill(OWNER.password);
  await shot(owner, 'setup.png');
  await owner.getByLabel('Setup token').fill(cairn.setupToken());
  await owner.getByRole('button', { name: 'Create the owner account' }).click();
  await owner.waitForURL('**/collections');
  await owner.getByRole('heading', { name: 'Documents' }).waitFor();
});

test('once set up, the setup page sends visitors to sign in', async () => {
  const p = await newPage();
  await p.goto(`${cairn.url}/setup`);
  await p.waitForURL('**/sign-in**');
  await shot(p, 'sign-in.png');
  await p.context().close();
});

test('a sign-up waits for approval, and an admin approves it', async () => {
  member = await newPage();
  await member.goto(`${cairn.url}/sign-up`);
  await member.getByLabel('Your name').fill(MEMBER.name);
  await member.getByLabel('Email').fill(MEMBER.email);
  await member.getByLabel('Password').fill(MEMBER.password);
  await member.getByRole('button', { name: 'Sign up' }).click();
  await member.waitForURL('**/pending');
  await member.getByRole('heading', { name: 'Waiting for approval' }).waitFor();
  await shot(member, 'pending.png');

  await owner.goto(`${cairn.url}/admin/users?state=pending`);
  const row = owner.locator(`tr[data-email="${MEMBER.email}"]`);
  await row.getByRole('button', { name: 'Approve' }).click();
  await row.getByText('active').waitFor();
  await owner.goto(`${cairn.url}/admin/users`);
  await owner.locator(`tr[data-email="${MEMBER.email}"]`).waitFor();
  await shot(owner, 'admin-users.png');

  await member.getByRole('button', { name: 'Check now' }).click();
  await member.waitForURL('**/chat');
});

let hostileDocUrl;

test('the member uploads documents and watches them become ready', async () => {
  await member.goto(`${cairn.url}/collections`);
  await member.getByLabel('Name', { exact: true }).fill('Handbook');
  await member.getByLabel('Description (optional)').fill('How the team works');
  await member.getByRole('button', { name: 'Create collection' }).click();
  await member.waitForURL('**/collections/*');
  const oncall = file(
    'oncall.md',
    '# On-call\n\n## Rotation\n\nThe rotation changes every Monday at 10:00. The on-call engineer carries the pager for a week.\n\n## Escalation\n\nEscalate to the team lead after 30 minutes without progress.\n',
  );
  const hostile = file(
    'hostile.txt',
    'Release checklist.\n<script>window.__pwned = "document"</script>\n<img src="http://attacker.invalid/doc.png" onerror="window.__pwned = 1">\nAlways tag the release before announcing it.\n',
  );
  await member.getByLabel('Choose files to upload').setInputFiles([oncall, hostile]);
  const rows = member.locator('tr.doc-row');
  await rows.filter({ hasText: 'oncall.md' }).locator('[data-status="ready"]').waitFor({ timeout: 30_000 });
  await rows.filter({ hasText: 'hostile.txt' }).locator('[data-status="ready"]').waitFor({ timeout: 30_000 });
  await member.locator('.uploads li').first().waitFor({ state: 'detached', timeout: 10_000 }).catch(() => {});
  await shot(member, 'documents.png');
  hostileDocUrl = await rows.filter({ hasText: 'hostile.txt' }).getByRole('link').first().getAttribute('href');
});

test('a document containing <script> shows it as text and runs nothing', async () => {
  await member.goto(`${cairn.url}${hostileDocUrl}`);
  const text = member.locator('.chunk .text').first();
  await text.waitFor();
  assert.match(await text.textContent(), /<script>window.__pwned = "document"<\/script>/);
  assert.equal(await member.locator('main script, main img').count(), 0);
  assert.equal(await member.evaluate(() => window.__pwned), undefined);
});

test('an answer streams in with a citation that opens the source passage', async () => {
  await member.goto(`${cairn.url}/chat`);
  await member.getByLabel('Your question').fill('When does the rotation change?');
  await member.getByLabel('Your question').press('Enter');
  await member.waitForURL('**/chat/*');
  const answer = member.locator('article.assistant').last();
  const cite = answer.locator('a.cite').first();
  await cite.waitFor({ timeout: 30_000 });
  await answer.getByRole('button', { name: 'Copy' }).waitFor();
  assert.match(await answer.locator('.md').textContent(), /Monday at 10:00/);
  // The conversation is named after its first question.
  await member.locator('aside li a', { hasText: 'When does the rotation change?' }).waitFor();
  await shot(member, 'chat.png');

  await cite.click();
  await member.waitForURL('**/documents/*?chunk=*');
  const target = member.locator('.chunk.target');
  await target.waitFor();
  assert.match(await target.textContent(), /rotation changes every Monday/);
  assert.equal(await target.evaluate((el) => el === document.activeElement), true);
  await shot(member, 'document.png');
});

test('search highlights the matched words', async () => {
  await member.goto(`${cairn.url}/search?q=rotation%20monday`);
  await member.locator('.result mark').first().waitFor();
  const marks = await member.locator('.result mark').allTextContents();
  assert.ok(marks.some((m) => /rotation/i.test(m)), marks.join(','));
  await shot(member, 'search.png');
});

test('the chat screen works at 375 pixels wide in the dark theme', async () => {
  const p = await newPage({ viewport: { width: 375, height: 740 }, colorScheme: 'dark' });
  await p.goto(`${cairn.url}/sign-in`);
  await p.getByLabel('Email').fill(MEMBER.email);
  await p.getByLabel('Password').fill(MEMBER.password);
  await p.getByRole('button', { name: 'Sign in' }).click();
  await p.waitForURL('**/chat');
  await p.getByRole('button', { name: 'Conversations' }).click();
  await p.locator('aside li a').first().click();
  await p.locator('article.assistant a.cite').first().waitFor();
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  await shot(p, 'chat-mobile-dark.png');
  await p.context().close();
});

test('a lost access cookie is renewed with the refresh cookie, once', async () => {
  await member.context().clearCookies({ name: 'cairn_access' });
  await member.goto(`${cairn.url}/collections`);
  await member.getByRole('link', { name: 'Handbook' }).waitFor();
  assert.ok(!member.url().includes('sign-in'));
});

let scriptedModel = 'scripted';
const llmBase = () => process.env.CAIRN_TEST_LLM_URL.replace(/\/+$/, '').replace(/(\/v1)?$/, '/v1');
let backupCodes = [];

test('the admin adds a model provider, a model and a price', async () => {
  await owner.goto(`${cairn.url}/admin/models`);
  await owner.getByLabel('Name', { exact: true }).fill('scripted-provider');
  await owner.getByLabel('Base URL').fill(provider.baseUrl);
  await owner.getByRole('button', { name: 'Add provider' }).click();
  await owner.locator('li strong', { hasText: 'scripted-provider' }).waitFor();
  await owner.getByRole('button', { name: 'Check' }).click();
  await owner.getByText(/Reachable\. Models: scripted/).waitFor();
  await owner.getByLabel('Name people see').fill(scriptedModel);
  await owner.getByLabel('Upstream model').fill('scripted');
  await owner.getByRole('button', { name: 'Add model' }).click();
  await owner.locator('td', { hasText: scriptedModel }).first().waitFor();
  await owner.getByLabel('Model', { exact: true }).selectOption(scriptedModel);
  await owner.getByLabel('Input per 1M tokens').fill('2.00');
  await owner.getByLabel('Output per 1M tokens').fill('6.00');
  await owner.getByRole('button', { name: 'Save price' }).click();
  await owner.getByRole('cell', { name: '$2.00' }).waitFor();
  await shot(owner, 'admin-models.png', [owner.locator('.mono')]);
});

test('model output with raw HTML, a javascript: link and a remote image renders harmlessly', async () => {
  await member.goto(`${cairn.url}/chat`);
  await member.getByLabel('Model').selectOption(scriptedModel);
  await member.getByLabel('Your question').fill('What is on the release checklist?');
  await member.getByRole('button', { name: 'Send' }).click();
  const answer = member.locator('article.assistant').last();
  await answer.getByRole('button', { name: 'Copy' }).waitFor({ timeout: 30_000 });
  const md = answer.locator('.md');
  const text = await md.textContent();
  assert.match(text, /<script>window.__pwned = "script"<\/script>/);
  assert.equal(await md.locator('script, img, iframe, [onerror], [style]').count(), 0);
  const link = md.getByText('a harmless-looking link');
  assert.equal(await link.evaluate((el) => el.closest('a')?.getAttribute('href') ?? null), null);
  const pixel = md.locator('a.md-image');
  assert.equal(await pixel.getAttribute('href'), 'http://attacker.invalid/pixel.png');
  assert.equal(await md.locator('code').filter({ hasText: 'not bold' }).locator('b').count(), 0);
  await member.waitForTimeout(300);
  assert.deepEqual(attackerRequests, []);
  assert.equal(await member.evaluate(() => window.__pwned), undefined);
});

test('stop ends a streaming answer; the part kept is marked incomplete', async () => {
  await member.getByLabel('Your question').fill('Explain the on-call rotation slowly.');
  await member.getByLabel('Your question').press('Enter');
  const answer = member.locator('article.assistant').last();
  await answer.getByText('word3').waitFor({ timeout: 30_000 });
  await member.getByRole('button', { name: 'Stop' }).click();
  await answer.getByText('The answer was stopped before it was complete.').waitFor();
  const kept = await answer.locator('.md').textContent();
  assert.ok(!kept.includes('word99'), 'the answer went on after stop');
  // The server stored the part that arrived, marked incomplete.
  await member.reload();
  await member.locator('article.assistant').last().getByText('The answer was stopped before it was complete.').waitFor();
});

test('over budget, the member is told in plain words with the code', async () => {
  let model = scriptedModel;
  if (process.env.CAIRN_TEST_LLM_URL) {
    // Against the real llama.cpp server when the test services run.
    await owner.goto(`${cairn.url}/admin/models`);
    await owner.getByLabel('Name', { exact: true }).fill('llama');
    await owner.getByLabel('Base URL').fill(llmBase());
    await owner.getByRole('button', { name: 'Add provider' }).click();
    await owner.locator('li strong', { hasText: 'llama' }).waitFor();
    // The model the server offers (OpenAI's `data[].id`, or llama.cpp's `models[].name`).
    const listed = await (await fetch(`${llmBase()}/models`)).json();
    const upstream = process.env.CAIRN_TEST_LLM_MODEL || listed.data?.[0]?.id || listed.models?.[0]?.name;
    await owner.getByLabel('Name people see').fill('local-llama');
    await owner.getByLabel('Provider').selectOption({ label: 'llama' });
    await owner.getByLabel('Upstream model').fill(upstream);
    await owner.getByRole('button', { name: 'Add model' }).click();
    await owner.locator('td', { hasText: 'local-llama' }).first().waitFor();
    await owner.getByLabel('Model', { exact: true }).selectOption('local-llama');
    await owner.getByLabel('Input per 1M tokens').fill('1.00');
    await owner.getByLabel('Output per 1M tokens').fill('1.00');
    await owner.getByRole('button', { name: 'Save price' }).click();
    await owner.getByRole('cell', { name: '$1.00' }).first().waitFor();
    model = 'local-llama';
    // A real model's answer streams in before the budget is set.
    await member.goto(`${cairn.url}/chat`);
    await member.getByLabel('Model').selectOption(model);
    await member.getByLabel('Your question').fill('When does the on-call rotation change?');
    await member.getByLabel('Your question').press('Enter');
    const answer = member.locator('article.assistant').last();
    await answer.getByRole('button', { name: 'Copy' }).waitFor({ timeout: 120_000 });
    assert.ok((await answer.locator('.md').textContent()).trim().length > 0);
  } else {
    console.log('# CAIRN_TEST_LLM_URL is not set: the budget step uses the scripted provider instead of llama.cpp');
  }
  await owner.goto(`${cairn.url}/admin/budgets`);
  await owner.getByLabel('Email').fill(MEMBER.email);
  await owner.getByLabel('Monthly limit (USD)').nth(1).fill('0.000001');
  await owner.getByRole('button', { name: 'Save' }).nth(1).click();
  await owner.getByRole('cell', { name: MEMBER.email }).waitFor();
  await shot(owner, 'admin-budgets.png');

  await member.goto(`${cairn.url}/chat`);
  await member.getByLabel('Model').selectOption(model);
  await member.getByLabel('Your question').fill('Summarise the escalation policy.');
  await member.getByRole('button', { name: 'Send' }).click();
  const note = member.locator('.composer .error-note');
  await note.waitFor({ timeout: 30_000 });
  const said = await note.textContent();
  assert.match(said, /Your monthly budget.*does not cover this answer/);
  assert.match(said, /\(budget_exceeded\)/);
  // The question is kept to retry with another model.
  assert.equal(await member.getByLabel('Your question').inputValue(), 'Summarise the escalation policy.');
  await shot(member, 'chat-budget.png');
});

test('usage and the audit log show what happened', async () => {
  await owner.goto(`${cairn.url}/admin/usage`);
  await owner.locator('figcaption', { hasText: 'Per model' }).waitFor();
  await owner.locator('figure svg').first().waitFor();
  await shot(owner, 'admin-usage.png');
  await owner.goto(`${cairn.url}/admin/audit`);
  await owner.getByText('admin.user.approved').waitFor();
  await shot(owner, 'admin-audit.png', [owner.locator('td.nowrap, td.mono, td.small')]);
});

test('two-factor enrolment, then sign-in with a code and with a backup code', async () => {
  await member.goto(`${cairn.url}/settings/security`);
  await member.getByRole('button', { name: 'Set up two-factor sign-in' }).click();
  const secret = (await member.getByTestId('totp-secret').textContent()).trim();
  await member.getByAltText('QR code for your authenticator app').waitFor();
  await shot(member, 'settings-2fa.png', [member.getByAltText('QR code for your authenticator app')]);
  const enrolledAt = Date.now();
  await member.getByLabel('The 6-digit code the app shows').fill(totp(secret, enrolledAt));
  await member.getByRole('button', { name: 'Turn on' }).click();
  await member.getByRole('list', { name: 'Backup codes' }).locator('code').first().waitFor();
  const codes = (backupCodes = await member.getByRole('list', { name: 'Backup codes' }).locator('code').allTextContents());
  assert.equal(codes.length, 10);

  // Signing in again asks for the second factor.
  await member.getByRole('button', { name: 'Sign out' }).click();
  await member.waitForURL('**/sign-in');
  await member.getByLabel('Email').fill(MEMBER.email);
  await member.getByLabel('Password').fill(MEMBER.password);
  await member.getByRole('button', { name: 'Sign in' }).click();
  await member.getByText('This account uses two-factor sign-in.').waitFor();
  // A code of a later time step than the one spent on enrolment.
  const nextStep = (Math.floor(enrolledAt / 30000) + 1) * 30000;
  if (Date.now() < nextStep) await member.waitForTimeout(nextStep - Date.now() + 200);
  await member.getByLabel('Code from your authenticator app').fill(totp(secret));
  await shot(member, 'sign-in-2fa.png', [member.getByLabel('Code from your authenticator app')]);
  await member.getByRole('button', { name: 'Sign in' }).click();
  await member.waitForURL('**/chat');

  await member.getByRole('button', { name: 'Sign out' }).click();
  await member.getByLabel('Email').fill(MEMBER.email);
  await member.getByLabel('Password').fill(MEMBER.password);
  await member.getByRole('button', { name: 'Sign in' }).click();
  await member.getByRole('button', { name: 'Use a backup code instead' }).click();
  await member.getByLabel('Backup code').fill(codes[0]);
  await member.getByRole('button', { name: 'Sign in' }).click();
  await member.waitForURL('**/chat');

  // A wrong code is refused in words.
  await member.getByRole('button', { name: 'Sign out' }).click();
  await member.getByLabel('Email').fill(MEMBER.email);
  await member.getByLabel('Password').fill(MEMBER.password);
  await member.getByRole('button', { name: 'Sign in' }).click();
  await member.getByLabel('Code from your authenticator app').fill('000000');
  await member.getByRole('button', { name: 'Sign in' }).click();
  await member.getByText(/That code is not right.*\(invalid_totp_code\)/).waitFor();
});

test('settings and workspace screens', async () => {
  await owner.goto(`${cairn.url}/settings/api-keys`);
  await owner.getByLabel('Name').fill('laptop');
  await owner.getByRole('button', { name: 'Create key' }).click();
  await owner.getByTestId('new-api-key').waitFor();
  assert.match(await owner.getByTestId('new-api-key').textContent(), /^cairn_/);
  await owner.getByRole('button', { name: 'Done' }).click();
  await shot(owner, 'settings-api-keys.png', [owner.locator('td.nowrap, .mono')]);
  await owner.goto(`${cairn.url}/admin/workspace`);
  await owner.getByRole('heading', { name: 'Workspace and branding' }).waitFor();
  await owner.getByLabel('Welcome message (Markdown, on the new-conversation screen)').fill('Welcome to **Acme**. Ask about on-call, releases and how we work. <img src="http://attacker.invalid/w.png">');
  await owner.getByLabel('Suggested questions, one per line (at most 8)').fill('When does the rotation change?\nWho do I escalate to?');
  await owner.getByRole('button', { name: 'Save' }).click();
  await owner.getByText('Workspace settings saved.').waitFor();
  await shot(owner, 'admin-workspace.png');

  // The member's new-conversation screen shows the welcome and the suggestions; one click asks.
  await member.goto(`${cairn.url}/sign-in`);
  await member.getByLabel('Email').fill(MEMBER.email);
  await member.getByLabel('Password').fill(MEMBER.password);
  await member.getByRole('button', { name: 'Sign in' }).click();
  await member.getByLabel('Code from your authenticator app').waitFor();
  await member.getByRole('button', { name: 'Use a backup code instead' }).click();
  await member.getByLabel('Backup code').fill(backupCodes[1]);
  await member.getByRole('button', { name: 'Sign in' }).click();
  await member.waitForURL('**/chat');
  await member.getByText('Welcome to').waitFor();
  assert.equal(await member.locator('.welcome-message img').count(), 0);
  await shot(member, 'chat-welcome.png');
  await member.getByRole('button', { name: 'Who do I escalate to?' }).click();
  await member.waitForURL('**/chat/*');
  await member.locator('article.assistant').last().getByRole('button', { name: 'Copy' }).waitFor({ timeout: 30_000 });
  assert.deepEqual(attackerRequests, []);
});

test('an invitation admits at once; a reset link sets a new password', async () => {
  await owner.goto(`${cairn.url}/admin/invites`);
  await owner.getByRole('button', { name: 'Create invitation' }).click();
  const link = (await owner.getByTestId('invite-link').textContent()).trim();
  assert.match(link, /\/sign-up\?invite=/);
  await owner.getByRole('button', { name: 'Done' }).click();
  await owner.locator('td', { hasText: '0 of 1' }).waitFor();
  await shot(owner, 'admin-invites.png');

  const guest = await newPage();
  await guest.goto(link.replace(/^https?:\/\/[^/]+/, cairn.url));
  await guest.getByText('You were invited').waitFor();
  await guest.getByLabel('Your name').fill('Ivy Invited');
  await guest.getByLabel('Email').fill('ivy@example.com');
  await guest.getByLabel('Password').fill('invited person passphrase');
  await guest.getByRole('button', { name: 'Sign up' }).click();
  await guest.waitForURL('**/chat');

  // Ivy forgot her password: the admin makes a one-time link.
  await owner.goto(`${cairn.url}/admin/users?q=ivy`);
  await owner.locator('tr[data-email="ivy@example.com"]').getByRole('button', { name: 'Reset link' }).click();
  const reset = (await owner.locator('.reset .secret').textContent()).trim();
  await guest.context().clearCookies();
  await guest.goto(reset.replace(/^https?:\/\/[^/]+/, cairn.url));
  await guest.getByLabel('New password', { exact: true }).fill('a brand new passphrase');
  await guest.getByLabel('New password again').fill('a brand new passphrase');
  await guest.getByRole('button', { name: 'Set the password' }).click();
  await guest.getByRole('link', { name: 'Sign in' }).click();
  await guest.getByLabel('Email').fill('ivy@example.com');
  await guest.getByLabel('Password').fill('a brand new passphrase');
  await guest.getByRole('button', { name: 'Sign in' }).click();
  await guest.waitForURL('**/chat');
  await guest.context().close();
});

test('regenerate asks the question again and shows the new answer in place', async () => {
  await member.goto(`${cairn.url}/chat`);
  await member.locator('aside li a', { hasText: 'When does the rotation change?' }).click();
  const answers = member.locator('article.assistant');
  await answers.last().getByRole('button', { name: 'Regenerate' }).click();
  await answers.last().locator('a.cite').first().waitFor();
  await answers.last().getByRole('button', { name: 'Copy' }).waitFor();
  assert.equal(await answers.count(), 1);
});
