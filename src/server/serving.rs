//! What the daemon serves with and does not change while it runs: the configuration, the
//! loaded runtime, the chat template, the sampling defaults, the limits. Handlers see it, with
//! the live figures of the moment, through `api::Ctx`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::Timeouts;
use crate::api::Ctx;
use crate::board::Root;
use crate::config::Config;
use crate::engine::State;
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
    pub kv_cache_tokens: Option<u32>,
    /// The model on the NPU, if any.
    pub resident: Option<ModelId>,
    /// When it is unloaded if it stays idle (None: never).
    pub expires: Option<Instant>,
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
        }
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
        Ctx {
            catalog: &self.catalog,
            model: 0,
            resident: live.resident,
            expires: live.expires,
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
            tools_budget: tools_budget(self.cfg.max_context_len, self.cfg.tools_budget_percent),
            bytes_per_token: live.bytes_per_token,
            embedding_pooling: self.cfg.embedding_pooling.resolve(&self.cfg.model_name),
            embedding_pooling_cfg: self.cfg.embedding_pooling,
            background: self.cfg.background,
            think_default: self.cfg.think_default,
            board_root: &self.board_root,
            kv_cache_tokens: live.kv_cache_tokens,
            now: live.now,
            image_limits: self.cfg.image_limits,
        }
    }
}

/// `percent` of a context of `max_context_len` tokens.
fn tools_budget(max_context_len: u32, percent: u8) -> u32 {
    let tokens = u64::from(max_context_len) * u64::from(percent) / 100;
    u32::try_from(tokens).unwrap_or(max_context_len)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tools_budget_is_a_share_of_the_context() {
        assert_eq!(super::tools_budget(4096, 25), 1024);
        assert_eq!(super::tools_budget(4096, 0), 0);
        assert_eq!(super::tools_budget(u32::MAX, 100), u32::MAX);
    }
}
