//! The one way JSON is written: response bodies and stream events alike go through `write`, so
//! serde's code for each type exists once in the binary.

use serde::Serialize;

/// Appends `value` as JSON. Writing to a `Vec` cannot fail, and no value here has a map with
/// non-string keys, serde's only other error.
pub fn write(buf: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    let _ = serde_json::to_writer(Sink(buf), value);
}

/// `serde_json`'s writer. It writes a token's event in some sixty pieces, most of them one byte
/// of punctuation; `Vec<u8>`'s own writer calls `memcpy` for each, this one pushes a single byte
/// in place (the stream throughput benchmark measures the difference).
struct Sink<'a>(&'a mut Vec<u8>);

impl std::io::Write for Sink<'_> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match buf {
            [byte] => self.0.push(*byte),
            _ => self.0.extend_from_slice(buf),
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_serde_json_writes() {
        let value = serde_json::json!({"a": [1, "x\"y\n", null], "b": {"c": true}});
        let mut buf = b"prefix ".to_vec();
        write(&mut buf, &value);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            format!("prefix {}", serde_json::to_string(&value).unwrap())
        );
    }
}
