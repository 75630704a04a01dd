// Starts a real `cairn serve` on a free port with a fresh data directory, and gives the address
// the browser should open. When the binary serves the web app itself (web/dist embedded), that is
// its own address; otherwise a small front server serves web/dist and passes /api and /v1 through,
// on one origin, with the server's own security headers — so the app runs under the real CSP.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { tmpdir, homedir } from 'node:os';
import { join, extname, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
export const distDir = join(here, '..', '..', 'dist');

export const CAIRN_BIN = process.env.CAIRN_BIN || join(homedir(), '.cache/cairn-target/debug/cairn');

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitFor(url, deadlineMs, isOk = (r) => r.ok) {
  const until = Date.now() + deadlineMs;
  let last;
  while (Date.now() < until) {
    try {
      const r = await fetch(url);
      if (isOk(r)) return r;
      last = `status ${r.status}`;
    } catch (e) {
      last = e.message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer in time (${last})`);
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
};

/** The front server: web/dist with SPA fallback, /api and /v1 streamed through to cairn. */
async function startFront(apiPort, securityHeaders) {
  const port = await freePort();
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname.startsWith('/api/') || url.pathname.startsWith('/v1/') || url.pathname === '/metrics') {
      const up = httpRequest(
        { host: '127.0.0.1', port: apiPort, method: req.method, path: req.url, headers: req.headers },
        (upRes) => {
          res.writeHead(upRes.statusCode, upRes.headers);
          upRes.pipe(res);
        },
      );
      up.on('error', () => {
        res.writeHead(502);
        res.end();
      });
      req.pipe(up);
      res.on('close', () => up.destroy());
      return;
    }
    let file = normalize(join(distDir, decodeURIComponent(url.pathname)));
    if (!file.startsWith(distDir) || !existsSync(file) || url.pathname === '/') file = join(distDir, 'index.html');
    try {
      const body = readFileSync(file);
      const immutable = file.includes(`${join(distDir, 'assets')}`);
      res.writeHead(200, {
        ...securityHeaders,
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
      });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) };
}

/**
 * Start Cairn. `settings` are `--set key=value` pairs. Returns `{ url, apiUrl, dataDir, stop,
 * setupToken(), log() }`.
 */
export async function startCairn(settings = {}) {
  if (!existsSync(CAIRN_BIN)) throw new Error(`No cairn binary at ${CAIRN_BIN} (set CAIRN_BIN).`);
  const dataDir = mkdtempSync(join(tmpdir(), 'cairn-web-e2e-'));
  const port = await freePort();
  const args = ['--data-dir', dataDir, 'serve', '--listen', `127.0.0.1:${port}`];
  for (const [k, v] of Object.entries(settings)) args.push('--set', `${k}=${v}`);
  let output = '';
  // Cairn refuses CAIRN_* variables that name no setting (a typo guard), and this process has
  // its own (CAIRN_BIN, the test services' CAIRN_TEST_*): the server gets none of them.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CAIRN_')));
  const child = spawn(CAIRN_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, NO_COLOR: '1' } });
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const exited = new Promise((r) => child.on('exit', r));
  const apiUrl = `http://127.0.0.1:${port}`;
  try {
    await Promise.race([
      waitFor(`${apiUrl}/api/health/live`, 60_000),
      exited.then((code) => {
        throw new Error(`cairn exited with ${code}:\n${output}`);
      }),
    ]);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  // Does the binary serve this very build of the web app (the one in web/dist)? A binary built
  // before the last `npm run build` embeds an older one; then the front server serves web/dist.
  const root = await fetch(`${apiUrl}/`).catch(() => null);
  const rootHtml = root && root.ok ? await root.text() : '';
  const servesApp = rootHtml === readFileSync(join(distDir, 'index.html'), 'utf8');
  let front = null;
  if (!servesApp) {
    const probe = await fetch(`${apiUrl}/api/health/live`);
    const keep = ['content-security-policy', 'x-content-type-options', 'x-frame-options', 'referrer-policy', 'permissions-policy', 'cross-origin-opener-policy'];
    const headers = Object.fromEntries(keep.filter((k) => probe.headers.get(k)).map((k) => [k, probe.headers.get(k)]));
    front = await startFront(port, headers);
  }
  return {
    url: front ? front.url : apiUrl,
    apiUrl,
    dataDir,
    servesApp,
    setupToken: () => readFileSync(join(dataDir, 'setup-token'), 'utf8').trim(),
    log: () => output,
    async stop() {
      if (front) await front.close();
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

// `node test/e2e/harness.mjs`: start one for trying the app by hand.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const c = await startCairn({ 'chat.allow_mock': 'true' });
  console.log(`Cairn: ${c.url} (API ${c.apiUrl}), data ${c.dataDir}, setup token ${c.setupToken()}`);
  process.on('SIGINT', async () => {
    await c.stop();
    process.exit(0);
  });
}
