//! `cargo bench`: prints the performance figures of the runtime layer and the daemon core, each
//! with its target. Figures, not assertions: this machine is shared and noisy; compare ratios
//! within one run.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "daemon/models.rs"]
mod models;
#[path = "daemon/vision.rs"]
mod vision;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fast_model, write_model, Daemon, TempDir};
use rkllmd::engine::{Engine, EngineConfig, Event, Job};
use rkllmd::runtime::{Flow, InitConfig, RunRequest, Runtime, Sampling};

const LONG_ANSWER: u32 = 200_000;

fn row(what: &str, value: String, target: &str) {
    println!("| {what:<50} | {value:>18} | {target:<28} |");
}

fn init(model: std::path::PathBuf) -> InitConfig {
    InitConfig {
        library: rkllmd::runtime::DEFAULT_LIBRARY.into(),
        model_path: model,
        max_context_len: 1_000_000,
        max_new_tokens: LONG_ANSWER,
        sampling: Sampling::default(),
        base_domain_id: 0,
        cpu_mask: None,
        image_tags: None,
    }
}

/// One run of `model` straight from the simulator into a Rust closure that does nothing:
/// (callbacks, wall time, this thread's CPU time). The simulator calls back on the thread that
/// called `rkllm_run` and does its work there, so this thread's CPU clock holds all of the run.
fn simulator_run(model: &std::path::Path) -> (u64, Duration, Duration) {
    let mut rt = Runtime::init(&init(model.to_owned())).expect("init");
    let req = RunRequest {
        prompt: "bench",
        role: rkllmd::runtime::Role::User,
        enable_thinking: false,
        keep_history: false,
        max_new_tokens: None,
        sampling: None,
        save_prompt_cache: None,
        lora: None,
    };
    let mut n = 0u64;
    let (t, cpu) = (Instant::now(), thread_cpu());
    rt.run(&req, &mut |_| {
        n += 1;
        Flow::Continue
    })
    .expect("run");
    (n, t.elapsed(), thread_cpu().saturating_sub(cpu))
}

/// Callbacks per second straight from the simulator into a Rust closure that does nothing.
fn simulator_rate(model: &std::path::Path) -> f64 {
    let (n, wall, _) = simulator_run(model);
    n as f64 / wall.as_secs_f64()
}

fn timespec(ts: nix::sys::time::TimeSpec) -> Duration {
    Duration::new(
        u64::try_from(ts.tv_sec()).unwrap_or(0),
        u32::try_from(ts.tv_nsec()).unwrap_or(0),
    )
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    timespec(nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap())
}

/// CPU time of every thread of process `pid`, living or exited, in nanoseconds: its process
/// CPU clock, the same sum as utime + stime.
fn process_cpu(pid: u32) -> Duration {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    let clock = nix::time::ClockId::pid_cpu_clock_id(pid).expect("the daemon's CPU clock");
    timespec(nix::time::clock_gettime(clock).unwrap())
}

/// utime + stime of process `pid` (all threads) from /proc/PID/stat: clock ticks, 10 ms each.
fn proc_stat_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces, start
    // with field 3; utime and stime are fields 14 and 15.
    let fields: Vec<u64> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf only reads a configuration value.
    let hz =
        u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).expect("sysconf(_SC_CLK_TCK)");
    Duration::from_nanos((fields[11] + fields[12]) * 1_000_000_000 / hz)
}

/// Tokens per second through the engine: inference thread, channel, waker, a mio loop.
fn engine_rate(model: &std::path::Path) -> f64 {
    let mut poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(1)).unwrap());
    let cfg = EngineConfig {
        init: init(model.to_owned()),
        queue_size: 1,
        queue_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(600),
        abort_grace: Duration::from_secs(5),
        raw_template: false,
        models: Vec::new(),
        keep_alive: rkllmd::engine::KeepAlive::Forever,
        kv_cache_reuse: true,
        snapshots: None,
        residency: rkllmd::engine::Residency::default(),
        vision: rkllmd::engine::Vision::default(),
        background_hold: Duration::ZERO,
    };
    let mut engine = Engine::start(cfg, waker).unwrap();
    let mut events = mio::Events::with_capacity(8);
    let mut out = Vec::new();
    let mut tokens = 0u64;
    let mut started = None;
    let mut submitted = false;
    loop {
        poll.poll(&mut events, None).unwrap();
        engine.on_wake(Instant::now(), &mut out);
        for ev in out.drain(..) {
            match ev {
                Event::Ready { .. } => {
                    engine.submit(Job::new(1, "bench"), Instant::now()).unwrap();
                    submitted = true;
                }
                Event::Started { .. } => started = Some(Instant::now()),
                Event::Text { .. } => tokens += 1,
                Event::Finished { finish, .. } => {
                    let secs = started.unwrap().elapsed().as_secs_f64();
                    return f64::from(
                        finish
                            .generated_tokens
                            .max(u32::try_from(tokens).unwrap_or(u32::MAX)),
                    ) / secs;
                }
                other => panic!("unexpected {other:?} (submitted {submitted})"),
            }
        }
    }
}

/// Context switches of every thread of the process: each is a wakeup.
fn switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for l in status.lines() {
            if l.starts_with("voluntary_ctxt_switches:")
                || l.starts_with("nonvoluntary_ctxt_switches:")
            {
                total += l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = TempDir::new("bench");
    // `cargo bench -- hostile-stops`: that group of rows alone.
    if std::env::args().any(|a| a == "hostile-stops") {
        println!("| {:<50} | {:>18} | {:<28} |", "measure", "value", "target");
        println!("|{:-<52}|{:-<20}|{:-<30}|", "", "", "");
        hostile_stop_rows(dir.path());
        long_conversation_rows(dir.path());
        return;
    }
    // `cargo bench -- background`: the Open WebUI replay and the interactive-first rows alone.
    if std::env::args().any(|a| a == "background") {
        println!("| {:<50} | {:>18} | {:<28} |", "measure", "value", "target");
        println!("|{:-<52}|{:-<20}|{:-<30}|", "", "", "");
        background_rows(dir.path());
        priority_rows();
        return;
    }
    // `cargo bench -- models`: the rows of several models alone.
    if std::env::args().any(|a| a == "models") {
        println!("| {:<50} | {:>18} | {:<28} |", "measure", "value", "target");
        println!("|{:-<52}|{:-<20}|{:-<30}|", "", "", "");
        models::model_rows(dir.path());
        return;
    }
    // `cargo bench -- vision`: the image rows alone.
    if std::env::args().any(|a| a == "vision") {
        println!("| {:<50} | {:>18} | {:<28} |", "measure", "value", "target");
        println!("|{:-<52}|{:-<20}|{:-<30}|", "", "", "");
        vision::rows(row);
        vision::binary_size_row(row);
        return;
    }
    // `cargo bench -- multi-turn`: the multi-turn TTFT rows alone.
    if std::env::args().any(|a| a == "multi-turn") {
        println!("| {:<50} | {:>18} | {:<28} |", "measure", "value", "target");
        println!("|{:-<52}|{:-<20}|{:-<30}|", "", "", "");
        multi_turn_rows(dir.path());
        background_rows(dir.path());
        return;
    }
    let long = write_model(
        dir.path(),
        "long",
        &[
            &format!("answer_tokens_min = {LONG_ANSWER}"),
            &format!("answer_tokens_max = {LONG_ANSWER}"),
        ],
    );
    println!("| {:<50} | {:>18} | {:<28} |", "measure", "value", "target");
    println!("|{:-<52}|{:-<20}|{:-<30}|", "", "", "");

    let sim = simulator_rate(&long);
    row(
        "simulator callback rate (fast, no-op sink)",
        format!("{sim:.0} tok/s"),
        "-",
    );
    let eng = engine_rate(&long);
    row(
        "engine end-to-end rate (thread+channel+waker)",
        format!("{eng:.0} tok/s"),
        "> 100000 tok/s",
    );
    let per_token_ns = (1e9 / eng - 1e9 / sim).max(0.0);
    row(
        "engine's own cost per token",
        format!("{per_token_ns:.0} ns"),
        "invisible next to 60 ms",
    );

    // Start to ready: spawn until the readiness newline, median of 5.
    let mut starts: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let d = Daemon::start("bench-start");
            let took = t.elapsed();
            drop(d);
            took
        })
        .collect();
    starts.sort();
    row(
        "start to ready (fast.rkllm, median of 5)",
        format!("{:.1} ms", starts[2].as_secs_f64() * 1e3),
        "-",
    );

    let d = Daemon::builder("bench-idle")
        .args(["--max-connections", "1100"])
        .model(fast_model())
        .start();
    let pid = d.child.id();
    std::thread::sleep(Duration::from_millis(300));
    row(
        "idle RSS (fast.rkllm)",
        format!("{} KiB", d.rss_kib()),
        "< 4096 KiB",
    );
    let before = switches(pid);
    std::thread::sleep(Duration::from_secs(3));
    let wakeups = (switches(pid) - before) as f64 / 3.0;
    row(
        "idle wakeups per second (all threads)",
        format!("{wakeups:.2}/s"),
        "0/s",
    );

    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if soft < 2200 {
        nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_NOFILE,
            hard.min(4096),
            hard,
        )
        .unwrap();
    }
    let idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    let mut c = d.client();
    common::wait_until(Duration::from_secs(10), "1000 idle connections", || {
        c.get("/health").json()["connections"] == 1001
    });
    row(
        "RSS with 1000 idle connections",
        format!("{} KiB", d.rss_kib()),
        "-",
    );
    let mut lat: Vec<Duration> = (0..3000)
        .map(|_| {
            let t = Instant::now();
            let r = c.get("/health");
            let took = t.elapsed();
            assert_eq!(r.status, 200);
            took
        })
        .collect();
    lat.sort();
    row(
        "/health p50 with 1000 open connections",
        format!("{:.1} us", percentile(&lat, 0.5).as_secs_f64() * 1e6),
        "-",
    );
    row(
        "/health p99 with 1000 open connections",
        format!("{:.1} us", percentile(&lat, 0.99).as_secs_f64() * 1e6),
        "-",
    );
    // Now each of the 1000 asks once: every connection has had its buffers in use.
    for s in &idle {
        let mut c = common::Client::from_stream(s.try_clone().unwrap());
        assert_eq!(c.get("/health").status, 200);
    }
    row(
        "RSS with 1000 connections, each after a /health",
        format!("{} KiB", d.rss_kib()),
        "-",
    );
    drop(idle);

    // One stream end to end over the socket: tokens per second a client receives.
    let d = Daemon::builder("bench-stream")
        .model(long.clone())
        .args([
            "--max-new-tokens",
            "200000",
            "--max-context-len",
            "1048576",
            "--output-cap-bytes",
            "67108864",
        ])
        .start();
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let body =
        serde_json::json!({"stream": true, "messages": [{"role": "user", "content": "bench"}]})
            .to_string();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut c = common::Client::from_stream(s);
    let t = Instant::now();
    let r = c.read_response();
    let secs = t.elapsed().as_secs_f64();
    let events = common::client::sse_data(&r.body).len().saturating_sub(3);
    row(
        "one stream over the socket (SSE events)",
        format!("{:.0} tok/s", events as f64 / secs),
        "> 100000 tok/s",
    );
    cpu_per_token_rows(dir.path());
    latency_rows(dir.path());
    abort_rows(dir.path());
    multi_turn_rows(dir.path());
    background_rows(dir.path());
    priority_rows();
    hostile_stop_rows(dir.path());
    long_conversation_rows(dir.path());
    models::model_rows(dir.path());
    vision::rows(row);
    vision::binary_size_row(row);
}

/// The user's time to first token at demo speed (demo.rkllm: Qwen2.5-1.5B on RK3588, an abort
/// during the prefill taking effect 1.27 s late as on boards), alone and with a title request
/// as Open WebUI sends one (not streamed, long, up to 1,000 tokens) ~100 ms before it: served
/// interactive first (the default, the title held 250 ms on the free NPU), interactive first
/// without the hold (`--background-hold 0`: the title starts and is preempted) and in arrival
/// order (`--background none`). Median of 3, each with a new conversation; the title request
/// is answered before the next round.
fn priority_rows() {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut medians = Vec::new();
    for (args, with_title) in [
        (&[][..], false),
        (&[][..], true),
        (&["--background-hold", "0"][..], true),
        (&["--background", "none"][..], true),
    ] {
        let d = Daemon::builder("bench-background")
            .model(common::demo_model())
            .args(args.iter().copied())
            .start();
        let mut ttfts: Vec<Duration> = (0..3)
            .map(|round| user_ttft(&d, round, with_title))
            .collect();
        ttfts.sort();
        medians.push(ttfts[1]);
    }
    let (alone, first, no_hold, fifo) = (medians[0], medians[1], medians[2], medians[3]);
    row(
        "user TTFT alone (demo speed)",
        format!("{:.0} ms", ms(alone)),
        "-",
    );
    row(
        "  a title 100 ms before: first/no hold/FIFO",
        format!("{:.0}/{:.0}/{:.0} ms", ms(first), ms(no_hold), ms(fifo)),
        "-",
    );
    row(
        "  user TTFT with a title / alone (default)",
        format!("{:.2}x", ms(first) / ms(alone)),
        "within 1.5x",
    );
    row(
        "  the same, no hold / FIFO",
        format!(
            "{:.2}x / {:.2}x",
            ms(no_hold) / ms(alone),
            ms(fifo) / ms(alone)
        ),
        "-",
    );
}

/// One round: (a title request, then 100 ms later) the user's streamed first turn; the time
/// from sending the user's request to its first content.
fn user_ttft(d: &Daemon, round: usize, with_title: bool) -> Duration {
    let chat = format!(
        "USER: what can I run on the NPU of my board, round {round}? ASSISTANT: small models, \
         quantised to w8a8, answer at a few tokens a second. "
    );
    let title = serde_json::json!({
        "stream": false,
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": format!(
            "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat \
             history.\n### Guidelines:\n- The title should clearly represent the main theme or \
             subject of the conversation.\n- Use emojis that enhance understanding of the \
             topic, but avoid quotation marks or special formatting.\n- Write the title in the \
             chat's primary language; default to English if multilingual.\n- Prioritize \
             accuracy over excessive creativity; keep it clear and simple.\n### Output:\nJSON \
             format: {{ \"title\": \"your concise title here\" }}\n### Chat History:\n\
             <chat_history>\n{}</chat_history>",
            chat.repeat(4)
        )}],
    });
    let mut background = d.client();
    if with_title {
        background.send_post("/v1/chat/completions", &title);
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut c = d.client();
    let t = Instant::now();
    c.send_post(
        "/v1/chat/completions",
        &serde_json::json!({"stream": true, "messages": [
            {"role": "user", "content": format!("Round {round}: what can I run on the NPU of my board?")}
        ]}),
    );
    c.read_head().unwrap();
    let mut first = None;
    while let Some(chunk) = c.read_chunk() {
        for data in common::client::sse_data(&chunk) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) else {
                continue;
            };
            if v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
            {
                first.get_or_insert_with(|| t.elapsed());
            }
        }
    }
    if with_title {
        assert_eq!(background.read_response().status, 200);
    }
    first.expect("an answer")
}

/// The daemon's CPU per streamed token at demo speed, the simulator's own share taken out.
///
/// One stream of `TOKENS` tokens at demo speed (one per 59.88 ms, demo.rkllm's decode delay;
/// no prefill delay, which costs sleep, not CPU) from a daemon to this process: the daemon's
/// CPU over it is the difference of its process CPU clock (every thread: event loop, engine,
/// the simulator's calls on the inference thread) read before the request and after the last
/// byte plus a moment for the generation to end. At the same time a thread of this process
/// drives the simulator directly with the same model and a no-op callback and reads its own
/// thread CPU clock around the run: the simulator's CPU for the same tokens, its 5 ms sleep
/// slices included. (daemon - simulator) / tokens is what rkllmd itself costs per token.
/// CPU clocks, not wall time: at demo speed nearly all of the 15 s is sleep. The process CPU
/// clock is utime + stime of /proc/PID/stat in nanoseconds; /proc's own figure, in 10 ms
/// ticks, is printed beside it as a check, too coarse to carry the result.
fn cpu_per_token_rows(dir: &std::path::Path) {
    const TOKENS: u64 = 250;
    let model = write_model(
        dir,
        "demo-cpu",
        &[
            &format!("answer_tokens_min = {TOKENS}"),
            &format!("answer_tokens_max = {TOKENS}"),
            "decode_us_per_token = 59880",
        ],
    );
    let d = Daemon::builder("bench-cpu")
        .model(model.clone())
        .args(["--max-new-tokens", "1000"])
        .start();
    let pid = d.child.id();
    let mut c = d.client();
    let sim = std::thread::spawn(move || simulator_run(&model));
    let floor = std::thread::spawn(|| wakeup_cpu_floor(TOKENS, Duration::from_micros(59_880)));
    let (cpu0, stat0) = (process_cpu(pid), proc_stat_cpu(pid));
    c.send_post(
        "/v1/chat/completions",
        &serde_json::json!({"stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "bench"}]}),
    );
    assert_eq!(c.read_head().unwrap().0, 200);
    let mut body = Vec::new();
    while let Some(chunk) = c.read_chunk() {
        body.extend_from_slice(&chunk);
    }
    std::thread::sleep(Duration::from_millis(100));
    let (cpu1, stat1) = (process_cpu(pid), proc_stat_cpu(pid));
    let (sim_tokens, _, sim_cpu) = sim.join().unwrap();
    let floor = floor.join().unwrap();
    let tokens = common::client::sse_data(&body)
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find_map(|v| v["usage"]["completion_tokens"].as_u64())
        .expect("a usage chunk");
    assert_eq!(
        (tokens, sim_tokens),
        (TOKENS, TOKENS),
        "tokens streamed, simulated"
    );
    let us = |cpu: Duration| cpu.as_secs_f64() * 1e6 / TOKENS as f64;
    let (daemon, simulator) = (us(cpu1.saturating_sub(cpu0)), us(sim_cpu));
    row(
        "daemon CPU per streamed token (demo speed)",
        format!("{:.1} us", daemon - simulator),
        "<= 20 us",
    );
    row(
        "  daemon process / simulator alone, per token",
        format!("{daemon:.1} / {simulator:.1} us"),
        "-",
    );
    row(
        "  daemon process from /proc/PID/stat (10 ms ticks)",
        format!("{:.0} us", us(stat1.saturating_sub(stat0))),
        "-",
    );
    row(
        "  same wakeup and write with no work, CPU",
        format!("{:.1} us", floor.as_secs_f64() * 1e6),
        "- (this machine's floor)",
    );
    row(
        "  daemon CPU per token / the floor",
        format!("{:.2}x", (daemon - simulator) / (floor.as_secs_f64() * 1e6)),
        "-",
    );
}

/// The CPU a token costs any design with one event loop woken per token, on this machine: a
/// producer thread that waits out the token period and wakes a mio poll (as the inference
/// thread does after the runtime's callback), and a loop thread that wakes and writes an
/// event's worth of bytes to a Unix socket that a third thread reads (the client, not
/// counted). The figure is the loop thread's CPU plus the producer's CPU in `wake`, per token.
fn wakeup_cpu_floor(tokens: u64, period: Duration) -> Duration {
    use std::io::Read;
    let (mut tx, mut rx) = UnixStream::pair().unwrap();
    let mut poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let producer = {
        let waker = Arc::clone(&waker);
        std::thread::spawn(move || {
            let mut in_wake = Duration::ZERO;
            for _ in 0..tokens {
                std::thread::sleep(period);
                let t = thread_cpu();
                waker.wake().unwrap();
                in_wake += thread_cpu().saturating_sub(t);
            }
            in_wake
        })
    };
    let event = [b'x'; 170];
    let reader = std::thread::spawn(move || {
        let mut b = [0u8; 170];
        for _ in 0..tokens {
            rx.read_exact(&mut b).unwrap();
        }
    });
    let mut events = mio::Events::with_capacity(4);
    let cpu = thread_cpu();
    for _ in 0..tokens {
        poll.poll(&mut events, None).unwrap();
        tx.write_all(&event).unwrap();
    }
    let looped = thread_cpu().saturating_sub(cpu);
    let in_wake = producer.join().unwrap();
    reader.join().unwrap();
    (looped + in_wake) / u32::try_from(tokens).unwrap()
}

/// `CLOCK_MONOTONIC` in microseconds: the simulator's trace clock.
fn monotonic_us() -> i64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    ts.tv_sec() * 1_000_000 + ts.tv_nsec() / 1000
}

/// Latency added between the runtime's token callback and the bytes reaching the client, at
/// demo speed; and the time from a request's arrival to the runtime's run call.
fn latency_rows(dir: &std::path::Path) {
    let model = write_model(
        dir,
        "demo-speed",
        &[
            "answer_tokens_min = 60",
            "answer_tokens_max = 60",
            "decode_us_per_token = 59880",
            "vocabulary = alpha beta gamma delta",
        ],
    );
    let d = Daemon::builder("bench-latency")
        .model(model)
        .start_with_env("RKLLM_SIM_TRACE_TOKENS", "1");
    let mut c = d.client();
    c.send_post(
        "/v1/chat/completions",
        &serde_json::json!({"stream": true, "messages": [{"role": "user", "content": "bench"}]}),
    );
    c.read_head().unwrap();
    let mut arrivals = Vec::new();
    while let Some(chunk) = c.read_chunk() {
        let at = monotonic_us();
        let text = String::from_utf8_lossy(&chunk).into_owned();
        if text.contains("\"content\":\"") && !text.contains("\"content\":\"\"") {
            arrivals.push(at);
        }
    }
    let callbacks: Vec<i64> = d
        .trace_of("callback")
        .iter()
        .filter(|l| l["state"] == "normal")
        .map(|l| l["t_us"].as_i64().unwrap())
        .collect();
    assert_eq!(
        callbacks.len(),
        arrivals.len(),
        "one SSE event per text callback"
    );
    let mut added: Vec<Duration> = callbacks
        .iter()
        .zip(&arrivals)
        .map(|(cb, at)| Duration::from_micros(u64::try_from(at - cb).unwrap_or(0)))
        .collect();
    added.sort();
    row(
        "per token: callback to client bytes p50 (demo)",
        format!("{:.1} us", percentile(&added, 0.5).as_secs_f64() * 1e6),
        "-",
    );
    row(
        "per token: callback to client bytes p99 (demo)",
        format!("{:.1} us", percentile(&added, 0.99).as_secs_f64() * 1e6),
        "p99 < 100 us",
    );
    let (floor50, floor99) = wakeup_floor();
    row(
        "  same two wakeups with no work, p50/p99",
        format!(
            "{:.0}/{:.0} us",
            floor50.as_secs_f64() * 1e6,
            floor99.as_secs_f64() * 1e6
        ),
        "- (this machine's floor)",
    );
    row(
        "  rkllmd's own share of p50 (minus floor)",
        format!(
            "{:.1} us",
            (percentile(&added, 0.5).as_secs_f64() - floor50.as_secs_f64()).max(0.0) * 1e6
        ),
        "-",
    );

    // Non-streamed requests are background ones, held on a free NPU for a stream to go first
    // (250 ms by default): without the hold, what is left is the daemon's own dispatch time.
    let d = Daemon::builder("bench-dispatch")
        .model(fast_model())
        .args(["--background-hold", "0"])
        .start();
    let mut c = d.client();
    let mut waits = Vec::new();
    for i in 0..200 {
        let sent = monotonic_us();
        let r = c.post_json("/v1/chat/completions", &serde_json::json!({"max_tokens": 1, "messages": [{"role": "user", "content": format!("q{i}")}]}));
        assert_eq!(r.status, 200);
        let run = d.trace_of("rkllm_run").pop().unwrap()["t_us"]
            .as_i64()
            .unwrap();
        waits.push(Duration::from_micros(
            u64::try_from(run - sent).unwrap_or(0),
        ));
    }
    waits.sort();
    row(
        "TTFT overhead: request to rkllm_run p50",
        format!("{:.1} us", percentile(&waits, 0.5).as_secs_f64() * 1e6),
        "-",
    );
    row(
        "TTFT overhead: request to rkllm_run p99",
        format!("{:.1} us", percentile(&waits, 0.99).as_secs_f64() * 1e6),
        "-",
    );
}

/// A client hangs up mid-stream: the time from its hangup to the runtime's `rkllm_abort` call
/// and to the run's end, from the simulator trace's `CLOCK_MONOTONIC` stamps; 50 aborts at demo
/// speed (one token per 60 ms) and at fast.rkllm speed (no delay, an answer too long to end
/// by itself).
fn abort_rows(dir: &std::path::Path) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (speed, decode_us) in [("demo", 59_880), ("fast", 0)] {
        let model = write_model(
            dir,
            &format!("abort-{speed}"),
            &[
                "answer_tokens_min = 1000000",
                "answer_tokens_max = 1000000",
                &format!("decode_us_per_token = {decode_us}"),
            ],
        );
        // Neither the context, the token cap nor the output cap may end the run before the
        // hangup does.
        let d = Daemon::builder("bench-abort")
            .model(model)
            .args([
                "--max-new-tokens",
                "1000000",
                "--max-context-len",
                "1048576",
                "--output-cap-bytes",
                "1073741824",
            ])
            .start();
        let (mut to_abort, mut to_end) = (Vec::new(), Vec::new());
        for i in 0..50 {
            let mut c = d.client();
            c.send_post(
                "/v1/chat/completions",
                &serde_json::json!({"stream": true, "messages": [{"role": "user", "content": format!("abort {i}")}]}),
            );
            assert_eq!(c.read_head().unwrap().0, 200);
            // Mid-stream: after the first piece of the answer, not just the role chunk.
            while !String::from_utf8_lossy(&c.read_chunk().unwrap()).contains("\"content\":\"") {}
            let hangup = monotonic_us();
            drop(c);
            let (mut abort, mut end) = (None, None);
            common::wait_until(Duration::from_secs(5), "the abort in the trace", || {
                let trace = d.trace();
                let nth = |f: &str| trace.iter().filter(|l| l["fn"] == f).nth(i).cloned();
                (abort, end) = (nth("rkllm_abort"), nth("run_end"));
                abort.is_some() && end.is_some()
            });
            let (abort, end) = (abort.unwrap(), end.unwrap());
            // The engine calls rkllm_abort and also pauses from the next callback: either ends it.
            assert!(
                end["reason"] == "abort" || end["reason"] == "pause",
                "the hangup, not the answer, ended run {i}: {end}"
            );
            let since = |l: &serde_json::Value| {
                Duration::from_micros(
                    u64::try_from(l["t_us"].as_i64().unwrap() - hangup).unwrap_or(0),
                )
            };
            to_abort.push(since(&abort));
            to_end.push(since(&end));
        }
        to_abort.sort();
        to_end.sort();
        row(
            &format!("hangup to rkllm_abort p50/p99 ({speed} speed)"),
            format!(
                "{:.2} / {:.2} ms",
                ms(percentile(&to_abort, 0.5)),
                ms(percentile(&to_abort, 0.99))
            ),
            "-",
        );
        row(
            &format!("hangup to the run's end p50/p99 ({speed} speed)"),
            format!(
                "{:.2} / {:.2} ms",
                ms(percentile(&to_end, 0.5)),
                ms(percentile(&to_end, 0.99))
            ),
            "-",
        );
    }
}

/// The floor under "callback to client bytes" on this machine: the same two cross-thread
/// wakeups (an eventfd into a sleeping poll loop, then a Unix socket into a blocked reader) with
/// no work in between, at the same 60 ms spacing.
fn wakeup_floor() -> (Duration, Duration) {
    use std::io::Read;
    let (mut tx, mut rx) = UnixStream::pair().unwrap();
    let mut poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
    let stamps = Arc::new(std::sync::Mutex::new(Vec::new()));
    let producer = {
        let (waker, stamps) = (Arc::clone(&waker), Arc::clone(&stamps));
        std::thread::spawn(move || {
            for _ in 0..60 {
                std::thread::sleep(Duration::from_micros(59_880));
                stamps.lock().unwrap().push(monotonic_us());
                waker.wake().unwrap();
            }
        })
    };
    let reader = std::thread::spawn(move || {
        let mut arrivals = Vec::new();
        let mut b = [0u8; 1];
        while arrivals.len() < 60 && rx.read_exact(&mut b).is_ok() {
            arrivals.push(monotonic_us());
        }
        arrivals
    });
    let mut events = mio::Events::with_capacity(4);
    for _ in 0..60 {
        poll.poll(&mut events, None).unwrap();
        tx.write_all(b"x").unwrap();
    }
    producer.join().unwrap();
    let arrivals = reader.join().unwrap();
    let stamps = stamps.lock().unwrap().clone();
    let mut d: Vec<Duration> = stamps
        .iter()
        .zip(&arrivals)
        .map(|(s, a)| Duration::from_micros(u64::try_from(a - s).unwrap_or(0)))
        .collect();
    d.sort();
    (percentile(&d, 0.5), percentile(&d, 0.99))
}

/// Issue 5's figure: time to first token per turn of a 10-turn conversation at demo speed,
/// with KV-cache reuse and without; and issue 19's: the same for a thinking model (Qwen3-0.6B's
/// speeds, the `qwen3` preset read from the file's architecture, thinking on), where the first
/// token is the first reasoning or content delta and each answer goes back as content only,
/// as clients send it. Then issue 19's done-means, turn 8 against turn 1 with the shipped demo
/// models: `demo.rkllm` with no options, `demo-qwen3-think.rkllm` under `qwen3` (thinking), and
/// `demo.rkllm` under the runtime's own template.
fn multi_turn_rows(dir: &std::path::Path) {
    let model = write_model(
        dir,
        "demo-turns",
        &[
            "answer_tokens_min = 20",
            "answer_tokens_max = 20",
            "prefill_us_per_token = 2950",
            "decode_us_per_token = 59880",
        ],
    );
    let mut ttft = Vec::new();
    for reuse in ["true", "false"] {
        let d = Daemon::builder("bench-turns")
            .model(model.clone())
            .args(["--chat-template", "qwen2.5", "--kv-cache-reuse", reuse])
            .start();
        ttft.push(turn_ttfts(&d, 10, Duration::ZERO));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for turn in [1usize, 2, 5, 10] {
        row(
            &format!("TTFT turn {turn:>2}: reuse / no reuse (demo speed)"),
            format!(
                "{:.0} / {:.0} ms",
                ms(ttft[0][turn - 1]),
                ms(ttft[1][turn - 1])
            ),
            if turn == 10 {
                "reuse: within 1.5x of turn 1"
            } else {
                "-"
            },
        );
    }
    row(
        "TTFT turn 10 / turn 1 with reuse",
        format!("{:.2}x", ms(ttft[0][9]) / ms(ttft[0][0])),
        "< 1.5x",
    );

    // Speeds as in vendor/rkllm-sim/models/demo-qwen3-think.rkllm, answers of a fixed length.
    let thinking = write_model(
        dir,
        "think-turns",
        &[
            "general.architecture = qwen3",
            "thinking = 1",
            "answer_tokens_min = 20",
            "answer_tokens_max = 20",
            "prefill_us_per_token = 1555",
            "decode_us_per_token = 30386",
        ],
    );
    let d = Daemon::builder("bench-think-turns").model(thinking).start();
    let think = turn_ttfts(&d, 10, Duration::ZERO);
    for turn in [1usize, 2, 5, 10] {
        row(
            &format!("TTFT turn {turn:>2}: thinking model (qwen3, auto)"),
            format!("{:.0} ms", ms(think[turn - 1])),
            if turn == 10 {
                "within 1.5x of turn 1"
            } else {
                "-"
            },
        );
    }
    row(
        "TTFT turn 10 / turn 1, thinking model",
        format!("{:.2}x", ms(think[9]) / ms(think[0])),
        "< 1.5x",
    );

    // Issue 19's done-means: the shipped demo models as a newcomer starts them, 8 turns.
    let demo = "vendor/rkllm-sim/models/demo.rkllm";
    let think = "vendor/rkllm-sim/models/demo-qwen3-think.rkllm";
    for (what, model, args) in [
        ("demo.rkllm, no options", demo, &[][..]),
        (
            "demo-qwen3-think.rkllm, qwen3, thinking",
            think,
            &["--chat-template", "qwen3"][..],
        ),
        (
            "demo.rkllm, --chat-template runtime",
            demo,
            &["--chat-template", "runtime"][..],
        ),
    ] {
        let d = Daemon::builder("bench-done-turns")
            .model(common::repo_path(model))
            .args(args.iter().copied())
            .start();
        let t = turn_ttfts(&d, 8, Duration::ZERO);
        row(
            &format!("TTFT turn 8 / turn 1: {what}"),
            format!(
                "{:.2}x ({:.0} / {:.0} ms)",
                ms(t[7]) / ms(t[0]),
                ms(t[7]),
                ms(t[0])
            ),
            "< 1.5x",
        );
    }
    // The same thinking conversation from a client that reads each answer for a second before
    // its next turn, as a person does: the daemon re-seats the KV cache meanwhile (see
    // `engine::reseat`), so the next turn prefills only its own input. Back to back (above),
    // the next turn waits for the re-seat instead.
    let d = Daemon::builder("bench-done-turns")
        .model(common::repo_path(think))
        .args(["--chat-template", "qwen3"])
        .start();
    let t = turn_ttfts(&d, 8, Duration::from_secs(1));
    row(
        "TTFT turn 8 / turn 1: demo-qwen3-think.rkllm, qwen3, 1 s between turns",
        format!(
            "{:.2}x ({:.0} / {:.0} ms)",
            ms(t[7]) / ms(t[0]),
            ms(t[7]),
            ms(t[0])
        ),
        "< 1.5x",
    );
}

/// Open WebUI's pattern replayed at demo speed, one request after another (what this measures
/// is the KV cache, not the queue's order): a title request (not streamed), the chat's first
/// turn (streamed), follow-up suggestions and tags (not streamed), then the chat's second
/// turn. Its prefilled tokens and TTFT with snapshots, without them, and with no background
/// requests at all.
fn background_rows(dir: &std::path::Path) {
    let model = write_model(
        dir,
        "demo-background",
        &[
            "answer_tokens_min = 30",
            "answer_tokens_max = 30",
            "prefill_us_per_token = 2950",
            "decode_us_per_token = 59880",
            "prompt_cache_save_us_per_token = 30",
            "prompt_cache_load_us_per_token = 20",
        ],
    );
    let mut results = Vec::new();
    for (limit, background) in [("256M", true), ("0", true), ("256M", false)] {
        let d = Daemon::builder("bench-background")
            .model(model.clone())
            .args(["--chat-template", "qwen2.5", "--kv-snapshot-limit", limit])
            .start();
        results.push(replay_open_webui(&d, background));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let [(snap_p, snap_t), (none_p, none_t), (alone_p, alone_t)] = results[..] else {
        unreachable!()
    };
    row(
        "follow-up prefill: snapshots/none/no background",
        format!("{snap_p}/{none_p}/{alone_p} tok"),
        "snapshots: as no background",
    );
    row(
        "follow-up TTFT: snapshots/none/no background",
        format!(
            "{:.0} / {:.0} / {:.0} ms",
            ms(snap_t),
            ms(none_t),
            ms(alone_t)
        ),
        "-",
    );
    row(
        "follow-up TTFT after background / without",
        format!(
            "{:.2}x (none {:.2}x)",
            ms(snap_t) / ms(alone_t),
            ms(none_t) / ms(alone_t)
        ),
        "<= 1.5x",
    );
}

/// Returns the second turn's prefilled tokens (the simulator's trace) and TTFT.
fn replay_open_webui(d: &Daemon, background: bool) -> (u64, Duration) {
    let system = "You are a helpful assistant running on a small board. Answer briefly,                   plainly, and say so when you do not know something.";
    let q1 = "How do I keep a sourdough starter alive while I am away for two weeks?";
    let task = |what: &str, history: &str| {
        serde_json::json!({"stream": false, "messages": [{"role": "user", "content": format!(
            "### Task:\n{what}\n### Chat History:\n<chat_history>\n{history}\n</chat_history>"
        )}]})
    };
    let post = |body: &serde_json::Value| {
        let r = d.client().post_json("/v1/chat/completions", body);
        assert_eq!(r.status, 200, "{}", r.text());
    };
    if background {
        post(&task(
            "Generate a concise, 3-5 word title with an emoji summarizing the chat history.",
            &format!("USER: {q1}"),
        ));
    }
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": system}),
        serde_json::json!({"role": "user", "content": q1}),
    ];
    let (answer, _) = streamed_turn(d, &messages);
    if background {
        let history = format!("USER: {q1}\nASSISTANT: {answer}");
        post(&task(
            "Suggest 3-5 relevant follow-up questions the user might ask next, as JSON.",
            &history,
        ));
        post(&task(
            "Generate 1-3 broad tags categorizing the main themes of the chat history, as JSON.",
            &history,
        ));
    }
    messages.push(serde_json::json!({"role": "assistant", "content": answer}));
    messages.push(serde_json::json!({"role": "user", "content": "And if it is three weeks?"}));
    let (_, ttft) = streamed_turn(d, &messages);
    let prefill = d.trace_of("run_end").last().unwrap()["prefill_tokens"]
        .as_u64()
        .unwrap();
    (prefill, ttft)
}

/// One streamed chat request: its answer and time to the first content.
fn streamed_turn(d: &Daemon, messages: &[serde_json::Value]) -> (String, Duration) {
    let mut c = d.client();
    let t = Instant::now();
    c.send_post(
        "/v1/chat/completions",
        &serde_json::json!({"stream": true, "messages": messages}),
    );
    c.read_head().unwrap();
    let (mut first, mut answer) = (None, String::new());
    while let Some(chunk) = c.read_chunk() {
        for data in common::client::sse_data(&chunk) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) else {
                continue;
            };
            if let Some(text) = v["choices"][0]["delta"]["content"]
                .as_str()
                .filter(|s| !s.is_empty())
            {
                first.get_or_insert_with(|| t.elapsed());
                answer.push_str(text);
            }
        }
    }
    (answer, first.expect("an answer"))
}

/// Time to the first reasoning or content delta of each of `turns` streamed turns; each answer
/// goes back as the assistant's content only, `pause` after the previous answer ended.
fn turn_ttfts(d: &Daemon, turns: usize, pause: Duration) -> Vec<Duration> {
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": "You are a helpful assistant on a small board."}),
    ];
    let mut firsts = Vec::new();
    for turn in 1..=turns {
        if turn > 1 {
            std::thread::sleep(pause);
        }
        messages.push(serde_json::json!({"role": "user", "content": format!("Question {turn}: tell me one more thing about running language models on an NPU, briefly please.")}));
        let mut c = d.client();
        let t = Instant::now();
        c.send_post(
            "/v1/chat/completions",
            &serde_json::json!({"stream": true, "messages": messages}),
        );
        c.read_head().unwrap();
        let mut first = None;
        let mut answer = String::new();
        while let Some(chunk) = c.read_chunk() {
            for data in common::client::sse_data(&chunk) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) else {
                    continue;
                };
                let delta = &v["choices"][0]["delta"];
                if delta["reasoning_content"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
                {
                    first.get_or_insert_with(|| t.elapsed());
                }
                if let Some(text) = delta["content"].as_str().filter(|s| !s.is_empty()) {
                    first.get_or_insert_with(|| t.elapsed());
                    answer.push_str(text);
                }
            }
        }
        firsts.push(first.expect("an answer"));
        messages.push(serde_json::json!({"role": "assistant", "content": answer}));
    }
    firsts
}

/// `/health` latency while one request streams with the most hostile stop list the API
/// accepts: 64 stops of 128 bytes (8 KiB in all), each a run of the answer's only word that
/// fails at its last byte, so every stop is always a candidate and the held-back text stays at
/// its longest; the answer streams at full speed (fast, no delays). The stop matching runs on
/// the event loop's thread, which is the one that answers `/health`.
fn hostile_stop_rows(dir: &std::path::Path) {
    let model = write_model(
        dir,
        "one-word",
        &[
            "answer_tokens_min = 200000",
            "answer_tokens_max = 200000",
            "vocabulary = a",
        ],
    );
    let d = Daemon::builder("bench-stops")
        .model(model)
        .args([
            "--max-new-tokens",
            "200000",
            "--max-context-len",
            "1048576",
            "--output-cap-bytes",
            "67108864",
        ])
        .start();
    let stops: Vec<String> = (0..64)
        .map(|i| {
            format!(
                "{}{}",
                "a ".repeat(63),
                char::from(b'0' + u8::try_from(i % 10).unwrap())
            )
        })
        .collect();
    let body = serde_json::json!({"stream": true, "stop": stops,
        "messages": [{"role": "user", "content": "bench"}]});
    let mut stream = d.client();
    stream.send_post("/v1/chat/completions", &body);
    let reader = std::thread::spawn(move || {
        let t = Instant::now();
        let r = stream.read_response();
        (
            r.status,
            common::client::sse_data(&r.body).len(),
            t.elapsed(),
        )
    });
    let mut c = d.client();
    // Wait for the stream to be running, then sample while it is.
    common::wait_until(Duration::from_secs(10), "the stream running", || {
        c.get("/health").json()["running"] == true
    });
    let mut lat = Vec::new();
    while lat.len() < 2000 {
        let t = Instant::now();
        let r = c.get("/health");
        let took = t.elapsed();
        if r.json()["running"] != true {
            break;
        }
        lat.push(took);
    }
    let (status, events, secs) = reader.join().unwrap();
    assert_eq!(status, 200);
    lat.sort();
    row(
        "/health p99 while a 64-stop stream runs (fast)",
        format!(
            "{:.1} us (n={})",
            percentile(&lat, 0.99).as_secs_f64() * 1e6,
            lat.len()
        ),
        "p99 < 50 ms",
    );
    row(
        "  that stream's rate (SSE events)",
        format!("{:.0} tok/s", events as f64 / secs.as_secs_f64()),
        "-",
    );
}

/// From a request's arrival to the runtime's run call (best of 3) for conversations of 4k to
/// 32k turns that must be trimmed to a 4096-token context: parsing, rendering and trimming.
/// Each doubling of the turns should about double the time (linear); the ratio printed is
/// 32k / 4k, 8 for linear work (64 for quadratic).
fn long_conversation_rows(dir: &std::path::Path) {
    let model = write_model(
        dir,
        "trim",
        &["answer_tokens_min = 1", "answer_tokens_max = 1"],
    );
    let d = Daemon::builder("bench-trim")
        .model(model)
        .args(["--chat-template", "qwen2.5", "--max-context-len", "4096"])
        .args(["--max-body-bytes", "64M"])
        .args(["--background-hold", "0"]) // as above: the daemon's work, not the hold
        .start();
    let mut c = d.client();
    let mut times = Vec::new();
    for turns in [4_000usize, 8_000, 16_000, 32_000] {
        let mut messages = Vec::with_capacity(turns + 1);
        for i in 0..turns / 2 {
            messages.push(
                serde_json::json!({"role": "user", "content": format!("question {i}: why?")}),
            );
            messages.push(
                serde_json::json!({"role": "assistant", "content": "because of the weather"}),
            );
        }
        messages.push(serde_json::json!({"role": "user", "content": "and now?"}));
        let body = serde_json::json!({"messages": messages});
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let sent = monotonic_us();
            let r = c.post_json("/v1/chat/completions", &body);
            assert_eq!(r.status, 200);
            let run = d.trace_of("rkllm_run").pop().unwrap()["t_us"]
                .as_i64()
                .unwrap();
            best = best.min(Duration::from_micros(
                u64::try_from(run - sent).unwrap_or(0),
            ));
        }
        row(
            &format!("{turns:>5} turns trimmed: request to rkllm_run"),
            format!("{:.1} ms", best.as_secs_f64() * 1e3),
            "-",
        );
        times.push(best);
    }
    row(
        "  32k / 4k turns trimmed",
        format!("{:.1}x", times[3].as_secs_f64() / times[0].as_secs_f64()),
        "about 8x (linear)",
    );
}
