//! The models the inference thread may load, shared with the loop so that a reload (SIGHUP)
//! can add models and change their settings while it runs, and which resident model must be
//! unloaded because of a reload.

use std::sync::{Arc, RwLock};

use super::{ModelId, ModelLoad};

/// What each model is loaded from and with, by id. Ids never change: a reload changes an
/// entry or appends one, never removes one (a removed model's id is kept, unused).
#[derive(Clone, Default)]
pub(super) struct ModelTable(Arc<RwLock<Vec<ModelLoad>>>);

impl ModelTable {
    pub fn new(models: Vec<ModelLoad>) -> ModelTable {
        ModelTable(Arc::new(RwLock::new(models)))
    }

    /// What model `id` is loaded from now (read once per load, off the loop's thread).
    pub fn get(&self, id: ModelId) -> Option<ModelLoad> {
        self.0.read().ok()?.get(id).cloned()
    }

    /// Puts `models` in place; returns the ids whose entry changed.
    pub fn replace(&self, models: Vec<ModelLoad>) -> Vec<ModelId> {
        let Ok(mut table) = self.0.write() else {
            return Vec::new();
        };
        let changed = models
            .iter()
            .enumerate()
            .filter(|(id, m)| table.get(*id).is_some_and(|old| old != *m))
            .map(|(id, _)| id)
            .collect();
        *table = models;
        changed
    }
}

/// Models a reload retired while they may be resident.
#[derive(Default)]
pub(super) struct Retiring {
    /// Loaded with settings that have changed since: unloaded as soon as no job runs, so the
    /// next job for it loads it with the new ones.
    stale: Vec<ModelId>,
    /// No longer served: unloaded once no job runs and none queued needs it.
    removed: Vec<ModelId>,
}

impl Retiring {
    /// After a reload: `changed` models have new settings, `removed` are no longer served
    /// (a model served again is no longer removed).
    pub fn reloaded(&mut self, changed: &[ModelId], removed: &[ModelId], served: &[ModelId]) {
        for id in changed {
            if !self.stale.contains(id) {
                self.stale.push(*id);
            }
        }
        self.removed.retain(|id| !served.contains(id));
        for id in removed {
            if !self.removed.contains(id) {
                self.removed.push(*id);
            }
        }
    }

    /// Whether the idle worker should unload `resident` before anything else runs, given
    /// whether a queued job needs it. Taking the answer "yes" forgets a stale mark: the unload
    /// is about to happen.
    pub fn take_unload(&mut self, resident: ModelId, queued_for_it: bool) -> bool {
        if let Some(at) = self.stale.iter().position(|id| *id == resident) {
            self.stale.swap_remove(at);
            return true;
        }
        !queued_for_it && self.removed.contains(&resident)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, ctx: u32) -> ModelLoad {
        ModelLoad {
            path: format!("/m/{name}.rkllm").into(),
            name: name.into(),
            raw_template: true,
            adapters: Vec::new(),
            params: Some(crate::runtime::ModelParams {
                max_context_len: ctx,
                max_new_tokens: 64,
                sampling: crate::runtime::Sampling::default(),
                base_domain_id: 0,
            }),
            vision: None,
        }
    }

    #[test]
    fn a_replaced_table_names_the_models_whose_settings_changed() {
        let table = ModelTable::new(vec![load("a", 1024), load("b", 1024)]);
        let changed = table.replace(vec![load("a", 1024), load("b", 2048), load("c", 1024)]);
        assert_eq!(changed, [1]);
        assert_eq!(table.get(2).map(|m| m.name), Some("c".to_owned()));
        assert_eq!(
            table
                .get(1)
                .and_then(|m| m.params)
                .map(|p| p.max_context_len),
            Some(2048)
        );
        assert!(table.get(3).is_none());
    }

    #[test]
    fn a_stale_model_unloads_at_once_and_a_removed_one_once_nothing_needs_it() {
        let mut r = Retiring::default();
        r.reloaded(&[0], &[1], &[0, 2]);
        assert!(!r.take_unload(2, false), "unchanged");
        assert!(
            r.take_unload(0, true),
            "stale: even with jobs queued for it"
        );
        assert!(!r.take_unload(0, true), "once");
        assert!(
            !r.take_unload(1, true),
            "removed: its queued jobs run first"
        );
        assert!(r.take_unload(1, false));
        r.reloaded(&[], &[], &[1]);
        assert!(!r.take_unload(1, false), "served again");
    }
}
