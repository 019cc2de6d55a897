use serde_json::json;

use super::{Ctx, FullResponse};
use crate::engine::State;

/// 200 once the model is loaded; 503 with the reason otherwise.
pub fn handle(ctx: &Ctx<'_>) -> FullResponse {
    let (status, word, detail) = match ctx.state {
        State::Ready => (200, "ok", None),
        State::Loading => (503, "loading", None),
        State::LoadFailed(reason) => (503, "failed", Some(reason.as_str())),
        State::Wedged => (503, "wedged", None),
        State::ShuttingDown | State::Stopped => (503, "shutting_down", None),
    };
    let mut body = json!({
        "status": word,
        "model": ctx.model_name,
        "models": ctx.catalog.iter().map(|(_, m)| m.name.as_str()).collect::<Vec<_>>(),
        "loaded": ctx.resident.and_then(|id| ctx.catalog.get(id)).map(|m| m.name.as_str()),
        "abi": ctx.info.abi,
        "runtime": ctx.info.kind(),
        "queue_depth": ctx.queue_depth,
        "running": ctx.running,
        "connections": ctx.connections,
        "uptime_s": ctx.started.elapsed().as_secs(),
    });
    if let Some(d) = detail {
        body["detail"] = json!(d);
    }
    FullResponse::json(status, &body)
}
