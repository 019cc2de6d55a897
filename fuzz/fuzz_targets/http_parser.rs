//! The sans-io request parser on arbitrary bytes.
//!
//! Input: byte 0 picks the limits, byte 1 seeds the split points, the rest is the byte stream a
//! client sends. The stream is parsed three ways: in one read, one byte per read, and in
//! pieces of seeded sizes. Checked:
//! - the three agree on the requests, the error (if any) and the bytes left over, so where a
//!   read ends never changes what the daemon sees;
//! - each request's body length is its `Content-Length` (0 without one) and within the limit,
//!   its header count within `MAX_HEADERS`, its header names lowercase;
//! - the bytes left over are a suffix of the stream (only whole requests are consumed);
//! - a request written back as bytes parses to the same request;
//! - after an error, the parser repeats it whatever it is fed.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rkllmd::http::{HttpError, Limits, Progress, Request, RequestParser, MAX_HEADERS};

/// Everything a parse produced, to compare the ways of feeding it.
#[derive(Debug, PartialEq)]
struct Outcome {
    requests: Vec<Request>,
    error: Option<HttpError>,
    leftover: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let [pick, seed, stream @ ..] = data else {
        return;
    };
    let limits = match pick % 3 {
        0 => Limits::default(),
        // Small enough that the fuzzer reaches both caps with short inputs.
        1 => Limits {
            max_head_bytes: 64,
            max_body_bytes: 16,
        },
        _ => Limits {
            max_head_bytes: usize::from(*pick) + 1,
            max_body_bytes: usize::from(*seed),
        },
    };

    let whole = feed(limits, stream, |_| stream.len());
    let bytewise = feed(limits, stream, |_| 1);
    let mut rng = u64::from(*seed) | u64::from(*pick) << 8;
    let pieces = feed(limits, stream, |_| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        1 + (rng >> 33) as usize % 24
    });
    assert_eq!(whole, bytewise, "one read vs byte by byte");
    assert_eq!(whole, pieces, "one read vs pieces");

    assert!(
        stream.ends_with(&whole.leftover),
        "leftover is not a suffix"
    );
    for request in &whole.requests {
        check_request(request, &limits);
        // Written back, the head may be longer (CRLF for LF, ": " for ":"): no head limit.
        let roomy = Limits {
            max_head_bytes: 1 << 20,
            ..limits
        };
        let again = feed(roomy, &to_bytes(request), |_| usize::MAX);
        assert_eq!(again.error, None, "re-serialised {request:?}");
        assert_eq!(again.requests, vec![request.clone()], "round trip");
        assert!(again.leftover.is_empty());
    }
});

/// Feeds `stream` in pieces of the lengths `next_len` gives, running the parser until it wants
/// more after each piece, the way the event loop does.
fn feed(limits: Limits, stream: &[u8], mut next_len: impl FnMut(usize) -> usize) -> Outcome {
    let mut parser = RequestParser::new(limits);
    let mut buf = Vec::new();
    let mut requests = Vec::new();
    let mut continues = 0usize;
    let mut at: usize = 0;
    loop {
        let end = at.saturating_add(next_len(at)).min(stream.len());
        buf.extend_from_slice(&stream[at..end]);
        at = end;
        loop {
            match parser.advance(&mut buf) {
                Ok(Progress::NeedMore) => break,
                Ok(Progress::Continue100) => {
                    continues += 1;
                    assert!(continues <= requests.len() + 1, "two 100s for one request");
                    assert!(parser.awaiting_body());
                }
                Ok(Progress::Request(request)) => requests.push(request),
                Err(error) => {
                    // The framing is lost: the same error, whatever comes next.
                    let mut more = b"GET / HTTP/1.1\r\n\r\n".to_vec();
                    assert_eq!(parser.advance(&mut more), Err(error.clone()));
                    assert_eq!(parser.advance(&mut buf), Err(error.clone()));
                    return Outcome {
                        requests,
                        error: Some(error),
                        leftover: Vec::new(),
                    };
                }
            }
        }
        if at == stream.len() {
            return Outcome {
                requests,
                error: None,
                leftover: buf,
            };
        }
    }
}

fn check_request(request: &Request, limits: &Limits) {
    assert!(request.headers.len() <= MAX_HEADERS);
    for (name, _) in &request.headers {
        assert_eq!(*name, name.to_ascii_lowercase(), "header name case");
    }
    let declared = request.header("content-length").map_or(0, |v| {
        v.split(',')
            .next()
            .unwrap_or("")
            .trim()
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    });
    assert_eq!(
        request.body.len(),
        declared,
        "body length vs Content-Length"
    );
    assert!(request.body.len() <= limits.max_body_bytes);
}

/// A request as a client would send it; parsing this must give the request back.
fn to_bytes(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.as_bytes());
    if let Some(query) = &request.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.push(b' ');
    out.extend_from_slice(request.version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &request.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&request.body);
    out
}
