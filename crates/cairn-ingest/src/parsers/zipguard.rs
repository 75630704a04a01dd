//! Reading OOXML/ODF containers without trusting them.
//!
//! Limits are enforced before expanding anything (entry count, declared sizes
//! and ratios from the central directory) and again while expanding, on the
//! bytes actually produced: every read goes through a [`Read::take`] bound, so
//! a lying header cannot make us inflate more than the limits allow.

use std::io::{self, Cursor, Read};

use zip::result::ZipError;
use zip::ZipArchive;

use crate::{Limits, ParseError};

/// Entries smaller than this are exempt from the ratio check: tiny, highly
/// repetitive XML parts legitimately compress very well.
const RATIO_FLOOR: u64 = 1024 * 1024;

/// A zip archive opened under [`Limits`].
pub(crate) struct Archive<'a> {
    zip: ZipArchive<Cursor<&'a [u8]>>,
    max_total: u64,
    max_ratio: u64,
    expanded: u64,
}

impl<'a> Archive<'a> {
    /// Open `bytes` and check the central directory against `limits`.
    pub(crate) fn open(bytes: &'a [u8], limits: &Limits) -> Result<Self, ParseError> {
        let zip = ZipArchive::new(Cursor::new(bytes)).map_err(corrupt)?;
        if zip.len() > limits.max_zip_entries {
            return Err(bomb("number of entries", limits.max_zip_entries as u64));
        }
        let archive = Archive {
            zip,
            max_total: limits.max_uncompressed_bytes,
            max_ratio: limits.max_compression_ratio,
            expanded: 0,
        };
        archive.check_declared_sizes()?;
        Ok(archive)
    }

    /// Check the sizes the central directory declares (cheap, and catches
    /// honest bombs before any inflation).
    fn check_declared_sizes(&self) -> Result<(), ParseError> {
        let mut total: u64 = 0;
        for index in 0..self.zip.len() {
            let entry = self.zip.by_index_data(index).map_err(corrupt)?;
            total = total.saturating_add(entry.size());
            if total > self.max_total {
                return Err(bomb("declared uncompressed size", self.max_total));
            }
            if self.ratio_exceeded(entry.size(), entry.compressed_size()) {
                return Err(bomb("declared compression ratio", self.max_ratio));
            }
        }
        Ok(())
    }

    /// The names of all entries.
    pub(crate) fn names(&self) -> Vec<String> {
        self.zip
            .file_names()
            .filter_map(Result::ok)
            .map(|name| name.into_owned())
            .collect()
    }

    /// The content of the entry `name`, or `None` when there is no such entry.
    pub(crate) fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, ParseError> {
        let Some(index) = self.zip.index_for_name(name) else {
            return Ok(None);
        };
        let mut content = Vec::new();
        self.expand(index, &mut content)?;
        Ok(Some(content))
    }

    /// Inflate every entry once, discarding the output: proves the whole
    /// archive is within limits before handing it to a library that reads it
    /// without our guard.
    pub(crate) fn verify_all(&mut self) -> Result<(), ParseError> {
        for index in 0..self.zip.len() {
            self.expand(index, &mut io::sink())?;
        }
        Ok(())
    }

    /// Inflate entry `index` into `sink` under the remaining budget and the
    /// ratio bound, counting what is actually produced.
    fn expand(&mut self, index: usize, sink: &mut impl io::Write) -> Result<(), ParseError> {
        let entry = self.zip.by_index(index).map_err(corrupt)?;
        if entry.is_dir() {
            return Ok(());
        }
        let compressed = entry.compressed_size();
        let budget = self.max_total.saturating_sub(self.expanded);
        let ratio_cap = compressed.saturating_mul(self.max_ratio).max(RATIO_FLOOR);
        let cap = budget.min(ratio_cap);
        let produced = io::copy(&mut entry.take(cap.saturating_add(1)), sink).map_err(|e| {
            ParseError::Corrupt(format!("a part of the archive cannot be expanded: {e}"))
        })?;
        if produced > budget {
            return Err(bomb("total uncompressed size", self.max_total));
        }
        if produced > ratio_cap {
            return Err(bomb("compression ratio", self.max_ratio));
        }
        self.expanded += produced;
        Ok(())
    }

    /// Whether an entry of `size` bytes from `compressed` bytes expands too much.
    fn ratio_exceeded(&self, size: u64, compressed: u64) -> bool {
        size > RATIO_FLOOR && size / compressed.max(1) > self.max_ratio
    }
}

/// A damaged-archive error.
fn corrupt(error: ZipError) -> ParseError {
    ParseError::Corrupt(format!("not a readable zip archive: {error}"))
}

/// A limit-crossed error.
fn bomb(what: &str, limit: u64) -> ParseError {
    ParseError::ZipBomb {
        what: what.to_owned(),
        limit,
    }
}
