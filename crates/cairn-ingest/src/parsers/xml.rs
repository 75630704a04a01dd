//! A small event driver over `quick-xml` shared by the DOCX, PPTX and ODT
//! parsers. Streaming and iterative: nesting depth costs no stack.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::ParseError;

/// Receives the events of one XML part, with namespace prefixes stripped.
pub(crate) trait Handler {
    /// An element starts (empty elements start and then end).
    fn open(&mut self, name: &str, element: &BytesStart<'_>) -> Result<(), ParseError>;
    /// An element ends.
    fn close(&mut self, name: &str) -> Result<(), ParseError>;
    /// Character data, entities resolved.
    fn text(&mut self, text: &str);
}

/// Feed every event of `xml` (the archive entry `part`) to `handler`.
pub(crate) fn drive(xml: &[u8], part: &str, handler: &mut impl Handler) -> Result<(), ParseError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().expand_empty_elements = true;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| ParseError::Malformed(format!("invalid XML in {part}: {e}")))?;
        match event {
            Event::Start(element) => handler.open(local_name(&element), &element)?,
            Event::End(element) => handler.close(element.local_name().as_ref())?,
            Event::Text(text) => handler.text(&text.xml10_content()),
            Event::CData(data) => handler.text(&data),
            Event::GeneralRef(reference) => handler.text(&resolve_reference(&reference)),
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

/// The element name without its namespace prefix.
fn local_name<'a>(element: &'a BytesStart<'_>) -> &'a str {
    let name: &str = element;
    let name = name
        .split(|c: char| c.is_whitespace() || c == '/')
        .next()
        .unwrap_or(name);
    name.rsplit_once(':').map_or(name, |(_, local)| local)
}

/// The value of the attribute whose local name is `name`, if present.
pub(crate) fn attribute(element: &BytesStart<'_>, name: &str) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|attribute| attribute.key.local_name().as_ref() == name)
        .map(|attribute| {
            attribute
                .normalized_value(XmlVersion::Implicit1_0)
                .map(Cow::into_owned)
                .unwrap_or_default()
        })
}

/// The text of `&name;` or `&#n;`; unknown entities are kept as written.
fn resolve_reference(name: &str) -> Cow<'static, str> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => number.parse().ok(),
        };
        return code
            .and_then(char::from_u32)
            .map_or(Cow::Borrowed(""), |c| Cow::Owned(c.into()));
    }
    match quick_xml::escape::resolve_predefined_entity(name) {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(format!("&{name};")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<String>);

    impl Handler for Log {
        fn open(&mut self, name: &str, element: &BytesStart<'_>) -> Result<(), ParseError> {
            let id = attribute(element, "id").unwrap_or_default();
            self.0.push(format!("<{name}{id}>"));
            Ok(())
        }
        fn close(&mut self, name: &str) -> Result<(), ParseError> {
            self.0.push(format!("</{name}>"));
            Ok(())
        }
        fn text(&mut self, text: &str) {
            self.0.push(text.to_owned());
        }
    }

    #[test]
    fn events_have_local_names_and_resolved_text() {
        let mut log = Log::default();
        let xml = br#"<w:a w:id="1"><w:b/>x &amp; &#x41;&#66;<![CDATA[<c>]]></w:a>"#;
        drive(xml, "test.xml", &mut log).unwrap();
        assert_eq!(log.0.join(""), "<a1><b></b>x & AB<c></a>");
    }

    #[test]
    fn broken_xml_is_malformed() {
        let err = drive(b"<a><b></a>", "part.xml", &mut Log::default()).unwrap_err();
        assert_eq!(err.code(), "malformed");
    }
}
