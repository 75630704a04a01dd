// Who is signed in, the workspace's public branding, the theme and passing notices: the state
// every screen shares.

import { api, get, post, setCsrf, ApiError } from './api';

export interface User {
  id: string;
  email: string;
  display_name: string;
  role: 'member' | 'admin' | 'owner';
  state: 'pending' | 'active' | 'suspended' | 'denied';
  totp_enabled: boolean;
  created_at: string;
  last_sign_in_at: string | null;
}

export interface SessionResponse {
  user: User;
  session_id: string;
  csrf_token: string;
}

export interface Branding {
  name: string;
  logo: string | null;
  accent_color: string | null;
  welcome_message: string | null;
  suggested_prompts: string[];
}

export const session = $state({
  user: null as User | null,
  checked: false,
  setupNeeded: false,
  /** The account must enrol in two-factor sign-in before anything else opens. */
  mustEnrol: false,
});

export const branding = $state<Branding>({
  name: 'Cairn',
  logo: null,
  accent_color: null,
  welcome_message: null,
  suggested_prompts: [],
});

export function isAdmin() {
  return session.user?.role === 'admin' || session.user?.role === 'owner';
}

export function started(res: SessionResponse) {
  setCsrf(res.csrf_token);
  session.user = res.user;
  session.setupNeeded = false;
}

export async function loadMe(): Promise<User | null> {
  try {
    session.user = await get<User>('/api/me');
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) session.user = null;
    else throw e;
  } finally {
    session.checked = true;
  }
  return session.user;
}

export async function signOut() {
  try {
    await post('/api/auth/sign-out');
  } catch {
    /* the session may already be over */
  }
  setCsrf(null);
  session.user = null;
}

const HEX = /^#[0-9a-fA-F]{6}$/;
const SAFE_LOGO = /^data:image\/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=]+$/;

export function applyBranding(b: Partial<Branding>) {
  branding.name = (b.name && b.name.trim()) || 'Cairn';
  branding.logo = b.logo && SAFE_LOGO.test(b.logo) ? b.logo : null;
  branding.accent_color = b.accent_color && HEX.test(b.accent_color) ? b.accent_color : null;
  branding.welcome_message = b.welcome_message ?? null;
  branding.suggested_prompts = Array.isArray(b.suggested_prompts)
    ? b.suggested_prompts.filter((p) => typeof p === 'string' && p.trim()).slice(0, 8)
    : [];
  const root = document.documentElement;
  if (branding.accent_color) root.style.setProperty('--accent', branding.accent_color);
  else root.style.removeProperty('--accent');
  document.title = branding.name;
}

export async function loadBranding() {
  try {
    applyBranding(await api<Branding>('/api/workspace/public', { noRefresh: true }));
  } catch {
    // Servers without public branding keep Cairn's look.
  }
}

// ---- Theme: follows the system unless the person chose one.
type Theme = 'system' | 'light' | 'dark';
const THEME_KEY = 'cairn.theme';
export const theme = $state({ choice: ((): Theme => {
  try {
    return (localStorage.getItem(THEME_KEY) as Theme) || 'system';
  } catch {
    return 'system';
  }
})() });

export function applyTheme() {
  const root = document.documentElement;
  if (theme.choice === 'system') root.removeAttribute('data-theme');
  else root.setAttribute('data-theme', theme.choice);
}

export function cycleTheme() {
  theme.choice = theme.choice === 'system' ? 'dark' : theme.choice === 'dark' ? 'light' : 'system';
  try {
    localStorage.setItem(THEME_KEY, theme.choice);
  } catch {
    /* ignore */
  }
  applyTheme();
}

// ---- Notices (a polite live region reads them out).
export interface Notice {
  id: number;
  text: string;
  kind: 'info' | 'error';
}
export const notices = $state<Notice[]>([]);
let nextNotice = 1;
export function notify(text: string, kind: Notice['kind'] = 'info') {
  const id = nextNotice++;
  notices.push({ id, text, kind });
  setTimeout(() => {
    const i = notices.findIndex((n) => n.id === id);
    if (i >= 0) notices.splice(i, 1);
  }, kind === 'error' ? 8000 : 4000);
}
