//! `GET /metrics` in the Prometheus text exposition format (0.0.4).

mod board;

use std::fmt::Write;

use super::{Ctx, FullResponse};
use crate::metrics::{Histogram, Metrics, ModelLoads, BUCKETS};

pub fn handle(ctx: &Ctx<'_>) -> FullResponse {
    let m = ctx.metrics;
    let mut out = String::with_capacity(2048);
    header(
        &mut out,
        "rkllmd_requests_total",
        "counter",
        "HTTP responses by endpoint and status.",
    );
    for ((endpoint, status), n) in m.requests() {
        let _ = writeln!(
            out,
            "rkllmd_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
        );
    }
    let gauges = [
        (
            "rkllmd_queue_depth",
            "Requests waiting for the runtime.",
            ctx.queue_depth,
        ),
        (
            "rkllmd_running",
            "Generations running now (0 or 1).",
            usize::from(ctx.running),
        ),
        (
            "rkllmd_connections",
            "Open client connections.",
            ctx.connections,
        ),
    ];
    for (name, help, value) in gauges {
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    generation(&mut out, ctx);
    counters(&mut out, m);
    model_loads(&mut out, ctx);
    histogram(
        &mut out,
        "rkllmd_prefill_seconds",
        "Prefill time per request, from the runtime.",
        m.prefill_seconds(),
    );
    histogram(
        &mut out,
        "rkllmd_ttft_seconds",
        "Time from a generation request's submission (queue wait included) to its first token.",
        m.ttft_seconds(),
    );
    histogram(
        &mut out,
        "rkllmd_decode_seconds",
        "Decode time per request, from the runtime.",
        m.decode_seconds(),
    );
    for (name, help, value) in [
        (
            "rkllmd_aborts_total",
            "Generations aborted (client gone, timeout, shutdown).",
            m.aborts(),
        ),
        (
            "rkllmd_runtime_errors_total",
            "Runs the runtime failed.",
            m.runtime_errors(),
        ),
        (
            "rkllmd_queue_rejections_total",
            "Requests refused because the queue was full.",
            m.queue_rejections(),
        ),
        (
            "rkllmd_preemptions_total",
            "Background runs aborted before any output for an interactive request, and queued again.",
            m.preemptions(),
        ),
        (
            "rkllmd_kv_snapshots_saved_total",
            "KV-cache snapshots saved before a request replaced a conversation's cache.",
            m.kv_snapshots().0,
        ),
        (
            "rkllmd_kv_snapshots_restored_total",
            "Conversations served from a KV-cache snapshot.",
            m.kv_snapshots().1,
        ),
        (
            "rkllmd_tools_left_out_total",
            "Tools left out of requests to fit the tool budget.",
            m.tools_left_out_totals().0,
        ),
        (
            "rkllmd_requests_with_tools_left_out_total",
            "Requests that had tools left out to fit the tool budget.",
            m.tools_left_out_totals().1,
        ),
    ] {
        counter(&mut out, name, help, value);
    }
    // Read now, on the loop, rather than kept fresh by a thread: a scrape every few seconds
    // costs a few dozen small sysfs reads, and an idle daemon never wakes.
    board::write(&mut out, &crate::board::Board::read(ctx.board_root));
    FullResponse {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        headers: Vec::new(),
        body: out.into_bytes(),
    }
}

/// What the runtime is doing with tokens: the rate over the last minute, the running
/// generation, the KV cache against the context. A figure not known now is left out.
fn generation(out: &mut String, ctx: &Ctx<'_>) {
    let m = ctx.metrics;
    gauge(
        out,
        "rkllmd_tokens_per_second",
        "Tokens generated per second, averaged over the last 60 s.",
        m.tokens_per_second(ctx.now),
    );
    if let Some(c) = m.current() {
        #[allow(clippy::cast_precision_loss)] // token counts far below 2^52
        gauge(
            out,
            "rkllmd_generation_tokens",
            "Tokens the running generation has produced so far.",
            c.tokens as f64,
        );
        if let Some(rate) = c.per_second() {
            gauge(
                out,
                "rkllmd_generation_tokens_per_second",
                "Decode rate of the running generation since its first token.",
                rate,
            );
        }
    }
    kv_caches(out, ctx);
    gauge(
        out,
        "rkllmd_context_length_tokens",
        "The context the model is served with (max-context-len).",
        f64::from(ctx.max_context_len),
    );
}

/// Each resident model's KV cache (a model's sample is left out while its count is unknown,
/// and goes with the model), and the snapshots all of them hold.
fn kv_caches(out: &mut String, ctx: &Ctx<'_>) {
    let caches = ctx.kv_caches.by_model();
    header(
        out,
        "rkllmd_kv_cache_tokens",
        "gauge",
        "Tokens each resident model's KV cache holds, as rkllmd knows them.",
    );
    for (&id, figures) in &caches {
        let (Some(tokens), Some(model)) = (figures.tokens, ctx.catalog.get(id)) else {
            continue;
        };
        let label = label_value(&model.name);
        let _ = writeln!(out, "rkllmd_kv_cache_tokens{{model=\"{label}\"}} {tokens}");
    }
    let held: usize = caches.values().map(|f| f.snapshots).sum();
    header(
        out,
        "rkllmd_kv_snapshots",
        "gauge",
        "KV-cache snapshots held for the resident models' conversations.",
    );
    let _ = writeln!(out, "rkllmd_kv_snapshots {held}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// The counters of connections, generations and tokens, in their exposition order.
fn counters(out: &mut String, m: &Metrics) {
    for (name, help, value) in [
        (
            "rkllmd_connections_accepted_total",
            "Client connections accepted.",
            m.connections_accepted(),
        ),
        (
            "rkllmd_connections_refused_total",
            "Connections refused (limit or credentials).",
            m.connections_refused(),
        ),
        (
            "rkllmd_connections_closed_total",
            "Accepted client connections since closed.",
            m.connections_closed(),
        ),
        (
            "rkllmd_generations_submitted_total",
            "Generation requests handed to the engine.",
            m.generations_submitted(),
        ),
        (
            "rkllmd_generations_ended_total",
            "Generation requests done with: answered, failed, or the client left.",
            m.generations_ended(),
        ),
        (
            "rkllmd_tokens_prefilled_total",
            "Prompt tokens the runtime prefilled.",
            m.tokens_prefilled(),
        ),
        (
            "rkllmd_tokens_generated_total",
            "Tokens the runtime generated.",
            m.tokens_generated(),
        ),
    ] {
        counter(out, name, help, value);
    }
}

/// Loads, failed loads, unloads and load time per model, every model of the catalog listed
/// (at 0 until it loads), so a dashboard sees each series from the start.
fn model_loads(out: &mut String, ctx: &Ctx<'_>) {
    let loads = ctx.metrics.model_loads();
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ModelLoads) -> f64,
    );
    let series: [Series; 4] = [
        (
            "rkllmd_model_loads_total",
            "counter",
            "Model loads, by model.",
            |m| count(m.loads),
        ),
        (
            "rkllmd_model_load_failures_total",
            "counter",
            "Model loads that failed, by model.",
            |m| count(m.load_failures),
        ),
        (
            "rkllmd_model_unloads_total",
            "counter",
            "Model unloads, by model.",
            |m| count(m.unloads),
        ),
        (
            "rkllmd_model_load_seconds_total",
            "counter",
            "Time spent loading each model (failed loads included).",
            |m| m.load_seconds,
        ),
    ];
    let none = ModelLoads::default();
    for (name, kind, help, value) in series {
        header(out, name, kind, help);
        for (_, model) in ctx.catalog.iter() {
            let m = loads.get(&model.name).unwrap_or(&none);
            let label = label_value(&model.name);
            let _ = writeln!(out, "{name}{{model=\"{label}\"}} {}", value(m));
        }
    }
}

#[allow(clippy::cast_precision_loss)] // load counts far below 2^52
fn count(n: u64) -> f64 {
    n as f64
}

/// A label value as the exposition format escapes it (a file name may hold `"` or `\`).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    header(out, name, "histogram", help);
    for (bound, n) in BUCKETS.iter().zip(h.buckets()) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(out, "{name}_sum {}", h.sum());
    let _ = writeln!(out, "{name}_count {}", h.count());
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
