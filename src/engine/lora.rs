//! LoRA adapters on the inference thread: which ones a model has and how loading each went.
//!
//! The runtime keeps adapters per handle (`rkllm_load_lora`, a name per adapter) and a run
//! selects one by name (`RKLLMInferParam.lora_params`), as upstream's `llm_demo.cpp` does. The
//! worker loads a model's adapters right after the model, so they live and die with its handle.
//! An adapter that fails to load fails only the requests that name it. The KV cache holds keys
//! and values computed under one adapter (or none): the worker clears it when the next run's
//! adapter differs, since the runtime would otherwise carry on from them silently.

use std::path::PathBuf;

use super::EngineError;

/// Which adapter of a model: its place in the model's list (`ModelLoad::adapters`).
pub type AdapterId = usize;

/// An adapter file a model may run with.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraAdapter {
    /// What a request names it by (`MODEL:NAME`), and the name the runtime knows it by.
    pub name: String,
    pub path: PathBuf,
    /// How strongly it applies (`RKLLMLoraAdapter.scale`; 1.0 as upstream's demo).
    pub scale: f32,
}

/// A resident model's adapters after `rkllm_load_lora`, index-aligned with its list.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    adapters: Vec<(String, Result<(), String>)>,
}

impl Loaded {
    /// Loads each adapter through `load`; a failure is logged and kept for its requests.
    pub(super) fn load_all<E: std::fmt::Display>(
        model: &str,
        adapters: &[LoraAdapter],
        mut load: impl FnMut(&LoraAdapter) -> Result<(), E>,
    ) -> Loaded {
        let adapters = adapters
            .iter()
            .map(|a| {
                let result = load(a).map_err(|e| e.to_string());
                match &result {
                    Ok(()) => log::info!(
                        "model '{model}': LoRA adapter '{}' loaded from {} (scale {})",
                        a.name,
                        a.path.display(),
                        a.scale
                    ),
                    Err(e) => log::error!(
                        "model '{model}': LoRA adapter '{}' ({}) failed to load: {e}; requests \
                         for '{model}:{}' fail, the model itself serves",
                        a.name,
                        a.path.display(),
                        a.name
                    ),
                }
                (a.name.clone(), result)
            })
            .collect();
        Loaded { adapters }
    }

    /// The runtime's name for `adapter` (`None`: the base model), or why it cannot run.
    pub(super) fn name(
        &self,
        model: &str,
        adapter: Option<AdapterId>,
    ) -> Result<Option<&str>, EngineError> {
        let Some(id) = adapter else {
            return Ok(None);
        };
        let unavailable = |reason: String| EngineError::AdapterUnavailable {
            model: model.to_owned(),
            adapter: self
                .adapters
                .get(id)
                .map_or_else(|| format!("#{id}"), |(n, _)| n.clone()),
            reason,
        };
        match self.adapters.get(id) {
            Some((name, Ok(()))) => Ok(Some(name.as_str())),
            Some((_, Err(e))) => Err(unavailable(e.clone())),
            None => Err(unavailable("the model has no such adapter".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(name: &str) -> LoraAdapter {
        LoraAdapter {
            name: name.into(),
            path: PathBuf::from(format!("/m/base.lora/{name}.rkllm")),
            scale: 1.0,
        }
    }

    #[test]
    fn a_failed_adapter_fails_only_its_own_requests() {
        let loaded = Loaded::load_all("base", &[adapter("good"), adapter("bad")], |a| {
            if a.name == "bad" {
                Err("rkllm_load_lora returned -1")
            } else {
                Ok(())
            }
        });
        assert_eq!(loaded.name("base", None), Ok(None));
        assert_eq!(loaded.name("base", Some(0)), Ok(Some("good")));
        let Err(EngineError::AdapterUnavailable {
            model,
            adapter,
            reason,
        }) = loaded.name("base", Some(1))
        else {
            panic!("the failed adapter ran");
        };
        assert_eq!((model.as_str(), adapter.as_str()), ("base", "bad"));
        assert!(reason.contains("-1"), "{reason}");
        assert!(matches!(
            loaded.name("base", Some(2)),
            Err(EngineError::AdapterUnavailable { .. })
        ));
    }
}
