//! Several models on one daemon (`--models-dir`): listing, loading on demand, a model that
//! fails to load, the order rule, Ollama's lifecycle API. The simulator's models differ in
//! their scripted answer, so which model answered is read from the text, and every load and
//! unload is in its trace (`rkllm_init`, `rkllm_destroy`).

mod common;

use std::time::Duration;

use common::models::{answer, builder, inits, model_metric, ollama_chat};
use common::{write_model, Daemon};
use serde_json::{json, Value};

#[test]
fn every_model_in_the_directory_is_listed_and_the_first_is_loaded_at_start() {
    let d = builder("models-list").start();
    let ids: Vec<Value> = d.client().get("/v1/models").json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!("alpha"), json!("bravo"), json!("broken")]);

    let tags = d.client().get("/api/tags").json();
    let tags = tags["models"].as_array().unwrap();
    let names: Vec<&str> = tags.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha:latest", "bravo:latest", "broken:latest"]);
    for m in tags {
        assert!(m["size"].as_u64().unwrap() > 0, "{m}");
        assert_eq!(m["digest"].as_str().unwrap().len(), 16, "{m}");
        assert!(m["modified_at"].is_string(), "{m}");
        assert_eq!(m["details"]["format"], "rkllm", "{m}");
    }
    assert_ne!(tags[0]["digest"], tags[1]["digest"]);

    let health = d.client().get("/health").json();
    assert_eq!(health["models"], json!(["alpha", "bravo", "broken"]));
    assert_eq!(health["loaded"], "alpha");
    assert_eq!(health["model"], "alpha");
    assert_eq!(inits(&d), ["alpha"]);

    let r = d.client().get("/v1/models/bravo:latest");
    assert_eq!((r.status, r.json()["id"].clone()), (200, json!("bravo")));
}

#[test]
fn an_unknown_model_is_a_404_in_each_apis_shape_and_no_name_is_the_default() {
    let d = builder("models-unknown").start();
    let (status, body) = ollama_chat(&d, "nope");
    assert_eq!(status, 404);
    assert_eq!(body, json!({"error": "model 'nope' not found"}));
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"model": "nope", "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], "model 'nope' not found");
    assert_eq!(r.json()["error"]["param"], "model");
    assert_eq!(d.client().get("/v1/models/nope").status, 404);

    let (status, body) = ollama_chat(&d, "");
    assert_eq!((status, answer(&body)), (200, "alpha says hi".to_owned()));
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "alpha says hi"
    );
}

#[test]
fn a_request_for_another_model_loads_it_in_place_of_the_resident_one() {
    let d = builder("models-switch").start();
    let (status, body) = ollama_chat(&d, "bravo:latest");
    assert_eq!((status, answer(&body)), (200, "bravo says hi".to_owned()));
    assert_eq!(inits(&d), ["alpha", "bravo"]);
    // The resident model was destroyed before the next one loaded.
    let fns: Vec<String> = d
        .trace()
        .iter()
        .map(|l| l["fn"].as_str().unwrap_or_default().to_owned())
        .filter(|f| f == "rkllm_init" || f == "rkllm_destroy")
        .collect();
    assert_eq!(fns, ["rkllm_init", "rkllm_destroy", "rkllm_init"]);
    assert_eq!(d.client().get("/health").json()["loaded"], "bravo");

    // Embeddings name their model too.
    let r = d
        .client()
        .post_json("/api/embed", &json!({"model": "alpha", "input": "x"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(inits(&d), ["alpha", "bravo", "alpha"]);

    assert!((model_metric(&d, "rkllmd_model_loads_total", "alpha") - 2.0).abs() < f64::EPSILON);
    assert!((model_metric(&d, "rkllmd_model_loads_total", "bravo") - 1.0).abs() < f64::EPSILON);
    assert!((model_metric(&d, "rkllmd_model_unloads_total", "alpha") - 1.0).abs() < f64::EPSILON);
    assert!((model_metric(&d, "rkllmd_model_unloads_total", "bravo") - 1.0).abs() < f64::EPSILON);
    assert!(model_metric(&d, "rkllmd_model_load_seconds_total", "bravo") > 0.0);
    assert!(d
        .stderr()
        .contains("switched to model 'bravo' (unloaded 'alpha'): loaded in"));
}

#[test]
fn a_model_that_fails_to_load_fails_its_requests_and_the_others_keep_serving() {
    let d = builder("models-broken").start();
    let (status, body) = ollama_chat(&d, "broken");
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("model 'broken' could not be loaded"),
        "{error}"
    );
    let r = d.client().post_json(
        "/v1/completions",
        &json!({"model": "broken", "prompt": "Hi"}),
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "model_unavailable");

    assert_eq!(d.client().get("/health").status, 200);
    let (status, body) = ollama_chat(&d, "alpha");
    assert_eq!((status, answer(&body)), (200, "alpha says hi".to_owned()));
    assert!(
        (model_metric(&d, "rkllmd_model_load_failures_total", "broken") - 2.0).abs() < f64::EPSILON
    );
    assert!(d.stderr().contains("model 'broken' failed to load"));
}

#[test]
fn a_models_dir_without_models_is_refused_at_start() {
    let b = Daemon::builder("models-empty").no_model().no_wait();
    let empty = b.dir().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut d = b.arg("--models-dir").arg(empty.to_str().unwrap()).start();
    let status = d.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    assert!(
        d.stderr().contains("holds no *.rkllm file"),
        "{}",
        d.stderr()
    );
}

#[test]
fn with_model_and_models_dir_the_model_is_the_default() {
    let b = builder("models-default");
    let bravo = b.dir().join("models").join("bravo.rkllm");
    let d = b.model(bravo).start();
    assert_eq!(inits(&d), ["bravo"]);
    let ids: Vec<Value> = d.client().get("/v1/models").json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!("bravo"), json!("alpha"), json!("broken")]);
    let (status, body) = ollama_chat(&d, "");
    assert_eq!((status, answer(&body)), (200, "bravo says hi".to_owned()));
}

/// While a run holds the NPU, requests alternating between two models queue up: those for the
/// resident model go ahead of a switch at most 3 times (`MAX_SWITCH_YIELDS`), so seven
/// requests cost two loads where arrival order would cost seven, and every request is served
/// by its own model.
#[test]
fn requests_alternating_between_two_models_share_each_load() {
    let b = builder("models-alternate");
    let models = b.dir().join("models");
    // Prefill is slow: the first request's long prompt holds the NPU for seconds while the
    // others queue behind it; their short prompts take a fraction of that.
    write_model(
        &models,
        "alpha",
        &["answer = alpha says hi", "prefill_us_per_token = 50000"],
    );
    let d = b.args(["--background", "none"]).start();
    let send_text = |model: &str, text: &str| {
        let mut c = d.client();
        c.send_post(
            "/api/chat",
            &json!({"model": model, "stream": false,
                    "messages": [{"role": "user", "content": text}]}),
        );
        c
    };
    let send = |model: &str| send_text(model, "Hi");
    let mut first = send_text("alpha", &"word ".repeat(60));
    common::wait_until(Duration::from_secs(30), "the first run", || {
        d.client().get("/health").json()["running"] == true
    });
    let mut waiting = Vec::new();
    for (i, model) in ["bravo", "alpha", "bravo", "alpha", "bravo", "alpha"]
        .into_iter()
        .enumerate()
    {
        waiting.push((model, send(model)));
        common::wait_until(Duration::from_secs(30), "the request to queue", || {
            d.client().get("/health").json()["queue_depth"] == i + 1
        });
    }
    let r = first.read_response();
    assert_eq!(answer(&r.json()), "alpha says hi");
    for (model, mut c) in waiting {
        let r = c.read_response();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(answer(&r.json()), format!("{model} says hi"));
    }
    assert_eq!(inits(&d), ["alpha", "bravo"]);
}

/// The KV-cache re-seat that follows a thinking turn runs on the model that answered: it never
/// loads the default model back.
#[test]
fn a_reseat_runs_on_the_resident_model() {
    let b = builder("models-reseat");
    let models = b.dir().join("models");
    write_model(&models, "alpha", &["thinking = 1"]);
    write_model(&models, "bravo", &["thinking = 1"]);
    let d = b.args(["--chat-template", "qwen3"]).start();
    let (status, body) = ollama_chat(&d, "bravo");
    assert_eq!(status, 200, "{body}");
    common::wait_until(Duration::from_secs(30), "the re-seat", || {
        common::turns::runs(&d).iter().any(common::turns::is_reseat)
    });
    common::wait_until(Duration::from_secs(30), "the runtime to be idle", || {
        d.trace_of("rkllm_run").len() == d.trace_of("run_end").len()
    });
    assert_eq!(inits(&d), ["alpha", "bravo"]);
}

/// Ollama's model management has nothing to act on: each endpoint says where models come from.
#[test]
fn pull_push_create_copy_and_delete_say_models_are_files() {
    let d = builder("models-manage").start();
    for path in ["/api/pull", "/api/push", "/api/create", "/api/copy"] {
        let r = d.client().post_json(path, &json!({"model": "alpha"}));
        assert_eq!(r.status, 501, "{path}");
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("models directory"), "{path}: {error}");
        assert_eq!(r.json().as_object().unwrap().len(), 1, "{path}");
    }
    let body = br#"{"model":"alpha"}"#;
    let mut c = d.client();
    let mut req = format!(
        "DELETE /api/delete HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    c.send_raw(&req);
    let r = c.read_response();
    assert_eq!(r.status, 501);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("cannot delete models"));
    // Nothing was touched.
    assert_eq!(
        d.client().get("/api/tags").json()["models"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// Ollama's `keep_alive`: the model unloads once idle that long after the answer (an engine
/// timer; `/api/ps` shows when), 0 unloads right after it, a negative value never; the next
/// request loads it again.
#[test]
fn keep_alive_unloads_an_idle_model_and_the_next_request_loads_it_again() {
    let d = builder("models-keepalive").start();
    let chat = |model: &str, keep_alive: Value| {
        let r = d.client().post_json(
            "/api/chat",
            &json!({"model": model, "stream": false, "keep_alive": keep_alive,
                    "messages": [{"role": "user", "content": "Hello"}]}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        answer(&r.json())
    };
    let loaded = || d.client().get("/health").json()["loaded"].clone();

    // The default (5m): listed with an expiry minutes away.
    chat("alpha", Value::Null);
    let ps = d.client().get("/api/ps").json();
    assert_eq!(ps["models"][0]["name"], "alpha:latest", "{ps}");
    assert_ne!(
        ps["models"][0]["expires_at"], "2999-12-31T23:59:59Z",
        "{ps}"
    );

    // Negative: never expires.
    chat("alpha", json!(-1));
    let ps = d.client().get("/api/ps").json();
    assert_eq!(
        ps["models"][0]["expires_at"], "2999-12-31T23:59:59Z",
        "{ps}"
    );

    // A test-sized duration: unloaded by the timer once idle.
    assert_eq!(chat("bravo", json!("300ms")), "bravo says hi");
    common::wait_until(Duration::from_secs(30), "bravo to unload", || {
        loaded() == Value::Null
    });
    assert_eq!(d.client().get("/api/ps").json()["models"], json!([]));
    assert_eq!(d.client().get("/health").status, 200);
    assert!((model_metric(&d, "rkllmd_model_unloads_total", "bravo") - 1.0).abs() < f64::EPSILON);
    assert!(d.stderr().contains("model 'bravo' unloaded (keep_alive)"));

    // Loaded again on demand; 0 unloads right after the answer.
    assert_eq!(chat("bravo", json!(0)), "bravo says hi");
    common::wait_until(Duration::from_secs(30), "bravo to unload at once", || {
        loaded() == Value::Null
    });
    assert_eq!(inits(&d), ["alpha", "bravo", "bravo"]);
    assert_eq!(d.trace_of("rkllm_destroy").len(), 3);

    // A value that is not a duration is Ollama's 400.
    let r = d.client().post_json(
        "/api/generate",
        &json!({"model": "alpha", "prompt": "Hi", "stream": false, "keep_alive": "soon"}),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("keep_alive"),
        "{}",
        r.text()
    );
}

/// Ollama's load call (no messages, no prompt) loads the named model without running it; with
/// `keep_alive: 0` it unloads it.
#[test]
fn an_empty_request_loads_the_model_and_with_keep_alive_0_unloads_it() {
    let d = builder("models-loadcall").start();
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "bravo", "messages": [], "stream": false}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["done_reason"], "load");
    assert_eq!(r.json()["model"], "bravo");
    assert_eq!(d.client().get("/health").json()["loaded"], "bravo");
    assert_eq!(
        d.client().get("/api/ps").json()["models"][0]["name"],
        "bravo:latest"
    );
    assert!(d.trace_of("rkllm_run").is_empty(), "nothing was generated");

    // Streamed (Ollama's default): one NDJSON line.
    let r = d
        .client()
        .post_json("/api/generate", &json!({"model": "bravo", "keep_alive": 0}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let line: Value = serde_json::from_slice(r.body.trim_ascii_end()).unwrap();
    assert_eq!(line["done_reason"], "unload");
    assert_eq!(d.client().get("/health").json()["loaded"], Value::Null);
    assert_eq!(d.client().get("/api/ps").json()["models"], json!([]));
    assert_eq!(inits(&d), ["alpha", "bravo"]);
    assert_eq!(d.trace_of("rkllm_destroy").len(), 2);

    // Unloading a model that is not resident leaves the resident one alone.
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "alpha", "messages": [], "stream": false}),
    );
    assert_eq!(r.json()["done_reason"], "load");
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "bravo", "messages": [], "stream": false, "keep_alive": "0s"}),
    );
    assert_eq!(r.json()["done_reason"], "unload");
    assert_eq!(d.client().get("/health").json()["loaded"], "alpha");

    // A model that fails to load: the load call says so.
    let r = d.client().post_json(
        "/api/chat",
        &json!({"model": "broken", "messages": [], "stream": false}),
    );
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("'broken'"));
}
