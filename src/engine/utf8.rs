//! Reassembles UTF-8 text from byte pieces. The runtime holds incomplete characters back
//! (WAITING), but we do not rely on it: a piece that ends mid-character is kept until the rest
//! arrives, and invalid bytes become U+FFFD rather than an error.

#[derive(Default, Debug)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Adds `bytes` and returns the complete text available so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        if self.pending.is_empty() {
            if let Ok(s) = std::str::from_utf8(bytes) {
                return s.to_owned();
            }
        }
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid by construction.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: whatever is still pending was never completed.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8Assembler;

    #[test]
    fn ascii_passes_through() {
        let mut a = Utf8Assembler::default();
        assert_eq!(a.push(b"hello"), "hello");
        assert_eq!(a.finish(), "");
    }

    #[test]
    fn split_emoji_is_held_until_complete() {
        let rocket = "🚀".as_bytes();
        let mut a = Utf8Assembler::default();
        assert_eq!(a.push(&rocket[..1]), "");
        assert_eq!(a.push(&rocket[1..3]), "");
        assert_eq!(a.push(&[rocket[3], b'!']), "🚀!");
    }

    #[test]
    fn text_before_a_split_character_is_not_delayed() {
        let ni = "你".as_bytes();
        let mut a = Utf8Assembler::default();
        assert_eq!(a.push(&[b'a', ni[0]]), "a");
        assert_eq!(a.push(&ni[1..]), "你");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut a = Utf8Assembler::default();
        assert_eq!(a.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(a.push(b"\xe4\xbd"), "");
        assert_eq!(a.finish(), "\u{fffd}");
    }
}
