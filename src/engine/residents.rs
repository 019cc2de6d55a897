//! The models resident on the inference thread (`max-loaded-models`): each its own runtime
//! handle, in a slot whose number offsets the handle's `base_domain_id`, with its last use. One
//! thread runs one job at a time, so every resident model but the one running is idle: the
//! least recently used is the one unloaded to make room.
//!
//! Room is made before a load for three reasons (`Eviction`): the number of models
//! (`max-loaded-models`), the memory the board has (`MemAvailable` against the model file's size
//! plus `budget::needed`'s margin), and the runtime refusing a further handle, seen only as a
//! failed load (some runtimes hold one handle per process; rkllama runs a process per model for
//! that reason): then the least recently used model is unloaded and the load tried once more.

use std::fmt;
use std::time::Instant;

use super::ModelId;

/// Why a resident model was unloaded to make room for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// `max-loaded-models` were resident.
    Capacity { max: usize },
    /// The board's available memory was below what the new model needs.
    Memory { available: u64, needed: u64 },
    /// The runtime refused to load the new model beside the others.
    Refused,
}

impl fmt::Display for Eviction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1 << 20;
        match self {
            Eviction::Capacity { max } => write!(f, "max-loaded-models is {max}"),
            Eviction::Memory { available, needed } => write!(
                f,
                "{} MiB available, {} MiB needed",
                available / MIB,
                needed / MIB
            ),
            Eviction::Refused => f.write_str("the runtime refused to load it beside the others"),
        }
    }
}

/// A resident model as the engine (the loop's side) knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resident {
    pub model: ModelId,
    /// When it is unloaded if it stays idle (None: never).
    pub expires: Option<Instant>,
}

/// The loop's record of the resident models, most recently used first.
#[derive(Default)]
pub(super) struct Record {
    models: Vec<Resident>,
}

impl Record {
    pub fn all(&self) -> &[Resident] {
        &self.models
    }

    pub fn contains(&self, model: ModelId) -> bool {
        self.models.iter().any(|r| r.model == model)
    }

    /// The most recently used model.
    pub fn latest(&self) -> Option<ModelId> {
        self.models.first().map(|r| r.model)
    }

    /// `model` was loaded: it is the most recently used, with no expiry until a job sets one.
    pub fn loaded(&mut self, model: ModelId) {
        self.remove(model);
        self.models.insert(
            0,
            Resident {
                model,
                expires: None,
            },
        );
    }

    pub fn remove(&mut self, model: ModelId) {
        self.models.retain(|r| r.model != model);
    }

    /// A job runs on `model`: it becomes the most recently used.
    pub fn used(&mut self, model: ModelId) {
        if let Some(i) = self.models.iter().position(|r| r.model == model) {
            let r = self.models.remove(i);
            self.models.insert(0, r);
        }
    }

    pub fn set_expiry(&mut self, model: ModelId, expires: Option<Instant>) {
        if let Some(r) = self.models.iter_mut().find(|r| r.model == model) {
            r.expires = expires;
        }
    }

    /// The first expiry to come, of any resident model.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.models.iter().filter_map(|r| r.expires).min()
    }

    /// A model whose expiry has passed at `now`, its expiry cleared (its unload is under way).
    pub fn take_expired(&mut self, now: Instant) -> Option<ModelId> {
        let r = self
            .models
            .iter_mut()
            .filter(|r| r.expires.is_some_and(|at| at <= now))
            .min_by_key(|r| r.expires)?;
        r.expires = None;
        Some(r.model)
    }
}

/// The inference thread's resident models: `W` is a loaded model's worker.
pub(super) struct Residents<W> {
    slots: Vec<Slot<W>>,
    max: usize,
    /// Counts uses; a slot's `last_use` is the count at its last one.
    clock: u64,
}

struct Slot<W> {
    model: ModelId,
    number: usize,
    last_use: u64,
    worker: W,
}

impl<W> Residents<W> {
    /// Room for `max` models (at least one).
    pub fn new(max: usize) -> Residents<W> {
        Residents {
            slots: Vec::new(),
            max: max.max(1),
            clock: 0,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// After a load the runtime refused beside the others took once one was unloaded: the
    /// runtime holds no more models at once than are resident now, so the room shrinks to that
    /// and later switches unload first instead of paying a failed load each (a failed
    /// `rkllm_init` reads part of a model file on a board). Kept until a restart, as
    /// `max-loaded-models` is.
    pub fn learn_handle_limit(&mut self) {
        let held = self.slots.len().max(1);
        if held < self.max {
            log::warn!(
                "the runtime holds at most {held} model(s) at once here: up to {held} stay \
                 loaded from now on (max-loaded-models is {}; a restart tries again)",
                self.max
            );
            self.max = held;
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.max
    }

    pub fn contains(&self, model: ModelId) -> bool {
        self.slots.iter().any(|s| s.model == model)
    }

    /// The worker of `model` if it is resident, now its most recent use.
    pub fn use_model(&mut self, model: ModelId) -> Option<&mut W> {
        self.clock += 1;
        let clock = self.clock;
        let slot = self.slots.iter_mut().find(|s| s.model == model)?;
        slot.last_use = clock;
        Some(&mut slot.worker)
    }

    /// The lowest slot number no resident model holds: what the next load gets.
    pub fn free_slot(&self) -> usize {
        (0..)
            .find(|n| self.slots.iter().all(|s| s.number != *n))
            .unwrap_or(0)
    }

    /// Makes `worker` (of `model`, loaded in slot `number`) resident and its most recent use.
    pub fn insert(&mut self, model: ModelId, number: usize, worker: W) -> &mut W {
        self.clock += 1;
        self.slots.push(Slot {
            model,
            number,
            last_use: self.clock,
            worker,
        });
        let last = self.slots.len() - 1;
        &mut self.slots[last].worker
    }

    pub fn remove(&mut self, model: ModelId) -> Option<W> {
        let i = self.slots.iter().position(|s| s.model == model)?;
        Some(self.slots.swap_remove(i).worker)
    }

    /// Takes out the least recently used model, to be unloaded.
    pub fn take_lru(&mut self) -> Option<(ModelId, W)> {
        let i = self
            .slots
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.last_use)
            .map(|(i, _)| i)?;
        let slot = self.slots.swap_remove(i);
        Some((slot.model, slot.worker))
    }

    /// Unloads every model (at shutdown), least recently used first.
    pub fn clear(&mut self) {
        while self.take_lru().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_least_recently_used_model_goes_first_and_slots_are_reused() {
        let mut r: Residents<&str> = Residents::new(3);
        r.insert(0, r.free_slot(), "a");
        r.insert(1, r.free_slot(), "b");
        r.insert(2, r.free_slot(), "c");
        assert!(r.is_full());
        assert_eq!(r.use_model(0), Some(&mut "a"));
        assert_eq!(r.take_lru(), Some((1, "b")));
        // b's slot (1) is the free one now.
        assert_eq!(r.free_slot(), 1);
        r.insert(3, 1, "d");
        assert_eq!(r.take_lru(), Some((2, "c")));
        assert_eq!(r.take_lru(), Some((0, "a")));
        assert_eq!(r.take_lru(), Some((3, "d")));
        assert_eq!(r.take_lru(), None);
        assert_eq!(r.free_slot(), 0);
        assert_eq!(Residents::<()>::new(0).max(), 1);
    }

    #[test]
    fn the_loops_record_orders_by_use_and_expires_each_model_on_its_own() {
        let now = Instant::now();
        let mut rec = Record::default();
        rec.loaded(0);
        rec.loaded(1);
        assert_eq!(rec.latest(), Some(1));
        rec.used(0);
        assert_eq!(rec.latest(), Some(0));
        rec.set_expiry(1, Some(now + Duration::from_secs(1)));
        rec.set_expiry(0, Some(now + Duration::from_secs(5)));
        assert_eq!(rec.next_expiry(), Some(now + Duration::from_secs(1)));
        assert_eq!(rec.take_expired(now), None);
        assert_eq!(rec.take_expired(now + Duration::from_secs(2)), Some(1));
        // Its unload is under way: not taken twice.
        assert_eq!(rec.take_expired(now + Duration::from_secs(2)), None);
        assert_eq!(rec.next_expiry(), Some(now + Duration::from_secs(5)));
        rec.remove(1);
        assert_eq!(rec.all().len(), 1);
        assert!(rec.contains(0) && !rec.contains(1));
    }

    #[test]
    fn a_learned_handle_limit_only_ever_lowers_the_room() {
        let mut r: Residents<&str> = Residents::new(3);
        r.insert(0, r.free_slot(), "a");
        r.learn_handle_limit();
        assert_eq!(r.max(), 1);
        assert!(r.is_full());
        r.take_lru();
        // Nothing resident: the room stays at one, never zero.
        r.learn_handle_limit();
        assert_eq!(r.max(), 1);
        r.insert(1, r.free_slot(), "b");
        r.insert(2, r.free_slot(), "c");
        r.learn_handle_limit();
        assert_eq!(r.max(), 1, "never raised");
    }
}
