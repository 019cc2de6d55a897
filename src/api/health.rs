//! `/health`, written for routers as much as for people: 200 means "send me work now", any
//! other answer "send it elsewhere", and the queue depth rides in a header so a router can
//! read it without parsing the body.

use serde_json::json;

use super::{Ctx, FullResponse};
use crate::engine::{Resident, State};

/// The header that carries the queue depth (requests waiting, not the one running).
const QUEUE_DEPTH_HEADER: &str = "X-Rkllmd-Queue-Depth";

/// 200 `ok` when a generation sent now would be taken; 503 with the reason otherwise:
/// `loading`, `failed`, `wedged`, `shutting_down`, `draining` (SIGQUIT: finishing what it has,
/// taking nothing new), `queue_full` (a new generation would be refused with 503 now).
pub fn handle(ctx: &Ctx<'_>) -> FullResponse {
    let (status, word, detail) = match ctx.state {
        State::Ready if ctx.draining => (503, "draining", None),
        State::Ready if ctx.queue_depth >= ctx.queue_size => (503, "queue_full", None),
        State::Ready => (200, "ok", None),
        State::Loading => (503, "loading", None),
        State::LoadFailed(reason) => (503, "failed", Some(reason.as_str())),
        State::Wedged => (503, "wedged", None),
        State::ShuttingDown | State::Stopped => (503, "shutting_down", None),
    };
    let name = |r: &Resident| ctx.catalog.get(r.model).map(|m| m.name.as_str());
    let mut body = json!({
        "status": word,
        "model": ctx.model_name,
        "models": ctx.catalog.iter().map(|(_, m)| m.name.as_str()).collect::<Vec<_>>(),
        // The most recently used, as when one model was resident at most; all of them after.
        "loaded": ctx.resident.first().and_then(name),
        "loaded_models": ctx.resident.iter().filter_map(name).collect::<Vec<_>>(),
        "abi": ctx.info.abi,
        "runtime": ctx.info.kind(),
        "queue_depth": ctx.queue_depth,
        "queue_size": ctx.queue_size,
        "running": ctx.running,
        "connections": ctx.connections,
        "uptime_s": ctx.started.elapsed().as_secs(),
    });
    if let Some(d) = detail {
        body["detail"] = json!(d);
    }
    FullResponse::json(status, &body)
        .with_headers([(QUEUE_DEPTH_HEADER, ctx.queue_depth.to_string())])
}
