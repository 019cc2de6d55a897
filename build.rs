//! Compiles the C++ shim against the vendored `rkllm.h` of the selected ABI. The runtime itself is
//! not linked: the shim dlopens it at engine start (`runtime-library`). When `RKLLM_LIB_DIR` is
//! unset (dev host, CI) our simulator is built from `vendor/rkllm-sim/` into `OUT_DIR`, and the
//! package's binaries (and test and bench binaries) get an `$ORIGIN`-relative runpath to it, so
//! dlopen's normal search finds it; when it is set (board, buildroot) nothing more is built and
//! the real runtime is found by the normal dlopen search at run time.
//!
//! Besides `RKLLMD_ABI`, the crate gets `RKLLMD_RUNPATH` (the runpath, for `rkllmd check` to
//! follow dlopen's search) and `RKLLMD_SIM_LIB` (the simulator's absolute path, for tests; both
//! empty without the simulator).
//!
//! The RKNN side (vision encoders) is built the same way: `src/runtime/rknn/shim.cpp` against our
//! own declarations (`decls.h`; Rockchip's `rknn_api.h` is never vendored, see there), and on dev
//! hosts the simulated `librknnrt.so` beside the RKLLM one (`RKLLMD_RKNN_SIM_LIB`). When
//! `RKNN_INCLUDE_DIR` names a directory holding a real `rknn_api.h`, `rknn/check.cpp` is compiled
//! against it and a declaration that differs fails the build.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let abi_minor = if env::var_os("CARGO_FEATURE_RKLLM_1_2").is_some() {
        "2"
    } else {
        "3"
    };
    let header_dir = manifest.join("vendor/rkllm").join(format!("1.{abi_minor}"));

    println!("cargo:rerun-if-changed=build.rs");
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("vendor/rkllm").display()
    );
    println!("cargo:rerun-if-changed=src/runtime/shim.cpp");
    println!("cargo:rerun-if-changed=src/runtime/dl.h");
    println!("cargo:rerun-if-env-changed=RKLLM_LIB_DIR");
    println!("cargo:rustc-env=RKLLMD_ABI=1.{abi_minor}");

    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("src/runtime/shim.cpp")
        .include(&header_dir)
        .define("RKLLMD_ABI_MINOR", abi_minor)
        .warnings(true)
        .extra_warnings(true)
        .compile("rkllmd_shim");

    // Both headers' `RKLLMParam` layouts, whatever the ABI: the ABI probe compares a runtime's
    // defaults against each.
    for minor in ["2", "3"] {
        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .file("src/runtime/layout.cpp")
            .include(manifest.join("vendor/rkllm").join(format!("1.{minor}")))
            .define("RKLLMD_LAYOUT_MINOR", minor)
            // One object directory per header: the two objects share a source file name.
            .out_dir(out_dir.join(format!("layout-1.{minor}")))
            .warnings(true)
            .extra_warnings(true)
            .compile(&format!("rkllmd_layout_1_{minor}"));
    }
    println!("cargo:rerun-if-changed=src/runtime/layout.cpp");

    build_rknn_shim(&manifest);

    let (runpath, sim_lib, other_sim_lib, sigill_lib) = if env::var_os("RKLLM_LIB_DIR").is_none() {
        let lib = build_simulator(&manifest, &out_dir, abi_minor, "librkllmrt.so");
        // The other ABI's simulator under a name dlopen never finds by itself, and a runtime
        // that dies with SIGILL: both for tests of the ABI probe and of `rkllmd check`.
        let other_minor = if abi_minor == "2" { "3" } else { "2" };
        let other = build_simulator(
            &manifest,
            &out_dir,
            other_minor,
            &format!("librkllmrt-abi1.{other_minor}.so"),
        );
        let sigill = build_sigill_runtime(&manifest, &out_dir);
        let rknn = build_rknn_simulator(&manifest, &out_dir);
        println!("cargo:rustc-env=RKLLMD_RKNN_SIM_LIB={}", rknn.display());
        let runpath = simulator_runpath(&out_dir);
        if !runpath.is_empty() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{runpath}");
        }
        (
            runpath,
            lib.display().to_string(),
            other.display().to_string(),
            sigill.display().to_string(),
        )
    } else {
        println!("cargo:rustc-env=RKLLMD_RKNN_SIM_LIB=");
        Default::default()
    };
    println!("cargo:rustc-env=RKLLMD_RUNPATH={runpath}");
    println!("cargo:rustc-env=RKLLMD_SIM_LIB={sim_lib}");
    println!("cargo:rustc-env=RKLLMD_OTHER_SIM_LIB={other_sim_lib}");
    println!("cargo:rustc-env=RKLLMD_SIGILL_LIB={sigill_lib}");
    // dlopen lives in libdl before glibc 2.34 (still common on board images); later it is an
    // empty stub, so linking it is always right.
    println!("cargo:rustc-link-lib=dylib=dl");
}

/// The runpath that lets dlopen find the simulator in `out_dir`. `OUT_DIR` is
/// `<profile>/build/<pkg>-<hash>/out`; binaries sit in `<profile>/`, test and bench binaries in
/// `<profile>/deps/`, so `$ORIGIN`-relative entries reach it from both (never a build-host
/// absolute path, unless cargo's layout is not the usual one).
fn simulator_runpath(out_dir: &Path) -> String {
    // A runpath entry must not hold the runpath separator, a `$` token or, through `-Wl,`, a comma.
    let usable = |s: &str| !s.contains([':', ',', '$']);
    // `build/<pkg>-<hash>/out`: the last three components, when the third from last is `build`.
    let tail: Vec<_> = out_dir.components().rev().take(3).collect();
    let relative = (tail.len() == 3 && tail[2].as_os_str() == "build")
        .then(|| tail.iter().rev().collect::<PathBuf>())
        .and_then(|r| r.to_str().map(str::to_owned))
        .filter(|r| usable(r));
    if let Some(relative) = relative {
        return format!("$ORIGIN/{relative}:$ORIGIN/../{relative}");
    }
    if let Some(absolute) = out_dir.to_str().filter(|a| usable(a)) {
        println!(
            "cargo:warning=OUT_DIR ({absolute}) is not in cargo's usual layout: the \
             binaries get it as an absolute runpath to find the rkllm simulator"
        );
        absolute.to_owned()
    } else {
        println!(
            "cargo:warning=OUT_DIR ({}) cannot be a runpath: the binaries will not find \
             the rkllm simulator by name; set LD_LIBRARY_PATH to it or runtime-library \
             to its librkllmrt.so",
            out_dir.display()
        );
        String::new()
    }
}

/// Dev host case: builds the simulator of ABI `1.<abi_minor>` as `OUT_DIR/<file>` and returns
/// its path.
fn build_simulator(manifest: &Path, out_dir: &Path, abi_minor: &str, file: &str) -> PathBuf {
    let header_dir = manifest.join("vendor/rkllm").join(format!("1.{abi_minor}"));
    let sim_src = manifest.join("vendor/rkllm-sim/src");
    println!("cargo:rerun-if-changed={}", sim_src.display());
    let lib = out_dir.join(file);
    shared_cpp_library(
        &cpp_sources(&sim_src),
        &header_dir,
        &[
            "-fvisibility-inlines-hidden",
            &format!("-DRKLLM_SIM_ABI_MINOR={abi_minor}"),
        ],
        (&lib, "librkllmrt.so"),
        "the rkllm simulator",
    );
    lib
}

/// The `.cpp` files of `dir`, sorted: the same build whatever order the directory lists them in.
fn cpp_sources(dir: &Path) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "cpp"))
        .collect();
    sources.sort();
    sources
}

/// Compiles and links `sources` into the shared library `lib` (a simulator: `cc` builds static
/// archives only) with `soname`, the real runtime's, whatever the file is called.
fn shared_cpp_library(
    sources: &[PathBuf],
    include: &Path,
    flags: &[&str],
    (lib, soname): (&Path, &str),
    what: &str,
) {
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let status = compiler
        .to_command()
        .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-pthread"])
        .args(flags)
        .arg("-I")
        .arg(include)
        .args(sources)
        .arg(format!("-Wl,-soname,{soname}"))
        .arg("-o")
        .arg(lib)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the C++ compiler {}: {e}",
                compiler.path().display()
            )
        });
    assert!(status.success(), "building {what} failed");
}

/// A test double that has every function rkllmd resolves and raises SIGILL in
/// `rkllm_createDefaultParam`, as the 1.3 runtime dies on a CPU without SVE.
fn build_sigill_runtime(manifest: &Path, out_dir: &Path) -> PathBuf {
    let src = manifest.join("tests/fixtures/sigill_rkllmrt.c");
    println!("cargo:rerun-if-changed={}", src.display());
    let lib = out_dir.join("librkllmrt-sigill.so");
    let compiler = cc::Build::new().get_compiler();
    let status = compiler
        .to_command()
        .args(["-O2", "-fPIC", "-shared", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the C compiler {}: {e}",
                compiler.path().display()
            )
        });
    assert!(status.success(), "building the SIGILL test runtime failed");
    lib
}

/// The RKNN shim, and the check of our declarations against a real `rknn_api.h` when
/// `RKNN_INCLUDE_DIR` is set (the Buildroot package's staging include directory, or the script
/// `scripts/check-rknn-decls`, which compiles the same file with the same flags).
fn build_rknn_shim(manifest: &Path) {
    let dir = manifest.join("src/runtime/rknn");
    for file in ["shim.cpp", "decls.h", "check.cpp"] {
        println!("cargo:rerun-if-changed={}", dir.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=RKNN_INCLUDE_DIR");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file(dir.join("shim.cpp"))
        .include(&dir)
        .warnings(true)
        .extra_warnings(true)
        .compile("rkllmd_rknn_shim");
    if let Some(include) = env::var_os("RKNN_INCLUDE_DIR") {
        let include = PathBuf::from(include);
        assert!(
            include.join("rknn_api.h").is_file(),
            "RKNN_INCLUDE_DIR is set but {} has no rknn_api.h",
            include.display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            include.join("rknn_api.h").display()
        );
        // A mismatch is a static_assert or a failed conversion: the compile, and so the build,
        // fails with the field or function named.
        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .file(dir.join("check.cpp"))
            .include(&include)
            .include(&dir)
            .compile("rkllmd_rknn_check");
    }
}

/// Dev host case: the simulated `librknnrt.so` (vendor/rkllm-sim/src/rknn/, with the RKLLM
/// simulator's trace and clock), built as `OUT_DIR/librknnrt.so`, found by the same runpath.
fn build_rknn_simulator(manifest: &Path, out_dir: &Path) -> PathBuf {
    let sim = manifest.join("vendor/rkllm-sim/src");
    let rknn_src = sim.join("rknn");
    println!("cargo:rerun-if-changed={}", rknn_src.display());
    let mut sources = cpp_sources(&rknn_src);
    sources.extend(["trace.cpp", "util.cpp", "tokenizer.cpp"].map(|f| sim.join(f)));
    let lib = out_dir.join("librknnrt.so");
    shared_cpp_library(
        &sources,
        &manifest.join("src/runtime/rknn"),
        &["-fvisibility=hidden"],
        (&lib, "librknnrt.so"),
        "the rknn simulator",
    );
    lib
}
