// Loads the app's TypeScript modules in Node through Vite (no separate compiler), with a jsdom
// window standing in for the browser where a module needs one.

import { createServer } from 'vite';
import { JSDOM } from 'jsdom';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

export function installDom() {
  const dom = new JSDOM('<!doctype html><html><body></body></html>', { url: 'http://127.0.0.1/' });
  globalThis.window = dom.window;
  globalThis.document = dom.window.document;
  return dom;
}

let server;
export async function load(path) {
  server ??= await createServer({ root, configFile: false, logLevel: 'error', server: { middlewareMode: true, hmr: false }, appType: 'custom', optimizeDeps: { noDiscovery: true, include: [] } });
  return server.ssrLoadModule(path);
}

export async function close() {
  await server?.close();
  server = undefined;
}
