//! CSV with a header row: each data row becomes `"Header: value; ..."`.

use super::text::decode_text;
use super::{render_row, Builder};
use crate::{Limits, Location, ParseError, Parsed, Role};

/// Read rows; the first record gives the headers.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let text = decode_text(bytes)?;
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(guess_delimiter(&text))
        .from_reader(text.as_bytes());
    let mut out = Builder::new(limits);
    let mut headers: Option<Vec<String>> = None;
    let mut record = ::csv::StringRecord::new();
    let mut row: u64 = 0;
    while reader
        .read_record(&mut record)
        .map_err(|e| ParseError::Malformed(format!("invalid CSV: {e}")))?
    {
        row += 1;
        let cells: Vec<String> = record.iter().map(str::to_owned).collect();
        match &headers {
            None => headers = Some(cells),
            Some(headers) => {
                let location = Location {
                    row: Some(row),
                    ..Location::default()
                };
                out.push(Role::TableRow, &render_row(headers, &cells), location)?;
            }
        }
    }
    Ok(out.finish())
}

/// The most frequent of `,` `;` tab and `|` on the first line (`,` on a tie).
fn guess_delimiter(text: &str) -> u8 {
    let first_line = text.lines().next().unwrap_or("");
    let first_line = &first_line.as_bytes()[..first_line.len().min(4096)];
    let mut best = (b',', first_line.iter().filter(|&&b| b == b',').count());
    for candidate in [b';', b'\t', b'|'] {
        let count = first_line.iter().filter(|&&b| b == candidate).count();
        if count > best.1 {
            best = (candidate, count);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_carry_headers_and_row_numbers() {
        let input = "name,age,city\r\nAda,36,London\r\n\"Hopper, Grace\",,\"New\nYork\"\r\n";
        let parsed = parse(input.as_bytes(), &Limits::default()).unwrap();
        let got: Vec<_> = parsed
            .blocks
            .iter()
            .map(|b| (b.text.as_str(), b.location.row))
            .collect();
        assert_eq!(
            got,
            [
                ("name: Ada; age: 36; city: London", Some(2)),
                ("name: Hopper, Grace; city: New\nYork", Some(3)),
            ]
        );
        assert!(parsed.blocks.iter().all(|b| b.role == Role::TableRow));
    }

    #[test]
    fn semicolons_and_ragged_rows() {
        let parsed = parse(b"a;b\n1;2;3\n", &Limits::default()).unwrap();
        assert_eq!(parsed.blocks[0].text, "a: 1; b: 2; Column 3: 3");
    }
}
