// Cairn's HTTP API as the web app uses it: cookie sessions, the CSRF header on every change,
// one refresh attempt on 401, and every error as an `ApiError` carrying the server's code.

import { describeError } from './errors';

export class ApiError extends Error {
  status: number;
  code: string;
  details: Record<string, unknown> | undefined;
  requestId: string | null;
  serverMessage: string;

  constructor(
    status: number,
    code: string,
    serverMessage: string,
    details?: Record<string, unknown>,
    requestId: string | null = null,
  ) {
    super(serverMessage);
    this.status = status;
    this.code = code;
    this.serverMessage = serverMessage;
    this.details = details;
    this.requestId = requestId;
  }

  /** A sentence for people, with what the details add (amounts, limits, fields). */
  get sentence(): string {
    return describeError(this);
  }
}

const CSRF_KEY = 'cairn.csrf';
let csrfToken: string | null = null;

export function setCsrf(token: string | null) {
  csrfToken = token;
  try {
    if (token) sessionStorage.setItem(CSRF_KEY, token);
    else sessionStorage.removeItem(CSRF_KEY);
  } catch {
    // Storage may be unavailable (private modes); memory is enough.
  }
}

/** The session's CSRF token: memory, then this tab's storage, then the readable cookie. */
export function getCsrf(): string | null {
  if (csrfToken) return csrfToken;
  try {
    const stored = sessionStorage.getItem(CSRF_KEY);
    if (stored) return (csrfToken = stored);
  } catch {
    /* ignore */
  }
  const m = /(?:^|;\s*)cairn_csrf=([^;]+)/.exec(document.cookie);
  if (m) return (csrfToken = decodeURIComponent(m[1]));
  return null;
}

/** Called when the session is gone for good (refresh refused): the app shows sign-in. */
let onSignedOut: (() => void) | null = null;
export function setSignedOutHandler(fn: () => void) {
  onSignedOut = fn;
}

/** Called with refusals that concern the whole account (enrolment required, suspended). */
let onAccountRefusal: ((code: string) => void) | null = null;
export function setAccountRefusalHandler(fn: (code: string) => void) {
  onAccountRefusal = fn;
}
const ACCOUNT_REFUSALS = new Set(['totp_enrolment_required', 'account_suspended']);

const REFRESHABLE = new Set(['invalid_token', 'unauthenticated']);

let refreshing: Promise<boolean> | null = null;

async function doRefresh(): Promise<boolean> {
  const res = await fetch('/api/auth/refresh', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { Accept: 'application/json' },
  });
  if (!res.ok) return false;
  try {
    const body = await res.json();
    if (body && typeof body.csrf_token === 'string') setCsrf(body.csrf_token);
  } catch {
    /* a session without a body still set its cookies */
  }
  return true;
}

/**
 * Refresh the session once, however many requests failed together. Refresh tokens are single-use
 * (a spent one ends the session), so tabs take turns through a Web Lock and a tab that waited
 * first checks whether another tab's refresh already renewed the cookies.
 */
export function refreshSession(): Promise<boolean> {
  if (refreshing) return refreshing;
  const run = async () => {
    const locks = (navigator as Navigator & { locks?: LockManager }).locks;
    if (!locks) return doRefresh();
    return locks.request('cairn-refresh', async () => {
      const probe = await fetch('/api/me', { credentials: 'same-origin' });
      if (probe.ok) return true;
      return doRefresh();
    });
  };
  refreshing = run()
    .catch(() => false)
    .finally(() => {
      refreshing = null;
    });
  return refreshing;
}

export async function toApiError(res: Response): Promise<ApiError> {
  const requestId = res.headers.get('x-request-id');
  let code = 'http_' + res.status;
  let message = res.statusText || 'The server answered with an error.';
  let details: Record<string, unknown> | undefined;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
      details = body.error.details;
    }
  } catch {
    /* not JSON: keep the status */
  }
  return new ApiError(res.status, code, message, details, requestId);
}

export function networkError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof DOMException && e.name === 'AbortError') {
    return new ApiError(0, 'aborted', 'The request was stopped.');
  }
  return new ApiError(0, 'network_error', 'Cairn could not be reached.');
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  query?: Record<string, string | number | boolean | null | undefined>;
  signal?: AbortSignal;
  headers?: Record<string, string>;
  /** Do not try to refresh on 401 (sign-in, refresh itself). */
  noRefresh?: boolean;
  /** Accept header; the answer stream asks for text/event-stream. */
  accept?: string;
}

export function withQuery(path: string, query?: RequestOptions['query']): string {
  if (!query) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** A raw request with session handling; the caller reads the response. */
export async function send(path: string, opts: RequestOptions = {}): Promise<Response> {
  const method = (opts.method ?? 'GET').toUpperCase();
  const url = withQuery(path, opts.query);
  const make = () => {
    const headers: Record<string, string> = { Accept: opts.accept ?? 'application/json', ...opts.headers };
    let body: BodyInit | undefined;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    if (method !== 'GET' && method !== 'HEAD') {
      const t = getCsrf();
      if (t) headers['X-CSRF-Token'] = t;
    }
    return fetch(url, { method, headers, body, credentials: 'same-origin', signal: opts.signal });
  };
  let res: Response;
  try {
    res = await make();
  } catch (e) {
    throw networkError(e);
  }
  if (res.status === 401 && !opts.noRefresh) {
    const err = await toApiError(res.clone());
    if (REFRESHABLE.has(err.code)) {
      const ok = await refreshSession();
      if (ok) {
        try {
          res = await make();
        } catch (e) {
          throw networkError(e);
        }
      }
      if (res.status === 401 && onSignedOut) onSignedOut();
    }
  }
  if (res.status === 403) {
    const err = await toApiError(res.clone());
    if (err.code === 'csrf_failed' && !opts.noRefresh) {
      // The tab lost its CSRF token (a new tab, cleared storage): a refresh hands out the session's.
      setCsrf(null);
      if (await refreshSession()) {
        try {
          res = await make();
        } catch (e) {
          throw networkError(e);
        }
      }
    } else if (ACCOUNT_REFUSALS.has(err.code) && onAccountRefusal) {
      onAccountRefusal(err.code);
    }
  }
  return res;
}

/** A JSON request: the parsed body, `undefined` for 204, or a thrown `ApiError`. */
export async function api<T = unknown>(path: string, opts: RequestOptions = {}): Promise<T> {
  const res = await send(path, opts);
  if (!res.ok) throw await toApiError(res);
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export const get = <T>(path: string, query?: RequestOptions['query'], signal?: AbortSignal) =>
  api<T>(path, { query, signal });
export const post = <T>(path: string, body?: unknown) => api<T>(path, { method: 'POST', body });
export const put = <T>(path: string, body?: unknown) => api<T>(path, { method: 'PUT', body });
export const patch = <T>(path: string, body?: unknown) => api<T>(path, { method: 'PATCH', body });
export const del = <T>(path: string, body?: unknown) => api<T>(path, { method: 'DELETE', body });

/** A fresh key for `Idempotency-Key`, in secure contexts and plain-HTTP ones alike. */
export function randomKey(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
