//! Images in requests, for every API: OpenAI's `image_url` content parts (`data:` URLs only),
//! the Responses API's `input_image` (translated into those), Ollama's `images` (base64). On the
//! event loop only the base64 is decoded and the header checked (`vision::image::probe`); the
//! pixels are decoded by the inference thread. Each image travels on its message's
//! [`Turn`](crate::chat::Turn).

mod base64;

use super::ctx::Ctx;
use super::error::{ApiError, Flavor};
use crate::chat::{Role, Turn};
use crate::runtime::IMAGE_PLACEHOLDER;
use crate::vision::image::{probe, ImageError, ImageInput, ImageLimits};

/// The images of one request, counted against `max-images-per-request` as they are read.
pub struct RequestImages {
    limits: ImageLimits,
    flavor: Flavor,
    count: usize,
    /// The request is a Responses one, translated into chat messages: errors name its `input`.
    responses: bool,
}

impl RequestImages {
    pub fn new(limits: ImageLimits, flavor: Flavor) -> RequestImages {
        RequestImages {
            limits,
            flavor,
            count: 0,
            responses: false,
        }
    }

    /// For `/v1/responses`, whose messages are translated from `input` items: errors name
    /// `input[].content[].image_url`, as the endpoint's other errors do.
    pub fn for_responses(limits: ImageLimits) -> RequestImages {
        RequestImages {
            responses: true,
            ..RequestImages::new(limits, Flavor::OpenAi)
        }
    }

    /// The name errors give content part `part` of message `message`.
    pub fn part_field(&self, message: usize, part: usize) -> String {
        if self.responses {
            "input[].content[].image_url".to_owned()
        } else {
            format!("messages[{message}].content[{part}].image_url")
        }
    }

    /// An OpenAI image URL: a `data:image/...;base64,` URL. rkllmd never fetches a URL: boards
    /// are often offline, and a daemon that fetched what clients name would let them reach
    /// whatever the board can (server-side request forgery).
    pub fn url(&mut self, url: &str, field: &str) -> Result<ImageInput, ApiError> {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
            return Err(self.bad(
                field,
                format!(
                    "'{field}': rkllmd does not fetch image URLs (boards are often offline, and \
                     fetching would let clients make the daemon request any address); send the \
                     image inline as a data URL: data:image/jpeg;base64,..."
                ),
            ));
        }
        let Some(data) = data_url_payload(url) else {
            return Err(self.bad(
                field,
                format!("'{field}' must be a base64 data URL: data:image/jpeg;base64,... (or png, webp)"),
            ));
        };
        self.base64(data, field)
    }

    /// An image as base64 text (Ollama's `images`; a data URL is taken too, as some clients
    /// send one).
    pub fn base64(&mut self, text: &str, field: &str) -> Result<ImageInput, ApiError> {
        let text = data_url_payload(text).unwrap_or(text);
        self.count += 1;
        if self.count > self.limits.max_per_request {
            let max = self.limits.max_per_request;
            return Err(self.bad(
                field,
                format!("too many images: at most {max} per request (max-images-per-request)"),
            ));
        }
        let bound = base64::max_decoded_len(text);
        // Padding makes the bound overshoot by up to 3 bytes: only a clear excess is refused
        // here, the exact size below.
        if bound > self.limits.max_bytes.saturating_add(3) {
            let err = ImageError::TooLarge {
                bytes: bound - 3,
                limit: self.limits.max_bytes,
            };
            return Err(self.image_error(field, &err));
        }
        let Some(bytes) = base64::decode(text) else {
            return Err(self.bad(field, format!("'{field}' is not valid base64")));
        };
        probe(bytes, &self.limits).map_err(|e| self.image_error(field, &e))
    }

    fn image_error(&self, field: &str, e: &ImageError) -> ApiError {
        let mut err = self.bad(field, format!("'{field}': {e}"));
        err.status = e.http_status();
        err
    }

    fn bad(&self, field: &str, message: String) -> ApiError {
        let param = field.split(['[', '.']).next().unwrap_or(field);
        ApiError::bad_request(self.flavor, message, Some(param))
    }
}

/// The base64 payload of a `data:[<mediatype>];base64,<data>` URL, if `url` is one. The media
/// type is not trusted: the format is read from the bytes.
fn data_url_payload(url: &str) -> Option<&str> {
    let rest = url
        .get(..5)
        .filter(|s| s.eq_ignore_ascii_case("data:"))
        .map(|_| &url[5..])?;
    let (meta, data) = rest.split_once(',')?;
    meta.rsplit(';')
        .next()
        .filter(|p| p.trim().eq_ignore_ascii_case("base64"))
        .map(|_| data)
}

/// Refuses a request with images for a model that takes none (no vision encoder): the images
/// are checked first, so a client still learns what was wrong with an image, then this names
/// the model.
pub fn check_accepted(ctx: &Ctx<'_>, turns: &[Turn], flavor: Flavor) -> Result<(), ApiError> {
    if turns.iter().all(|t| t.images.is_empty()) || ctx.accepts_images() {
        return Ok(());
    }
    Err(ApiError::bad_request(
        flavor,
        format!(
            "model '{}' does not accept images: it has no vision encoder",
            ctx.model_name
        ),
        None,
    ))
}

/// The images of a conversation for a model that takes them, in the order the rendered prompt
/// places them (each user turn's where the client sent it among its text, see
/// `chat::render`). Only user turns carry
/// images into the prompt, and only when rkllmd renders it: the runtime's own template sees
/// one input per run, with no place for earlier turns' images.
pub fn in_prompt_order(
    ctx: &Ctx<'_>,
    turns: &[Turn],
    flavor: Flavor,
) -> Result<Vec<ImageInput>, ApiError> {
    if turns.iter().all(|t| t.images.is_empty()) {
        return Ok(Vec::new());
    }
    if let Some(i) = turns
        .iter()
        .position(|t| t.role != Role::User && !t.images.is_empty())
    {
        return Err(ApiError::bad_request(
            flavor,
            format!("'messages[{i}]': images are taken on user messages only"),
            Some("messages"),
        ));
    }
    if ctx.template.is_none() {
        return Err(ApiError::bad_request(
            flavor,
            format!(
                "model '{}' takes images only with a chat template rkllmd renders (the \
                 'chat-template' setting), not with the runtime's own ('runtime')",
                ctx.model_name
            ),
            None,
        ));
    }
    if let Some(i) = turns
        .iter()
        .position(|t| t.content.contains(IMAGE_PLACEHOLDER))
    {
        return Err(ApiError::bad_request(
            flavor,
            format!(
                "'messages[{i}]': the text '{IMAGE_PLACEHOLDER}' marks where images go in a \
                 request with images; send it without"
            ),
            Some("messages"),
        ));
    }
    Ok(turns
        .iter()
        .flat_map(|t| t.images.iter().map(|p| p.image.clone()))
        .collect())
}

#[cfg(test)]
mod tests;
