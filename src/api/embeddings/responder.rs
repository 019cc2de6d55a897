//! Collects an embedding job's vectors and writes the one response body when the job ends.

use std::time::Instant;

use serde::Serialize;

use super::base64::encode_f32s;
use crate::api::error::{ApiError, Flavor};
use crate::api::full_response::FullResponse;
use crate::api::responder::{Next, Responder, ResponseOut};
use crate::engine::{normalize, EngineError, Finish, FinishReason};
use crate::runtime::RuntimeError;

/// Which API's body to write.
pub enum Body {
    OpenAi { model: String, base64: bool },
    OllamaEmbed { model: String, routed: Instant },
    OllamaLegacy,
}

impl Body {
    fn flavor(&self) -> Flavor {
        match self {
            Body::OpenAi { .. } => Flavor::OpenAi,
            Body::OllamaEmbed { .. } | Body::OllamaLegacy => Flavor::Ollama,
        }
    }
}

pub struct EmbeddingResponder {
    body: Body,
    expected: usize,
    dimensions: Option<u32>,
    vectors: Vec<Vec<f32>>,
    tokens: u64,
}

impl EmbeddingResponder {
    pub fn new(body: Body, expected: usize, dimensions: Option<u32>) -> EmbeddingResponder {
        EmbeddingResponder {
            body,
            expected,
            dimensions,
            vectors: Vec::with_capacity(expected),
            tokens: 0,
        }
    }

    /// The vectors cut to `dimensions` and normalised again (Matryoshka-style, as OpenAI's
    /// `text-embedding-3` models do); a size beyond the model's is a 400.
    fn shaped(&mut self) -> Result<Vec<Vec<f32>>, ApiError> {
        let mut vectors = std::mem::take(&mut self.vectors);
        let Some(dims) = self.dimensions else {
            return Ok(vectors);
        };
        let dims = dims as usize;
        let size = vectors.first().map_or(0, Vec::len);
        if dims > size {
            return Err(ApiError::bad_request(
                self.body.flavor(),
                format!("'dimensions' is {dims}, but this model's embeddings have {size}"),
                Some("dimensions"),
            ));
        }
        for v in &mut vectors {
            v.truncate(dims);
            normalize(v);
        }
        Ok(vectors)
    }

    fn write(&mut self) -> Result<FullResponse, ApiError> {
        let vectors = self.shaped()?;
        let tokens = self.tokens;
        Ok(match &self.body {
            Body::OpenAi { model, base64 } => {
                let data: Vec<OpenAiItem<'_>> = vectors
                    .iter()
                    .enumerate()
                    .map(|(index, v)| OpenAiItem {
                        object: "embedding",
                        index,
                        embedding: if *base64 {
                            Vector::Base64(encode_f32s(v))
                        } else {
                            Vector::Float(v)
                        },
                    })
                    .collect();
                FullResponse::json(
                    200,
                    &OpenAiList {
                        object: "list",
                        data,
                        model,
                        usage: Usage {
                            prompt_tokens: tokens,
                            total_tokens: tokens,
                        },
                    },
                )
            }
            Body::OllamaEmbed { model, routed } => {
                let total = u64::try_from(routed.elapsed().as_nanos()).unwrap_or(u64::MAX);
                FullResponse::json(
                    200,
                    &OllamaEmbed {
                        model,
                        embeddings: &vectors,
                        total_duration: total,
                        // The model is loaded once at start; no request loads it.
                        load_duration: 0,
                        prompt_eval_count: tokens,
                    },
                )
            }
            Body::OllamaLegacy => FullResponse::json(
                200,
                &OllamaLegacy {
                    embedding: vectors.first().map_or(&[][..], Vec::as_slice),
                },
            ),
        })
    }
}

impl Responder for EmbeddingResponder {
    fn started(&mut self, _out: &mut dyn ResponseOut) {}

    fn text(&mut self, _text: &str, _out: &mut dyn ResponseOut) -> Next {
        Next::Continue
    }

    fn embedding(&mut self, vector: &[f32], tokens: u32) {
        self.vectors.push(vector.to_vec());
        self.tokens += u64::from(tokens);
    }

    fn finished(&mut self, finish: &Finish, out: &mut dyn ResponseOut) {
        if finish.reason == FinishReason::Aborted {
            // The client left: nobody reads this.
            let e = ApiError::from_engine(self.body.flavor(), &EngineError::Cancelled);
            out.full(e.response());
            return;
        }
        if self.vectors.len() != self.expected {
            // A run the runtime finished without hidden states (a deadline or a shutdown
            // arrives as `failed` instead).
            let error = EngineError::Runtime(RuntimeError::NoHiddenStates);
            out.full(ApiError::from_engine(self.body.flavor(), &error).response());
            return;
        }
        match self.write() {
            Ok(response) => out.full(response),
            Err(e) => out.full(e.response()),
        }
    }

    fn failed(&mut self, error: &EngineError, out: &mut dyn ResponseOut) {
        let field = match self.body {
            Body::OllamaLegacy => "prompt",
            _ => "input",
        };
        // A text over the context names the embeddings' field, not a chat's.
        let e = ApiError::from_engine(self.body.flavor(), error).naming_field(field);
        out.full(e.response());
    }
}

#[derive(Serialize)]
struct OpenAiList<'a> {
    object: &'static str,
    data: Vec<OpenAiItem<'a>>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct OpenAiItem<'a> {
    object: &'static str,
    index: usize,
    embedding: Vector<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector<'a> {
    Float(&'a [f32]),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct OllamaEmbed<'a> {
    model: &'a str,
    embeddings: &'a [Vec<f32>],
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: u64,
}

#[derive(Serialize)]
struct OllamaLegacy<'a> {
    embedding: &'a [f32],
}
