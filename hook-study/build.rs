//! Builds the comparison kernel programs (hook-study-ebpf) like metaguard's
//! build.rs builds metaguard-ebpf; the object is embedded by `bpf.rs`.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
    let skip = std::env::var("AYA_BUILD_SKIP").map(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip.unwrap_or(false) {
        let obj = out_dir.join("hook-study-bpf");
        if !obj.exists() {
            std::fs::write(&obj, b"").context("write placeholder eBPF object")?;
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .join("hook-study-ebpf");
    let root = root.to_str().context("utf-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "hook-study-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
