//! Compiles the XDP program with clang, and a host-side probe of the ABI header whose output the
//! layout test compares with the Rust mirror.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const BPF_SOURCES: &[&str] = &[
    "bpf/relay.bpf.c",
    "bpf/trafficgen.bpf.c",
    "bpf/relay_maps.h",
    "bpf/parsing.h",
    "bpf/rewrite.h",
    "include/relay_abi.h",
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    for source in BPF_SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-changed=tests/abi_probe.c");
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let multiarch = multiarch_include();
    for program in ["relay", "trafficgen"] {
        let mut bpf = Command::new(&clang);
        bpf.args([
            "-target", "bpf", "-mcpu=v3", "-O2", "-g", "-Wall", "-Werror",
        ])
        .arg(format!("-I{}", manifest.join("include").display()))
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg(manifest.join(format!("bpf/{program}.bpf.c")))
        .arg("-o")
        .arg(out.join(format!("{program}.bpf.o")));
        run(
            &mut bpf,
            "compiling the XDP programs (apt-get install clang libbpf-dev)",
        );
    }

    let probe = out.join("abi_probe");
    let mut host = Command::new(&clang);
    host.args(["-O0", "-Wall", "-Werror"])
        .arg(format!("-I{}", manifest.join("include").display()))
        .arg(manifest.join("tests/abi_probe.c"))
        .arg("-o")
        .arg(&probe);
    run(&mut host, "compiling the ABI probe");
    let layout = Command::new(&probe)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", probe.display()));
    assert!(layout.status.success(), "the ABI probe failed");
    std::fs::write(out.join("abi_layout.txt"), layout.stdout).expect("writing abi_layout.txt");
}

/// Debian keeps `asm/types.h` under the multiarch directory, which `-target bpf` does not search.
fn multiarch_include() -> String {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let triple = match arch.as_str() {
        "aarch64" => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    let dir = format!("/usr/include/{triple}");
    if !Path::new(&dir).exists() {
        println!("cargo:warning={dir} is missing: install libc6-dev");
    }
    dir
}

fn run(command: &mut Command, what: &str) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    assert!(status.success(), "{what}: {command:?} exited with {status}");
}
