//! The job table: which connection waits for which generation. Engine events for a job go to
//! the responder of its connection, which writes into that connection's output; the
//! connections written to are flushed once per batch of events, not once per token.

use std::collections::HashMap;
use std::time::Instant;

use mio::Token;

use super::conn::Conn;
use crate::api::Next;
use crate::engine::{Engine, EngineError, Event, Job, JobId};
use crate::metrics::Metrics;

pub struct Jobs {
    owners: HashMap<JobId, Token>,
    next: JobId,
    /// Connections that got output from engine events since the last `take_dirty`.
    dirty: Vec<Token>,
}

impl Jobs {
    pub fn new() -> Jobs {
        Jobs {
            owners: HashMap::new(),
            next: 1,
            dirty: Vec::new(),
        }
    }

    /// The id the next submitted job gets.
    pub fn next_id(&self) -> JobId {
        self.next
    }

    /// Hands `job` (made with `next_id`) to the engine for the connection `token`, and counts
    /// it. On Err the connection answers with the error.
    pub fn submit(
        &mut self,
        engine: &mut Engine,
        metrics: &mut Metrics,
        job: Job,
        token: Token,
        now: Instant,
    ) -> Result<JobId, EngineError> {
        let id = job.id();
        self.next += 1;
        match engine.submit(job, now) {
            Ok(()) => {
                self.owners.insert(id, token);
                metrics.generation_submitted(id, now);
                Ok(id)
            }
            Err(e) => {
                if matches!(e, EngineError::QueueFull { .. }) {
                    metrics.queue_rejected();
                }
                Err(e)
            }
        }
    }

    /// Hands a job's event to its connection's responder. A stream whose client is behind
    /// (more than `output_cap` pending) is held: the engine takes no more of its tokens until
    /// the client has read most of it (`resume_if_caught_up`); a client that reads nothing is
    /// cut off by its write timer. Events that are not about a job are ignored.
    pub fn deliver(
        &mut self,
        event: &Event,
        conns: &mut HashMap<Token, Conn>,
        engine: &mut Engine,
        metrics: &mut Metrics,
        output_cap: usize,
        now: Instant,
    ) {
        let (id, last) = match event {
            Event::Started { id }
            | Event::Warning { id, .. }
            | Event::Text { id, .. }
            | Event::Embedding { id, .. } => (*id, false),
            Event::Finished { id, .. } | Event::Failed { id, .. } => (*id, true),
            // Its client saw nothing of the preempted run and waits for the next one.
            Event::Preempted { .. }
            | Event::Ready { .. }
            | Event::Switched { .. }
            | Event::Unloaded { .. }
            | Event::Snapshot(_)
            | Event::LoadFailed { .. }
            | Event::Wedged
            | Event::Stopped => return,
        };
        let Some(&token) = self.owners.get(&id) else {
            return;
        };
        if last {
            self.end(id, metrics);
        }
        let Some(conn) = conns.get_mut(&token) else {
            return;
        };
        let next = conn.with_responder(|responder, out| match event {
            Event::Started { .. } => {
                responder.started(out);
                Next::Continue
            }
            Event::Warning { text, .. } => {
                responder.warning(text);
                Next::Continue
            }
            Event::Text { text, .. } => responder.text(text, out),
            Event::Embedding { vector, tokens, .. } => {
                responder.embedding(vector, *tokens);
                Next::Continue
            }
            Event::Finished { finish, .. } => {
                responder.finished(finish, out);
                Next::Continue
            }
            Event::Failed { error, .. } => {
                responder.failed(error, out);
                Next::Continue
            }
            Event::Preempted { .. }
            | Event::Ready { .. }
            | Event::Switched { .. }
            | Event::Unloaded { .. }
            | Event::Snapshot(_)
            | Event::LoadFailed { .. }
            | Event::Wedged
            | Event::Stopped => Next::Continue,
        });
        let Some(next) = next else {
            return;
        };
        if next == Next::Stop {
            engine.stop(id, now);
        }
        if last {
            conn.finish_response(now, metrics);
        } else if conn.pending_output() > output_cap {
            log::trace!(
                "request {id}: its client is {} bytes behind; holding its tokens",
                conn.pending_output()
            );
            engine.hold(id);
        }
        self.dirty.push(token);
    }

    /// Lets the generation of `conn` flow again once its client has read all but a quarter of
    /// `output_cap` (a low-water mark well below the hold's, so a slow reader is not held and
    /// released on every token).
    pub fn resume_if_caught_up(conn: &Conn, engine: &mut Engine, output_cap: usize) {
        if let Some(id) = conn.job() {
            if conn.pending_output() <= output_cap / 4 {
                engine.resume(id);
            }
        }
    }

    /// The client of `conn` is gone (hung up, or cut off for not reading): if it waits for a
    /// generation, the generation is cancelled and the connection dropped.
    pub fn abandon(
        &mut self,
        conn: &mut Conn,
        engine: &mut Engine,
        metrics: &mut Metrics,
        now: Instant,
    ) {
        if let Some(id) = conn.abandon(metrics) {
            log::debug!("client of request {id} is gone; aborting it");
            engine.cancel(id, now);
            self.end(id, metrics);
        }
    }

    /// The connections written to since the last call, each once; give the vector back with
    /// `put_back` so its allocation is reused.
    pub fn take_dirty(&mut self) -> Vec<Token> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        dirty
    }

    pub fn put_back(&mut self, mut dirty: Vec<Token>) {
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// The loop is done with job `id`: forgets its connection and counts it as ended, once.
    fn end(&mut self, id: JobId, metrics: &mut Metrics) {
        if self.owners.remove(&id).is_some() {
            metrics.generation_ended(id);
        }
    }
}
