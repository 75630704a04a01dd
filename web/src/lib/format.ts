// Numbers, sizes, money and times as people read them.

export function bytes(n: number): string {
  if (!Number.isFinite(n)) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** Micro-units of a currency, e.g. 1234567 USD micros → "$1.23". */
export function money(micros: number | null | undefined, currency = 'USD'): string {
  if (micros === null || micros === undefined) return '—';
  const v = micros / 1_000_000;
  // Cents as usual; smaller amounts with the digits they need (down to a micro-unit).
  let digits = 2;
  while (digits < 6 && Math.abs(Math.round(v * 10 ** digits) - v * 10 ** digits) > 1e-6) digits++;
  try {
    return new Intl.NumberFormat('en', {
      style: 'currency',
      currency,
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    }).format(v);
  } catch {
    return `${v.toFixed(digits)} ${currency}`;
  }
}

export function parseMoney(text: string): number | null {
  const v = Number(text.replace(/[^0-9.]/g, ''));
  if (!Number.isFinite(v) || text.trim() === '') return null;
  return Math.round(v * 1_000_000);
}

export function count(n: number): string {
  return new Intl.NumberFormat('en').format(n);
}

export function dateTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
  });
}

export function relative(iso: string | null | undefined): string {
  if (!iso) return '—';
  const t = new Date(iso).getTime();
  const s = Math.round((Date.now() - t) / 1000);
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 86400 * 7) return `${Math.floor(s / 86400)} d ago`;
  return dateTime(iso);
}

export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined) return '—';
  return v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`;
}

export function timestamp(msv: number): string {
  const s = Math.floor(msv / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, '0');
  return (h ? `${h}:` : '') + `${mm}:${String(sec).padStart(2, '0')}`;
}

/** Where a passage is in its document, in words: "p. 3 · On-call › Rotation · 1:02". */
export function locationLabel(loc: Record<string, unknown> | null | undefined): string {
  if (!loc) return '';
  const parts: string[] = [];
  const page = loc.page ?? loc.page_start;
  if (page !== undefined && page !== null) {
    const end = loc.page_end;
    parts.push(end && end !== page ? `pp. ${page}–${end}` : `p. ${page}`);
  }
  if (loc.slide ?? loc.slide_start) parts.push(`slide ${loc.slide ?? loc.slide_start}`);
  if (loc.sheet) parts.push(`sheet ${loc.sheet}`);
  if (loc.row ?? loc.row_start) parts.push(`row ${loc.row ?? loc.row_start}`);
  if (Array.isArray(loc.heading_path) && loc.heading_path.length) parts.push(loc.heading_path.join(' › '));
  if (typeof loc.start_ms === 'number') parts.push(timestamp(loc.start_ms));
  const sp = loc.speaker ?? (Array.isArray(loc.speakers) ? (loc.speakers as string[]).join(', ') : undefined);
  if (sp) parts.push(String(sp));
  return parts.join(' · ');
}

/** Slice a string by code points (the unit search highlights are counted in). */
export function splitHighlights(text: string, ranges: [number, number][]): { text: string; hit: boolean }[] {
  const cps = Array.from(text);
  const sorted = [...ranges].filter((r) => r[1] > r[0]).sort((a, b) => a[0] - b[0]);
  const out: { text: string; hit: boolean }[] = [];
  let at = 0;
  for (const [s0, e0] of sorted) {
    const s = Math.max(s0, at);
    const e = Math.min(e0, cps.length);
    if (s >= e) continue;
    if (s > at) out.push({ text: cps.slice(at, s).join(''), hit: false });
    out.push({ text: cps.slice(s, e).join(''), hit: true });
    at = e;
  }
  if (at < cps.length) out.push({ text: cps.slice(at).join(''), hit: false });
  return out;
}
