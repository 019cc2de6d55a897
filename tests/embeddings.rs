//! Embeddings through the real daemon and the simulator's last-hidden-layer mode:
//! `/v1/embeddings`, `/api/embed`, `/api/embeddings`.

mod common;

use common::{write_model, Daemon, TempDir};
use serde_json::{json, Value};

/// A small model: 8-wide hidden states keep the vectors readable in failure messages.
fn daemon(tag: &str, extra: &[&str], args: &[&str]) -> Daemon {
    let dir = TempDir::new(tag);
    let mut lines = vec!["answer_tokens_min = 4", "answer_tokens_max = 4"];
    lines.extend_from_slice(extra);
    let model = write_model(dir.path(), "m", &lines);
    let mut all = vec!["--chat-template", "qwen2.5"];
    all.extend_from_slice(args);
    Daemon::builder(tag).model(model).args(all).start()
}

fn embed(d: &Daemon, body: &Value) -> Value {
    let r = d.client().post_json("/v1/embeddings", body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn vectors(resp: &Value) -> Vec<Vec<f64>> {
    resp["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn one(d: &Daemon, text: &str) -> Vec<f64> {
    vectors(&embed(d, &json!({ "input": text }))).remove(0)
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn assert_close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} != {b:?}");
    }
}

#[test]
fn same_text_same_vector_other_text_other_vector_all_unit_length() {
    let d = daemon("emb-det", &[], &[]);
    let a1 = one(&d, "the cat sat on the mat");
    let a2 = one(&d, "the cat sat on the mat");
    let b = one(&d, "the dog sat on the mat");
    assert_eq!(a1.len(), 1536, "the simulator's default hidden size");
    assert_eq!(a1, a2);
    assert_ne!(a1, b);
    for v in [&a1, &b] {
        assert!(v.iter().all(|x| x.is_finite()));
        assert!((norm(v) - 1.0).abs() < 1e-5, "norm {}", norm(v));
    }
}

#[test]
fn a_batch_comes_back_in_input_order_with_its_usage() {
    let d = daemon("emb-batch", &["hidden_size = 8"], &[]);
    let (a, b) = (one(&d, "first text"), one(&d, "second"));
    let resp = embed(
        &d,
        &json!({"input": ["second", "first text"], "model": "m"}),
    );
    assert_eq!(resp["object"], "list");
    assert_eq!(resp["model"], "m");
    assert_eq!(resp["data"][0]["index"], 0);
    assert_eq!(resp["data"][1]["index"], 1);
    assert_eq!(resp["data"][1]["object"], "embedding");
    let got = vectors(&resp);
    assert_close(&got[0], &b);
    assert_close(&got[1], &a);
    // One runtime call per input, in order, each in last-hidden-layer mode (1).
    let runs = d.trace_of("rkllm_run");
    let last_two: Vec<&Value> = runs.iter().rev().take(2).rev().collect();
    assert_eq!(last_two[0]["prompt"], "second");
    assert_eq!(last_two[1]["prompt"], "first text");
    assert!(last_two
        .iter()
        .all(|r| r["mode"] == 1 && r["keep_history"] == 0));
    // Usage: the tokens the runtime prefilled for both.
    let prefilled: u64 = d
        .trace_of("run_end")
        .iter()
        .rev()
        .take(2)
        .map(|e| e["prefill_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(resp["usage"]["prompt_tokens"], prefilled);
    assert_eq!(resp["usage"]["total_tokens"], prefilled);
}

#[test]
fn dimensions_truncate_and_renormalise_and_beyond_the_size_is_400() {
    let d = daemon("emb-dims", &["hidden_size = 8"], &[]);
    let full = one(&d, "matryoshka");
    let cut = vectors(&embed(&d, &json!({"input": "matryoshka", "dimensions": 3}))).remove(0);
    let n = norm(&full[..3]);
    let expected: Vec<f64> = full[..3].iter().map(|x| x / n).collect();
    assert_close(&cut, &expected);
    assert!((norm(&cut) - 1.0).abs() < 1e-5);

    let r = d
        .client()
        .post_json("/v1/embeddings", &json!({"input": "x", "dimensions": 9}));
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.json();
    assert_eq!(e["error"]["param"], "dimensions");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(e["error"]["message"].as_str().unwrap().contains('8'), "{e}");
}

#[test]
fn base64_is_the_float_vectors_little_endian_bytes() {
    let d = daemon("emb-b64", &["hidden_size = 8"], &[]);
    let floats = one(&d, "encode me");
    let resp = embed(
        &d,
        &json!({"input": "encode me", "encoding_format": "base64"}),
    );
    let text = resp["data"][0]["embedding"].as_str().unwrap();
    let bytes = decode_base64(text);
    let decoded: Vec<f64> = bytes
        .chunks(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    assert_close(&decoded, &floats);
    let r = d.client().post_json(
        "/v1/embeddings",
        &json!({"input": "x", "encoding_format": "int8"}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "encoding_format");
}

fn decode_base64(text: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | A.iter().position(|&x| x == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn pooling_follows_the_config_and_auto_picks_last_for_qwen3_embedding() {
    let mean = daemon(
        "emb-mean",
        &["hidden_size = 8"],
        &["--embedding-pooling", "mean"],
    );
    let last = daemon(
        "emb-last",
        &["hidden_size = 8"],
        &["--embedding-pooling", "last"],
    );
    let auto = daemon("emb-auto", &["hidden_size = 8"], &[]);
    let text = "pool these tokens";
    let (m, l, a) = (one(&mean, text), one(&last, text), one(&auto, text));
    assert_ne!(m, l);
    assert_close(&a, &m); // "m" names no Qwen3 embedding model: mean

    let dir = TempDir::new("emb-q3");
    let model = write_model(dir.path(), "Qwen3-Embedding-0.6B", &["hidden_size = 8"]);
    let q3 = Daemon::builder("emb-q3")
        .model(model)
        .args(["--chat-template", "qwen2.5"])
        .start();
    assert_close(&one(&q3, text), &l);
}

#[test]
fn a_bad_pooling_value_is_a_config_error() {
    let dir = TempDir::new("emb-badpool");
    let out = std::process::Command::new(common::daemon_bin())
        .args(["--embedding-pooling", "max", "--model"])
        .arg(common::fast_model())
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("embedding-pooling") && err.contains("mean"),
        "{err}"
    );
}

#[test]
fn an_embedding_between_two_turns_does_not_restart_the_conversation() {
    let d = daemon("emb-kv", &["hidden_size = 8"], &[]);
    // No max_tokens: the model's answers end by EOS after 4 tokens. (Under ABI 1.2 a cap is
    // enforced by aborting the run, after which the cache is cleared whatever happens next.)
    let chat = |messages: &Value| {
        let r = d
            .client()
            .post_json("/v1/chat/completions", &json!({ "messages": messages }));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = "Tell me about the rivers and the mountains of the north, and the weather there.";
    let mut messages = vec![json!({"role": "user", "content": first})];
    let answer = chat(&json!(messages));
    let history = d.trace_of("run_end").last().unwrap()["cache_tokens"]
        .as_u64()
        .unwrap();
    one(&d, "something else entirely, embedded between the turns");
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(json!({"role": "user", "content": "And the south?"}));
    chat(&json!(messages));

    let calls: Vec<String> = d
        .trace()
        .iter()
        .filter_map(|l| l["fn"].as_str().map(str::to_owned))
        .filter(|f| ["rkllm_run", "rkllm_clear_kv_cache"].contains(&f.as_str()))
        .collect();
    let runs = calls.iter().filter(|f| *f == "rkllm_run").count();
    assert_eq!(runs, 3, "{calls:?}");
    let first_run = calls.iter().position(|f| f == "rkllm_run").unwrap();
    assert!(
        !calls[first_run..].contains(&"rkllm_clear_kv_cache".to_owned()),
        "the cache was cleared after the first turn: {calls:?}"
    );
    let last = d.trace_of("run_end").pop().unwrap();
    let prefilled = last["prefill_tokens"].as_u64().unwrap();
    assert!(
        prefilled < history,
        "turn 2 prefilled {prefilled} tokens, the whole history ({history}) again"
    );
}

#[test]
fn ollama_embed_and_the_older_embeddings() {
    let d = daemon("emb-ollama", &["hidden_size = 8"], &[]);
    let (a, b) = (one(&d, "alpha"), one(&d, "beta"));
    let r = d.client().post_json(
        "/api/embed",
        &json!({"model": "m", "input": ["alpha", "beta"]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["model"], "m");
    let got: Vec<Vec<f64>> = body["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_close(&got[0], &a);
    assert_close(&got[1], &b);
    assert!(body["total_duration"].as_u64().unwrap() > 0);
    assert_eq!(body["load_duration"], 0);
    assert!(body["prompt_eval_count"].as_u64().unwrap() > 0);

    let r = d
        .client()
        .post_json("/api/embed", &json!({"input": "alpha", "dimensions": 2}));
    let v = &r.json()["embeddings"][0];
    assert_eq!(v.as_array().unwrap().len(), 2);

    let r = d
        .client()
        .post_json("/api/embeddings", &json!({"model": "m", "prompt": "alpha"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let legacy: Vec<f64> = r.json()["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_close(&legacy, &a);

    // Errors in Ollama's shape.
    let r = d.client().post_json("/api/embed", &json!({"model": "m"}));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("'input'"));
    let r = d
        .client()
        .post_json("/api/embed", &json!({"model": "other", "input": "x"}));
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
}

#[test]
fn token_arrays_and_bad_input_are_400_in_openai_shape() {
    let d = daemon("emb-bad", &["hidden_size = 8"], &[]);
    for input in [json!([1, 2, 3]), json!([[1, 2]]), json!(""), json!([])] {
        let r = d
            .client()
            .post_json("/v1/embeddings", &json!({ "input": input }));
        assert_eq!(r.status, 400, "{input}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["param"], "input", "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error");
    }
    let r = d
        .client()
        .post_json("/v1/embeddings", &json!({"input": [1, 2]}));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("token arrays"));
}

#[test]
fn truncate_cuts_an_input_over_the_context_and_false_refuses_it() {
    let d = daemon(
        "emb-trunc",
        &["hidden_size = 8"],
        &["--max-context-len", "64"],
    );
    let long = "word ".repeat(300);
    let r = d
        .client()
        .post_json("/api/embed", &json!({"input": long, "truncate": false}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].is_string());
    let r = d
        .client()
        .post_json("/api/embed", &json!({ "input": long }));
    assert_eq!(r.status, 200, "{}", r.text());
    let count = r.json()["prompt_eval_count"].as_u64().unwrap();
    assert!(count > 0 && count <= 64, "{count}");
}

/// A runtime that leaves an embedding's input in its KV cache (unknown for the real one; the
/// simulator's `hidden_keeps_cache = 0`): the cache's size changes, so the daemon forgets its
/// record, clears the cache and prefills the whole conversation at the next turn.
#[test]
fn a_runtime_that_changes_the_cache_in_an_embedding_run_gets_it_cleared() {
    let d = daemon(
        "emb-kv-lost",
        &["hidden_size = 8", "hidden_keeps_cache = 0"],
        &[],
    );
    let chat = |messages: &Value| {
        let r = d
            .client()
            .post_json("/v1/chat/completions", &json!({ "messages": messages }));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut messages = vec![json!({"role": "user", "content": "Tell me about the rivers."})];
    let answer = chat(&json!(messages));
    let history = d.trace_of("run_end").last().unwrap()["cache_tokens"]
        .as_u64()
        .unwrap();
    one(&d, "an embedding that takes the cache's place");
    messages.push(json!({"role": "assistant", "content": answer}));
    messages.push(json!({"role": "user", "content": "And the south?"}));
    chat(&json!(messages));

    let calls: Vec<String> = d
        .trace()
        .iter()
        .filter_map(|l| l["fn"].as_str().map(str::to_owned))
        .filter(|f| ["rkllm_run", "rkllm_clear_kv_cache"].contains(&f.as_str()))
        .collect();
    let n = calls.len();
    assert_eq!(
        calls[n - 2..],
        ["rkllm_clear_kv_cache".to_owned(), "rkllm_run".to_owned()],
        "{calls:?}"
    );
    let last = d.trace_of("run_end").pop().unwrap();
    assert!(
        last["prefill_tokens"].as_u64().unwrap() > history,
        "turn 2 must prefill the whole conversation: {last}"
    );
}

/// Embeddings wait in the one FIFO like generations: one sent while a generation runs starts
/// only when it has ended.
#[test]
fn an_embedding_queues_behind_a_running_generation() {
    let dir = TempDir::new("emb-queue");
    let model = write_model(
        dir.path(),
        "m",
        &[
            "hidden_size = 8",
            "decode_us_per_token = 20000",
            "answer_tokens_min = 40",
            "answer_tokens_max = 40",
        ],
    );
    let d = Daemon::builder("emb-queue")
        .model(model)
        .args(["--chat-template", "qwen2.5"])
        .start();
    let mut gen = d.client();
    gen.send_post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "a long answer"}], "stream": true}),
    );
    // The generation has started once its head arrives (the role chunk follows the start).
    let (status, _) = gen.read_head().unwrap();
    assert_eq!(status, 200);
    let emb = one(&d, "waits its turn");
    assert_eq!(emb.len(), 8);
    let lines: Vec<String> = d
        .trace()
        .iter()
        .filter_map(|l| l["fn"].as_str().map(str::to_owned))
        .filter(|f| ["rkllm_run", "run_end"].contains(&f.as_str()))
        .collect();
    assert_eq!(lines, ["rkllm_run", "run_end", "rkllm_run", "run_end"]);
    let runs = d.trace_of("rkllm_run");
    assert_eq!(runs[0]["mode"], 0);
    assert_eq!(runs[1]["mode"], 1);
    let ends = d.trace_of("run_end");
    assert_eq!(
        ends[0]["generate_tokens"], 40,
        "the generation ran to its end: {ends:?}"
    );
}

/// An embedding cut by `--request-timeout` is a 504 in the API's shape, like a generation, and
/// the daemon serves the next request.
#[test]
fn an_embedding_over_the_request_timeout_is_a_504() {
    let dir = TempDir::new("emb-timeout");
    let model = write_model(
        dir.path(),
        "m",
        &["hidden_size = 8", "prefill_us_per_token = 200000"],
    );
    let d = Daemon::builder("emb-timeout")
        .model(model)
        .args(["--chat-template", "qwen2.5", "--request-timeout", "0.3"])
        .start();
    let r = d.client().post_json(
        "/v1/embeddings",
        &json!({"input": "a text long enough to take seconds to prefill"}),
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "timeout_error");
    let r = d.client().post_json(
        "/api/embed",
        &json!({"input": "another text to prefill slowly"}),
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.json()["error"].is_string());
}
