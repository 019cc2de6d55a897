//! What handlers may know about the daemon: a read-only view the event loop fills per request.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::board::Root;
use crate::chat::Template;
use crate::engine::{BackgroundPolicy, Pooling, Priority, State, ThinkDefault};
use crate::metrics::Metrics;
use crate::models::{Catalog, ModelId};
use crate::runtime::{Capabilities, RuntimeInfo, Sampling};
use crate::vision::image::ImageLimits;

pub struct Ctx<'a> {
    /// Every model served.
    pub catalog: &'a Catalog,
    /// The model this view is of (the request's; the default until routing knows it): the
    /// name, path, architecture, template and pooling below are its.
    pub model: ModelId,
    /// The model on the NPU, if any.
    pub resident: Option<ModelId>,
    /// When the resident model is unloaded if it stays idle (None: never).
    pub expires: Option<Instant>,
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
    /// Tokens in the runtime's KV cache, when the engine knows them.
    pub kv_cache_tokens: Option<u32>,
    /// When the request is handled.
    pub now: Instant,
    /// How much image a request may bring (`max-image-bytes`, `max-image-pixels`,
    /// `max-images-per-request`).
    pub image_limits: ImageLimits,
}

impl<'a> Ctx<'a> {
    /// The same view, of model `id` of the catalog.
    pub fn for_model(&self, id: ModelId) -> Ctx<'a> {
        let Some(m) = self.catalog.get(id) else {
            return Ctx { ..*self };
        };
        Ctx {
            model: id,
            model_name: &m.name,
            model_path: &m.path,
            architecture: m.architecture.as_deref(),
            template: m.template.as_ref(),
            embedding_pooling: self.embedding_pooling_of(&m.name),
            ..*self
        }
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
    /// the tag).
    pub fn model_matches(&self, requested: &str) -> bool {
        self.catalog.find(Some(requested)) == Some(self.model)
            || requested == self.model_name
            || requested.strip_suffix(":latest") == Some(self.model_name)
    }

    /// Whether the model of this view takes images. None does yet: the engine does not run
    /// vision encoders (issue #15), so a request with images is refused with a 400 naming the
    /// model instead of the images being dropped unseen.
    pub fn accepts_images(&self) -> bool {
        false
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
