//! Structure-aware chunking of parsed documents for retrieval.
//!
//! Blocks are packed greedily into chunks of about
//! [`ChunkOptions::target_tokens`]. A chunk never exceeds
//! [`ChunkOptions::max_tokens`] (as measured by the token counter), and a block
//! is only split when it alone is larger than that: at sentence boundaries
//! first, then at whitespace, and as a last resort inside a word.
//!
//! A new chunk starts at a heading (levels 1–3) or at a change of page, slide
//! or sheet once the current chunk holds more than a quarter of the target.
//! When a chunk ends only because it is full, the next one starts with about
//! [`ChunkOptions::overlap_tokens`] of its tail, taken as whole blocks or
//! sentences where possible.
//!
//! Everything is linear in the size of the input: every piece of text is
//! scanned a bounded number of times.

use serde::{Deserialize, Serialize};

use crate::{Block, Parsed, Role};

/// Sizes for [`chunk`], in tokens as counted by the token counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkOptions {
    /// The size chunks are filled to.
    pub target_tokens: usize,
    /// How much of a chunk's tail the next chunk repeats.
    pub overlap_tokens: usize,
    /// Hard cap on a chunk's size.
    pub max_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            target_tokens: 400,
            overlap_tokens: 50,
            max_tokens: 512,
        }
    }
}

/// A piece of a document sized for embedding and retrieval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// 0-based position of the chunk in its document.
    pub ordinal: u32,
    /// The text: the overlap (if any) then the blocks, separated by blank lines.
    pub text: String,
    /// The token count of the pieces making up the text.
    pub token_count: u32,
    /// Where the chunk's text came from.
    pub location: ChunkLocation,
}

/// The span of a document a chunk covers. Fields that do not apply are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLocation {
    /// First page (PDF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_start: Option<u32>,
    /// Last page (PDF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_end: Option<u32>,
    /// The headings above the chunk's first block (its context).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heading_path: Vec<String>,
    /// Earliest start time in milliseconds (transcripts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// Latest end time in milliseconds (transcripts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// Speakers heard in the chunk, in order of first appearance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub speakers: Vec<String>,
    /// Sheet of the first row (spreadsheets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// First row (spreadsheets and CSV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_start: Option<u64>,
    /// Last row (spreadsheets and CSV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_end: Option<u64>,
    /// First slide (presentations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide_start: Option<u32>,
    /// Last slide (presentations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide_end: Option<u32>,
}

/// A fast approximation of a WordPiece/BPE token count.
///
/// Runs of letters and digits count as one token up to 6 characters and
/// `ceil(len / 4)` beyond; each CJK character, punctuation mark or symbol is
/// one token; whitespace is free. It tends to over-count slightly, which keeps
/// chunks safely under a model's limit. Use [`chunk_with`] to plug in a real
/// tokenizer.
pub fn count_tokens(text: &str) -> usize {
    let mut tokens = 0;
    let mut run = 0;
    if text.is_ascii() {
        // The same rules byte by byte, without decoding characters.
        for &b in text.as_bytes() {
            if b.is_ascii_alphanumeric() {
                run += 1;
                continue;
            }
            tokens += word_tokens(run);
            run = 0;
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
                tokens += 1;
            }
        }
        return tokens + word_tokens(run);
    }
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || (!c.is_ascii() && c.is_alphanumeric() && !is_cjk(c)) {
            run += 1;
            continue;
        }
        tokens += word_tokens(run);
        run = 0;
        if !c.is_whitespace() {
            tokens += 1;
        }
    }
    tokens + word_tokens(run)
}

/// Tokens for a word of `len` characters.
fn word_tokens(len: usize) -> usize {
    match len {
        0 => 0,
        1..=6 => 1,
        _ => len.div_ceil(4),
    }
}

/// Ideographs, kana and hangul: roughly one token per character.
fn is_cjk(c: char) -> bool {
    matches!(u32::from(c),
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF
        | 0x20000..=0x2FFFF)
}

/// Chunk a document with [`count_tokens`].
pub fn chunk(parsed: &Parsed, options: &ChunkOptions) -> Vec<Chunk> {
    chunk_with(parsed, options, &count_tokens)
}

/// Chunk a document, measuring text with `count` (e.g. the embedding model's
/// tokenizer).
pub fn chunk_with(
    parsed: &Parsed,
    options: &ChunkOptions,
    count: &dyn Fn(&str) -> usize,
) -> Vec<Chunk> {
    let sizes = Sizes::from(options);
    let mut packer = Packer {
        sizes,
        count,
        separator_tokens: count(SEPARATOR),
        chunks: Vec::new(),
        units: Vec::new(),
        tokens: 0,
        top_heading: None,
        overlap: None,
    };
    for block in &parsed.blocks {
        for unit in units_of(block, &sizes, count) {
            packer.add(unit);
        }
    }
    packer.emit(Break::Section);
    packer.chunks
}

/// What joins the pieces of a chunk's text.
const SEPARATOR: &str = "\n\n";

/// Options made consistent: `1 <= target <= max`, overlap at most half the target.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    target: usize,
    overlap: usize,
    max: usize,
}

impl From<&ChunkOptions> for Sizes {
    fn from(options: &ChunkOptions) -> Self {
        let max = options.max_tokens.max(1);
        let target = options.target_tokens.clamp(1, max);
        Sizes {
            target,
            overlap: options.overlap_tokens.min(target / 2),
            max,
        }
    }
}

/// A block, or a piece of an oversized block, with its token count.
struct Unit<'a> {
    text: &'a str,
    tokens: usize,
    block: &'a Block,
}

/// The units of a block: the block itself, or pieces of it when it exceeds
/// the hard cap.
fn units_of<'a>(block: &'a Block, sizes: &Sizes, count: &dyn Fn(&str) -> usize) -> Vec<Unit<'a>> {
    let tokens = count(&block.text);
    if tokens <= sizes.max {
        return vec![Unit {
            text: &block.text,
            tokens,
            block,
        }];
    }
    split_text(&block.text, sizes, count)
        .into_iter()
        .map(|(text, tokens)| Unit {
            text,
            tokens,
            block,
        })
        .collect()
}

/// Split text into pieces of about `target` tokens (never above `max`): at
/// sentence ends, then whitespace, then inside words.
fn split_text<'a>(
    text: &'a str,
    sizes: &Sizes,
    count: &dyn Fn(&str) -> usize,
) -> Vec<(&'a str, usize)> {
    let mut pieces = Piecer::new(text, sizes.target);
    for (start, end) in sentence_spans(text) {
        let tokens = count(&text[start..end]);
        if tokens <= sizes.max {
            pieces.add(start, end, tokens);
            continue;
        }
        for (word_start, word_end) in word_spans(text, start, end) {
            let word_tokens = count(&text[word_start..word_end]);
            if word_tokens <= sizes.max {
                pieces.add(word_start, word_end, word_tokens);
            } else {
                for (a, b, t) in hard_split(text, word_start, word_end, sizes, count) {
                    pieces.add(a, b, t);
                }
            }
        }
    }
    pieces.finish()
}

/// Greedily joins consecutive spans of a text into pieces up to a target.
struct Piecer<'a> {
    text: &'a str,
    target: usize,
    pieces: Vec<(&'a str, usize)>,
    current: Option<(usize, usize, usize)>,
}

impl<'a> Piecer<'a> {
    fn new(text: &'a str, target: usize) -> Self {
        Piecer {
            text,
            target,
            pieces: Vec::new(),
            current: None,
        }
    }

    /// Add the span `start..end` of `tokens` tokens.
    fn add(&mut self, start: usize, end: usize, tokens: usize) {
        self.current = match self.current {
            Some((from, _, sum)) if sum + tokens <= self.target => Some((from, end, sum + tokens)),
            Some(full) => {
                self.push(full);
                Some((start, end, tokens))
            }
            None => Some((start, end, tokens)),
        };
    }

    fn push(&mut self, (start, end, tokens): (usize, usize, usize)) {
        let piece = self.text[start..end].trim();
        if !piece.is_empty() {
            self.pieces.push((piece, tokens));
        }
    }

    fn finish(mut self) -> Vec<(&'a str, usize)> {
        if let Some(last) = self.current.take() {
            self.push(last);
        }
        self.pieces
    }
}

/// Byte ranges of the sentences of `text`, covering it entirely. A sentence
/// ends after `.`, `!` or `?` followed by whitespace, after CJK full stops,
/// and at line breaks.
fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let next_is_space = chars.peek().is_some_and(|(_, next)| next.is_whitespace());
        let ends = c == '\n'
            || matches!(c, '。' | '！' | '？')
            || (matches!(c, '.' | '!' | '?') && next_is_space);
        if ends {
            let end = at + c.len_utf8();
            spans.push((start, end));
            start = end;
        }
    }
    if start < text.len() {
        spans.push((start, text.len()));
    }
    spans
}

/// Byte ranges of the whitespace-separated words of `text[start..end]`, each
/// including the whitespace that follows it.
fn word_spans(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut word_start = start;
    let mut in_space = false;
    for (offset, c) in text[start..end].char_indices() {
        let at = start + offset;
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            spans.push((word_start, at));
            word_start = at;
            in_space = false;
        }
    }
    if word_start < end {
        spans.push((word_start, end));
    }
    spans
}

/// Cut `text[start..end]` (one huge word) into windows that fit `max`:
/// windows start at 4 bytes per target token and halve until they fit.
fn hard_split(
    text: &str,
    start: usize,
    end: usize,
    sizes: &Sizes,
    count: &dyn Fn(&str) -> usize,
) -> Vec<(usize, usize, usize)> {
    let mut windows = Vec::new();
    let mut from = start;
    while from < end {
        let mut width = sizes.target.saturating_mul(4).max(1);
        loop {
            let to = char_boundary_at_or_after(text, (from + width).min(end), from);
            let tokens = count(&text[from..to]);
            if tokens <= sizes.max || width == 1 {
                windows.push((from, to, tokens));
                from = to;
                break;
            }
            width /= 2;
        }
    }
    windows
}

/// The first char boundary at or after `at`, and strictly after `from`.
fn char_boundary_at_or_after(text: &str, at: usize, from: usize) -> usize {
    let mut at = at.max(from + 1).min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// Why a chunk ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    /// The next unit would not fit: the next chunk overlaps this one.
    Full,
    /// A heading, a new page, slide or sheet, or the end: no overlap.
    Section,
}

/// The start of the next chunk, repeated from the end of the previous one.
struct Overlap<'a> {
    text: String,
    tokens: usize,
    blocks: Vec<&'a Block>,
}

/// Packs units into chunks.
struct Packer<'a, 'c> {
    sizes: Sizes,
    count: &'c dyn Fn(&str) -> usize,
    separator_tokens: usize,
    chunks: Vec<Chunk>,
    /// The units of the chunk being filled.
    units: Vec<Unit<'a>>,
    /// Tokens of the chunk being filled, overlap and separators included.
    tokens: usize,
    /// The outermost heading level in the chunk being filled.
    top_heading: Option<u8>,
    overlap: Option<Overlap<'a>>,
}

impl<'a> Packer<'a, '_> {
    /// Add a unit, closing the current chunk first if it must end here.
    fn add(&mut self, unit: Unit<'a>) {
        if let Some(last) = self.units.last() {
            if self.closes_section(last.block, unit.block) {
                self.emit(Break::Section);
            } else if self.tokens + self.separator_tokens + unit.tokens > self.sizes.target {
                self.emit(Break::Full);
            }
        }
        if !self.units.is_empty()
            && self.tokens + self.separator_tokens + unit.tokens > self.sizes.max
        {
            // Only a carried heading is left, and the unit does not fit with it.
            self.emit(Break::Section);
        }
        if self.units.is_empty() {
            let overlap_tokens = self
                .overlap
                .as_ref()
                .map_or(0, |o| o.tokens + self.separator_tokens);
            if overlap_tokens + unit.tokens > self.sizes.max {
                self.overlap = None;
            }
            self.tokens = self
                .overlap
                .as_ref()
                .map_or(0, |o| o.tokens + self.separator_tokens);
        } else {
            self.tokens += self.separator_tokens;
        }
        self.push(unit);
    }

    /// Append a unit to the chunk being filled.
    fn push(&mut self, unit: Unit<'a>) {
        if let Role::Heading { level } = unit.block.role {
            self.top_heading = Some(self.top_heading.map_or(level, |top| top.min(level)));
        }
        self.tokens += unit.tokens;
        self.units.push(unit);
    }

    /// Whether `next` must open a new chunk: a heading at or above the
    /// chunk's outermost one (its section is over), or a heading (levels 1–3)
    /// or new page, slide or sheet once the chunk is a quarter full.
    fn closes_section(&self, previous: &Block, next: &Block) -> bool {
        let leaves_section = matches!((next.role, self.top_heading), (Role::Heading { level }, Some(top)) if level <= top);
        leaves_section || (self.tokens > self.sizes.target / 4 && starts_section(previous, next))
    }

    /// Close the current chunk and prepare the next one's start.
    fn emit(&mut self, why: Break) {
        let mut units = std::mem::take(&mut self.units);
        // A heading at the end of a full chunk belongs to the next one.
        let carried = match units.last() {
            Some(last) if why == Break::Full && units.len() > 1 && is_heading(last.block) => {
                units.pop()
            }
            _ => None,
        };
        if units.is_empty() {
            return;
        }
        let overlap = self.overlap.take();
        let next_overlap = match (why, &carried) {
            (Break::Full, None) => tail_overlap(&units, self.sizes.overlap, self.count),
            _ => None,
        };
        self.chunks.push(build_chunk(
            self.chunks.len(),
            overlap,
            &units,
            self.separator_tokens,
        ));
        self.overlap = next_overlap;
        self.tokens = 0;
        self.top_heading = None;
        if let Some(heading) = carried {
            self.push(heading);
        }
    }
}

/// Whether `next` opens a new section relative to `previous`.
fn starts_section(previous: &Block, next: &Block) -> bool {
    let (a, b) = (&previous.location, &next.location);
    matches!(next.role, Role::Heading { level } if level <= 3)
        || differs(a.page, b.page)
        || differs(a.slide, b.slide)
        || differs(a.sheet.as_ref(), b.sheet.as_ref())
}

/// Both known and different.
fn differs<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

fn is_heading(block: &Block) -> bool {
    matches!(block.role, Role::Heading { .. })
}

/// About `budget` tokens from the end of `units`: whole units if they fit,
/// else the last unit's final sentences, else its final words.
fn tail_overlap<'a>(
    units: &[Unit<'a>],
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Option<Overlap<'a>> {
    if budget == 0 {
        return None;
    }
    let mut taken: Vec<&Unit<'a>> = Vec::new();
    let mut tokens = 0;
    for unit in units.iter().rev() {
        if tokens + unit.tokens > budget || is_heading(unit.block) {
            break;
        }
        tokens += unit.tokens;
        taken.push(unit);
    }
    if !taken.is_empty() {
        taken.reverse();
        let text = taken
            .iter()
            .map(|u| u.text)
            .collect::<Vec<_>>()
            .join(SEPARATOR);
        let tokens = count(&text);
        return Some(Overlap {
            text,
            tokens,
            blocks: taken.iter().map(|u| u.block).collect(),
        });
    }
    let last = units.last().filter(|u| !is_heading(u.block))?;
    let (text, tokens) = tail_of(last.text, budget, count)?;
    Some(Overlap {
        text: text.to_owned(),
        tokens,
        blocks: vec![last.block],
    })
}

/// The longest tail of `text` within `budget` tokens made of whole sentences,
/// or failing that of whole words.
fn tail_of<'t>(
    text: &'t str,
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Option<(&'t str, usize)> {
    let by_sentence = tail_spans(text, &sentence_spans(text), budget, count);
    by_sentence.or_else(|| tail_spans(text, &word_spans(text, 0, text.len()), budget, count))
}

/// The longest suffix of `spans` whose tokens fit `budget`, as trimmed text.
fn tail_spans<'t>(
    text: &'t str,
    spans: &[(usize, usize)],
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Option<(&'t str, usize)> {
    let mut start = None;
    let mut tokens = 0;
    for &(from, to) in spans.iter().rev() {
        let span_tokens = count(&text[from..to]);
        if tokens + span_tokens > budget {
            break;
        }
        tokens += span_tokens;
        start = Some(from);
    }
    let tail = text[start?..].trim();
    (!tail.is_empty()).then_some((tail, tokens))
}

/// Assemble a chunk from its overlap and units.
fn build_chunk(
    ordinal: usize,
    overlap: Option<Overlap<'_>>,
    units: &[Unit<'_>],
    separator_tokens: usize,
) -> Chunk {
    let mut text = String::new();
    let mut tokens = 0;
    let mut blocks: Vec<&Block> = Vec::new();
    if let Some(overlap) = &overlap {
        text.push_str(&overlap.text);
        tokens += overlap.tokens;
        blocks.extend(&overlap.blocks);
    }
    for unit in units {
        if !text.is_empty() {
            text.push_str(SEPARATOR);
            tokens += separator_tokens;
        }
        text.push_str(unit.text);
        tokens += unit.tokens;
        blocks.push(unit.block);
    }
    let heading_path = units
        .first()
        .map(|u| u.block.location.heading_path.clone())
        .unwrap_or_default();
    Chunk {
        ordinal: u32::try_from(ordinal).unwrap_or(u32::MAX),
        text,
        token_count: u32::try_from(tokens).unwrap_or(u32::MAX),
        location: span_of(&blocks, heading_path),
    }
}

/// The combined location of the blocks a chunk draws from.
fn span_of(blocks: &[&Block], heading_path: Vec<String>) -> ChunkLocation {
    let mut span = ChunkLocation {
        heading_path,
        ..ChunkLocation::default()
    };
    for block in blocks {
        let at = &block.location;
        widen(&mut span.page_start, &mut span.page_end, at.page, at.page);
        widen(
            &mut span.slide_start,
            &mut span.slide_end,
            at.slide,
            at.slide,
        );
        widen(&mut span.row_start, &mut span.row_end, at.row, at.row);
        widen(&mut span.start_ms, &mut span.end_ms, at.start_ms, at.end_ms);
        if span.sheet.is_none() {
            span.sheet.clone_from(&at.sheet);
        }
        if let Some(speaker) = &at.speaker {
            if !span.speakers.contains(speaker) {
                span.speakers.push(speaker.clone());
            }
        }
    }
    span
}

/// Extend `[start, end]` to cover `[from, to]`.
fn widen<T: Ord + Copy>(
    start: &mut Option<T>,
    end: &mut Option<T>,
    from: Option<T>,
    to: Option<T>,
) {
    if let Some(from) = from {
        *start = Some(start.map_or(from, |s| s.min(from)));
    }
    if let Some(to) = to {
        *end = Some(end.map_or(to, |e| e.max(to)));
    }
}
