//! Turning files into text for Cairn: type detection, parsers and chunking.
//!
//! This crate knows nothing of Cairn's server or storage: bytes go in,
//! structured text ([`Parsed`]) and retrieval-sized [`chunk::Chunk`]s come out.
//!
//! The usual flow is:
//!
//! 1. [`detect::sniff`] the first bytes (and the untrusted filename) to get a
//!    [`Kind`], calling [`detect::zip_kind`] on the whole file when the head
//!    says it is an office container;
//! 2. [`parse`] the whole file into [`Block`]s that remember where they came
//!    from ([`Location`]: page, heading path, timestamps, sheet and row...);
//! 3. [`chunk::chunk`] the blocks into overlapping, structure-aware chunks.
//!
//! Every parser is written to return an error rather than panic on hostile
//! input, bounds its nesting depth, and enforces [`Limits`] on archives and on
//! the amount of text it extracts.

pub mod chunk;
pub mod detect;
mod error;
mod kind;
mod model;
mod parsers;

pub use error::ParseError;
pub use kind::{Kind, UnknownKind};
pub use model::{Block, Limits, Location, Parsed, Role};

/// Extract the text of a file whose kind is already known.
///
/// `kind` normally comes from [`detect::sniff`] (and [`detect::zip_kind`]).
/// The result is never larger than [`Limits::max_text_bytes`] of text; archives
/// are checked against the zip limits before and while they are expanded.
pub fn parse(kind: Kind, bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    parsers::parse(kind, bytes, limits)
}
