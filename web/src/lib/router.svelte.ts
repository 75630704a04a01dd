// Client-side routes over the History API. The server answers index.html for every path that
// is not under /api or /v1, so any of these can be loaded directly.

export interface Route {
  path: string;
  segments: string[];
  query: URLSearchParams;
}

function current(): Route {
  const path = location.pathname.replace(/\/+$/, '') || '/';
  return {
    path,
    segments: path.split('/').filter(Boolean).map(decodeURIComponent),
    query: new URLSearchParams(location.search),
  };
}

export const router = $state({ route: current() });

export function navigate(to: string, opts: { replace?: boolean } = {}) {
  if (to === location.pathname + location.search) {
    router.route = current();
    return;
  }
  if (opts.replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  router.route = current();
  window.scrollTo(0, 0);
}

/** Replace the query string without a new history entry (filters, search terms). */
export function setQuery(params: Record<string, string | null | undefined>) {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === '') q.delete(k);
    else q.set(k, v);
  }
  const s = q.toString();
  history.replaceState(null, '', location.pathname + (s ? `?${s}` : ''));
  router.route = current();
}

window.addEventListener('popstate', () => {
  router.route = current();
});

/** Links inside the app navigate without reloading; modifier clicks keep their usual meaning. */
export function interceptLinks(root: HTMLElement) {
  root.addEventListener('click', (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = (e.target as Element | null)?.closest?.('a');
    if (!a || a.target || a.hasAttribute('download')) return;
    const href = a.getAttribute('href');
    if (!href || !href.startsWith('/') || href.startsWith('//') || href.startsWith('/api/') || href.startsWith('/v1/'))
      return;
    e.preventDefault();
    navigate(href);
  });
}
