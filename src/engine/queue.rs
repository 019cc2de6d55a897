//! The jobs waiting for the NPU, in arrival order, served interactive first.
//!
//! The next job is the oldest interactive one, unless a background job ahead of it has already
//! been pushed back `MAX_PUSH_BACKS` times: such a job has waited enough and keeps its place
//! from then on, as an interactive one would, and is not preempted again. A background job is
//! pushed back each time an interactive job that arrived after it is served before it (while
//! it waits, or after it was preempted for that job); preemptions are also counted on their
//! own, so one whose interactive job never runs (its client left) still ends up served.
//!
//! With several models, a job whose model is not the resident one needs a switch (seconds on
//! a board). A job for the resident model that the same rule would allow next (interactive
//! ahead of background still holds) goes ahead of it instead, at most `MAX_SWITCH_YIELDS`
//! times per waiting switch: two clients alternating between two models then share each load
//! over a few requests, and the switch still comes after a bounded wait.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::priority::Priority;
use super::{Job, JobId, ModelId};

/// How many times one background job yields to interactive ones (overtaken in the queue or
/// preempted while running) before it is served in arrival order.
pub const MAX_PUSH_BACKS: u32 = 3;

/// How many jobs for the resident model may go ahead of one that needs another model loaded.
pub const MAX_SWITCH_YIELDS: u32 = 3;

pub(super) struct Queued {
    pub job: Job,
    /// When it was queued (again, for a job put back): its queue timeout counts from here.
    pub since: Instant,
    pub standing: Standing,
}

/// How far a job has been pushed back so far; it stays with the job when it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Standing {
    /// Arrival order: a job overtakes only those that arrived before it.
    seq: u64,
    /// Interactive jobs that arrived after it and were served before it.
    pub pushed_back: u32,
    /// Times its run was aborted for an interactive job.
    pub preemptions: u32,
    /// Jobs for the resident model served before it while it waited for a switch.
    switch_yields: u32,
}

impl Standing {
    /// Whether it may still yield to interactive jobs, waiting or running.
    pub fn may_yield(&self) -> bool {
        self.pushed_back < MAX_PUSH_BACKS && self.preemptions < MAX_PUSH_BACKS
    }
}

impl Queued {
    /// Served in arrival order: interactive, or a background job that has yielded enough.
    fn keeps_its_place(&self) -> bool {
        self.job.priority() == Priority::Interactive || !self.standing.may_yield()
    }
}

#[derive(Default)]
pub(super) struct Queue {
    entries: VecDeque<Queued>,
    next_seq: u64,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn push(&mut self, job: Job, now: Instant) {
        self.next_seq += 1;
        let standing = Standing {
            seq: self.next_seq,
            ..Standing::default()
        };
        self.entries.push_back(Queued {
            job,
            since: now,
            standing,
        });
    }

    /// A preempted background job goes back ahead of every other background job, one
    /// preemption further; it waits anew, so its queue timeout starts over.
    pub fn put_back(&mut self, job: Job, standing: Standing, now: Instant) {
        let standing = Standing {
            preemptions: standing.preemptions + 1,
            ..standing
        };
        self.entries.push_front(Queued {
            job,
            since: now,
            standing,
        });
    }

    /// Until when the next job waits, though the NPU is free, for an interactive job to come:
    /// when it is a background job that has not been preempted (a job put back has waited
    /// already) and no job that keeps its place waits. Open WebUI sends its title request
    /// about 100 ms before the chat it titles; starting the title at once would cost the chat
    /// the rest of the title's prefill, which an abort cannot cut short on boards
    /// (rknn-llm#400).
    pub fn held_until(&self, hold: Duration) -> Option<Instant> {
        if hold.is_zero() || self.entries.iter().any(Queued::keeps_its_place) {
            return None;
        }
        let first = self.entries.front()?;
        (first.standing.preemptions == 0).then(|| first.since + hold)
    }

    /// Whether a job for `model` waits.
    pub fn wants(&self, model: ModelId) -> bool {
        self.entries.iter().any(|q| q.job.model() == model)
    }

    /// Whether an interactive job waits.
    pub fn has_interactive(&self) -> bool {
        self.entries
            .iter()
            .any(|q| q.job.priority() == Priority::Interactive)
    }

    /// Takes the job to run next on a worker that has the models for which `resident` is true
    /// loaded; the background jobs it overtakes count a push-back, and a job that needs a
    /// switch (its model is not resident) which it overtakes counts a switch yield.
    pub fn pop_next(&mut self, resident: impl Fn(ModelId) -> bool) -> Option<Queued> {
        let mut pick = self
            .entries
            .iter()
            .position(Queued::keeps_its_place)
            .unwrap_or(0);
        let first = self.entries.get(pick)?;
        if !resident(first.job.model()) && first.standing.switch_yields < MAX_SWITCH_YIELDS {
            let ahead = first.keeps_its_place();
            // Of the same class as the pick (interactive first still holds).
            let instead = self
                .entries
                .iter()
                .position(|q| resident(q.job.model()) && (q.keeps_its_place() || !ahead));
            if let Some(instead) = instead {
                if let Some(waiting) = self.entries.get_mut(pick) {
                    waiting.standing.switch_yields += 1;
                }
                pick = instead;
            }
        }
        let seq = self.entries.get(pick)?.standing.seq;
        for passed in self.entries.range_mut(..pick) {
            if passed.standing.seq < seq {
                passed.standing.pushed_back += 1;
            }
        }
        self.entries.remove(pick)
    }

    pub fn remove(&mut self, id: JobId) -> Option<Queued> {
        let pos = self.entries.iter().position(|q| q.job.id() == id)?;
        self.entries.remove(pos)
    }

    /// Takes out the jobs that have waited `timeout` or longer, with how long each waited.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<(Queued, Duration)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.entries.len() {
            let waited = now.saturating_duration_since(self.entries[i].since);
            if waited >= timeout {
                if let Some(q) = self.entries.remove(i) {
                    out.push((q, waited));
                }
            } else {
                i += 1;
            }
        }
        out
    }

    /// When the longest-waiting job times out.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Instant> {
        self.entries.iter().map(|q| q.since + timeout).min()
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Queued> + '_ {
        self.entries.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: JobId, priority: Priority) -> Job {
        let mut j = Job::new(id, "x");
        j.set_priority(priority);
        j
    }

    fn order(q: &mut Queue) -> Vec<JobId> {
        std::iter::from_fn(|| q.pop_next(|_| false).map(|e| e.job.id())).collect()
    }

    fn for_model(id: JobId, priority: Priority, model: ModelId) -> Job {
        let mut j = job(id, priority);
        j.set_model(model);
        j
    }

    /// The order jobs run in on a worker that starts with model `resident` and loads each
    /// job's model in turn.
    fn order_from(q: &mut Queue, mut resident: ModelId) -> Vec<JobId> {
        std::iter::from_fn(|| {
            let next = q.pop_next(|m| m == resident)?;
            resident = next.job.model();
            Some(next.job.id())
        })
        .collect()
    }

    #[test]
    fn jobs_for_the_resident_model_go_ahead_of_a_switch_at_most_three_times() {
        let mut q = Queue::default();
        let now = Instant::now();
        // Model 1 is wanted first, then six jobs for the resident model 0.
        q.push(for_model(1, I, 1), now);
        for id in 2..=7 {
            q.push(for_model(id, I, 0), now);
        }
        assert_eq!(order_from(&mut q, 0), [2, 3, 4, 1, 5, 6, 7]);
    }

    #[test]
    fn two_clients_alternating_between_two_models_share_each_load() {
        let mut q = Queue::default();
        let now = Instant::now();
        for (id, model) in [
            (1, 1),
            (2, 0),
            (3, 1),
            (4, 0),
            (5, 1),
            (6, 0),
            (7, 1),
            (8, 0),
        ] {
            q.push(for_model(id, I, model), now);
        }
        let ran = order_from(&mut q, 0);
        assert_eq!(ran, [2, 4, 6, 1, 3, 5, 7, 8]);
        // Two switches where arrival order would make eight.
        let mut q = Queue::default();
        for (id, model) in [
            (1, 1),
            (2, 0),
            (3, 1),
            (4, 0),
            (5, 1),
            (6, 0),
            (7, 1),
            (8, 0),
        ] {
            q.push(for_model(id, I, model), now);
        }
        let mut resident = 0;
        let mut switches = 0;
        while let Some(next) = q.pop_next(|m| m == resident) {
            if next.job.model() != resident {
                switches += 1;
                resident = next.job.model();
            }
        }
        assert_eq!(switches, 2);
    }

    #[test]
    fn a_background_job_for_the_resident_model_does_not_pass_an_interactive_switch() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.push(for_model(1, I, 1), now);
        q.push(for_model(2, B, 0), now);
        q.push(for_model(3, I, 0), now);
        // 3 (interactive, resident) goes ahead of the switch; 2 (background) does not.
        assert_eq!(order_from(&mut q, 0), [3, 1, 2]);
        // Without a resident model (a load failed) arrival order and priority alone rule.
        let mut q = Queue::default();
        q.push(for_model(1, I, 1), now);
        q.push(for_model(2, I, 0), now);
        assert_eq!(order(&mut q), [1, 2]);
    }

    /// With several models resident (`max-loaded-models`), a job for any of them needs no
    /// switch: nothing goes ahead of it, and a job for none of them still waits at most
    /// `MAX_SWITCH_YIELDS` runs.
    #[test]
    fn a_job_for_any_resident_model_is_not_a_switch() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.push(for_model(1, I, 1), now);
        q.push(for_model(2, I, 0), now);
        q.push(for_model(3, I, 2), now);
        for id in 4..=7 {
            q.push(for_model(id, I, 0), now);
        }
        let resident = |m: ModelId| m == 0 || m == 1;
        let ran: Vec<JobId> =
            std::iter::from_fn(|| q.pop_next(resident).map(|e| e.job.id())).collect();
        assert_eq!(ran, [1, 2, 4, 5, 6, 3, 7]);
    }

    const I: Priority = Priority::Interactive;
    const B: Priority = Priority::Background;

    #[test]
    fn interactive_jobs_go_ahead_of_background_ones_each_kind_in_arrival_order() {
        let mut q = Queue::default();
        let now = Instant::now();
        for (id, p) in [(1, B), (2, I), (3, B), (4, I), (5, B)] {
            q.push(job(id, p), now);
        }
        assert_eq!(order(&mut q), [2, 4, 1, 3, 5]);
    }

    #[test]
    fn a_background_job_alone_is_held_and_one_put_back_or_behind_an_interactive_is_not() {
        let mut q = Queue::default();
        let now = Instant::now();
        let hold = Duration::from_millis(250);
        assert_eq!(q.held_until(hold), None);
        q.push(job(1, B), now);
        assert_eq!(q.held_until(hold), Some(now + hold));
        assert_eq!(q.held_until(Duration::ZERO), None);
        q.push(job(2, I), now);
        assert_eq!(q.held_until(hold), None);
        assert_eq!(order(&mut q), [2, 1]);
        let (one, standing) = running_background(&mut q, now);
        q.put_back(one, standing, now);
        assert_eq!(q.held_until(hold), None);
    }

    #[test]
    fn with_no_background_jobs_the_queue_is_a_fifo() {
        let mut q = Queue::default();
        let now = Instant::now();
        for id in 1..=5 {
            q.push(job(id, I), now);
        }
        assert_eq!(order(&mut q), [1, 2, 3, 4, 5]);
    }

    /// Queues job 1 (background), takes it out as the engine runs it, and returns its
    /// standing: ready to be put back.
    fn running_background(q: &mut Queue, now: Instant) -> (Job, Standing) {
        q.push(job(1, B), now);
        let run = q.pop_next(|_| false).unwrap();
        (run.job, run.standing)
    }

    #[test]
    fn a_job_put_back_runs_before_the_other_background_jobs_after_the_interactive_ones() {
        let mut q = Queue::default();
        let now = Instant::now();
        let (one, standing) = running_background(&mut q, now);
        q.push(job(2, B), now);
        q.push(job(3, I), now);
        q.put_back(one, standing, now);
        assert_eq!(order(&mut q), [3, 1, 2]);
    }

    #[test]
    fn a_background_job_yields_at_most_max_push_backs_times() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.push(job(1, B), now);
        let mut served = Vec::new();
        for id in 2..=(JobId::from(MAX_PUSH_BACKS) + 3) {
            q.push(job(id, I), now);
            served.push(q.pop_next(|_| false).unwrap().job.id());
        }
        // The first MAX_PUSH_BACKS interactive jobs overtook it; then it kept its place.
        let bound = MAX_PUSH_BACKS as usize;
        assert_eq!(
            served[..bound],
            (2..2 + bound as JobId).collect::<Vec<_>>()[..]
        );
        assert_eq!(served[bound], 1);
    }

    #[test]
    fn a_preempted_job_is_pushed_back_once_by_the_job_it_yielded_to() {
        let mut q = Queue::default();
        let now = Instant::now();
        let (one, standing) = running_background(&mut q, now);
        q.push(job(2, I), now);
        q.put_back(one, standing, now);
        assert_eq!(q.pop_next(|_| false).unwrap().job.id(), 2);
        let back = q.pop_next(|_| false).unwrap();
        assert_eq!(back.job.id(), 1);
        assert_eq!(
            (back.standing.pushed_back, back.standing.preemptions),
            (1, 1)
        );
    }

    #[test]
    fn interactive_jobs_that_arrived_first_do_not_push_a_background_job_back() {
        let mut q = Queue::default();
        let now = Instant::now();
        q.push(job(1, I), now);
        q.push(job(2, B), now);
        assert_eq!(q.pop_next(|_| false).unwrap().job.id(), 1);
        assert_eq!(q.pop_next(|_| false).unwrap().standing.pushed_back, 0);
    }

    #[test]
    fn preemptions_alone_are_bounded_too() {
        // Interactive jobs whose clients leave before they run push nothing back; the
        // preemptions they caused still count.
        let mut q = Queue::default();
        let now = Instant::now();
        let (mut one, mut standing) = running_background(&mut q, now);
        for _ in 0..MAX_PUSH_BACKS {
            assert!(standing.may_yield());
            q.put_back(one, standing, now);
            let run = q.pop_next(|_| false).unwrap();
            (one, standing) = (run.job, run.standing);
        }
        assert_eq!(standing.preemptions, MAX_PUSH_BACKS);
        assert!(!standing.may_yield());
    }

    #[test]
    fn only_jobs_that_waited_the_timeout_expire_wherever_they_are() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        q.push(job(1, B), t0);
        q.push(job(2, I), later);
        q.put_back(job(3, B), Standing::default(), later);
        let timeout = Duration::from_secs(10);
        assert_eq!(q.next_timeout(timeout), Some(t0 + timeout));
        let gone = q.expire(t0 + timeout, timeout);
        assert_eq!(
            gone.iter().map(|(e, _)| e.job.id()).collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_timeout(timeout), Some(later + timeout));
    }
}
