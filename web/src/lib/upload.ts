// Uploads with progress: XMLHttpRequest reports bytes sent, which fetch cannot yet. Each file
// carries an Idempotency-Key so a retried upload never makes a duplicate.

import { ApiError, getCsrf, randomKey, refreshSession } from './api';

export interface UploadedDocument {
  id: string;
  filename: string;
  status: string;
}

function once(
  url: string,
  file: File,
  key: string,
  onProgress: (sent: number, total: number) => void,
  signal?: AbortSignal,
): Promise<{ status: number; body: string; requestId: string | null }> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.withCredentials = true;
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.setRequestHeader('Idempotency-Key', key);
    const csrf = getCsrf();
    if (csrf) xhr.setRequestHeader('X-CSRF-Token', csrf);
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => resolve({ status: xhr.status, body: xhr.responseText, requestId: xhr.getResponseHeader('x-request-id') });
    xhr.onerror = () => reject(new ApiError(0, 'network_error', 'Cairn could not be reached.'));
    xhr.onabort = () => reject(new ApiError(0, 'aborted', 'The upload was cancelled.'));
    signal?.addEventListener('abort', () => xhr.abort());
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
}

function parseError(r: { status: number; body: string; requestId: string | null }): ApiError {
  try {
    const e = JSON.parse(r.body).error;
    return new ApiError(r.status, e.code, e.message, e.details, r.requestId);
  } catch {
    return new ApiError(r.status, `http_${r.status}`, 'The upload failed.', undefined, r.requestId);
  }
}

export async function uploadFile(
  collectionId: string,
  file: File,
  onProgress: (sent: number, total: number) => void,
  signal?: AbortSignal,
): Promise<UploadedDocument> {
  const url = `/api/collections/${encodeURIComponent(collectionId)}/documents`;
  const key = randomKey();
  let r = await once(url, file, key, onProgress, signal);
  if (r.status === 401 && (await refreshSession())) r = await once(url, file, key, onProgress, signal);
  // A busy database answers 500/503 now and then; the same Idempotency-Key makes a retry safe.
  for (let attempt = 1; attempt <= 2 && (r.status === 500 || r.status === 503); attempt++) {
    await new Promise((res) => setTimeout(res, 400 * attempt));
    r = await once(url, file, key, onProgress, signal);
  }
  if (r.status >= 200 && r.status < 300) return JSON.parse(r.body);
  throw parseError(r);
}
