//! Excel workbooks via `calamine`, read cell by cell as a stream (a sparse
//! sheet never becomes a dense grid in memory).
//!
//! In each sheet the first non-empty row gives the headers; every later row
//! becomes a table-row block `"Header: value; ..."` located by sheet name and
//! 1-based row number. The archive is first expanded once through the zip
//! guard, since calamine reads entries without our limits.

use std::collections::BTreeMap;
use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};

use super::zipguard::Archive;
use super::Builder;
use crate::{Limits, Location, ParseError, Parsed, Role};

/// Excel's column count: cells beyond it are ignored.
const MAX_COLUMNS: u32 = 16_384;

/// Parse an XLSX file.
pub(crate) fn parse(bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    Archive::open(bytes, limits)?.verify_all()?;
    let mut workbook = Xlsx::new(Cursor::new(bytes)).map_err(malformed)?;
    let mut out = Builder::new(limits);
    for sheet in workbook.sheet_names() {
        let mut cells = workbook.worksheet_cells_reader(&sheet).map_err(malformed)?;
        let mut rows = SheetRows::new(&sheet);
        while let Some(cell) = cells.next_cell().map_err(malformed)? {
            let (row, column) = cell.get_position();
            let value = Data::from(cell.get_value().clone()).to_string();
            rows.cell(&mut out, row, column, value)?;
        }
        rows.finish(&mut out)?;
    }
    Ok(out.finish())
}

/// A calamine error as a parse error.
fn malformed(error: calamine::XlsxError) -> ParseError {
    ParseError::Malformed(format!("invalid Excel workbook: {error}"))
}

/// Groups the cells of one sheet into rows and emits them.
struct SheetRows<'a> {
    sheet: &'a str,
    headers: Option<BTreeMap<u32, String>>,
    row: Option<u32>,
    cells: Vec<(u32, String)>,
}

impl<'a> SheetRows<'a> {
    fn new(sheet: &'a str) -> Self {
        SheetRows {
            sheet,
            headers: None,
            row: None,
            cells: Vec::new(),
        }
    }

    /// Add one cell (0-based position); a new row number closes the previous row.
    fn cell(
        &mut self,
        out: &mut Builder,
        row: u32,
        column: u32,
        value: String,
    ) -> Result<(), ParseError> {
        if self.row != Some(row) {
            self.end_row(out)?;
            self.row = Some(row);
        }
        let value = value.trim();
        if column < MAX_COLUMNS && !value.is_empty() {
            self.cells.push((column, value.to_owned()));
        }
        Ok(())
    }

    /// Emit the row in progress (the first non-empty one becomes the headers).
    fn end_row(&mut self, out: &mut Builder) -> Result<(), ParseError> {
        let cells = std::mem::take(&mut self.cells);
        let Some(row) = self.row else {
            return Ok(());
        };
        if cells.is_empty() {
            return Ok(());
        }
        let Some(headers) = &self.headers else {
            self.headers = Some(cells.into_iter().collect());
            return Ok(());
        };
        let text = render_sparse_row(headers, &cells);
        let location = Location {
            sheet: Some(self.sheet.to_owned()),
            row: Some(u64::from(row) + 1),
            ..Location::default()
        };
        out.push(Role::TableRow, &text, location)
    }

    fn finish(mut self, out: &mut Builder) -> Result<(), ParseError> {
        self.end_row(out)
    }
}

/// `"Header: value; ..."` for cells given by column; a column without a header
/// is shown by its spreadsheet letter.
fn render_sparse_row(headers: &BTreeMap<u32, String>, cells: &[(u32, String)]) -> String {
    let mut text = String::new();
    for (column, value) in cells {
        if !text.is_empty() {
            text.push_str("; ");
        }
        match headers.get(column) {
            Some(header) => text.push_str(header),
            None => text.push_str(&column_letters(*column)),
        }
        text.push_str(": ");
        text.push_str(value);
    }
    text
}

/// Spreadsheet column letters: 0 → "A", 25 → "Z", 26 → "AA".
fn column_letters(column: u32) -> String {
    let mut letters = Vec::new();
    let mut n = column + 1;
    while n > 0 {
        let rem = (n - 1) % 26;
        letters.push(b'A' + rem as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    String::from_utf8_lossy(&letters).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_get_letters() {
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(16_383), "XFD");
    }

    #[test]
    fn sparse_rows_render_with_headers() {
        let headers: BTreeMap<u32, String> = [(0, "Name".to_owned()), (2, "Age".to_owned())].into();
        let cells = vec![
            (0, "Ada".to_owned()),
            (1, "x".to_owned()),
            (2, "36".to_owned()),
        ];
        assert_eq!(
            render_sparse_row(&headers, &cells),
            "Name: Ada; B: x; Age: 36"
        );
    }
}
