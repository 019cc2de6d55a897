//! `/api/show`: what Ollama clients read before they use a model. `capabilities` decides what
//! they send (llm-ollama registers a model only with `completion` and passes tools only with
//! `tools`); `model_info` carries the context length under Ollama's GGUF-style keys;
//! `template` shows the chat template conversations are rendered with.

use std::fmt::Write;

use serde_json::{json, Map, Value};

use super::clock::rfc3339;
use super::models::{details, ModelFile};
use crate::api::ctx::Ctx;
use crate::api::error::{ApiError, Flavor};
use crate::api::full_response::FullResponse;
use crate::api::params::{parse_json, Fields};
use crate::chat::{SystemRole, Template, ToolFormat};
use crate::http::Request;

const FLAVOR: Flavor = Flavor::Ollama;

pub fn show(req: &Request, ctx: &Ctx<'_>) -> Result<FullResponse, ApiError> {
    let body = parse_json(&req.body, FLAVOR)?;
    let f = Fields::parse_body(&body, FLAVOR)?;
    // Ollama's clients send `model`; older ones sent `name`.
    let requested = match f.str("model")? {
        Some(m) if !m.is_empty() => m,
        _ => f.str("name")?.unwrap_or_default(),
    };
    if requested.is_empty() {
        return Err(ApiError::bad_request(
            FLAVOR,
            "'model' is required",
            Some("model"),
        ));
    }
    if !ctx.model_matches(requested) {
        return Err(ApiError::unknown_model(FLAVOR, ctx.catalog, requested));
    }
    let file = ModelFile::stat(ctx);
    let details = details(ctx.model_path, ctx.architecture);
    let parameters = parameters(ctx);
    let template = template_text(ctx.template);
    let mut modelfile = format!(
        "# Served by rkllmd.\nFROM {}\nTEMPLATE \"\"\"{template}\"\"\"\n",
        ctx.model_path.display()
    );
    for line in parameters.lines() {
        // Writing to a String cannot fail.
        let _ = writeln!(modelfile, "PARAMETER {line}");
    }
    Ok(FullResponse::json(
        200,
        &json!({
            "modelfile": modelfile,
            "parameters": parameters,
            "template": template,
            "details": details,
            "model_info": model_info(ctx, &details),
            "capabilities": capabilities(ctx.template, has_encoder(ctx)),
            "modified_at": rfc3339(file.modified),
        }),
    ))
}

/// The model has a vision encoder (`models::ModelVision`: beside it or `vision-encoder`).
fn has_encoder(ctx: &Ctx<'_>) -> bool {
    ctx.catalog
        .get(ctx.model)
        .is_some_and(|m| m.vision.is_some())
}

/// What the served model can be asked for. Every template rkllmd renders writes tool
/// definitions (presets and custom templates alike); under the runtime's own template they go
/// to `rkllm_set_function_tools`. Images need the model's vision encoder; thinking needs the
/// template's switch. Embeddings are not listed: every model answers the embedding endpoints.
fn capabilities(template: Option<&Template>, vision: bool) -> Vec<&'static str> {
    let mut caps = vec!["completion", "tools"];
    if vision {
        caps.push("vision");
    }
    if template.is_some_and(|t| t.thinking.is_some()) {
        caps.push("thinking");
    }
    caps
}

/// Ollama fills `model_info` from the GGUF header: `general.architecture` names the prefix of
/// the other keys, and clients read `<arch>.context_length`. The architecture is the one the
/// `.rkllm` file declares (its GGUF-style header, read once at start; `details` carries it as
/// the family), else the family its file name gives, else the template's name, else `rkllm`;
/// the context length is the one the runtime was loaded with.
fn model_info(ctx: &Ctx<'_>, details: &Value) -> Value {
    let arch = match details["family"].as_str() {
        Some(family) if !family.is_empty() => family.to_owned(),
        _ => ctx.template.map_or("rkllm", |t| t.name).to_owned(),
    };
    let mut info = Map::new();
    info.insert(format!("{arch}.context_length"), json!(ctx.max_context_len));
    info.insert("general.architecture".into(), json!(arch));
    Value::Object(info)
}

/// The daemon's generation settings, one `name value` per line as Ollama lists them.
fn parameters(ctx: &Ctx<'_>) -> String {
    let s = &ctx.sampling;
    format!(
        "num_ctx {}\nnum_predict {}\ntemperature {}\ntop_k {}\ntop_p {}\nrepeat_penalty {}\nfrequency_penalty {}\npresence_penalty {}",
        ctx.max_context_len,
        ctx.max_new_tokens,
        s.temperature,
        s.top_k,
        s.top_p,
        s.repeat_penalty,
        s.frequency_penalty,
        s.presence_penalty
    )
}

/// The template in use, written as an Ollama (Go) template so that people and tools reading it
/// see each role's text: a readable account, not one Ollama would render identically (rkllmd's
/// rules for tools, reasoning and folded system turns are in `src/chat/`, and the comment
/// names them).
fn template_text(template: Option<&Template>) -> String {
    let Some(t) = template else {
        return "{{/* the runtime applies the chat template stored in the model file; it sees \
                the newest user message only; tools (.Tools) go to rkllm_set_function_tools */}}\
                {{ .Prompt }}"
            .to_owned();
    };
    let tools = match t.tool_format {
        ToolFormat::Hermes => "a <tools> block in the system turn, calls as <tool_call> blocks",
        ToolFormat::Llama3Json => {
            "Environment: ipython and the definitions in the first user turn, calls as JSON objects"
        }
    };
    let mut out = format!(
        "{{{{/* rkllmd template '{}'; .Tools are written as {tools}",
        t.name
    );
    if let Some(thinking) = &t.thinking {
        let _ = write!(
            out,
            "; thinking {} by default, switched off with {:?} after the generation prompt",
            if thinking.default_on { "on" } else { "off" },
            thinking.off
        );
    }
    out.push_str(" */}}");
    out.push_str(t.bos.as_deref().unwrap_or_default());
    let system = |out: &mut String, content: &str| match &t.system_role {
        SystemRole::Native => {
            let _ = write!(out, "{}{content}{}", t.system.prefix, t.system.suffix);
        }
        SystemRole::FoldIntoNextTurn { separator } => {
            let _ = write!(out, "{content}{separator}");
        }
    };
    if let Some(default) = &t.default_system {
        out.push_str("{{ if .System }}");
        system(&mut out, "{{ .System }}");
        out.push_str("{{ else }}");
        system(&mut out, default);
        out.push_str("{{ end }}");
    } else {
        out.push_str("{{ if .System }}");
        system(&mut out, "{{ .System }}");
        out.push_str("{{ end }}");
    }
    let _ = write!(
        out,
        "{{{{ range .Messages }}}}\
         {{{{ if eq .Role \"user\" }}}}{}{{{{ .Content }}}}{}\
         {{{{ else if eq .Role \"assistant\" }}}}{}{{{{ .Content }}}}{}\
         {{{{ else if eq .Role \"tool\" }}}}{}{{{{ .Content }}}}{}\
         {{{{ end }}}}{{{{ end }}}}{}",
        t.user.prefix,
        t.user.suffix,
        t.assistant.prefix,
        t.assistant.suffix,
        t.tool.prefix,
        t.tool.suffix,
        t.generation_prompt,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::CustomParts;

    #[test]
    fn capabilities_follow_the_template() {
        assert_eq!(capabilities(None, false), ["completion", "tools"]);
        let qwen3 = Template::preset("qwen3").unwrap();
        assert_eq!(
            capabilities(Some(&qwen3), false),
            ["completion", "tools", "thinking"]
        );
        for name in crate::chat::PRESET_NAMES {
            let t = Template::preset(name).unwrap();
            let caps = capabilities(Some(&t), false);
            assert!(caps.contains(&"tools"), "{name}");
            assert_eq!(caps.contains(&"thinking"), t.thinking.is_some(), "{name}");
        }
        let custom = Template::custom(&CustomParts::default()).unwrap();
        assert_eq!(capabilities(Some(&custom), false), ["completion", "tools"]);
        assert_eq!(
            capabilities(Some(&qwen3), true),
            ["completion", "tools", "vision", "thinking"]
        );
    }

    #[test]
    fn the_template_text_shows_each_roles_strings() {
        let t = Template::preset("qwen3").unwrap();
        let text = template_text(Some(&t));
        assert!(text.starts_with("{{/* rkllmd template 'qwen3'"), "{text}");
        assert!(
            text.contains(".Tools are written as a <tools> block"),
            "{text}"
        );
        assert!(text.contains("thinking on by default"), "{text}");
        assert!(
            text.contains("{{ if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n"),
            "{text}"
        );
        assert!(
            text.ends_with("{{ end }}{{ end }}<|im_start|>assistant\n"),
            "{text}"
        );

        let llama = template_text(Some(&Template::preset("llama3").unwrap()));
        assert!(llama.contains("Environment: ipython"), "{llama}");
        assert!(llama.contains("<|begin_of_text|>"), "{llama}");

        let parts = CustomParts {
            user_prefix: Some("[U]".into()),
            user_suffix: Some("[/U]\\n".into()),
            generation_prompt: Some("[A]".into()),
            ..CustomParts::default()
        };
        let custom = template_text(Some(&Template::custom(&parts).unwrap()));
        assert!(custom.contains("[U]{{ .Content }}[/U]\n"), "{custom}");
        assert!(custom.ends_with("[A]"), "{custom}");

        let runtime = template_text(None);
        assert!(runtime.ends_with("{{ .Prompt }}"), "{runtime}");
    }
}
