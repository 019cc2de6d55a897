//! rkllmd: serve a Rockchip RKLLM model to local clients.
//!
//! Layers, bottom up: `runtime` (the FFI boundary to librkllmrt), `engine` (the inference
//! thread and its queue), `http` (sans-io HTTP/1.1), `api` (the endpoints), `board` (the kernel
//! files `/metrics` reads), `server` (the mio event loop and connections), `lifecycle` (socket
//! file, lock, credentials), `config` (command line and file), `doctor` (`rkllmd check`),
//! `selftest` (`rkllmd selftest`), `top` (`rkllmd top`).

// The pedantic lints Cargo.toml's [lints.clippy] allows, named again here: a
// `-W clippy::pedantic` on the command line (how pedantic warnings are counted) comes after
// Cargo's lint flags and would turn them back on, while an attribute in the source wins. Keep
// the two lists the same; the reasons are in Cargo.toml.
#![allow(
    clippy::must_use_candidate,
    clippy::missing_errors_doc,
    clippy::module_name_repetitions,
    clippy::float_cmp
)]

pub mod api;
pub mod board;
pub mod causes;
pub mod chat;
pub mod config;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod exit;
pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod runtime;
pub mod selftest;
pub mod server;
pub mod top;
pub mod vision;
