//! Turning files into text for Cairn: type detection, parsers and chunking.
