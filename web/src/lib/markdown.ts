// Markdown from models, rendered safely. Three layers:
// 1. the Markdown renderer never emits raw HTML (HTML in the source is shown as text), turns
//    images into plain links (nothing is fetched from a remote address), and keeps only
//    http(s)/mailto links and the app's own paths;
// 2. DOMPurify then removes anything active that slipped through (scripts, handlers, styles,
//    `javascript:`/`data:` URLs, images, frames, forms);
// 3. the server's Content-Security-Policy allows scripts and images only from Cairn itself.
// Citations `[n]` become links to the cited passage.

import { Marked, type Tokens } from 'marked';
import DOMPurify from 'dompurify';

export interface CitationTarget {
  n: number;
  document_id: string;
  chunk_id: string;
  title?: string | null;
  valid?: boolean;
}

const SAFE_URL = /^(?:https?:|mailto:|\/(?!\/)|#)/i;

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** A URL fit for an `href`, or null. Control characters and whitespace tricks are refused. */
export function safeHref(raw: string | null | undefined): string | null {
  if (!raw) return null;
  // Browsers ignore tabs and newlines inside URLs; `java\tscript:` must not pass.
  const url = raw.replace(/[\u0000-\u0020\u007f-\u009f]/g, '');
  if (!SAFE_URL.test(url)) return null;
  return url;
}

export function citationHref(c: CitationTarget): string {
  return `/documents/${encodeURIComponent(c.document_id)}?chunk=${encodeURIComponent(c.chunk_id)}`;
}

let purifier: ReturnType<typeof DOMPurify> | null = null;
function purify(): ReturnType<typeof DOMPurify> {
  if (purifier) return purifier;
  const p = DOMPurify(window);
  p.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A') {
      const href = safeHref(node.getAttribute('href'));
      if (!href) node.removeAttribute('href');
      else node.setAttribute('href', href);
      if (href && /^(https?:|mailto:)/i.test(href)) {
        node.setAttribute('target', '_blank');
        node.setAttribute('rel', 'noopener noreferrer nofollow');
      }
    }
  });
  purifier = p;
  return p;
}

const PURIFY_CONFIG = {
  ALLOWED_TAGS: [
    'a', 'p', 'br', 'hr', 'em', 'strong', 'del', 's', 'code', 'pre', 'blockquote', 'ul', 'ol', 'li',
    'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'span', 'sup',
    'input',
  ],
  ALLOWED_ATTR: ['href', 'title', 'class', 'data-cite', 'data-lang', 'align', 'start', 'type', 'checked', 'disabled', 'target', 'rel'],
  ALLOW_DATA_ATTR: false,
  ALLOW_UNKNOWN_PROTOCOLS: false,
  FORBID_TAGS: ['img', 'svg', 'math', 'style', 'script', 'iframe', 'form', 'object', 'embed', 'video', 'audio', 'source', 'picture', 'link', 'meta', 'base'],
  FORBID_ATTR: ['style', 'src', 'srcset', 'background', 'poster', 'formaction', 'xlink:href'],
};

function makeMarked(citations: Map<number, CitationTarget>) {
  const m = new Marked({ gfm: true, breaks: false, async: false });
  m.use({
    extensions: [
      {
        name: 'citation',
        level: 'inline',
        start(src: string) {
          const i = src.search(/\[\d{1,3}\]/);
          return i < 0 ? undefined : i;
        },
        tokenizer(src: string) {
          const match = /^\[(\d{1,3})\](?!\(|\[|:)/.exec(src);
          if (match) return { type: 'citation', raw: match[0], n: Number(match[1]) };
          return undefined;
        },
        renderer(token) {
          const n = (token as unknown as { n: number }).n;
          const c = citations.get(n);
          if (!c || c.valid === false) return `<sup class="cite cite-invalid" title="No source ${n}">[${n}]</sup>`;
          const title = c.title ? `Source ${n}: ${escapeHtml(c.title)}` : `Source ${n}`;
          return `<a class="cite" data-cite="${n}" href="${escapeHtml(citationHref(c))}" title="${title}">[${n}]</a>`;
        },
      },
    ],
    renderer: {
      // Raw HTML in Markdown is shown as the text it is, never interpreted.
      html(token: Tokens.HTML | Tokens.Tag) {
        return escapeHtml(token.text);
      },
      // Images are never loaded: a link to the address (http/https only) or the alt text.
      image(token: Tokens.Image) {
        const label = escapeHtml(token.text || 'image');
        const href = safeHref(token.href);
        if (!href || !/^https?:/i.test(href)) return `<span class="md-image">[image: ${label}]</span>`;
        return `<a class="md-image" href="${escapeHtml(href)}">[image: ${label}]</a>`;
      },
      link(token: Tokens.Link) {
        const text = this.parser.parseInline(token.tokens);
        const href = safeHref(token.href);
        if (!href) return `<span class="md-unsafe-link">${text}</span>`;
        const title = token.title ? ` title="${escapeHtml(token.title)}"` : '';
        return `<a href="${escapeHtml(href)}"${title}>${text}</a>`;
      },
      code(token: Tokens.Code) {
        const lang = (token.lang || '').trim().split(/\s+/)[0].replace(/[^a-zA-Z0-9_+-]/g, '');
        const cls = lang ? ` class="language-${lang}" data-lang="${lang}"` : '';
        return `<pre><code${cls}>${escapeHtml(token.text)}</code></pre>\n`;
      },
    },
  });
  return m;
}

/** Markdown → sanitised HTML, with citations linked to their passages. */
export function renderMarkdown(src: string, citations: CitationTarget[] = []): string {
  const map = new Map(citations.map((c) => [c.n, c]));
  const html = makeMarked(map).parse(src ?? '') as string;
  return purify().sanitize(html, PURIFY_CONFIG) as unknown as string;
}

/** Highlight code blocks inside `root`, loading highlight.js only when there is code. */
export async function highlightWithin(root: HTMLElement) {
  const blocks = root.querySelectorAll<HTMLElement>('pre code:not([data-highlighted])');
  if (!blocks.length) return;
  const { highlight } = await import('./highlight');
  blocks.forEach((b) => highlight(b));
}
