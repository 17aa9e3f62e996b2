//! llama.cpp's escape processing of prompts (`-e`/`--escape`, on by default in its tools):
//! `\n`, `\r`, `\t`, `\'`, `\"`, `\\` and `\xHH` (two hex digits, any byte) become the
//! characters they name; any other backslash is kept as it is, with what follows it.

/// The bytes `s` stands for after escape processing (not always UTF-8: `\xff` is one byte).
pub fn process_escapes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let named = match b[i + 1] {
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'\'' => Some(b'\''),
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            _ => None,
        };
        let hex = |c: u8| (c as char).to_digit(16);
        if let Some(c) = named {
            out.push(c);
            i += 2;
        } else if let (b'x', Some(&h), Some(&l)) = (b[i + 1], b.get(i + 2), b.get(i + 3)) {
            match (hex(h), hex(l)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 4;
                }
                _ => {
                    out.extend_from_slice(b"\\x");
                    i += 2;
                }
            }
        } else {
            // Unknown: the backslash and the character after it, as they are.
            out.push(b'\\');
            i += 1;
        }
    }
    out
}

/// `process_escapes` as text; an error naming `what` if the escapes made invalid UTF-8.
pub fn unescape(s: &str, what: &str) -> crate::error::Result<String> {
    String::from_utf8(process_escapes(s)).map_err(|e| {
        crate::error::Error::Invalid(format!(
            "{what} is not valid UTF-8 after its escapes (\\xHH) are processed: byte {} (--no-escape takes it as written)",
            e.utf8_error().valid_up_to()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::process_escapes as p;

    #[test]
    fn escapes_as_llama_cpp() {
        assert_eq!(p(r"a\nb\tc\rd"), b"a\nb\tc\rd");
        assert_eq!(p(r#"\"q\" \'s\' \\n"#), b"\"q\" 's' \\n");
        assert_eq!(p(r"\x41\x4a\x4A\xe2\x82\xac"), "AJJ€".as_bytes());
        assert_eq!(p(r"\xff"), [0xff]);
        // Kept as written: unknown escapes, \x without two hex digits, a trailing backslash.
        assert_eq!(p(r"\q \xZZ \x4"), br"\q \xZZ \x4");
        assert_eq!(p(r"end\"), br"end\");
        assert_eq!(p(r"\\\"), br"\\");
        assert_eq!(p("é\\n🙂"), "é\n🙂".as_bytes());
    }
}
