use std::fmt;
use std::path::PathBuf;

/// Failures of the vision encoder: loading librknnrt, opening a `.rknn` model, encoding an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderError {
    /// dlopen failed; `reason` is dlerror's text. On a board without librknnrt this is what a
    /// vision model gets, while text models are served as before.
    LibraryOpen {
        library: PathBuf,
        reason: String,
    },
    /// The library opened but lacks a function the encoder path calls.
    MissingSymbol {
        library: PathBuf,
        reason: String,
    },
    /// A process holds one librknnrt; another one was asked for after the first loaded.
    OtherLibraryLoaded {
        loaded: PathBuf,
        requested: PathBuf,
    },
    NulByte {
        what: &'static str,
    },
    /// `rknn_init` or a query of the model's tensors failed.
    Open {
        model: PathBuf,
        call: &'static str,
        code: i32,
    },
    /// The model's tensors are not one image in and token embeddings out.
    NotAnImageEncoder {
        model: PathBuf,
    },
    /// The pixels handed to `encode` are not the encoder's input size: images are resized to it
    /// before (`Encoder::input_size`).
    InputSize {
        expected: (u32, u32, u32),
        width: u32,
        height: u32,
        bytes: usize,
    },
    /// A call of the encoding failed on the runtime's side.
    Encode {
        call: &'static str,
        code: i32,
    },
}

impl fmt::Display for EncoderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncoderError::LibraryOpen { library, reason } => write!(
                f,
                "cannot load the RKNN runtime library '{}' for the vision encoder: {reason} \
                 (install librknnrt.so or set rknn-runtime-library)",
                library.display()
            ),
            EncoderError::MissingSymbol { library, reason } => write!(
                f,
                "the RKNN runtime library '{}' is not a usable librknnrt: {reason}",
                library.display()
            ),
            EncoderError::OtherLibraryLoaded { loaded, requested } => write!(
                f,
                "cannot load RKNN runtime library '{}': '{}' is already loaded in this process",
                requested.display(),
                loaded.display()
            ),
            EncoderError::NulByte { what } => write!(
                f,
                "the {what} contains a NUL byte, which the RKNN runtime cannot take"
            ),
            EncoderError::Open { model, call, code } => write!(
                f,
                "the RKNN runtime could not open vision encoder '{}' ({call} returned {code})",
                model.display()
            ),
            EncoderError::NotAnImageEncoder { model } => write!(
                f,
                "'{}' is not a vision encoder: it must take one image and give image-token \
                 embeddings",
                model.display()
            ),
            EncoderError::InputSize {
                expected: (w, h, c),
                width,
                height,
                bytes,
            } => write!(
                f,
                "the vision encoder takes {w}x{h} pixels of {c} bytes, got {width}x{height} in \
                 {bytes} bytes"
            ),
            EncoderError::Encode { call, code } => {
                write!(f, "the vision encoder failed: {call} returned {code}")
            }
        }
    }
}

impl std::error::Error for EncoderError {}
