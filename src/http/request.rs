//! A parsed request, owned so the connection's read buffer can be reused at once.

/// The request method. Methods are case-sensitive, so `get` is `Other("get")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    /// Anything else; the router answers 405 or 501 for it.
    Other(String),
}

impl Method {
    pub(super) fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other(token) => token,
        }
    }
}

/// The two versions we speak; anything else is refused with 505 while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// One complete request with its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The target up to `?`, as sent (not percent-decoded).
    pub path: String,
    /// The target after the first `?`, if there was one.
    pub query: Option<String>,
    pub version: Version,
    /// Every header field in order; names are lowercased, values trimmed of spaces and tabs.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the client lets the connection carry another request after this one.
    pub keep_alive: bool,
}

impl Request {
    /// The first value of a header field, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_and_are_case_sensitive() {
        for token in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            let method = Method::from_token(token);
            assert!(!matches!(method, Method::Other(_)), "{token}");
            assert_eq!(method.as_str(), token);
        }
        assert_eq!(Method::from_token("get"), Method::Other("get".to_string()));
        assert_eq!(Method::from_token("BREW").as_str(), "BREW");
    }

    #[test]
    fn header_lookup_ignores_case_and_takes_the_first() {
        let request = Request {
            method: Method::Get,
            path: "/".to_string(),
            query: None,
            version: Version::Http11,
            headers: vec![
                ("x-a".to_string(), "1".to_string()),
                ("x-a".to_string(), "2".to_string()),
            ],
            body: Vec::new(),
            keep_alive: true,
        };
        assert_eq!(request.header("X-A"), Some("1"));
        assert_eq!(request.header("x-b"), None);
    }

    #[test]
    fn version_text() {
        assert_eq!(Version::Http10.as_str(), "HTTP/1.0");
        assert_eq!(Version::Http11.as_str(), "HTTP/1.1");
    }
}
