//! What the daemon serves with: the configuration, the loaded runtime, the models and their
//! settings, the limits. Only the models change while it runs (a reload on SIGHUP). Handlers
//! see it, with the live figures of the moment, through `api::Ctx`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::Timeouts;
use crate::api::Ctx;
use crate::board::Root;
use crate::config::{Config, Rereader};
use crate::engine::{ModelLoad, Resident, SharedCaches, State};
use crate::http::Limits;
use crate::metrics::Metrics;
use crate::models::{Catalog, ModelId};
use crate::runtime::{self, Capabilities, RuntimeInfo, Sampling};

pub struct Serving {
    cfg: Arc<Config>,
    info: RuntimeInfo,
    /// The models served, each with its template and declared architecture.
    catalog: Catalog,
    sampling: Sampling,
    caps: Capabilities,
    started: Instant,
    /// How long the model took to load, once it has.
    load_time: Option<Duration>,
    limits: Limits,
    board_root: Root,
    /// Where the configuration is read again from on SIGHUP (None: it is not).
    rereader: Option<Rereader>,
}

/// The figures of the moment that handlers see beside the static ones.
pub struct Live<'a> {
    pub state: &'a State,
    pub queue_depth: usize,
    pub running: bool,
    pub draining: bool,
    pub connections: usize,
    pub metrics: &'a Metrics,
    /// Bytes per token as the engine has learnt them.
    pub bytes_per_token: f64,
    /// Each resident model's KV cache.
    pub kv_caches: &'a SharedCaches,
    /// The models on the NPU, most recently used first, each with its expiry.
    pub resident: &'a [Resident],
    pub now: Instant,
}

impl Serving {
    pub fn new(
        cfg: Arc<Config>,
        info: RuntimeInfo,
        catalog: Catalog,
        sampling: Sampling,
    ) -> Serving {
        let limits = Limits {
            max_head_bytes: Limits::default().max_head_bytes,
            max_body_bytes: cfg.max_body_bytes,
        };
        Serving {
            board_root: Root::new(&cfg.root),
            cfg,
            info,
            catalog,
            sampling,
            caps: runtime::capabilities(),
            started: Instant::now(),
            load_time: None,
            limits,
            rereader: None,
        }
    }

    /// Reloads (SIGHUP) read the configuration again from `rereader`.
    pub fn with_rereader(mut self, rereader: Rereader) -> Serving {
        self.rereader = Some(rereader);
        self
    }

    /// Reads the configuration again (SIGHUP) and takes its models: the directory's files and
    /// each model's settings. Returns what the engine loads each model from now and the ids no
    /// longer served; `None` when the new configuration is invalid (logged at error level, the
    /// one in use is kept). Other settings that changed are logged as needing a restart.
    pub fn reload(&mut self) -> Option<(Vec<ModelLoad>, Vec<ModelId>)> {
        let Some(rereader) = &self.rereader else {
            log::info!("SIGHUP: no configuration to read again");
            return None;
        };
        let new = match rereader.read() {
            Ok(cfg) => cfg,
            Err(e) => {
                log::error!(
                    "SIGHUP: the configuration is kept as it was: {}",
                    crate::causes::WithCauses(&e)
                );
                return None;
            }
        };
        for key in crate::config::needs_restart(&self.cfg, &new) {
            log::warn!("SIGHUP: '{key}' changed; a restart applies it, a reload does not");
        }
        let changes = self.catalog.reload(&new);
        let names = |ids: &[ModelId]| {
            let names: Vec<&str> = ids
                .iter()
                .filter_map(|id| self.catalog.get(*id).map(|m| m.name.as_str()))
                .collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        log::info!(
            "SIGHUP: configuration reloaded, {} model(s) served; added: {}; removed: {}; \
             settings changed: {}",
            self.catalog.len(),
            names(&changes.added),
            names(&changes.removed),
            names(&changes.changed),
        );
        let unserved = self
            .catalog
            .all()
            .map(|(id, _)| id)
            .filter(|id| !self.catalog.is_served(*id))
            .collect();
        Some((self.catalog.loads(), unserved))
    }

    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    pub fn shared_cfg(&self) -> &Arc<Config> {
        &self.cfg
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            header: self.cfg.header_timeout,
            keepalive: self.cfg.keepalive_timeout,
            write: self.cfg.write_timeout,
        }
    }

    /// The model is loaded.
    pub fn loaded(&mut self, load_time: Duration) {
        self.load_time = Some(load_time);
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The view of the daemon a handler gets, of the default model (`Ctx::for_model` gives
    /// another's).
    pub fn ctx<'a>(&'a self, live: &Live<'a>) -> Ctx<'a> {
        let default = self.catalog.get(0);
        let ctx = Ctx {
            catalog: &self.catalog,
            model: 0,
            adapter: None,
            resident: live.resident,
            model_name: &self.cfg.model_name,
            info: &self.info,
            state: live.state,
            queue_depth: live.queue_depth,
            queue_size: self.cfg.queue_size,
            running: live.running,
            draining: live.draining,
            connections: live.connections,
            started: self.started,
            load_time: self.load_time,
            model_path: &self.cfg.model,
            architecture: default.and_then(|m| m.architecture.as_deref()),
            max_new_tokens: self.cfg.max_new_tokens,
            max_context_len: self.cfg.max_context_len,
            sampling: self.sampling,
            caps: self.caps,
            metrics: live.metrics,
            template: default.and_then(|m| m.template.as_ref()),
            tools_budget: crate::api::tools_budget(
                self.cfg.max_context_len,
                self.cfg.tools_budget_percent,
            ),
            tools_budget_percent: self.cfg.tools_budget_percent,
            bytes_per_token: live.bytes_per_token,
            embedding_pooling: self.cfg.embedding_pooling.resolve(&self.cfg.model_name),
            embedding_pooling_cfg: self.cfg.embedding_pooling,
            background: self.cfg.background,
            think_default: self.cfg.think_default,
            board_root: &self.board_root,
            kv_caches: live.kv_caches,
            now: live.now,
            image_limits: self.cfg.image_limits,
        };
        // The default model's own settings (its section's) over the daemon's.
        ctx.for_model(0)
    }
}
