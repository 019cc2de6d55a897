//! An error with its causes, for the one line a person reads. Errors' own messages leave the
//! cause to `source()` (so it is never said twice); whoever prints one for a person prints the
//! chain, since the OS reason ("Read-only file system", "No space left on device") is often
//! what tells them what to fix. Sits at the bottom, like `exit`, so any module may use it.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its causes, `: `-separated.
pub struct WithCauses<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for WithCauses<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[derive(Debug)]
    struct Outer(io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot write lock file /run/x.lock")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_os_reason_follows_the_sentence() {
        let e = Outer(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(
            WithCauses(&e).to_string(),
            "cannot write lock file /run/x.lock: No space left on device (os error 28)"
        );
    }
}
