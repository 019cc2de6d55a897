//! `board/fleet/`: the Prometheus scrape config passes `promtool check config`, the Grafana
//! dashboard's queries are valid PromQL (`promtool check rules` on them) over metric names a
//! real daemon serves, and the dashboard has the structure of Grafana's dashboard JSON model.
//! Grafana itself is not in Debian and apt.grafana.com was not reachable from the dev machine,
//! so the dashboard is checked against the model's documented fields rather than loaded.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::board;
use common::{repo_path, Daemon, TempDir};
use serde_json::{json, Value};

/// promtool, from Debian's `prometheus` package when missing; the test fails if it cannot be.
fn promtool() -> &'static str {
    if Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return "promtool";
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "promtool is missing and 'apt-get install prometheus' failed"
    );
    "promtool"
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run promtool");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path("board/fleet/grafana-dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

fn panels(d: &Value) -> &Vec<Value> {
    d["panels"].as_array().expect("panels")
}

/// Every query of the dashboard: the panels' and the template variables'.
fn exprs(d: &Value) -> Vec<String> {
    let mut out: Vec<String> = panels(d)
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().expect("a target's expr").to_owned())
        .collect();
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

/// The `rkllmd_*` names in a query.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("rkllmd_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// Grafana's variables as Prometheus would see them once Grafana has substituted them.
fn substituted(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$board", ".*")
}

#[test]
fn the_scrape_config_passes_promtool() {
    // promtool checks that the key file exists; it is named relative to the config.
    let dir = TempDir::new("fleet-prom");
    std::fs::copy(
        repo_path("board/fleet/prometheus.yml"),
        dir.path().join("prometheus.yml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("rkllmd.key"), "s3cret\n").unwrap();
    run(Command::new(promtool())
        .args(["check", "config"])
        .arg(dir.path().join("prometheus.yml")));
}

#[test]
fn the_dashboard_queries_are_valid_promql() {
    let d = dashboard();
    let dir = TempDir::new("fleet-rules");
    // Every panel query as a recording rule: promtool parses each expression.
    let rules: Vec<Value> = exprs(&d)
        .iter()
        .filter(|e| !e.starts_with("label_values("))
        .enumerate()
        .map(|(i, e)| json!({"record": format!("rkllmd_dashboard:q{i}"), "expr": substituted(e)}))
        .collect();
    assert!(rules.len() >= 10, "{rules:?}");
    let file = dir.path().join("rules.json");
    // YAML is a superset of JSON.
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    run(Command::new(promtool()).args(["check", "rules"]).arg(&file));
}

#[test]
fn every_metric_the_dashboard_uses_is_in_a_daemons_metrics() {
    let tree = TempDir::new("fleet-tree");
    board::rk3588(tree.path());
    // rkllmd renders the template, so the KV cache is known after a chat that ends at its end
    // of sequence (both ABIs).
    let model = common::write_model(
        tree.path(),
        "short",
        &["answer_tokens_min = 4", "answer_tokens_max = 4"],
    );
    let d = Daemon::builder("fleet-metrics")
        .model(model)
        .args(["--chat-template", "qwen2.5"])
        .args(["--root", &tree.path().display().to_string()])
        .start();
    let r = d.client().post_json(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = d.client().get("/metrics").text();
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let dash = dashboard();
    let mut used = BTreeSet::new();
    for expr in exprs(&dash) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "a query with no rkllmd metric: {expr}");
        used.extend(names);
    }
    for name in &used {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
            .unwrap_or(name);
        assert!(
            families.contains(family),
            "the dashboard uses {name}, which /metrics does not serve:\n{text}"
        );
    }
    // What the issue asks the dashboard to show, per board.
    for wanted in [
        "rkllmd_tokens_per_second",
        "rkllmd_ttft_seconds_bucket",
        "rkllmd_queue_depth",
        "rkllmd_board_npu_load_ratio",
        "rkllmd_board_temperature_celsius",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
}

fn is_int(v: &Value) -> bool {
    v.as_u64().is_some()
}

#[test]
fn the_dashboard_follows_grafanas_dashboard_model() {
    let d = dashboard();
    for key in ["uid", "title"] {
        assert!(d[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    assert!(
        d["uid"].as_str().unwrap().len() <= 40,
        "Grafana caps uids at 40 characters"
    );
    assert!(is_int(&d["schemaVersion"]) && d["schemaVersion"].as_u64() >= Some(36));
    assert!(d["time"]["from"].is_string() && d["time"]["to"].is_string());
    assert!(
        d["id"].is_null(),
        "an importable dashboard has no database id"
    );

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    let source = var("datasource").expect("a datasource variable");
    assert_eq!(
        (&source["type"], &source["query"]),
        (&json!("datasource"), &json!("prometheus"))
    );
    let board = var("board").expect("a board variable");
    assert_eq!(board["type"], "query");
    assert_eq!(board["datasource"]["uid"], "${datasource}");

    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    let kinds = [
        "timeseries",
        "stat",
        "gauge",
        "bargauge",
        "table",
        "row",
        "text",
    ];
    for p in panels(&d) {
        let title = p["title"].as_str().expect("a panel title");
        assert!(
            ids.insert(p["id"].as_u64().expect("a panel id")),
            "id of {title} repeats"
        );
        assert!(
            kinds.contains(&p["type"].as_str().unwrap_or("")),
            "{title}: type"
        );
        let g = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(is_int(&g[k]), "{title}: gridPos.{k}");
        }
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "{title}: outside the 24-column grid"
        );
        // No two panels cover the same grid cell.
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId"
            );
            assert!(t["expr"].is_string(), "{title}: expr");
            assert!(
                t["legendFormat"]
                    .as_str()
                    .is_some_and(|l| l.contains("{{board}}")),
                "{title}: every series names its board"
            );
        }
    }
}

#[test]
fn metric_names_are_found_in_queries() {
    assert_eq!(
        metric_names("histogram_quantile(0.5, sum by (le) (rate(rkllmd_ttft_seconds_bucket[1m])))"),
        ["rkllmd_ttft_seconds_bucket"]
    );
    assert_eq!(
        metric_names("rkllmd_queue_depth + rkllmd_running{board=~\".*\"}"),
        ["rkllmd_queue_depth", "rkllmd_running"]
    );
    assert!(metric_names("up").is_empty());
}
