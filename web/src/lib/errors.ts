// Every error the API can answer, as a sentence a person understands. The server's own message
// is already written for people; these add what `details` says (amounts, limits, fields) and
// cover the cases where the web app knows better what the person was doing.

import { money, bytes } from './format';

interface ErrorLike {
  status: number;
  code: string;
  serverMessage: string;
  details?: Record<string, unknown>;
}

const num = (v: unknown) => (typeof v === 'number' ? v : Number(v ?? 0));

const SENTENCES: Record<string, (e: ErrorLike) => string> = {
  network_error: () => 'Cairn could not be reached. Check the connection and try again.',
  aborted: () => 'Stopped.',
  invalid_credentials: () => 'That email and password do not match an account.',
  totp_required: () => 'This account uses two-factor sign-in: enter the code from your authenticator app.',
  invalid_totp_code: () => 'That code is not right, or it was already used. Wait for the next code and try again.',
  account_pending: () => 'Your account is waiting for an administrator to approve it.',
  account_suspended: () => 'This account is suspended. Ask an administrator.',
  csrf_failed: () => 'Your session could not be verified. Reload the page and try again.',
  invalid_setup_token: () => 'That setup token is not right. Copy it again from the server log or the setup-token file.',
  already_set_up: () => 'This workspace is already set up. Sign in instead.',
  registration_closed: () => 'Sign-up is closed in this workspace. Ask an administrator for an account.',
  invite_required: () => 'This workspace needs an invitation to sign up. Ask an administrator for an invite link.',
  invalid_invite: () => 'This invitation is not valid any more (used, revoked or expired).',
  invalid_reset_token: () => 'This password-reset link is not valid any more. Ask an administrator for a new one.',
  email_taken: () => 'An account with this email already exists. Sign in instead.',
  rate_limited: (e) => `Too many requests. Try again in ${num(e.details?.retry_after_secs) || 'a few'} seconds.`,
  sign_in_locked: (e) =>
    `Too many failed sign-ins for this account. Try again in ${num(e.details?.retry_after_secs)} seconds.`,
  weak_password: (e) => {
    const problems = Array.isArray(e.details?.problems) ? (e.details!.problems as string[]).join('; ') : '';
    return problems ? `That password is too weak: ${problems}.` : e.serverMessage;
  },
  invalid_fields: (e) => {
    const fields = e.details?.fields as Record<string, string> | undefined;
    if (!fields) return e.serverMessage;
    return (
      'Some values are not acceptable: ' +
      Object.entries(fields)
        .map(([k, v]) => `${k.replace(/_/g, ' ')} ${v}`)
        .join('; ') +
      '.'
    );
  },
  budget_exceeded: (e) => {
    const d = e.details ?? {};
    const cur = String(d.currency ?? 'USD');
    const who = d.scope === 'workspace' ? "The workspace's" : 'Your';
    return (
      `${who} monthly budget${d.month ? ` for ${d.month}` : ''} does not cover this answer: ` +
      `${money(num(d.remaining_micros), cur)} left of ${money(num(d.limit_micros), cur)}, ` +
      `and this answer could cost up to ${money(num(d.needed_micros), cur)}. ` +
      `Ask an administrator to raise the budget, or choose a model that costs less.`
    );
  },
  unknown_model: (e) =>
    `The model ${e.details?.model ? `“${e.details.model}” ` : ''}is not available to you. Choose another model.`,
  message_too_long: (e) =>
    e.details?.max_chars
      ? `The question is too long: ${num(e.details.chars)} characters, at most ${num(e.details.max_chars)}.`
      : e.details?.max_tokens
        ? `The question does not fit the model's context window (${num(e.details.tokens)} tokens of ${num(e.details.max_tokens)}).`
        : e.serverMessage,
  message_empty: () => 'Write a question first.',
  too_many_streams: (e) =>
    e.details?.scope === 'user'
      ? `You already have ${num(e.details?.limit)} answers streaming. Wait for one to finish.`
      : 'The server is answering too many questions right now. Try again in a moment.',
  collection_not_found: () => 'A collection chosen for this conversation no longer exists or is not shared with you.',
  file_too_large: (e) => `The file is too large: at most ${bytes(num(e.details?.limit_bytes))}.`,
  quota_exceeded: (e) =>
    `This upload would pass your storage quota (${bytes(num(e.details?.used_bytes))} used of ${bytes(num(e.details?.quota_bytes))}).`,
  unsupported_type: () => 'Cairn cannot read this kind of file.',
  type_not_allowed: (e) =>
    `This workspace does not accept ${e.details?.kind ? `${e.details.kind} files` : 'this kind of file'}.`,
  empty_file: () => 'The file is empty.',
  duplicate_document: () => 'This collection already has a document with exactly this content.',
  payload_too_large: (e) => `The request is too large (at most ${bytes(num(e.details?.limit_bytes))}).`,
  query_empty: () => 'Type something to search for.',
  query_too_long: (e) => `The search is too long: at most ${num(e.details?.max_chars)} characters.`,
  semantic_unavailable: () => 'Search by meaning is off: no embedding model is configured. Use keyword search.',
  personal_collection: () => 'A personal collection cannot be shared or deleted.',
  last_owner: () => 'A collection needs at least one owner. Make someone else an owner first.',
  cannot_change_self: () => 'You cannot do this to your own account.',
  version_conflict: () => 'Someone else changed these settings meanwhile. Reload them and try again.',
  totp_enrolment_required: () => 'This workspace requires two-factor sign-in. Turn it on in Settings → Security first.',
  api_key_not_allowed: () => 'This needs a signed-in session, not an API key.',
  forbidden: () => 'You are not allowed to do this.',
  not_found: () => 'It is not there any more, or it is not shared with you.',
  internal: (e) =>
    `Something went wrong on the server${e.details?.request_id ? ` (request ${e.details.request_id})` : ''}. An administrator can find it in the log.`,
};

export function describeError(e: ErrorLike): string {
  const f = SENTENCES[e.code];
  const s = f ? f(e) : e.serverMessage;
  return s || 'Something went wrong.';
}
