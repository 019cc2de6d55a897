//! Images for vision-language models (issue #15): checking what a client sent (`image::probe`,
//! cheap enough for the event loop) and turning it into the pixels a vision encoder takes
//! (`image::prepare`, for the inference thread); the model families and their image tags
//! (`family`). Below `config`, `api` and `engine`, which use it; it depends on nothing else in
//! the crate.

pub mod family;
pub mod image;
