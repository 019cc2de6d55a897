//! The daemon: socket lifecycle around one event loop and one inference thread.
//!
//! Order at start: block signals (before any thread exists), take the lock beside the socket,
//! clear a stale socket, bind, drop privileges, then start loading the model while already
//! answering `/health` with `loading`. Order at exit: the loop's graceful shutdown, then the
//! runtime is destroyed (on its own thread), then the socket and lock file are removed by their
//! guards, which also run when a panic unwinds through here.

mod admission;
mod conn;
mod event_loop;
mod jobs;
mod output;
mod readiness;
mod serving;
mod signals;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use mio::Poll;

use crate::config::{Config, Rereader};
use crate::engine::{Engine, EngineConfig, Residency, State};
use crate::error::DaemonError;
use crate::exit::Ending;
use crate::lifecycle;
use crate::models::Catalog;
use crate::runtime::{self, InitConfig, Sampling};

pub use event_loop::Report;
use event_loop::{EventLoop, Listeners};
use serving::Serving;

/// Runs the daemon with `cfg`; SIGHUP reads the configuration again from `rereader`.
pub fn serve(cfg: Config, rereader: Rereader) -> Result<Ending, DaemonError> {
    let signals = signals::Signals::install()
        .map_err(|e| DaemonError::io("set up signal handling", e.into()))?;
    let (soft, hard) = lifecycle::raise_nofile_limit();
    log::debug!("open files limit: soft {soft}, hard {hard}");

    let npu_lock = crate::doctor::npu_lock_path(&cfg.npu_lock);
    let lifecycle::Footprint {
        listener,
        socket: mut socket_guard,
        lock,
        npu,
        user,
    } = lifecycle::establish(&lifecycle::SocketSpec {
        path: &cfg.socket,
        mode: cfg.socket_mode,
        group: cfg.socket_group.as_deref(),
        user: cfg.user.as_deref(),
        npu_lock: npu_lock.as_deref(),
    })?;
    match &npu {
        Some(guard) => log::debug!("NPU lock held: {}", guard.path().display()),
        None => log::debug!("no NPU lock (npu-lock = {:?})", cfg.npu_lock),
    }
    let tcp = match cfg.tcp {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| DaemonError::io("bind the TCP listener", e))?;
            l.set_nonblocking(true)
                .map_err(|e| DaemonError::io("configure the TCP listener", e))?;
            log::info!("listening on tcp {addr}");
            Some(mio::net::TcpListener::from_std(l))
        }
        None => None,
    };
    if let Some(user) = &user {
        lifecycle::drop_privileges(user)?;
        log::info!("running as user {}", user.name);
    }

    // Read once: each model's template and what /api/show reports come from its header.
    let catalog = Catalog::new(&cfg);
    let poll = Poll::new().map_err(|e| DaemonError::io("create the poll instance", e))?;
    let waker =
        EventLoop::waker(&poll).map_err(|e| DaemonError::io("create the engine waker", e))?;
    // Loaded here, before the inference thread, so that /health and the log name what loaded;
    // a failure ends the start like any other (socket removed, exit code 4). The inference
    // thread probes its ABI before rkllm_init (`Runtime::init`): a runtime of the other ABI ends
    // the daemon with exit code 7. (There, not here: the probe runs the runtime's code, which
    // may block, and this thread must serve /health meanwhile.)
    runtime::load(&cfg.runtime_library)?;
    let engine = Engine::start(engine_config(&cfg, &catalog), waker)
        .map_err(|e| DaemonError::io("start the inference thread", e))?;
    let info = runtime::info();
    log::info!(
        "rkllmd {} listening on {} (runtime {} {}, model {})",
        env!("CARGO_PKG_VERSION"),
        cfg.socket.display(),
        info.kind(),
        info.abi,
        cfg.model.display()
    );

    let listeners = Listeners {
        unix: mio::net::UnixListener::from_std(listener),
        tcp,
    };
    let sampling = sampling_of(&cfg);
    let serving = Serving::new(Arc::new(cfg), info, catalog, sampling).with_rereader(rereader);
    let event_loop = EventLoop::new(poll, listeners, signals, engine, serving)
        .map_err(|e| DaemonError::io("register the listeners", e))?;
    let started = Instant::now();
    let (ending, report, mut engine) = event_loop.run();

    // The runtime handle is destroyed on the inference thread once it is idle; joining it is only
    // safe when it has stopped (a wedged run never returns).
    let runtime_destroyed = matches!(engine.state(), State::Stopped);
    if runtime_destroyed {
        engine.join();
    }
    let socket_removed = socket_guard.remove_now();
    drop(lock);
    drop(npu);
    log::info!(
        "shutdown after {:.1} s: {} connection(s) closed, {} request(s) aborted, runtime {}, socket {}",
        started.elapsed().as_secs_f32(),
        report.connections_closed,
        report.requests_aborted,
        if runtime_destroyed { "destroyed" } else { "left wedged" },
        if socket_removed { "removed" } else { "already gone" },
    );
    Ok(ending)
}

fn sampling_of(cfg: &Config) -> Sampling {
    cfg.sampling
}

fn engine_config(cfg: &Config, catalog: &Catalog) -> EngineConfig {
    EngineConfig {
        init: InitConfig {
            library: cfg.runtime_library.clone(),
            model_path: cfg.model.clone(),
            max_context_len: cfg.max_context_len,
            max_new_tokens: cfg.max_new_tokens,
            sampling: sampling_of(cfg),
            base_domain_id: cfg.base_domain_id,
            cpu_mask: cfg.enabled_cpus,
            image_tags: None,
        },
        queue_size: cfg.queue_size,
        queue_timeout: cfg.queue_timeout,
        background_hold: cfg.background_hold,
        request_timeout: cfg.request_timeout,
        abort_grace: cfg.abort_grace,
        raw_template: catalog.raw_template(0),
        keep_alive: cfg.keep_alive,
        models: catalog.loads(),
        kv_cache_reuse: cfg.kv_cache_reuse,
        snapshots: Some(crate::engine::SnapshotConfig {
            dir: cfg.snapshot_dir(),
            limit_bytes: cfg.kv_snapshot_limit,
        })
        .filter(|s| s.limit_bytes > 0),
        residency: Residency {
            max_loaded: cfg.max_loaded_models,
            root: cfg.root.clone(),
        },
        vision: crate::engine::Vision {
            library: cfg.rknn_runtime_library.clone(),
            limits: cfg.image_limits,
        },
    }
}
