//! A run with images: each image decoded and preprocessed to the encoder's input, encoded
//! (or its embeddings taken from the last few encoded), then the whole prompt run as
//! multimodal input. The KV cache cannot be matched against text for such a run (the image's
//! positions hold embeddings, not tokens of any text), so it is cleared before and after: a
//! follow-up question about an image runs the whole prompt again, the images' encoding
//! excepted while they are among the last encoded.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Worker;
use crate::engine::job::{Input, RunSummary};
use crate::engine::{EngineError, Job};
use crate::runtime::rknn::{CoreMask, Encoder};
use crate::runtime::{Images, RunEnd, IMAGE_PLACEHOLDER};
use crate::vision::image::{prepare, ImageInput, ImageLimits, InputSize};

/// Encoder outputs kept per vision model: a conversation re-sends its images with every
/// turn. One is 196 x 1536 floats (1.2 MB) for Qwen2-VL-2B's encoder.
const KEPT_EMBEDDINGS: usize = 8;

/// A vision model's encoder on the inference thread, opened with its model.
pub(super) struct Vision {
    /// The open encoder, or why it did not open (that model's image requests fail with it).
    encoder: Result<Encoder, String>,
    limits: ImageLimits,
    /// The last encoded images, newest last.
    kept: VecDeque<Kept>,
}

/// An encoded image: its bytes (compared whole, so no two images can share an entry) and its
/// embeddings.
type Kept = (Arc<[u8]>, Arc<[f32]>);

impl Vision {
    /// Opens the model's encoder; a failure, or an input size other than its `image-size`,
    /// is logged and kept, so the model still serves text.
    pub(super) fn open(
        model: &str,
        cfg: &crate::engine::Vision,
        vision: &crate::engine::VisionLoad,
    ) -> Vision {
        let encoder = match Encoder::open(&cfg.library, &vision.encoder, CoreMask::AUTO) {
            Err(e) => Err((
                format!("the vision encoder did not open ({e})"),
                e.to_string(),
            )),
            Ok(encoder) => match (encoder.input_size(), vision.image_size) {
                ((ew, eh), Some((w, h))) if (ew, eh) != (w, h) => {
                    let reason = format!("it takes {ew}x{eh} images but image-size says {w}x{h}");
                    Err((format!("the vision encoder is refused: {reason}"), reason))
                }
                _ => Ok(encoder),
            },
        };
        let encoder = encoder.map_err(|(logged, reason)| {
            log::error!(
                "model '{model}': {logged}; its requests with images fail, text requests are \
                 served"
            );
            reason
        });
        Vision {
            encoder,
            limits: cfg.limits,
            kept: VecDeque::new(),
        }
    }

    /// The embeddings of `image`: kept ones when the same bytes were encoded lately.
    fn embed(
        &mut self,
        model: &str,
        index: usize,
        image: &ImageInput,
    ) -> Result<Arc<[f32]>, EngineError> {
        let at = self.kept.iter().position(|(b, _)| **b == *image.bytes);
        if let Some(entry) = at.and_then(|at| self.kept.remove(at)) {
            let embeddings = Arc::clone(&entry.1);
            self.kept.push_back(entry);
            log::debug!(
                "image {}: its embeddings were kept; the encoder is skipped",
                index + 1
            );
            return Ok(embeddings);
        }
        let encoder = self
            .encoder
            .as_ref()
            .map_err(|reason| EngineError::Encoder {
                model: model.to_owned(),
                reason: reason.clone(),
            })?;
        let (width, height) = encoder.input_size();
        let rgb = prepare(image, &self.limits, InputSize { width, height }).map_err(|e| {
            EngineError::BadImage {
                reason: format!("image {} cannot be used: {e}", index + 1),
            }
        })?;
        let embeddings: Arc<[f32]> = encoder
            .encode(&rgb, width, height)
            .map_err(|e| EngineError::Encoder {
                model: model.to_owned(),
                reason: e.to_string(),
            })?
            .into();
        if self.kept.len() >= KEPT_EMBEDDINGS {
            self.kept.pop_front();
        }
        self.kept
            .push_back((Arc::clone(&image.bytes), Arc::clone(&embeddings)));
        Ok(embeddings)
    }
}

impl Worker {
    /// Runs a job with images (see the module's doc).
    pub(super) fn image_run(
        &mut self,
        job: &Job,
        cap: u32,
        reserve: u32,
    ) -> Result<RunSummary, EngineError> {
        let (prompt, role) = match job.input() {
            Input::Conversation(c) => (
                c.pieces.concat() + &c.generation_prompt,
                crate::runtime::Role::User,
            ),
            Input::Prompt(p) => (p.clone(), job.role()),
            _ => {
                return Err(EngineError::BadImage {
                    reason: "images are taken with chat and generate requests only".into(),
                })
            }
        };
        let count = job.images().len();
        let placeholders = prompt.matches(IMAGE_PLACEHOLDER).count();
        if placeholders != count {
            return Err(EngineError::BadImage {
                reason: format!(
                    "the prompt places {placeholders} image(s) ('{IMAGE_PLACEHOLDER}') for the \
                     {count} sent: write '{IMAGE_PLACEHOLDER}' once per image, and not otherwise"
                ),
            });
        }
        let name = self.name.clone();
        let Some(vision) = self.vision.as_mut() else {
            return Err(EngineError::BadImage {
                reason: format!("model '{name}' does not accept images: it has no vision encoder"),
            });
        };
        let info = match &vision.encoder {
            Ok(encoder) => *encoder.info(),
            Err(reason) => {
                return Err(EngineError::Encoder {
                    model: name,
                    reason: reason.clone(),
                })
            }
        };
        self.check_fits(
            prompt.len(),
            count as u64 * u64::from(info.image_tokens),
            reserve,
        )?;
        let Some(vision) = self.vision.as_mut() else {
            return Err(EngineError::WorkerGone);
        };
        let mut embeddings = Vec::with_capacity(count * info.embedding_len());
        for (i, image) in job.images().iter().enumerate() {
            embeddings.extend_from_slice(&vision.embed(&name, i, image)?);
        }
        // The record of the cache cannot follow image positions: it is forgotten, the cache
        // cleared, and cleared again before the next run.
        self.save_before_replacing(job);
        self.cache.invalidate();
        self.history.invalidate();
        self.runtime
            .clear_kv_cache(false)
            .map_err(EngineError::Runtime)?;
        let images = Images {
            embeddings: &embeddings,
            count,
            tokens: info.image_tokens as usize,
            token_width: info.token_width(),
            width: info.width,
            height: info.height,
        };
        let ran = self.generate_with(job, &prompt, (role, false, cap), Some(&images));
        self.must_clear = true;
        match ran.end {
            Ok(end) => Ok(RunSummary {
                perf: match end {
                    RunEnd::Finished(perf) => Some(perf),
                    RunEnd::Stopped(perf) => perf,
                    RunEnd::Unfinished => None,
                },
                generated_tokens: ran.generated,
                cached_tokens: 0,
                hit_cap: ran.hit_cap,
                reseat: false,
            }),
            Err(e) => Err(self.classify(e, ran.generated, prompt.len(), 0)),
        }
    }
}

impl Worker {
    /// Refuses, before the encoder runs, a prompt whose text and image positions with
    /// `reserve` tokens for the answer would not fit the context: the runtime would fail the
    /// run with nothing to tell the client, and the bytes alone do not show the images.
    fn check_fits(
        &self,
        bytes: usize,
        image_positions: u64,
        reserve: u32,
    ) -> Result<(), EngineError> {
        let max_context = self.init.max_context_len;
        let total = self.cache.estimate_tokens(bytes) + image_positions;
        if total + u64::from(reserve) <= u64::from(max_context) {
            return Ok(());
        }
        Err(EngineError::PromptTooLong {
            estimated_tokens: total,
            prompt_bytes: bytes,
            max_context,
            by_runtime: false,
            tools_tokens: 0,
            reserve,
        })
    }
}
