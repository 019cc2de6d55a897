//! Standard base64 (RFC 4648) to bytes, for images sent inline. Padding is optional and ASCII
//! whitespace is skipped (some clients wrap long lines); any other character is an error.

/// The decoded length `text` can give at most: a cheap bound checked before decoding, so an
/// oversized image is refused without allocating for it.
pub fn max_decoded_len(text: &str) -> usize {
    text.len() / 4 * 3 + 3
}

/// The bytes `text` encodes, or `None` if it is not base64.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(max_decoded_len(text));
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut padding = 0;
    for &c in text.as_bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            c if c.is_ascii_whitespace() => continue,
            _ => return None,
        };
        // Data after padding is malformed.
        if padding > 0 {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A lone trailing character (6 bits) encodes no byte; more than two '=' never occur.
    (bits < 6 && padding <= 2).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::{decode, max_decoded_len};

    #[test]
    fn decodes_rfc4648_vectors_with_and_without_padding() {
        let vectors = [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
            ("Zm9vYg", "foob"),
            ("Zm9v\nYmFy\r\n", "foobar"),
        ];
        for (text, bytes) in vectors {
            assert_eq!(decode(text).as_deref(), Some(bytes.as_bytes()), "{text:?}");
            assert!(max_decoded_len(text) >= bytes.len());
        }
        assert_eq!(decode("//79").unwrap(), [0xFF, 0xFE, 0xFD]);
    }

    #[test]
    fn refuses_what_is_not_base64() {
        for text in ["Zm9v!", "Zm9v-", "Z", "Zg==Zg==", "Zg===", "é"] {
            assert_eq!(decode(text), None, "{text:?}");
        }
    }
}
