//! What handlers may know about the daemon: a read-only view the event loop fills per request.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::board::Root;
use crate::chat::Template;
use crate::engine::{
    BackgroundPolicy, Pooling, Priority, Resident, SharedCaches, State, ThinkDefault,
};
use crate::metrics::Metrics;
use crate::models::{AdapterId, Catalog, ModelId, Selection};
use crate::runtime::{Capabilities, RuntimeInfo, Sampling};
use crate::vision::image::ImageLimits;

pub struct Ctx<'a> {
    /// Every model served.
    pub catalog: &'a Catalog,
    /// The model this view is of (the request's; the default until routing knows it): the
    /// name, path, architecture, template and pooling below are its.
    pub model: ModelId,
    /// The models on the NPU, most recently used first, each with when it is unloaded if it
    /// stays idle.
    pub resident: &'a [Resident],
    /// The LoRA adapter of `model` the request named (`MODEL:ADAPTER`); `None`: the model alone.
    pub adapter: Option<AdapterId>,
    pub model_name: &'a str,
    pub info: &'a RuntimeInfo,
    pub state: &'a State,
    pub queue_depth: usize,
    /// How many requests the queue holds (`queue-size`).
    pub queue_size: usize,
    pub running: bool,
    /// The daemon drains (SIGQUIT): no new generations, the running and queued ones finish.
    pub draining: bool,
    pub connections: usize,
    pub started: Instant,
    /// How long the model took to load, once it has.
    pub load_time: Option<Duration>,
    pub model_path: &'a Path,
    /// The `general.architecture` the model file declares (`chat::architecture`), if any.
    pub architecture: Option<&'a str>,
    pub max_new_tokens: u32,
    pub max_context_len: u32,
    /// The configured sampling, which requests may override on ABI 1.3.
    pub sampling: Sampling,
    pub caps: Capabilities,
    pub metrics: &'a Metrics,
    /// The chat template conversations are rendered with; `None`: the runtime's own.
    pub template: Option<&'a Template>,
    /// How many tokens a request's tool definitions may take (`tools-budget` of the context).
    pub tools_budget: u32,
    /// `tools-budget`: the share of a model's context `tools_budget` is.
    pub tools_budget_percent: u8,
    /// Bytes of prompt per token, as the engine has learnt them: what estimates are made with.
    pub bytes_per_token: f64,
    /// How embeddings pool token states, resolved for the model (never `Auto`).
    pub embedding_pooling: Pooling,
    /// `embedding-pooling` as configured (may be `Auto`).
    pub embedding_pooling_cfg: Pooling,
    /// Which requests yield to streamed ones.
    pub background: BackgroundPolicy,
    /// Thinking for requests that do not say.
    pub think_default: ThinkDefault,
    /// Where the board's kernel files are read from when `/metrics` is scraped.
    pub board_root: &'a Root,
    /// Each resident model's KV cache: its tokens when the engine knows them, its snapshots.
    pub kv_caches: &'a SharedCaches,
    /// When the request is handled.
    pub now: Instant,
    /// How much image a request may bring (`max-image-bytes`, `max-image-pixels`,
    /// `max-images-per-request`).
    pub image_limits: ImageLimits,
}

impl<'a> Ctx<'a> {
    /// The same view, of model `id` of the catalog (alone, no adapter).
    pub fn for_model(&self, id: ModelId) -> Ctx<'a> {
        self.for_selection(Selection {
            model: id,
            adapter: None,
        })
    }

    /// The same view, of a model and adapter of the catalog.
    pub fn for_selection(&self, sel: Selection) -> Ctx<'a> {
        let Some(m) = self.catalog.get(sel.model) else {
            return Ctx { ..*self };
        };
        Ctx {
            model: sel.model,
            adapter: sel.adapter,
            model_name: &m.name,
            model_path: &m.path,
            architecture: m.architecture.as_deref(),
            template: m.template.as_ref(),
            embedding_pooling: self.embedding_pooling_of(&m.name),
            max_new_tokens: m.params.max_new_tokens,
            max_context_len: m.params.max_context_len,
            sampling: m.params.sampling,
            tools_budget: tools_budget(m.params.max_context_len, self.tools_budget_percent),
            ..*self
        }
    }

    /// The adapter of this view by name, if it has one.
    pub fn adapter_name(&self) -> Option<&'a str> {
        let m = self.catalog.get(self.model)?;
        Some(m.adapters.get(self.adapter?)?.name.as_str())
    }

    /// Pooling as configured resolves by the model's name; a pooling the configuration
    /// fixed stays.
    fn embedding_pooling_of(&self, name: &str) -> Pooling {
        self.embedding_pooling_cfg.resolve(name)
    }

    /// About how many tokens `bytes` of prompt are (the engine's estimate).
    pub fn estimate_tokens(&self, bytes: usize) -> u64 {
        crate::engine::estimate_tokens(bytes, self.bytes_per_token)
    }

    /// The model of this view answers to its name, and to `NAME:latest` (Ollama clients add
    /// the tag); with an adapter, to `NAME:ADAPTER`.
    pub fn model_matches(&self, requested: &str) -> bool {
        let this = Selection {
            model: self.model,
            adapter: self.adapter,
        };
        if self.catalog.select(Some(requested)) == Some(this) {
            return true;
        }
        let served = self.catalog.is_served(self.model) || self.catalog.get(self.model).is_none();
        self.adapter.is_none()
            && served
            && (requested == self.model_name
                || requested.strip_suffix(":latest") == Some(self.model_name))
    }

    /// Whether the model of this view takes images: it has a vision encoder (`ModelVision`). A
    /// request with images for another is refused with a 400 naming the model instead of the
    /// images being dropped unseen.
    pub fn accepts_images(&self) -> bool {
        self.catalog
            .get(self.model)
            .is_some_and(|m| m.vision.is_some())
    }

    /// How urgent a request is: one that streams has someone watching it.
    pub fn priority(&self, streamed: bool) -> Priority {
        self.background.classify(streamed)
    }

    /// The thinking switch of a request that asked for `requested` (`None`: did not say), by
    /// `think-default`; `None` leaves it to the chat template.
    pub fn thinking(&self, requested: Option<bool>, streamed: bool) -> Option<bool> {
        self.think_default
            .resolve(requested, self.priority(streamed))
    }
}

/// `percent` of a context of `max_context_len` tokens.
pub fn tools_budget(max_context_len: u32, percent: u8) -> u32 {
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
