//! Compiles the C++ shim against the vendored `rkllm.h` of the selected ABI. The runtime itself is
//! not linked: the shim dlopens it at engine start (`runtime-library`). When `RKLLM_LIB_DIR` is
//! unset (dev host, CI) our simulator is built from `vendor/rkllm-sim/` into target/<profile>/,
//! where the binaries' `$ORIGIN` runpath lets dlopen find it; when it is set (board, buildroot)
//! nothing more is built and the real runtime is found by the normal dlopen search at run time.

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
    println!("cargo:rerun-if-changed={}", header_dir.display());
    println!("cargo:rerun-if-changed=src/runtime/shim.cpp");
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

    // The runpath the binaries get, for `rkllmd check` to follow dlopen's search.
    let runpath = if env::var_os("RKLLM_LIB_DIR").is_none() {
        build_simulator(&manifest, &out_dir, &header_dir, abi_minor);
        SIMULATOR_RUNPATH
    } else {
        ""
    };
    println!("cargo:rustc-env=RKLLMD_RUNPATH={runpath}");
    // dlopen lives in libdl before glibc 2.34 (still common on board images); later it is an
    // empty stub, so linking it is always right.
    println!("cargo:rustc-link-lib=dylib=dl");
}

/// Binaries sit in <profile>/, test and bench binaries in <profile>/deps/.
const SIMULATOR_RUNPATH: &str = "$ORIGIN:$ORIGIN/..";

/// Dev host case: build the simulator as `librkllmrt.so` next to the binaries (target/<profile>/)
/// and give them an `$ORIGIN`-relative runpath (never a build-host absolute one), which dlopen
/// called from the binary honours.
fn build_simulator(manifest: &Path, out_dir: &Path, header_dir: &Path, abi_minor: &str) {
    let sim_src = manifest.join("vendor/rkllm-sim/src");
    println!("cargo:rerun-if-changed={}", sim_src.display());
    let mut sources: Vec<PathBuf> = fs::read_dir(&sim_src)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", sim_src.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "cpp"))
        .collect();
    sources.sort();

    let lib = out_dir.join("librkllmrt.so");
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let status = compiler
        .to_command()
        .args([
            "-std=c++17",
            "-O2",
            "-fPIC",
            "-shared",
            "-pthread",
            "-fvisibility-inlines-hidden",
        ])
        .arg(format!("-DRKLLM_SIM_ABI_MINOR={abi_minor}"))
        .arg("-I")
        .arg(header_dir)
        .args(&sources)
        .args(["-Wl,-soname,librkllmrt.so", "-o"])
        .arg(&lib)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C++ compiler {:?}: {e}", compiler.path()));
    assert!(status.success(), "building the rkllm simulator failed");

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: the profile dir is three levels up.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR has the usual depth");
    let installed = profile_dir.join("librkllmrt.so");
    // Replace, not overwrite in place: a running daemon may have the old file mapped.
    let tmp = profile_dir.join("librkllmrt.so.tmp");
    fs::copy(&lib, &tmp).expect("copy simulator next to the binaries");
    fs::rename(&tmp, &installed).expect("install simulator next to the binaries");

    println!("cargo:rustc-link-arg=-Wl,-rpath,{SIMULATOR_RUNPATH}");
    println!(
        "cargo:warning=RKLLM_LIB_DIR is unset: built the rkllm simulator ({}) for dlopen",
        installed.display()
    );
}
