// Collections and documents as the API returns them.

export interface CollectionInfo {
  id: string;
  name: string;
  description: string;
  personal_of: string | null;
  role: 'viewer' | 'editor' | 'owner';
  document_count: number;
  size_bytes: number;
  created_at: string;
  updated_at: string;
}

export interface DocumentInfo {
  id: string;
  collection_id: string;
  filename: string;
  title: string | null;
  kind: string;
  size_bytes: number;
  status: 'queued' | 'parsing' | 'chunking' | 'indexing' | 'ready' | 'failed' | 'cancelled';
  error_code: string | null;
  error_message: string | null;
  progress?: { done: number; total: number };
  progress_done?: number;
  progress_total?: number;
  chunk_count: number;
  created_at: string;
  updated_at: string;
  job?: { status: string; attempts: number; max_attempts: number; last_error: string | null } | null;
}

export interface Chunk {
  id: string;
  ordinal: number;
  text: string;
  token_count: number;
  location: Record<string, unknown> | null;
}

export const FINAL = new Set(['ready', 'failed', 'cancelled']);

export const STATUS_WORDS: Record<string, string> = {
  queued: 'Queued',
  parsing: 'Reading',
  chunking: 'Splitting',
  indexing: 'Indexing',
  ready: 'Ready',
  failed: 'Failed',
  cancelled: 'Cancelled',
};

export const INGEST_ERRORS: Record<string, string> = {
  corrupt: 'The file is damaged.',
  pdf_encrypted: 'The PDF is encrypted.',
  no_text: 'The file has no text Cairn can read (a scan without text?).',
  zip_bomb: 'The file expands to far more than it should and was refused.',
  too_much_text: 'The file has more text than this workspace accepts.',
  too_deep: 'The file is nested too deeply.',
  invalid_utf8: 'The text is not valid UTF-8.',
  malformed: 'The file is not well-formed.',
  parse_timeout: 'Reading the file took too long.',
  parser_crashed: 'Reading the file failed.',
  type_not_allowed: 'This workspace does not accept this kind of file.',
  ingest_failed: 'Storing the document failed after several attempts.',
  timed_out: 'The worker ingesting it stopped answering.',
};
