//! Proves `scripts/ensure-deps.sh` decides "libclang is missing" the way the `rocksdb`
//! build (bindgen through clang-sys) would, against file trees built here rather than this
//! machine's own (issue 15: a fresh Debian 12 with only `libclang-cpp.so.14`, pulled in by
//! another package, passed the old check, nothing was installed, and the build panicked
//! "Unable to find libclang"). Each tree stands in for `/`.

use std::path::Path;
use std::process::Command;

fn has_libclang(root: &Path) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ensure-deps.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg("--has-libclang")
        .arg(root)
        .env_remove("LIBCLANG_PATH")
        .status()
        .expect("run ensure-deps.sh");
    match status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("ensure-deps.sh --has-libclang exited with {other:?}"),
    }
}

fn tree(files: &[&str]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for file in files {
        let path = root.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
    }
    root
}

const HEADERS: &str = "usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h";

#[test]
fn libclang_cpp_alone_is_not_libclang() {
    // What the fresh Debian 12 machine of the issue had.
    let bare = tree(&[
        "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
        "usr/lib/llvm-14/lib/libclang-cpp.so.14",
        "usr/lib/llvm-14/lib/libLLVM-14.so",
    ]);
    assert!(!has_libclang(bare.path()));
    // libclang-cpp with clang's headers is still no libclang.
    let headers = tree(&["usr/lib/x86_64-linux-gnu/libclang-cpp.so.14", HEADERS]);
    assert!(!has_libclang(headers.path()));
    // Nothing at all.
    assert!(!has_libclang(tree(&[]).path()));
}

#[test]
fn libclang_needs_its_headers_too() {
    let no_headers = tree(&["usr/lib/x86_64-linux-gnu/libclang-14.so.1"]);
    assert!(!has_libclang(no_headers.path()));
}

#[test]
fn every_name_clang_sys_loads_is_found() {
    // What Debian 12's libclang-dev (libclang-14-dev, libclang1-14,
    // libclang-common-14-dev) installs, one library name at a time.
    for library in [
        "usr/lib/llvm-14/lib/libclang.so",
        "usr/lib/llvm-14/lib/libclang.so.1",
        "usr/lib/llvm-14/lib/libclang-14.so",
        "usr/lib/x86_64-linux-gnu/libclang-14.so.1",
        "usr/lib/x86_64-linux-gnu/libclang-14.so.14.0.6",
        "usr/local/lib/libclang.so.17",
    ] {
        let root = tree(&[
            library,
            "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14",
            HEADERS,
        ]);
        assert!(has_libclang(root.path()), "{library} not found");
    }
}
