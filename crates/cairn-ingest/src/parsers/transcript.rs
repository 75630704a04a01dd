//! WebVTT and SubRip transcripts: cues with their times and speakers.
//!
//! The speaker comes from a VTT voice tag (`<v Ada>`) or a leading `Name:`
//! prefix. Consecutive cues of the same speaker are merged into one turn
//! (first start, last end) while the turn stays short enough to keep its time
//! range useful.

use super::text::decode_text;
use super::Builder;
use crate::{Limits, Location, ParseError, Parsed, Role};

/// Merging stops once a turn holds this many bytes of text.
const MAX_TURN_BYTES: usize = 1500;

/// Parse a WebVTT file (the `WEBVTT` header is required).
pub(crate) fn parse_vtt(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let text = decode_text(bytes)?;
    if !text.trim_start().starts_with("WEBVTT") {
        return Err(ParseError::Malformed(
            "a WebVTT file must start with WEBVTT".into(),
        ));
    }
    parse_cues(&text, limits)
}

/// Parse a SubRip (.srt) file.
pub(crate) fn parse_srt(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let text = decode_text(bytes)?;
    parse_cues(&text, limits)
}

/// Whether text opens like a SubRip file: a cue number, then a timing line.
pub(crate) fn looks_like_srt(text: &str) -> bool {
    let mut lines = text
        .lines()
        .map(str::trim)
        .skip_while(|line| line.is_empty());
    let number = lines.next().unwrap_or("");
    let is_number = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    is_number && lines.next().and_then(timing).is_some()
}

/// Turn cue blocks (separated by blank lines) into turns.
fn parse_cues(text: &str, limits: &Limits) -> Result<Parsed, ParseError> {
    let mut turns = Turns {
        out: Builder::new(limits),
        open: None,
    };
    let mut block: Vec<&str> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim_end();
        if !line.trim_start().is_empty() {
            block.push(line);
            continue;
        }
        if let Some(cue) = read_cue(&block) {
            turns.add(cue)?;
        }
        block.clear();
    }
    turns.finish()
}

/// One cue: its time range, speaker and plain text.
#[derive(Debug, Clone, PartialEq)]
struct Cue {
    start_ms: u64,
    end_ms: u64,
    speaker: Option<String>,
    text: String,
}

/// Read a cue block: an optional identifier, a timing line, then the payload.
/// Header, NOTE, STYLE and REGION blocks have no timing line and are skipped.
fn read_cue(block: &[&str]) -> Option<Cue> {
    let timing_at = block.iter().take(2).position(|line| line.contains("-->"))?;
    let (start_ms, end_ms) = timing(block[timing_at])?;
    let payload = block[timing_at + 1..].join(" ");
    let (voice, plain) = strip_markup(&payload);
    let (speaker, text) = match voice {
        Some(voice) => (Some(voice), plain.trim().to_owned()),
        None => split_speaker_prefix(plain.trim()),
    };
    Some(Cue {
        start_ms,
        end_ms,
        speaker,
        text,
    })
}

/// Parse `start --> end [settings]` into milliseconds.
fn timing(line: &str) -> Option<(u64, u64)> {
    let (start, rest) = line.split_once("-->")?;
    let end = rest.split_whitespace().next()?;
    Some((timestamp(start.trim())?, timestamp(end)?))
}

/// Parse `[hh:]mm:ss.mmm` (VTT) or `hh:mm:ss,mmm` (SRT) into milliseconds.
fn timestamp(text: &str) -> Option<u64> {
    let (clock, millis) = text.split_once(['.', ','])?;
    let millis = digits(millis)?;
    let mut seconds: u64 = 0;
    let parts: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    for part in parts {
        seconds = seconds.checked_mul(60)?.checked_add(digits(part)?)?;
    }
    seconds.checked_mul(1000)?.checked_add(millis)
}

/// A non-empty run of at most 10 ASCII digits.
fn digits(text: &str) -> Option<u64> {
    let valid = !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| text.parse().ok()).flatten()
}

/// Remove `<...>` tags and `{\...}` override codes, decode the common
/// entities, and return the first voice tag's name (`<v Ada>`, `<v.loud Ada>`).
fn strip_markup(payload: &str) -> (Option<String>, String) {
    let mut voice = None;
    let mut plain = String::with_capacity(payload.len());
    let mut rest = payload;
    while let Some(open) = rest.find(['<', '{']) {
        plain.push_str(&rest[..open]);
        let closer = if rest[open..].starts_with('<') {
            '>'
        } else {
            '}'
        };
        let Some(close) = rest[open..].find(closer) else {
            rest = &rest[open..];
            break;
        };
        let tag = &rest[open + 1..open + close];
        if voice.is_none() {
            voice = voice_name(tag);
        }
        rest = &rest[open + close + 1..];
    }
    plain.push_str(rest);
    let plain = plain
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    (voice, plain)
}

/// The name in a voice tag body such as `v Ada` or `v.loud Ada Lovelace`.
fn voice_name(tag: &str) -> Option<String> {
    let rest = tag.strip_prefix('v')?;
    if !rest.starts_with([' ', '.']) {
        return None;
    }
    let name = rest.split_once(' ').map(|(_, name)| name.trim())?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// Split a leading `Name:` speaker label off cue text. The label must start
/// with a capital letter and be at most four words of letters, digits, spaces,
/// dots, apostrophes or hyphens (so times like `12:30` are left alone).
fn split_speaker_prefix(text: &str) -> (Option<String>, String) {
    let Some((label, said)) = text.split_once(':') else {
        return (None, text.to_owned());
    };
    let label = label.trim().trim_start_matches(['-', '>', ' ']);
    let plausible = label.len() <= 40
        && label.starts_with(|c: char| c.is_uppercase())
        && label.split_whitespace().count() <= 4
        && label
            .chars()
            .all(|c| c.is_alphanumeric() || " .'-".contains(c))
        && said.starts_with(char::is_whitespace)
        && !said.trim().is_empty();
    if plausible {
        (Some(label.to_owned()), said.trim().to_owned())
    } else {
        (None, text.to_owned())
    }
}

/// Merges consecutive cues of one speaker into turns and emits them.
struct Turns {
    out: Builder,
    open: Option<Cue>,
}

impl Turns {
    /// Add a cue, extending the open turn when the speaker is the same.
    fn add(&mut self, cue: Cue) -> Result<(), ParseError> {
        if cue.text.is_empty() {
            return Ok(());
        }
        if let Some(turn) = &mut self.open {
            if turn.speaker == cue.speaker && turn.text.len() < MAX_TURN_BYTES {
                turn.text.push(' ');
                turn.text.push_str(&cue.text);
                turn.end_ms = turn.end_ms.max(cue.end_ms);
                return Ok(());
            }
        }
        self.emit()?;
        self.open = Some(cue);
        Ok(())
    }

    /// Emit the open turn as a block: `"Speaker: text"` with its time range.
    fn emit(&mut self) -> Result<(), ParseError> {
        let Some(turn) = self.open.take() else {
            return Ok(());
        };
        let text = match &turn.speaker {
            Some(speaker) => format!("{speaker}: {}", turn.text),
            None => turn.text,
        };
        let location = Location {
            start_ms: Some(turn.start_ms),
            end_ms: Some(turn.end_ms),
            speaker: turn.speaker,
            ..Location::default()
        };
        self.out.push(Role::Cue, &text, location)
    }

    fn finish(mut self) -> Result<Parsed, ParseError> {
        self.emit()?;
        Ok(self.out.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Turn<'a> = (&'a str, Option<&'a str>, Option<u64>, Option<u64>);

    fn turns(parsed: &Parsed) -> Vec<Turn<'_>> {
        parsed
            .blocks
            .iter()
            .map(|b| {
                let l = &b.location;
                (b.text.as_str(), l.speaker.as_deref(), l.start_ms, l.end_ms)
            })
            .collect()
    }

    #[test]
    fn vtt_voices_merge_into_turns() {
        let vtt = "WEBVTT - meeting\n\nNOTE a comment\n\n1\n00:00:01.000 --> 00:00:04.500 align:start\n<v Ada>Hello <b>all</b>.</v>\n\n00:00:05.000 --> 00:00:07.000\n<v.loud Ada>Shall we start?\n\n00:00:07.500 --> 00:01:02.250\n<v Grace Hopper>Yes &amp; now.\n\n01:00:00.000 --> 01:00:01.000\nNo voice here\n";
        let parsed = parse_vtt(vtt.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            turns(&parsed),
            [
                (
                    "Ada: Hello all. Shall we start?",
                    Some("Ada"),
                    Some(1000),
                    Some(7000)
                ),
                (
                    "Grace Hopper: Yes & now.",
                    Some("Grace Hopper"),
                    Some(7500),
                    Some(62_250)
                ),
                ("No voice here", None, Some(3_600_000), Some(3_601_000)),
            ]
        );
        assert!(parsed.blocks.iter().all(|b| b.role == Role::Cue));
    }

    #[test]
    fn srt_with_name_prefixes() {
        let srt = "1\r\n00:00:01,000 --> 00:00:02,000\r\nALICE: Hi Bob.\r\n\r\n2\r\n00:00:02,500 --> 00:00:04,000\r\nBob: Hi <i>Alice</i>!\r\nHow are you?\r\n\r\n3\r\n00:00:04,000 --> 00:00:05,000\r\nMeet at 12:30 then.\r\n";
        assert!(looks_like_srt(srt));
        let parsed = parse_srt(srt.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            turns(&parsed),
            [
                ("ALICE: Hi Bob.", Some("ALICE"), Some(1000), Some(2000)),
                (
                    "Bob: Hi Alice! How are you?",
                    Some("Bob"),
                    Some(2500),
                    Some(4000)
                ),
                ("Meet at 12:30 then.", None, Some(4000), Some(5000)),
            ]
        );
    }

    #[test]
    fn timestamps_and_headers() {
        assert_eq!(timestamp("01:02:03.004"), Some(3_723_004));
        assert_eq!(timestamp("02:03,004"), Some(123_004));
        assert_eq!(timestamp("2:3"), None);
        assert_eq!(timestamp("1:2:3:4.5"), None);
        assert!(parse_vtt(b"00:01.000 --> 00:02.000\nhi", &Limits::default()).is_err());
        assert!(!looks_like_srt("hello\nworld"));
    }
}
