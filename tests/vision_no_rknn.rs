//! A board without librknnrt: opening a vision encoder is a clear error, and text runs are not
//! affected. In a process of its own, since a process loads one librknnrt for good.

mod common;

use std::path::Path;

use rkllmd::runtime::rknn::{CoreMask, Encoder, EncoderError};

#[test]
fn a_missing_librknnrt_is_a_clear_error() {
    let dir = common::TempDir::new("vision-nolib");
    let missing = dir.path().join("librknnrt.so");
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/rkllm-sim/models/vision-demo.rknn");
    let err = Encoder::open(&missing, &model, CoreMask::AUTO).unwrap_err();
    let EncoderError::LibraryOpen { library, reason } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(library, &missing);
    assert!(reason.contains("No such file"), "{reason}");
    let text = err.to_string();
    assert!(
        text.contains("RKNN runtime library") && text.contains("rknn-runtime-library"),
        "{text}"
    );
}
