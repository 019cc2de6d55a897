//! Every model served: its file, whether it fits in the memory available (one is resident at a
//! time, so each must fit alone), the chat template it would be rendered with, and for a vision
//! model its encoder and image tags.

use super::memory;
use super::report::Finding;
use crate::board::Root;
use crate::config::Config;
use crate::models::Model;

const TEMPLATE: &str = "template";

/// A `memory` and a `template` finding per model, in catalog order (the default first). With
/// one model the lines do not name it; with several each does, so a failing one is told apart.
pub fn check(root: &Root, cfg: &Config) -> Vec<Finding> {
    if cfg.catalog.is_empty() {
        return vec![
            memory::check(root, &cfg.model),
            Finding::skip(TEMPLATE, "no model configured"),
        ];
    }
    let several = cfg.catalog.len() > 1;
    let mut out = Vec::with_capacity(cfg.catalog.len() * 2);
    for entry in &cfg.catalog {
        let named = |f: Finding| {
            if several {
                f.about(&format!("model '{}'", entry.name))
            } else {
                f
            }
        };
        let memory = match std::fs::File::open(&entry.path) {
            Ok(_) => memory::check(root, &entry.path),
            Err(e) => Finding::fail(
                "memory",
                format!("cannot read '{}': {e}", entry.path.display()),
                "the daemon opens every model file of the catalog when it is requested",
            ),
        };
        out.push(named(memory));
        let model = Model::read(entry);
        out.push(named(template(&model)));
        if let Some(v) = &model.vision {
            // What its images would run with: the encoder and the family's tags.
            out.push(named(Finding::ok("vision", v.describe())));
        }
    }
    out
}

fn template(model: &Model) -> Finding {
    let arch = model
        .architecture
        .as_deref()
        .map_or_else(String::new, |a| format!(" (the file declares '{a}')"));
    match &model.template {
        Some(t) => Finding::ok(TEMPLATE, format!("{}{arch}", t.name)),
        // Logged by the daemon at start; a choice, not a fault.
        None => Finding::ok(
            TEMPLATE,
            format!("the runtime's own, which sees only the newest user turn{arch}"),
        ),
    }
}
