//! The deployment files under deploy/ say what the documentation says they
//! do: the systemd unit verifies and keeps its hardening, the Kubernetes
//! manifests hold the same capabilities, mounts and probes, and the sample
//! policy compiles.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use metaguard::demo::TempDir;
use yaml_rust2::{Yaml, YamlLoader};

/// The capabilities metaguard runs with, everywhere (reasons: the unit's comments).
const CAPABILITIES: [&str; 6] = [
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_NET_ADMIN",
    "CAP_SYS_ADMIN",
    "CAP_SYS_PTRACE",
    "CAP_DAC_READ_SEARCH",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("deploy/systemd/metaguard.service")).unwrap()
}

/// `[Section] Key` → every value given, in order (systemd keys may repeat).
fn unit_keys(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = String::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        out.entry(format!("[{section}] {}", k.trim()))
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

fn one<'a>(keys: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match keys.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{key}: expected one value, found {other:?}"),
    }
}

fn caps(list: &str) -> Vec<String> {
    let mut v: Vec<String> = list.split_whitespace().map(String::from).collect();
    v.sort();
    v
}

fn expected_caps() -> Vec<String> {
    caps(&CAPABILITIES.join(" "))
}

#[test]
fn unit_keeps_its_hardening() {
    let keys = unit_keys(&unit_text());
    let s = "[Service]";
    assert_eq!(one(&keys, &format!("{s} Type")), "simple");
    assert_eq!(
        one(&keys, &format!("{s} ExecStart")),
        "/usr/local/bin/metaguard run --policy /etc/metaguard/policy.toml"
    );
    for (k, v) in [
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "2"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("RuntimeDirectory", "metaguard"),
        ("RuntimeDirectoryMode", "0700"),
        ("LimitMEMLOCK", "infinity"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("SystemCallArchitectures", "native"),
        ("LockPersonality", "yes"),
        ("RestrictNamespaces", "yes"),
    ] {
        assert_eq!(one(&keys, &format!("{s} {k}")), v, "{k}");
    }
    assert!(keys.contains_key(&format!("{s} RestartSec")));
    assert_eq!(
        caps(one(&keys, &format!("{s} CapabilityBoundingSet"))),
        expected_caps()
    );
    assert_eq!(
        caps(one(&keys, &format!("{s} AmbientCapabilities"))),
        expected_caps()
    );
    assert_eq!(
        caps(one(&keys, &format!("{s} ReadWritePaths"))),
        caps("/sys/fs/bpf /run/metaguard")
    );
    assert_eq!(
        caps(one(&keys, &format!("{s} RestrictAddressFamilies"))),
        caps("AF_UNIX AF_NETLINK AF_INET AF_INET6")
    );
    // bpf(2) must stay allowed by the syscall filter.
    assert!(one(&keys, &format!("{s} SystemCallFilter"))
        .split_whitespace()
        .any(|w| w == "bpf"));
    // A stop must never unload the guard (pinning keeps it enforcing).
    for k in ["ExecStop", "ExecStopPost"] {
        assert!(
            !keys.contains_key(&format!("{s} {k}")),
            "{k} present: a stop must not unload"
        );
    }
    // No ProtectProc=invisible: /proc/PID/exe of other processes is read.
    assert!(!keys.contains_key(&format!("{s} ProtectProc")));
    assert_eq!(one(&keys, "[Install] WantedBy"), "multi-user.target");
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED unit_passes_systemd_analyze_verify: systemd-analyze is not installed (apt-get install systemd)");
        return;
    }
    // The installed path may not exist here: point a copy at this build's binary.
    let dir = TempDir::new("deploy-unit").unwrap();
    let unit = dir.0.join("metaguard.service");
    let text = unit_text().replace("/usr/local/bin/metaguard", env!("CARGO_BIN_EXE_metaguard"));
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // verify exits 0 on some warnings (unknown keys, bad values it ignores).
    let unit_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("metaguard.service"))
        .collect();
    assert!(
        unit_lines.is_empty(),
        "systemd-analyze verify complained:\n{stderr}"
    );
}

fn manifests() -> Vec<Yaml> {
    let text =
        std::fs::read_to_string(repo().join("deploy/kubernetes/metaguard-daemonset.yaml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap()
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    let found: Vec<&Yaml> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("not a list: {y:?}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn daemonset_matches_the_unit() {
    let docs = manifests();
    let ns = of_kind(&docs, "Namespace")["metadata"]["name"]
        .as_str()
        .unwrap();
    for kind in ["ServiceAccount", "ConfigMap", "DaemonSet"] {
        assert_eq!(
            of_kind(&docs, kind)["metadata"]["namespace"].as_str(),
            Some(ns),
            "{kind}"
        );
    }
    let ds = of_kind(&docs, "DaemonSet");
    let spec = &ds["spec"];
    assert_eq!(
        spec["updateStrategy"]["type"].as_str(),
        Some("RollingUpdate")
    );
    assert_eq!(
        spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"].as_i64(),
        Some(1)
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert_ne!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(
        pod["priorityClassName"].as_str(),
        Some("system-node-critical")
    );
    let tolerations = pod["tolerations"].as_vec().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"].as_str() == Some("Exists") && t["key"].is_badvalue()),
        "a toleration of every taint"
    );
    let containers = pod["containers"].as_vec().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    // Kubernetes rejects this with SYS_ADMIN added.
    assert_ne!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    let mut add: Vec<String> = strings(&sc["capabilities"]["add"])
        .into_iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    add.sort();
    assert_eq!(add, expected_caps());
    let unit = unit_keys(&unit_text());
    assert_eq!(add, caps(one(&unit, "[Service] CapabilityBoundingSet")));
    assert_eq!(strings(&sc["capabilities"]["drop"]), vec!["ALL"]);

    let args = strings(&c["args"]);
    assert_eq!(
        &args[..3],
        ["run", "--policy", "/etc/metaguard/policy.toml"]
    );
    assert!(args.windows(2).any(|w| w == ["--metrics", "0.0.0.0:9464"]));
    let ports = c["ports"].as_vec().unwrap();
    assert!(ports
        .iter()
        .any(|p| p["containerPort"].as_i64() == Some(9464)));

    assert!(!c["readinessProbe"].is_badvalue(), "readiness probe");
    assert!(!c["livenessProbe"].is_badvalue(), "liveness probe");
    assert_eq!(
        strings(&c["readinessProbe"]["exec"]["command"])[1..],
        ["check", "/etc/metaguard/policy.toml"]
    );
    for k in ["requests", "limits"] {
        assert!(
            !c["resources"][k]["memory"].is_badvalue(),
            "resources.{k}.memory"
        );
    }

    // Mounts: name → (mountPath, volume).
    let volumes: BTreeMap<String, &Yaml> = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v))
        .collect();
    let mounts: BTreeMap<String, &Yaml> = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap().to_string(), m))
        .collect();
    let host_path = |mount_path: &str| -> Option<String> {
        let m = mounts.get(mount_path)?;
        let v = volumes.get(m["name"].as_str()?)?;
        v["hostPath"]["path"].as_str().map(String::from)
    };
    assert_eq!(
        host_path("/sys/fs/cgroup").as_deref(),
        Some("/sys/fs/cgroup")
    );
    assert_eq!(host_path("/sys/fs/bpf").as_deref(), Some("/sys/fs/bpf"));
    assert_eq!(
        host_path("/sys/kernel/btf").as_deref(),
        Some("/sys/kernel/btf")
    );
    assert_eq!(
        host_path("/run/metaguard").as_deref(),
        Some("/run/metaguard")
    );
    // Bidirectional propagation is refused for unprivileged containers.
    assert_eq!(
        mounts["/sys/fs/bpf"]["mountPropagation"].as_str(),
        Some("HostToContainer")
    );
    assert_eq!(mounts["/sys/kernel/btf"]["readOnly"].as_bool(), Some(true));
    let policy_vol = volumes[mounts["/etc/metaguard"]["name"].as_str().unwrap()];
    let cm_name = of_kind(&docs, "ConfigMap")["metadata"]["name"]
        .as_str()
        .unwrap();
    assert_eq!(policy_vol["configMap"]["name"].as_str(), Some(cm_name));
}

#[test]
fn configmap_policy_compiles() {
    let docs = manifests();
    let text = of_kind(&docs, "ConfigMap")["data"]["policy.toml"]
        .as_str()
        .expect("data.policy.toml");
    // The sample names /bin/sh (it says to change it), which exists here.
    let p = metaguard::policy::parse_str(text, Path::new("configmap:policy.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(p.endpoints.iter().any(|e| e.name == "aws-imds"));
    assert_eq!(p.rules.len(), 1);
    assert!(p.rules[0].exe.is_some());
}
