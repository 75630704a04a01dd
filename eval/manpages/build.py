#!/usr/bin/env python3
"""Build the man-page retrieval evaluation set (BEIR layout).

Source: the man pages installed under /usr/share/man/man{1,5,8}/*.gz on the
build machine (a Debian system).  Each page becomes one document; the NAME
section is removed from the document and its one-line description becomes a
known-item query.  Hand-written questions from questions.tsv are merged in as
a second query set.

Re-running the script on the same machine produces byte-identical output.

Usage:
    python3 eval/manpages/build.py            # writes next to this script
    python3 eval/manpages/build.py --out DIR  # writes somewhere else

Requires man-db (`man`), groff and `col` (bsdextrautils).
"""

import argparse
import concurrent.futures
import csv
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
SECTIONS = ("1", "5", "8")
TARGET_DOCS = 1500
MAX_CHARS = 1500
MIN_TEXT_CHARS = 200
MIN_DESC_WORDS = 3
# help2man's fallback NAME line ("manual page for llvm-mc 14") is not a description.
PLACEHOLDER_DESC_RE = re.compile(r"^manual page for\b", re.IGNORECASE)
# Google Cloud CLI ships ~16,600 generated `gcloud_*` pages from a third-party
# apt repository; left in, they would make up ~90% of an evenly spaced sample.
EXCLUDE_PREFIXES = ("gcloud",)

HERE = Path(__file__).resolve().parent

# Characters groff emits in a UTF-8 locale, mapped back to plain ASCII so the
# text reads the way a user would type it.
CHAR_MAP = {
    "\u2010": "-",  # hyphen
    "\u2011": "-",  # non-breaking hyphen
    "\u2012": "-",  # figure dash
    "\u2013": "-",  # en dash
    "\u2014": "--",  # em dash
    "\u2212": "-",  # minus sign
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u00a0": " ",  # no-break space
    "\u2002": " ",
    "\u2003": " ",
    "\u2009": " ",
    "\u200b": "",  # zero-width space
    "\u2022": "*",  # bullet
    "\u00b7": "*",
}
CHAR_RE = re.compile("|".join(re.escape(c) for c in CHAR_MAP))


def normalise_chars(s: str) -> str:
    return CHAR_RE.sub(lambda m: CHAR_MAP[m.group(0)], s)


def list_pages():
    """All candidate page files, sorted by file name (then section)."""
    files = []
    for sec in SECTIONS:
        d = MAN_ROOT / f"man{sec}"
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if not p.name.endswith(".gz"):
                continue
            if p.is_symlink() or not p.is_file():
                continue
            if p.name.startswith(EXCLUDE_PREFIXES):
                continue
            files.append(p)
    files.sort(key=lambda p: (p.name, str(p)))
    return files


def is_so_redirect(path: Path) -> bool:
    """True when the page source is only a `.so other/page` include."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f.read(4096).splitlines()]
    except OSError:
        return True
    content = [ln for ln in lines if ln and not ln.startswith(('.\\"', "'\\\"", '.\\\\"'))]
    return bool(content) and content[0].startswith(".so ") and len(content) <= 2


def render(path: Path) -> str:
    env = dict(os.environ)
    env.update(
        {
            "MANWIDTH": "100",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "MAN_KEEP_FORMATTING": "",
            "MANPAGER": "cat",
            "PAGER": "cat",
            "SOURCE_DATE_EPOCH": "0",
        }
    )
    env.pop("MANROFFOPT", None)
    man = subprocess.run(
        ["man", "--nh", "--nj", "-l", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    col = subprocess.run(
        ["col", "-bx"],
        input=man.stdout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return col.stdout.decode("utf-8", errors="replace")


RULE_RE = re.compile(r"^\s*[_\u2500=-]{10,}\s*$")


def split_sections(rendered: str):
    """Return [(heading, [lines])] from rendered man output without header/footer."""
    lines = [ln.rstrip() for ln in normalise_chars(rendered).splitlines()]
    # Drop blank lines at both ends, then the running header and footer.
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 3:
        return []
    lines = lines[1:-1]
    sections = []
    for ln in lines:
        if RULE_RE.match(ln):
            continue  # horizontal rules drawn with underscores (Tcl/Tk pages)
        if ln and not ln[0].isspace():
            sections.append((ln.strip(), []))
        elif sections:
            sections[-1][1].append(ln)
    return sections


def paragraphs(body_lines):
    """Join wrapped lines into paragraphs; blank lines separate paragraphs."""
    paras, cur = [], []
    for ln in body_lines:
        s = ln.strip()
        if not s:
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        cur.append(s)
    if cur:
        paras.append(" ".join(cur))
    return [re.sub(r"\s+", " ", p) for p in paras]


DESC_SPLIT_RE = re.compile(r"\s+-{1,2}\s+")
# A line that starts a new "name[, name...] - description" entry.
ENTRY_START_RE = re.compile(r"^\S+(,\s*\S+)*\s+-{1,2}\s")
NAME_LIST_PREFIX_RE = re.compile(r"^[\w.@+:-]+(,\s*[\w.@+:-]+)*\s+-{1,2}\s+")


def parse_description(name_lines):
    """Description of the first entry in the NAME section.

    Only the first paragraph is used (some generated pages append a table of
    contents), and only its first "name - description" entry (pages such as
    hostname(1) or bzip2(1) list several programs, one per line).
    """
    entry = []
    for ln in name_lines:
        s = ln.strip()
        if not s:
            if entry:
                break
            continue
        # A wrapped list of names ("a, b,\n c - desc") continues the entry;
        # a new "name - desc" line after a complete entry starts the next one.
        if entry and ENTRY_START_RE.match(s) and DESC_SPLIT_RE.search(" ".join(entry)):
            break
        entry.append(s)
    text = re.sub(r"\s+", " ", " ".join(entry)).strip()
    m = DESC_SPLIT_RE.search(text)
    if not m:
        return None
    desc = text[m.end():].strip()
    # Some pages repeat the names: "lz4 - lz4, unlz4, lz4cat - Compress ...".
    while True:
        m = NAME_LIST_PREFIX_RE.match(desc)
        if not m:
            break
        desc = desc[m.end():].strip()
    return desc or None


def cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    i = max(head.rfind(" "), head.rfind("\n"))
    if i < limit // 2:
        i = limit
    return text[:i].rstrip()


def process(path: Path):
    """Return a record for one page, or (None, reason)."""
    if is_so_redirect(path):
        return None, "so-redirect"
    rendered = render(path)
    sections = split_sections(rendered)
    if not sections:
        return None, "empty"
    name_idx = next((i for i, (h, _) in enumerate(sections) if h.upper() == "NAME"), None)
    if name_idx is None:
        return None, "no-name"
    desc = parse_description(sections[name_idx][1])
    if not desc:
        return None, "no-description"
    if len(desc.split()) < MIN_DESC_WORDS:
        return None, "short-description"
    if PLACEHOLDER_DESC_RE.match(desc):
        return None, "placeholder-description"
    parts = []
    for i, (heading, body) in enumerate(sections):
        if i == name_idx:
            continue
        parts.append(heading)
        parts.extend(paragraphs(body))
    text = cut("\n".join(parts).strip(), MAX_CHARS)
    if len(text) < MIN_TEXT_CHARS:
        return None, "short-text"
    stem = path.name[: -len(".gz")]
    name, _, sec = stem.rpartition(".")
    return {"_id": stem, "title": f"{name}({sec})", "text": text, "desc": desc}, None


def evenly_spaced(items, k):
    n = len(items)
    if n <= k:
        return list(items)
    return [items[(i * n) // k] for i in range(k)]


def desc_key(desc: str) -> str:
    return re.sub(r"\s+", " ", desc.strip().rstrip(".").lower())


def read_questions(path: Path):
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        if [h.strip() for h in header[:2]] != ["question", "corpus_ids"]:
            raise SystemExit(f"{path}: unexpected header {header!r}")
        for lineno, row in enumerate(reader, start=2):
            if not row or not row[0].strip() or row[0].startswith("#"):
                continue
            if len(row) != 2:
                raise SystemExit(f"{path}:{lineno}: expected 2 columns, got {len(row)}")
            ids = [x.strip() for x in row[1].split(",") if x.strip()]
            rows.append((row[0].strip(), ids, lineno))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--questions", type=Path, default=HERE / "questions.tsv")
    ap.add_argument("--jobs", type=int, default=4)
    args = ap.parse_args()

    files = list_pages()
    print(f"candidate page files: {len(files)}", file=sys.stderr)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(process, files))

    skipped = {}
    by_text = {}
    for rec, reason in results:
        if rec is None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        h = hashlib.sha1(rec["text"].encode()).hexdigest()
        by_text.setdefault(h, []).append(rec)
    # Identical pages installed under several names (hard links or copies,
    # e.g. zstd/unzstd/zstdcat/zstdmt) are kept once, under the shortest name.
    records = []
    for group in by_text.values():
        group.sort(key=lambda r: (len(r["_id"]), r["_id"]))
        records.append(group[0])
        if len(group) > 1:
            skipped["duplicate-text"] = skipped.get("duplicate-text", 0) + len(group) - 1
    records.sort(key=lambda r: r["_id"])
    print(f"eligible pages: {len(records)}; skipped: {dict(sorted(skipped.items()))}", file=sys.stderr)

    chosen = evenly_spaced(records, TARGET_DOCS)
    corpus_ids = {r["_id"] for r in chosen}

    # Known-item queries: one per distinct description, judged against every
    # chosen page carrying that description.
    groups = {}
    for r in chosen:
        groups.setdefault(desc_key(r["desc"]), []).append(r)
    queries = []
    qrels = []
    for r in chosen:
        group = groups[desc_key(r["desc"])]
        if group[0] is not r:
            continue
        qid = f"name-{r['_id']}"
        queries.append({"_id": qid, "text": r["desc"]})
        for g in group:
            qrels.append((qid, g["_id"]))

    # Hand-written questions.
    n_hand = 0
    if args.questions.exists():
        for n, (question, ids, lineno) in enumerate(read_questions(args.questions), start=1):
            missing = [i for i in ids if i not in corpus_ids]
            if missing or not ids:
                raise SystemExit(f"{args.questions}:{lineno}: ids not in corpus: {missing or '(none given)'}")
            qid = f"hand-{n:03d}"
            queries.append({"_id": qid, "text": question})
            for i in ids:
                qrels.append((qid, i))
            n_hand = n

    out = args.out
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        for r in chosen:
            f.write(json.dumps({"_id": r["_id"], "title": r["title"], "text": r["text"]}, ensure_ascii=False) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        for q in queries:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8", newline="\n") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, cid in qrels:
            f.write(f"{qid}\t{cid}\t1\n")

    n_name = len(queries) - n_hand
    print(
        f"corpus: {len(chosen)} docs; queries: {len(queries)} ({n_name} name, {n_hand} hand); qrels: {len(qrels)}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
