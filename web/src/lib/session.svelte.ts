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
  /** Who may sign up: `closed`, `invite`, `approval` or `open` (from the public view). */
  registration: string | null;
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
  registration: null,
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
const SAFE_LOGO = /^data:image\/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+$/;

/** Apply what is known of the branding; fields left out keep their current value. */
export function applyBranding(b: Partial<Branding>) {
  if ('name' in b) branding.name = (b.name && b.name.trim()) || 'Cairn';
  if ('logo' in b) branding.logo = b.logo && SAFE_LOGO.test(b.logo) ? b.logo : null;
  if ('accent_color' in b) branding.accent_color = b.accent_color && HEX.test(b.accent_color) ? b.accent_color : null;
  if ('welcome_message' in b) branding.welcome_message = b.welcome_message ?? null;
  if ('suggested_prompts' in b)
    branding.suggested_prompts = Array.isArray(b.suggested_prompts)
      ? b.suggested_prompts.filter((p) => typeof p === 'string' && p.trim()).slice(0, 8)
      : [];
  if ('registration' in b) branding.registration = b.registration ?? null;
  const root = document.documentElement;
  if (branding.accent_color) root.style.setProperty('--accent', branding.accent_color);
  else root.style.removeProperty('--accent');
  document.title = branding.name;
}

/** The public view (before sign-in): name, logo, colour, who may sign up, whether setup is due. */
export async function loadBranding(): Promise<{ setup_needed?: boolean } | null> {
  try {
    const pub = await api<Partial<Branding> & { setup_needed?: boolean }>('/api/workspace/public', { noRefresh: true });
    const { setup_needed, ...rest } = pub;
    applyBranding(rest);
    return { setup_needed };
  } catch {
    // Servers without public branding keep Cairn's look.
    return null;
  }
}

/** The signed-in view adds the welcome message and suggested questions. */
export async function loadWorkspace() {
  try {
    const w = await get<Partial<Branding>>('/api/workspace');
    applyBranding({
      name: w.name,
      logo: w.logo ?? null,
      accent_color: w.accent_color ?? null,
      welcome_message: w.welcome_message ?? null,
      suggested_prompts: w.suggested_prompts ?? [],
    });
  } catch {
    /* the public view is enough */
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
