//! The API key: kept out of `Debug` output and compared in constant time.

use std::fmt;
use std::hint::black_box;

/// A non-empty API key. `Debug` never prints it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// `None` when the key is empty.
    pub fn new(key: String) -> Option<ApiKey> {
        (!key.is_empty()).then_some(ApiKey(key))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether `presented` is this key, taking the same time for every `presented` of a given
    /// length (see [`constant_time_eq`]).
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.as_bytes(), presented)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Compares without an early exit: the loop always runs over the whole expected key and folds
/// every difference into one accumulator, so the time depends on the key's length and nothing
/// else. A presented value of another length is compared against zero bytes past its end, so a
/// length mismatch costs the same as a content mismatch and reveals no content.
pub(crate) fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != presented.len());
    for (i, &e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        // black_box keeps the optimiser from turning the fold into an early-exit compare.
        diff |= black_box(e ^ p);
    }
    black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_a_correct_equality() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"x3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"), "prefix");
        assert!(
            !constant_time_eq(b"s3cret", b"s3cret\0"),
            "longer with a zero byte"
        );
        assert!(!constant_time_eq(b"s3cret", b"s3cretXYZ"), "longer");
        assert!(!constant_time_eq(b"s3cret", b""));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn key_is_never_printed_and_never_empty() {
        let key = ApiKey::new("hunter2".to_owned()).unwrap();
        assert!(!format!("{key:?}").contains("hunter2"));
        assert!(key.matches(b"hunter2"));
        assert!(!key.matches(b"hunter"));
        assert!(ApiKey::new(String::new()).is_none());
    }
}
