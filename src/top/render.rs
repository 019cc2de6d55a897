//! One frame of `rkllmd top`, made from what `/health` and `/metrics` said: a pure function of
//! its inputs, so every line is unit-tested.

use std::fmt::Write as _;

const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";
/// Where a zone counts as hot: RK3588's and RK3576's first trip points are at 85 °C.
const HOT_CELSIUS: f64 = 80.0;
/// Width of the label column.
const LABEL: usize = 9;

/// One sample of the Prometheus text: name, labels in order, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a `/metrics` page; lines that do not parse are skipped.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (key, value) = line.trim().rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match key.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (key, Vec::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y \"q\""` as pairs, unescaped.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim_start_matches(',').to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// What one refresh learnt; an error is shown in place of what it stopped.
pub struct Frame<'a> {
    /// Where the daemon is (socket path or URL).
    pub target: &'a str,
    pub health: Result<serde_json::Value, String>,
    pub metrics: Result<Vec<Sample>, String>,
    /// Terminal columns.
    pub width: usize,
}

pub fn render(frame: &Frame<'_>) -> String {
    let mut out = format!(
        "{BOLD}rkllmd top{RESET}  {}  (every 1 s; Ctrl-C quits)\n\n",
        frame.target
    );
    match &frame.health {
        Ok(h) => {
            let text = |k: &str| h[k].as_str().unwrap_or("?").to_owned();
            line(
                &mut out,
                "model",
                &[format!(
                    "{}  ({}, ABI {}, {})",
                    text("model"),
                    text("status"),
                    text("abi"),
                    text("runtime")
                )],
                frame.width,
            );
        }
        Err(e) => line(
            &mut out,
            "daemon",
            &[format!("{RED}{e}{RESET}")],
            frame.width,
        ),
    }
    match &frame.metrics {
        Ok(samples) => figures(&mut out, samples, frame.width),
        Err(e) => line(
            &mut out,
            "metrics",
            &[format!("{RED}{e}{RESET}")],
            frame.width,
        ),
    }
    out
}

fn figures(out: &mut String, samples: &[Sample], width: usize) {
    let one = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
    let all = |name: &'static str| samples.iter().filter(move |s| s.name == name);
    let count = |name: &str| one(name).map_or_else(|| "?".to_owned(), |v| format!("{v}"));
    line(
        out,
        "queue",
        &[
            format!("{} waiting", count("rkllmd_queue_depth")),
            format!("{} running", count("rkllmd_running")),
            match one("rkllmd_connections") {
                Some(1.0) => "1 connection (this one)".to_owned(),
                _ => format!("{} connections", count("rkllmd_connections")),
            },
        ],
        width,
    );
    let request = match (
        one("rkllmd_generation_tokens"),
        one("rkllmd_generation_tokens_per_second"),
    ) {
        (Some(n), Some(rate)) => format!("{n} tokens at {rate:.1} tokens/s"),
        (Some(n), None) => format!("{n} tokens (prefill or first token)"),
        _ => "idle".to_owned(),
    };
    line(out, "request", &[request], width);
    let mut tokens = vec![format!(
        "{:.2} tokens/s over the last minute",
        one("rkllmd_tokens_per_second").unwrap_or(0.0)
    )];
    // One sample per resident model: with one, against the context it is served with.
    let kv: Vec<&Sample> = all("rkllmd_kv_cache_tokens").collect();
    match (kv.as_slice(), one("rkllmd_context_length_tokens")) {
        ([only], Some(ctx)) => tokens.push(format!("KV cache {} of {ctx} tokens", only.value)),
        (several, _) => tokens.extend(several.iter().map(|s| {
            format!(
                "KV cache {} {} tokens",
                s.label("model").unwrap_or("?"),
                s.value
            )
        })),
    }
    line(out, "tokens", &tokens, width);

    let mut npu: Vec<String> = all("rkllmd_board_npu_load_ratio")
        .map(|s| {
            format!(
                "core{} {:3.0}%",
                s.label("core").unwrap_or("?"),
                s.value * 100.0
            )
        })
        .collect();
    if npu.is_empty() {
        npu.push("load not readable (debugfs is root only)".to_owned());
    }
    npu.extend(all("rkllmd_board_npu_frequency_hertz").map(|s| mhz(s.value)));
    line(out, "NPU", &npu, width);
    let cpu: Vec<String> = all("rkllmd_board_cpu_frequency_hertz")
        .map(|s| {
            format!(
                "policy{} {}",
                s.label("policy").unwrap_or("?"),
                mhz(s.value)
            )
        })
        .collect();
    if !cpu.is_empty() {
        line(out, "CPU", &cpu, width);
    }
    let temps: Vec<String> = all("rkllmd_board_temperature_celsius")
        .map(|s| {
            let zone = s.label("type").unwrap_or("?");
            let zone = zone.strip_suffix("-thermal").unwrap_or(zone);
            if s.value >= HOT_CELSIUS {
                format!("{RED}{zone} {:.1} °C{RESET}", s.value)
            } else {
                format!("{zone} {:.1} °C", s.value)
            }
        })
        .collect();
    if !temps.is_empty() {
        line(out, "temp", &temps, width);
    }
    if let Some(avail) = one("rkllmd_board_memory_available_bytes") {
        let mut mem = format!("{} available", gib(avail));
        if let Some(total) = one("rkllmd_board_memory_total_bytes") {
            let _ = write!(mem, " of {}", gib(total));
        }
        line(out, "memory", &[mem], width);
    }
}

fn mhz(hertz: f64) -> String {
    format!("{:.0} MHz", hertz / 1e6)
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

/// A bold label, then the items two spaces apart, wrapped under the first item at `width`
/// (escape sequences take no columns).
fn line(out: &mut String, label: &str, items: &[String], width: usize) {
    let _ = write!(out, "{BOLD}{label:<LABEL$}{RESET}");
    let mut col = LABEL;
    for (i, item) in items.iter().enumerate() {
        let len = visible_len(item);
        if i > 0 {
            if col + 2 + len > width {
                let _ = write!(out, "\n{:LABEL$}", "");
                col = LABEL;
            } else {
                out.push_str("  ");
                col += 2;
            }
        }
        out.push_str(item);
        col += len;
    }
    out.push('\n');
}

fn visible_len(text: &str) -> usize {
    let mut len = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => len += 1,
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const METRICS: &str = "\
# HELP rkllmd_queue_depth Requests waiting for the runtime.
# TYPE rkllmd_queue_depth gauge
rkllmd_queue_depth 2
rkllmd_running 1
rkllmd_connections 3
rkllmd_tokens_per_second 4.25
rkllmd_generation_tokens 57
rkllmd_generation_tokens_per_second 16.64
rkllmd_kv_cache_tokens{model=\"demo\"} 120
rkllmd_context_length_tokens 4096
rkllmd_board_npu_load_ratio{core=\"0\"} 0.35
rkllmd_board_npu_load_ratio{core=\"1\"} 0.07
rkllmd_board_npu_frequency_hertz{device=\"fdab0000.npu\"} 1000000000
rkllmd_board_cpu_frequency_hertz{policy=\"0\"} 1800000000
rkllmd_board_cpu_frequency_hertz{policy=\"4\"} 2256000000
rkllmd_board_temperature_celsius{zone=\"0\",type=\"soc-thermal\"} 41.6
rkllmd_board_temperature_celsius{zone=\"6\",type=\"npu-thermal\"} 86
rkllmd_board_memory_available_bytes 6442450944
rkllmd_board_memory_total_bytes 17179869184
";

    fn plain(text: &str) -> String {
        let mut out = String::new();
        let mut in_escape = false;
        for c in text.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    }

    fn health() -> serde_json::Value {
        json!({"status": "ok", "model": "demo", "abi": "1.3", "runtime": "simulator"})
    }

    #[test]
    fn a_busy_board() {
        let frame = Frame {
            target: "/run/rkllmd/rkllmd.sock",
            health: Ok(health()),
            metrics: Ok(parse_metrics(METRICS)),
            width: 100,
        };
        let text = render(&frame);
        assert_eq!(
            plain(&text),
            "rkllmd top  /run/rkllmd/rkllmd.sock  (every 1 s; Ctrl-C quits)\n\n\
             model    demo  (ok, ABI 1.3, simulator)\n\
             queue    2 waiting  1 running  3 connections\n\
             request  57 tokens at 16.6 tokens/s\n\
             tokens   4.25 tokens/s over the last minute  KV cache 120 of 4096 tokens\n\
             NPU      core0  35%  core1   7%  1000 MHz\n\
             CPU      policy0 1800 MHz  policy4 2256 MHz\n\
             temp     soc 41.6 °C  npu 86.0 °C\n\
             memory   6.0 GiB available of 16.0 GiB\n"
        );
        // A hot zone is red.
        assert!(text.contains(&format!("{RED}npu 86.0 °C{RESET}")));
    }

    #[test]
    fn an_idle_board_without_root_and_a_narrow_terminal() {
        let metrics = "rkllmd_queue_depth 0\nrkllmd_running 0\nrkllmd_connections 1\n\
                       rkllmd_tokens_per_second 0\n";
        let frame = Frame {
            target: "http://10.0.0.5:8080",
            health: Ok(health()),
            metrics: Ok(parse_metrics(metrics)),
            width: 40,
        };
        assert_eq!(
            plain(&render(&frame)),
            "rkllmd top  http://10.0.0.5:8080  (every 1 s; Ctrl-C quits)\n\n\
             model    demo  (ok, ABI 1.3, simulator)\n\
             queue    0 waiting  0 running\n         1 connection (this one)\n\
             request  idle\n\
             tokens   0.00 tokens/s over the last minute\n\
             NPU      load not readable (debugfs is root only)\n"
        );
    }

    #[test]
    fn each_resident_model_shows_its_kv_cache() {
        let metrics = "rkllmd_tokens_per_second 0\n\
                       rkllmd_kv_cache_tokens{model=\"qwen\"} 120\n\
                       rkllmd_kv_cache_tokens{model=\"llama\"} 30\n\
                       rkllmd_context_length_tokens 4096\n";
        let frame = Frame {
            target: "/run/rkllmd/rkllmd.sock",
            health: Ok(health()),
            metrics: Ok(parse_metrics(metrics)),
            width: 120,
        };
        let text = plain(&render(&frame));
        assert!(
            text.contains(
                "tokens   0.00 tokens/s over the last minute  KV cache qwen 120 tokens  \
                 KV cache llama 30 tokens\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_unreachable_daemon_says_why() {
        let frame = Frame {
            target: "/tmp/none.sock",
            health: Err("cannot connect: No such file or directory".into()),
            metrics: Err("cannot connect: No such file or directory".into()),
            width: 80,
        };
        let text = plain(&render(&frame));
        assert!(
            text.contains("daemon   cannot connect: No such file or directory\n"),
            "{text}"
        );
        assert!(text.contains("metrics  cannot connect"), "{text}");
    }

    #[test]
    fn metric_lines_with_escaped_labels() {
        assert_eq!(
            parse_line(r#"x{a="1",b="q\"uote\\"} 2.5"#),
            Some(Sample {
                name: "x".into(),
                labels: vec![("a".into(), "1".into()), ("b".into(), "q\"uote\\".into())],
                value: 2.5,
            })
        );
        assert_eq!(parse_line("x 3").map(|s| s.value), Some(3.0));
        assert_eq!(parse_line("x{a=\"1\" 3"), None);
        assert_eq!(parse_line("x nope"), None);
        assert_eq!(parse_line(""), None);
    }
}
