//! Request fields shared by the OpenAI and Ollama APIs: typed reads that name the field on a
//! wrong type, and the generation parameters that become a `Job`.

use serde_json::{Map, Value};

use super::ctx::Ctx;
use super::error::{ApiError, Flavor};
use super::stop::{MAX_STOPS, MAX_STOP_BYTES};
use crate::engine::Job;
use crate::runtime::Sampling;

/// Header carrying what the daemon could not honour (never silently pretended).
pub const WARNING_HEADER: &str = "X-Rkllmd-Warning";

pub struct Fields<'a> {
    pub obj: &'a Map<String, Value>,
    pub flavor: Flavor,
    /// Prefix for error messages, e.g. "options." for Ollama's nested options.
    pub prefix: &'static str,
}

impl<'a> Fields<'a> {
    pub fn parse_body(body: &'a Value, flavor: Flavor) -> Result<Fields<'a>, ApiError> {
        match body.as_object() {
            Some(obj) => Ok(Fields {
                obj,
                flavor,
                prefix: "",
            }),
            None => Err(ApiError::bad_request(
                flavor,
                "the request body must be a JSON object",
                None,
            )),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    pub fn wrong_type(&self, name: &str, expected: &str) -> ApiError {
        let field = format!("{}{name}", self.prefix);
        ApiError::bad_request(
            self.flavor,
            format!("'{field}' must be {expected}"),
            Some(&field),
        )
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong_type(name, "a boolean")),
        }
    }

    pub fn str(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong_type(name, "a string")),
        }
    }

    /// These fields, named `<prefix><name>` in error messages (a nested object's fields).
    pub fn named_under(self, prefix: &'static str) -> Fields<'a> {
        Fields { prefix, ..self }
    }

    pub fn object(&self, name: &str) -> Result<Option<Fields<'a>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(Fields {
                obj,
                flavor: self.flavor,
                prefix: self.prefix,
            })),
            Some(_) => Err(self.wrong_type(name, "an object")),
        }
    }

    pub fn array(&self, name: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.wrong_type(name, "an array")),
        }
    }

    /// A positive integer (token counts); larger than u32 saturates.
    pub fn count(&self, name: &str) -> Result<Option<u32>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
                _ => Err(self.wrong_type(name, "a positive integer")),
            },
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(name, "an integer")),
        }
    }

    /// A number within [min, max], at `f32` precision (what the runtime takes: rounding is
    /// intended, and the range keeps it finite).
    #[allow(clippy::cast_possible_truncation)]
    pub fn number(&self, name: &str, min: f64, max: f64) -> Result<Option<f32>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (min..=max).contains(&x) => Ok(Some(x as f32)),
                _ => Err(self.wrong_type(name, &format!("a number from {min} to {max}"))),
            },
        }
    }

    /// `stop`: a string or a list of strings, at most `MAX_STOPS` of them holding at most
    /// `MAX_STOP_BYTES` together (the output filter matches them on the event loop's thread).
    pub fn stop(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let stops = match self.get(name) {
            None => return Ok(Vec::new()),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if items.len() > MAX_STOPS => {
                return Err(self.too_many_stops(name))
            }
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| self.wrong_type(name, "a string or an array of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(self.wrong_type(name, "a string or an array of strings")),
        };
        if stops.iter().map(String::len).sum::<usize>() > MAX_STOP_BYTES {
            return Err(self.too_many_stops(name));
        }
        Ok(stops)
    }

    fn too_many_stops(&self, name: &str) -> ApiError {
        let field = format!("{}{name}", self.prefix);
        ApiError::bad_request(
            self.flavor,
            format!(
                "'{field}' may hold at most {MAX_STOPS} sequences of at most {MAX_STOP_BYTES} bytes in all"
            ),
            Some(&field),
        )
    }
}

/// Sampling values a request asked for; `None` keeps the daemon's configured value.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SamplingRequest {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub repeat_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
}

impl SamplingRequest {
    /// Reads the sampling fields under their names in `f` (OpenAI top level, Ollama `options`).
    pub fn read(f: &Fields<'_>) -> Result<SamplingRequest, ApiError> {
        Ok(SamplingRequest {
            temperature: f.number("temperature", 0.0, 2.0)?,
            top_p: f.number("top_p", 0.0, 1.0)?,
            top_k: f
                .int("top_k")?
                .map(|k| i32::try_from(k.max(0)).unwrap_or(i32::MAX)),
            repeat_penalty: f.number("repeat_penalty", 0.0, 10.0)?,
            frequency_penalty: f.number("frequency_penalty", -2.0, 2.0)?,
            presence_penalty: f.number("presence_penalty", -2.0, 2.0)?,
        })
    }

    fn is_empty(&self) -> bool {
        *self == SamplingRequest::default()
    }

    fn over(&self, base: Sampling) -> Sampling {
        Sampling {
            top_k: self.top_k.unwrap_or(base.top_k),
            top_p: self.top_p.unwrap_or(base.top_p),
            temperature: self.temperature.unwrap_or(base.temperature),
            repeat_penalty: self.repeat_penalty.unwrap_or(base.repeat_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(base.frequency_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(base.presence_penalty),
        }
    }
}

/// Everything about one generation that both APIs accept.
#[derive(Clone, Debug, Default)]
pub struct GenParams {
    pub max_tokens: Option<u32>,
    pub sampling: SamplingRequest,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
}

impl GenParams {
    /// Fills the job and returns the warnings for what could not be honoured.
    pub fn apply(&self, ctx: &Ctx<'_>, job: &mut Job) -> Vec<(&'static str, String)> {
        let mut warnings = Vec::new();
        job.set_max_new_tokens(self.max_tokens.map(|n| n.min(ctx.max_new_tokens)));
        if self.max_tokens.is_some_and(|n| n > ctx.max_new_tokens) {
            warnings.push((
                WARNING_HEADER,
                format!(
                    "the requested token limit was capped at the daemon's max-new-tokens ({})",
                    ctx.max_new_tokens
                ),
            ));
        }
        if !self.sampling.is_empty() {
            if ctx.caps.run_sampling {
                job.set_sampling(Some(self.sampling.over(ctx.sampling)));
            } else {
                warnings.push((
                    WARNING_HEADER,
                    "sampling parameters are fixed when the model loads on runtime ABI 1.2; the request's were ignored".into(),
                ));
            }
        }
        if self.seed.is_some() {
            warnings.push((
                WARNING_HEADER,
                "seed is not supported by the RKLLM runtime and was ignored".into(),
            ));
        }
        warnings
    }
}

/// The model field: absent means the loaded model; otherwise it must name it or an alias.
pub fn check_model(ctx: &Ctx<'_>, f: &Fields<'_>) -> Result<String, ApiError> {
    match f.str("model")? {
        None | Some("") => Ok(ctx.model_name.to_owned()),
        Some(m) if ctx.model_matches(m) => Ok(m.to_owned()),
        Some(m) => Err(ApiError::unknown_model(f.flavor, ctx.catalog, m)),
    }
}

/// Parses a JSON body; an error names the position.
pub fn parse_json(body: &[u8], flavor: Flavor) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            flavor,
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
            None,
        )
    })
}
