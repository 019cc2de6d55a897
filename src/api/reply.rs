//! What routing a request gives the event loop.

use super::full_response::FullResponse;
use super::responder::Responder;
use crate::engine::Job;

pub enum Reply {
    /// Answered at once.
    Full(FullResponse),
    /// A generation to queue, and the responder that formats its events for the client.
    Generate {
        job: Job,
        responder: Box<dyn Responder>,
    },
}
