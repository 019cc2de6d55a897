//! Re-seating the KV cache while the NPU is idle.
//!
//! A thinking model's template drops the reasoning from past turns (Qwen3, DeepSeek-R1): after
//! a run, the cache holds `... user7 <think>R7</think>A7` but the next request renders
//! `... user7 A7 user8`, so without more the next turn prefills the answer again besides its
//! own input. Right after such a run, when no other job waits, the engine runs one job of its
//! own: the conversation as the next request renders it, up to and including this answer (the
//! job's `PastTurn`, made by the API, gives the answer's rendering), sent whole with
//! `keep_history = 0`. The runtime's prefix reuse prefills only the rendered answer, and the
//! run is cut at its first token; the cache then holds the prompt alone (what the simulator
//! models and `kv_cache` assumes for every run without history), so the next turn extends it
//! with `keep_history = 1` and prefills only its new input.
//!
//! The re-seat is no client's: it emits no event, counts in no metric nor queue figure, and a
//! job that arrives meanwhile waits for it (bounded by `MAX_SEAT_BYTES`: the next turn of the
//! same conversation would have prefilled that text anyway). It is skipped when another job is
//! queued, when KV-cache reuse is off, and once a re-seat showed that the runtime does not
//! reuse a prefix without history (it would prefill the whole conversation).

use super::job::{JobId, WorkerMsg};

/// The re-seat job's id: never one of the server's (they count up from 1).
pub(super) const RESEAT_ID: JobId = JobId::MAX;

/// The id of the engine's unload job (never a client's, like the re-seat's).
pub(super) const UNLOAD_ID: JobId = JobId::MAX - 1;

/// At most this many bytes of rendered answer are re-seated (about 2000 tokens; at Qwen2.5-1.5B's
/// prefill rate on RK3588, ~3 s that a job arriving meanwhile may wait). A longer answer is left
/// for the next turn to prefill.
pub(super) const MAX_SEAT_BYTES: usize = 8 * 1024;

/// A message about the re-seat that no client may see (its start, text, warnings, embeddings).
pub(super) fn is_private(msg: &WorkerMsg) -> bool {
    match msg {
        WorkerMsg::Started { id }
        | WorkerMsg::Warning { id, .. }
        | WorkerMsg::Text { id, .. }
        | WorkerMsg::Embedding { id, .. } => *id == RESEAT_ID || *id == UNLOAD_ID,
        _ => false,
    }
}
