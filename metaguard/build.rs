//! Builds the kernel programs (metaguard-ebpf) with the nightly toolchain and
//! bpf-linker; the object lands in OUT_DIR and is embedded by `loader.rs`.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
    let skip = std::env::var("AYA_BUILD_SKIP").map(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip.unwrap_or(false) {
        // Userspace-only builds (policy work, docs): embed an empty object so the
        // crate still compiles; loading it fails with a clear message.
        let obj = out_dir.join("metaguard-bpf");
        if !obj.exists() {
            std::fs::write(&obj, b"").context("write placeholder eBPF object")?;
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .join("metaguard-ebpf");
    let root = root.to_str().context("utf-8 path")?;
    // aya-build watches the eBPF crate only; the shared logic it compiles
    // in lives next to it, and a change there must rebuild the programs.
    println!("cargo:rerun-if-changed={}/../metaguard-common/src", root);
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "metaguard-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
