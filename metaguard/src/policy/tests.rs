use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use super::*;
use crate::sys::{cgroup, exe};

const FILE: &str = "p.toml";

fn parse(src: &str) -> Result<Policy, PolicyErrors> {
    parse_str(src, Path::new(FILE))
}

/// The errors of a policy that must not compile, one string each.
fn errors(src: &str) -> Vec<String> {
    match parse(src) {
        Ok(p) => panic!("expected errors, got a policy: {p:#?}"),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

/// The single error of a policy.
fn error(src: &str) -> String {
    let e = errors(src);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap()
}

/// An endpoint so that policies under test are otherwise valid.
const EP: &str = "[[endpoint]]\nname = \"e\"\naddresses = [\"10.1.2.3\"]\n";

fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "metaguard-policy-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn full_example_compiles() {
    let exe_path = self_exe();
    let src = format!(
        r#"mode = "enforce"
include = ["aws", "gcp"]

[guard]
users   = ["root", 1001]
cgroups = ["/"]

[[endpoint]]
name      = "local-api"
addresses = ["10.0.0.1", "fd00::1/128", "192.168.0.0/16", "10.0.0.1/32"]
ports     = [8080, 80, 80]
mode      = "audit"

[[allow]]
name      = "agent"
endpoints = ["aws-imds", "gcp", "aws-imds"]
exe       = '{}'
users     = ["root"]
groups    = ["root", 4]
cgroups   = ["/", "/"]

[[allow]]
name  = "root-anywhere"
users = [0]
"#,
        exe_path.display()
    );
    let p = parse(&src).unwrap_or_else(|e| panic!("{e}"));
    let mount = cgroup::cgroup2_mount().unwrap();
    let root_cg = cgroup::resolve(&mount, "/").unwrap();
    assert_eq!(root_cg.level, 0);

    assert_eq!(p.source, PathBuf::from(FILE));
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(
        p.guard,
        Guard {
            users: vec![0, 1001],
            cgroups: vec![root_cg.clone()]
        }
    );
    let names: Vec<&str> = p.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "aws-imds",
            "aws-ecs-task-metadata",
            "aws-eks-pod-identity",
            "gcp-metadata",
            "local-api"
        ]
    );
    assert_eq!(
        p.endpoints[0],
        Endpoint {
            name: "aws-imds".into(),
            preset: Some("aws".into()),
            prefixes: vec![
                "169.254.169.254/32".parse().unwrap(),
                "fd00:ec2::254/128".parse().unwrap()
            ],
            ports: Some(vec![80]),
            mode: Mode::Enforce,
            require_imdsv2: false,
        }
    );
    assert_eq!(p.endpoints[3].preset.as_deref(), Some("gcp"));
    assert_eq!(
        p.endpoints[4],
        Endpoint {
            name: "local-api".into(),
            preset: None,
            prefixes: vec![
                "10.0.0.1/32".parse().unwrap(),
                "fd00::1/128".parse().unwrap(),
                "192.168.0.0/16".parse().unwrap()
            ],
            ports: Some(vec![80, 8080]),
            mode: Mode::Audit,
            require_imdsv2: false,
        }
    );
    assert_eq!(p.rules.len(), 2);
    let r = &p.rules[0];
    assert_eq!(r.name, "agent");
    assert_eq!(r.endpoints, vec![0, 3]);
    let x = r.exe.as_ref().unwrap();
    assert_eq!(x.path, exe_path);
    assert_eq!(x.id, exe::identify(&exe_path).unwrap());
    assert_eq!(r.users, vec![0]);
    assert_eq!(r.groups, vec![0, 4]);
    assert_eq!(r.cgroups, vec![root_cg]);
    let r = &p.rules[1];
    assert_eq!(
        *r,
        Rule {
            name: "root-anywhere".into(),
            endpoints: vec![0, 1, 2, 3, 4],
            exe: None,
            users: vec![0],
            groups: vec![],
            cgroups: vec![],
            http: None,
            redact: vec![],
        }
    );
    assert_eq!(p.exe_paths(), vec![exe_path.clone()]);

    let s = summary(&p);
    assert!(s.starts_with("policy p.toml: enforce\n"), "{s}");
    assert!(
        s.contains(
            "guard: processes with uid in root (0), 1001; or with cgroup in or under / (id "
        ),
        "{s}"
    );
    assert!(
        s.contains("  aws-imds [preset aws]: 169.254.169.254/32, fd00:ec2::254/128; port 80 (tcp, udp); enforce\n"),
        "{s}"
    );
    assert!(
        s.contains("  local-api: 10.0.0.1/32, fd00::1/128, 192.168.0.0/16; ports 80, 8080 (tcp, udp); audit\n"),
        "{s}"
    );
    assert!(s.contains("  agent -> aws-imds, gcp-metadata\n"), "{s}");
    assert!(
        s.contains(&format!("    exe {} ({})\n", exe_path.display(), x.id)),
        "{s}"
    );
    assert!(s.contains("  root-anywhere -> every endpoint\n"), "{s}");
    assert!(s.contains("5 endpoints, 2 rules"), "{s}");
}

#[test]
fn readme_example_compiles() {
    let src = r#"
mode = "enforce"
include = ["aws", "gcp"]

[guard]
users   = ["root", 1001]
cgroups = ["/"]

[[endpoint]]
name      = "aws-imds-http"
addresses = ["169.254.169.254/32", "fd00:ec2::254/128"]
ports     = [80]
mode      = "audit"

[[allow]]
name      = "ssm-agent"
endpoints = ["aws-imds"]
exe       = "/bin/sh"
users     = ["root"]
groups    = ["root", 4]
cgroups   = ["/"]
"#;
    let p = parse(src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.endpoints.len(), 5);
    assert_eq!(p.rules[0].endpoints, vec![0]);
    let x = p.rules[0].exe.as_ref().unwrap();
    assert_eq!(x.path, Path::new("/bin/sh"));
    // /bin/sh is usually a symlink: the identity is its target's.
    let meta = std::fs::metadata("/bin/sh").unwrap();
    assert_eq!(x.id.ino, std::os::unix::fs::MetadataExt::ino(&meta));
}

#[test]
fn omitted_guard_and_mode() {
    let p = parse(&format!("{EP}[[allow]]\nname = \"r\"\nusers = [0]\n")).unwrap();
    assert!(p.guard.guards_everyone());
    assert_eq!(p.mode, Mode::Enforce);
    assert!(summary(&p).contains("guard: every process\n"));
    let p = parse(&format!(
        "mode = \"audit\"\n[guard]\nusers = []\ncgroups = []\n{EP}"
    ))
    .unwrap();
    assert!(p.guard.guards_everyone());
    assert_eq!(p.mode, Mode::Audit);
    assert_eq!(
        p.endpoints[0].mode,
        Mode::Audit,
        "endpoints inherit the top-level mode"
    );
    assert!(p.rules.is_empty());
}

#[test]
fn presets_expand() {
    let src = r#"include = ["aws", "gcp", "azure", "alibaba", "oracle", "openstack", "aws"]
[[allow]]
name = "r"
endpoints = ["azure", "oracle-imds"]
users = [0]
"#;
    let p = parse(src).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<(&str, &str)> = p
        .endpoints
        .iter()
        .map(|e| (e.name.as_str(), e.preset.as_deref().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("aws-imds", "aws"),
            ("aws-ecs-task-metadata", "aws"),
            ("aws-eks-pod-identity", "aws"),
            ("gcp-metadata", "gcp"),
            ("azure-imds", "azure"),
            ("azure-wireserver", "azure"),
            ("alibaba-metadata", "alibaba"),
            ("oracle-imds", "oracle"),
            ("openstack-metadata", "openstack"),
        ]
    );
    // Presets guard their HTTP ports (DNS on shared addresses stays reachable).
    assert!(p.endpoints.iter().all(|e| e.mode == Mode::Enforce));
    for e in &p.endpoints {
        let want: &[u16] = if e.name == "azure-wireserver" {
            &[80, 32526]
        } else {
            &[80]
        };
        assert_eq!(e.ports.as_deref(), Some(want), "{}", e.name);
    }
    let ep = |n: &str| p.endpoint_index(n).unwrap();
    assert_eq!(
        p.rules[0].endpoints,
        vec![ep("azure-imds"), ep("azure-wireserver"), ep("oracle-imds")]
    );
    assert_eq!(
        p.endpoints[ep("azure-wireserver")].prefixes,
        vec!["168.63.129.16/32".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        p.endpoints[ep("alibaba-metadata")].prefixes,
        vec!["100.100.100.200/32".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        p.endpoints[ep("openstack-metadata")].prefixes[1],
        "fe80::a9fe:a9fe/128".parse::<IpNet>().unwrap()
    );
}

#[test]
fn overlapping_endpoints_are_allowed() {
    let src = r#"include = ["aws", "gcp"]
[[endpoint]]
name = "link-local"
addresses = ["169.254.0.0/16"]
[[endpoint]]
name = "imds-again"
addresses = ["169.254.169.254"]
ports = [80]
"#;
    let p = parse(src).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.endpoints.len(), 6);
    assert_eq!(
        p.endpoints[5].prefixes,
        vec!["169.254.169.254/32".parse::<IpNet>().unwrap()]
    );
}

// ---- errors -------------------------------------------------------------

#[test]
fn unreadable_file() {
    let e = load(Path::new("/nonexistent/metaguard.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/nonexistent/metaguard.toml: cannot read the policy: No such file or directory (os error 2)"
    );
}

#[test]
fn syntax_error() {
    let e = error("mode = \"enforce\"\ninclude = [\"aws\"\n");
    assert!(e.starts_with("p.toml:3:1: "), "{e}");
    let e = error("mode = \"enforce\"\nmode = \"audit\"\n");
    assert!(e.starts_with("p.toml:2:1: duplicate key"), "{e}");
}

#[test]
fn unknown_keys_everywhere() {
    let src = format!(
        "inclde = [\"aws\"]\n[guard]\nuser = [0]\n{EP}port = [80]\n[[allow]]\nname = \"r\"\nusers = [0]\nexec = \"/bin/sh\"\n"
    );
    assert_eq!(
        errors(&src),
        [
            "p.toml:1:1: unknown key `inclde` in the top level: expected one of mode, include, guard, endpoint, allow, events",
            "p.toml:3:1: unknown key `user` in [guard]: expected one of users, cgroups",
            "p.toml:7:1: unknown key `port` in [[endpoint]]: expected one of name, addresses, ports, mode, require_imdsv2",
            "p.toml:11:1: unknown key `exec` in [[allow]]: expected one of name, endpoints, exe, users, groups, cgroups, http, redact",
        ]
    );
}

#[test]
fn events_aggregate_window() {
    let ok = |src: &str| parse(&format!("{EP}{src}")).unwrap().events.aggregate;
    assert_eq!(ok(""), Duration::from_secs(1), "default");
    assert_eq!(
        ok("[events]\naggregate = \"250ms\"\n"),
        Duration::from_millis(250)
    );
    assert_eq!(ok("[events]\naggregate = \"0s\"\n"), Duration::ZERO);
    let e = errors(&format!("{EP}[events]\naggregate = \"2h\"\n"));
    assert!(e[0].contains("aggregate window `2h` is too long"), "{e:?}");
    let e = errors(&format!("{EP}[events]\naggregate = \"soon\"\n"));
    assert!(e[0].contains("bad duration `soon`"), "{e:?}");
    let e = errors(&format!("{EP}[events]\nwindow = \"1s\"\n"));
    assert!(
        e[0].contains("unknown key `window` in [events]: expected one of aggregate"),
        "{e:?}"
    );
}

#[test]
fn wrong_types() {
    let src = "mode = 1\ninclude = \"aws\"\nguard = 3\n[[endpoint]]\nname = 5\naddresses = [1]\nports = \"80\"\n";
    assert_eq!(
        errors(src),
        [
            "p.toml:1:8: `mode` must be a string, found an integer",
            "p.toml:2:11: `include` must be an array like [\"aws\"], found a string",
            "p.toml:3:9: `guard` must be a table ([guard]), found an integer",
            "p.toml:5:8: `name` must be a string, found an integer",
            "p.toml:6:14: each entry of `addresses` must be an address or CIDR string, found an integer",
            "p.toml:7:9: `ports` must be an array like [80, 443], found a string",
        ]
    );
    assert_eq!(
        error("[endpoint]\nname = \"e\"\naddresses = [\"10.0.0.1\"]\n"),
        "p.toml:1:2: `endpoint` must be an array of tables: write [[endpoint]], not [endpoint]"
    );
    let e = error(&format!("{EP}[[allow]]\nname = \"r\"\nusers = [true]\n"));
    assert_eq!(
        e,
        "p.toml:6:10: each entry of `users` must be a user name or uid, found a boolean"
    );
    assert_eq!(
        error(&format!("mode = 1979-05-27T07:32:00Z\n{EP}")),
        "p.toml:1:8: `mode` must be a string, found a date-time"
    );
    // Dotted keys and implicit tables have no span of their own: the nearest one is used.
    assert_eq!(
        errors(&format!("guard.users = [\"no-such-user-mg\"]\nguard.cgroup = 1\n{EP}")),
        [
            "p.toml:1:16: unknown user `no-such-user-mg`: no such user on this host; create it or give a numeric uid",
            "p.toml:2:7: unknown key `cgroup` in [guard]: expected one of users, cgroups",
        ]
    );
}

#[test]
fn bad_addresses() {
    let src = "[[endpoint]]\nname = \"e\"\naddresses = [\"169.254.169.254/16\", \"not-an-ip\", \"10.0.0.0/33\", \"fd00::1/64\"]\n";
    assert_eq!(
        errors(src),
        [
            "p.toml:3:14: `169.254.169.254/16` has host bits set: write 169.254.0.0/16 for the network, or 169.254.169.254/32 for the single address",
            "p.toml:3:36: invalid address `not-an-ip`: expected an IP address or CIDR, like \"169.254.169.254/32\" or \"fd00:ec2::254/128\"",
            "p.toml:3:49: invalid address `10.0.0.0/33`: expected an IP address or CIDR, like \"169.254.169.254/32\" or \"fd00:ec2::254/128\"",
            "p.toml:3:64: `fd00::1/64` has host bits set: write fd00::/64 for the network, or fd00::1/128 for the single address",
        ]
    );
    assert_eq!(
        error("[[endpoint]]\nname = \"e\"\naddresses = []\n"),
        "p.toml:3:13: `addresses` is empty: list at least one address or CIDR, like \"169.254.169.254/32\""
    );
    assert_eq!(
        error("[[endpoint]]\nname = \"e\"\n"),
        "p.toml:1:1: endpoint `e` has no `addresses`: list the addresses or CIDRs it covers"
    );
    assert_eq!(
        error("[[endpoint]]\naddresses = [\"10.0.0.1\"]\n"),
        "p.toml:1:1: this [[endpoint]] has no `name`: give it a unique name"
    );
}

#[test]
fn bad_ports() {
    let src = "[[endpoint]]\nname = \"e\"\naddresses = [\"10.0.0.1\"]\nports = [0, 80, 65536, -1, \"http\"]\n";
    assert_eq!(
        errors(src),
        [
            "p.toml:4:10: port 0 is not a valid port: use 1 to 65535, or remove `ports` to cover every port",
            "p.toml:4:17: port 65536 is out of range: ports are 1 to 65535",
            "p.toml:4:24: port -1 is out of range: ports are 1 to 65535",
            "p.toml:4:28: each entry of `ports` must be a port number, found a string",
        ]
    );
    assert_eq!(
        error("[[endpoint]]\nname = \"e\"\naddresses = [\"10.0.0.1\"]\nports = []\n"),
        "p.toml:4:9: `ports` is empty: list ports, or remove the key to cover every port"
    );
}

#[test]
fn unknown_preset_and_mode() {
    assert_eq!(
        errors("mode = \"block\"\ninclude = [\"aws\", \"digitalocean\"]\n[[endpoint]]\nname = \"e\"\naddresses = [\"10.0.0.1\"]\nmode = \"Audit\"\n"),
        [
            "p.toml:1:8: unknown mode `block`: use \"enforce\" or \"audit\"",
            "p.toml:2:19: unknown preset `digitalocean`: known presets are aws, gcp, azure, alibaba, oracle, openstack",
            "p.toml:6:8: unknown mode `Audit`: use \"enforce\" or \"audit\"",
        ]
    );
}

#[test]
fn no_endpoints() {
    assert_eq!(
        error("mode = \"audit\"\n"),
        "p.toml:1:1: the policy defines no endpoints: add include = [\"aws\"] (or another preset) or an [[endpoint]]"
    );
    assert_eq!(
        error("include = []\n"),
        "p.toml:1:1: the policy defines no endpoints: add include = [\"aws\"] (or another preset) or an [[endpoint]]"
    );
}

#[test]
fn users_and_groups() {
    let src = format!(
        "[guard]\nusers = [\"no-such-user-mg\", 4294967296]\n{EP}[[allow]]\nname = \"r\"\nusers = [-1, \"root\"]\ngroups = [\"no-such-group-mg\", 4294967295, 4294967296]\n"
    );
    assert_eq!(
        errors(&src),
        [
            "p.toml:2:10: unknown user `no-such-user-mg`: no such user on this host; create it or give a numeric uid",
            "p.toml:2:29: uid 4294967296 is out of range: use 0 to 4294967295",
            "p.toml:8:10: uid -1 is out of range: use 0 to 4294967295",
            "p.toml:9:11: unknown group `no-such-group-mg`: no such group on this host; create it or give a numeric gid",
            "p.toml:9:43: gid 4294967296 is out of range: use 0 to 4294967295",
        ]
    );
    assert_eq!(
        error(&format!("{EP}[[allow]]\nname = \"r\"\nusers = []\n")),
        "p.toml:6:9: `users` is empty: list at least one user name or uid, or remove the key"
    );
}

#[test]
fn exe_problems() {
    let dir = TempDir::new("exe");
    let plain = dir.0.join("plain");
    std::fs::write(&plain, b"data").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let rule = |exe: &str| format!("{EP}[[allow]]\nname = \"r\"\nexe = '{exe}'\n");
    assert_eq!(
        error(&rule("bin/sh")),
        "p.toml:6:7: exe `bin/sh` is not an absolute path: write the full path, starting with /"
    );
    assert_eq!(
        error(&rule("/nonexistent/agent")),
        "p.toml:6:7: exe `/nonexistent/agent` does not exist: install it or fix the path"
    );
    let d = dir.0.display().to_string();
    assert_eq!(
        error(&rule(&d)),
        format!("p.toml:6:7: exe `{d}` is not a regular file: name the program file itself")
    );
    let f = plain.display().to_string();
    assert_eq!(
        error(&rule(&f)),
        format!("p.toml:6:7: exe `{f}` is not executable (mode 644): chmod +x it or fix the path")
    );
    assert_eq!(
        error(&format!("{EP}[[allow]]\nname = \"r\"\nexe = 7\n")),
        "p.toml:6:7: `exe` must be a string, found an integer"
    );
}

#[test]
fn cgroup_problems() {
    let mount = cgroup::cgroup2_mount().unwrap();
    let m = mount.display().to_string();
    let src = format!(
        "[guard]\ncgroups = [\"/no/such.slice\"]\n{EP}[[allow]]\nname = \"r\"\ncgroups = [\"{m}/x\", \"../x\", \"\"]\n"
    );
    assert_eq!(
        errors(&src),
        [
            format!("p.toml:2:12: cgroup `/no/such.slice` does not exist: {m}/no/such.slice not found; create it or fix the path (it is relative to the cgroup2 mount)"),
            format!("p.toml:8:12: cgroup `{m}/x` does not exist: {m}{m}/x not found; write it relative to the cgroup2 mount ({m}): \"/x\""),
            format!("p.toml:8:{}: cgroup path `../x` must not contain `.` or `..` components", 12 + m.len() + 6),
            format!("p.toml:8:{}: empty cgroup path: write a path relative to the cgroup2 mount, like \"/system.slice/app.service\"", 12 + m.len() + 6 + 8),
        ]
    );
}

#[test]
fn duplicates_and_references() {
    let src = r#"include = ["aws"]
[[endpoint]]
name = "aws-imds"
addresses = ["10.0.0.1"]
[[endpoint]]
name = "x"
addresses = ["10.0.0.2"]
[[endpoint]]
name = "x"
addresses = ["10.0.0.3"]
[[endpoint]]
name = "gcp"
addresses = ["10.0.0.4"]
[[allow]]
name = "r"
endpoints = ["x", "nope", "gcp-metadata", "azure", "aws"]
users = [0]
[[allow]]
name = "r"
users = [0]
"#;
    assert_eq!(
        errors(src),
        [
            "p.toml:3:8: duplicate endpoint name `aws-imds`: preset \"aws\" (in include) already defines it; rename this endpoint",
            "p.toml:9:8: duplicate endpoint name `x`: already defined at 6:8; rename one of them",
            "p.toml:12:8: endpoint name `gcp` is the name of a preset: choose another name",
            "p.toml:16:19: unknown endpoint `nope`: known endpoints are aws-ecs-task-metadata, aws-eks-pod-identity, aws-imds, gcp, x",
            "p.toml:16:27: unknown endpoint `gcp-metadata`: it belongs to preset \"gcp\"; add \"gcp\" to include",
            "p.toml:16:43: endpoint `azure` is a preset that is not included: add \"azure\" to include",
            "p.toml:19:8: duplicate rule name `r`: already used at 15:8; rename one of them",
        ]
    );
}

#[test]
fn rule_without_selector() {
    assert_eq!(
        error(&format!("{EP}[[allow]]\nname = \"everyone\"\nendpoints = [\"e\"]\n")),
        "p.toml:4:1: rule `everyone` has no selector, so it would allow every process: add exe, users, groups or cgroups"
    );
    // Inline tables are located too.
    assert_eq!(
        error(&format!("allow = [{{ name = \"x\" }}]\n{EP}")),
        "p.toml:1:10: rule `x` has no selector, so it would allow every process: add exe, users, groups or cgroups"
    );
}

#[test]
fn too_many_rules() {
    let mut src = EP.to_string();
    for i in 0..MAX_RULES + 2 {
        src.push_str(&format!("[[allow]]\nname = \"r{i}\"\nusers = [{i}]\n"));
    }
    let line = 4 + 3 * MAX_RULES;
    assert_eq!(
        error(&src),
        format!("p.toml:{line}:1: too many [[allow]] rules: 258, the limit is 256; merge rules that share selectors")
    );
    let mut src = EP.to_string();
    for i in 0..MAX_RULES {
        src.push_str(&format!("[[allow]]\nname = \"r{i}\"\nusers = [{i}]\n"));
    }
    assert_eq!(parse(&src).unwrap().rules.len(), MAX_RULES);
}

#[test]
fn all_errors_are_reported_in_file_order() {
    let src = r#"mode = "strict"
include = ["aws", "nimbus"]
[[endpoint]]
name = "svc"
addresses = ["10.0.0.1/8"]
ports = [0]
colour = "red"
[[allow]]
name = "r"
endpoints = ["svc", "ghost"]
exe = "relative/path"
users = ["no-such-user-mg"]
[[allow]]
name = "nothing"
"#;
    let e = parse(src).unwrap_err();
    let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        [
            "p.toml:1:8: unknown mode `strict`: use \"enforce\" or \"audit\"",
            "p.toml:2:19: unknown preset `nimbus`: known presets are aws, gcp, azure, alibaba, oracle, openstack",
            "p.toml:5:14: `10.0.0.1/8` has host bits set: write 10.0.0.0/8 for the network, or 10.0.0.1/32 for the single address",
            "p.toml:6:10: port 0 is not a valid port: use 1 to 65535, or remove `ports` to cover every port",
            "p.toml:7:1: unknown key `colour` in [[endpoint]]: expected one of name, addresses, ports, mode, require_imdsv2",
            "p.toml:10:21: unknown endpoint `ghost`: known endpoints are aws-ecs-task-metadata, aws-eks-pod-identity, aws-imds, svc",
            "p.toml:11:7: exe `relative/path` is not an absolute path: write the full path, starting with /",
            "p.toml:12:10: unknown user `no-such-user-mg`: no such user on this host; create it or give a numeric uid",
            "p.toml:13:1: rule `nothing` has no selector, so it would allow every process: add exe, users, groups or cgroups",
        ]
    );
    assert_eq!(e.len(), 9);
}

#[test]
fn load_reads_files() {
    let dir = TempDir::new("load");
    let path = dir.0.join("policy.toml");
    std::fs::write(
        &path,
        format!(
            "include = [\"gcp\"]\n[[allow]]\nname = \"me\"\nexe = '{}'\n",
            self_exe().display()
        ),
    )
    .unwrap();
    let p = load(&path).unwrap();
    assert_eq!(p.source, path);
    assert_eq!(p.rules[0].endpoints, vec![0]);
    std::fs::write(&path, "include = [\"gcp\"]\n[[allow]]\nname = \"me\"\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:1: rule `me` has no selector, so it would allow every process: add exe, users, groups or cgroups",
            path.display()
        )
    );
}

// ---- watching executables -----------------------------------------------

async fn expect_path(rx: &mut tokio::sync::mpsc::UnboundedReceiver<PathBuf>, want: &Path) {
    let got = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no change reported for {} within a second", want.display()));
    assert_eq!(got.as_deref(), Some(want));
}

/// Waits until no message arrives for a while (the end of a burst).
async fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<PathBuf>) {
    while tokio::time::timeout(Duration::from_millis(300), rx.recv())
        .await
        .is_ok()
    {}
}

#[tokio::test]
async fn watcher_reports_replacements() {
    let dir = TempDir::new("watch");
    let exe = dir.0.join("agent");
    let other = dir.0.join("unrelated");
    std::fs::write(&exe, b"v1").unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = ExeWatcher::new(vec![exe.clone()], tx).unwrap();
    assert_eq!(w.dirs(), std::slice::from_ref(&dir.0));

    // Unrelated files in the same directory are not reported.
    std::fs::write(&other, b"x").unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(400), rx.recv())
        .await
        .is_err());

    // Replace by rename (what package managers do).
    let before = exe::identify(&exe).unwrap();
    let staged = dir.0.join(".agent.new");
    std::fs::write(&staged, b"v2").unwrap();
    std::fs::rename(&staged, &exe).unwrap();
    expect_path(&mut rx, &exe).await;
    drain(&mut rx).await;
    assert_ne!(exe::identify(&exe).unwrap().ino, before.ino);

    // Replace by copy (rewrites the same inode).
    std::fs::copy(&other, &exe).unwrap();
    expect_path(&mut rx, &exe).await;
    drain(&mut rx).await;

    // Removed, then created again.
    std::fs::remove_file(&exe).unwrap();
    expect_path(&mut rx, &exe).await;
    drain(&mut rx).await;
    std::fs::write(&exe, b"v3").unwrap();
    expect_path(&mut rx, &exe).await;
    drain(&mut rx).await;

    // Dropping the watcher ends the stream.
    drop(w);
    assert!(tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn watcher_handles_symlinked_directories() {
    // Like /bin -> usr/bin: the same directory under two names.
    let dir = TempDir::new("watch-dirlink");
    let real_dir = dir.0.join("usr-bin");
    std::fs::create_dir_all(&real_dir).unwrap();
    let bin = dir.0.join("bin");
    std::os::unix::fs::symlink(&real_dir, &bin).unwrap();
    std::fs::write(real_dir.join("dash"), b"v1").unwrap();
    std::os::unix::fs::symlink("dash", real_dir.join("sh")).unwrap();
    std::fs::write(real_dir.join("agent"), b"v1").unwrap();
    let (sh, agent) = (bin.join("sh"), real_dir.join("agent"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _w = ExeWatcher::new([&sh, &agent], tx).unwrap();
    std::fs::write(real_dir.join("dash.new"), b"v2").unwrap();
    std::fs::rename(real_dir.join("dash.new"), real_dir.join("dash")).unwrap();
    expect_path(&mut rx, &sh).await;
    drain(&mut rx).await;
    std::fs::write(bin.join("agent.new"), b"v2").unwrap();
    std::fs::rename(bin.join("agent.new"), bin.join("agent")).unwrap();
    expect_path(&mut rx, &agent).await;
}

#[tokio::test]
async fn watcher_follows_symlinks() {
    let dir = TempDir::new("watch-link");
    let real_dir = dir.0.join("real");
    let link_dir = dir.0.join("links");
    std::fs::create_dir_all(&real_dir).unwrap();
    std::fs::create_dir_all(&link_dir).unwrap();
    let target = real_dir.join("agent-1.2");
    std::fs::write(&target, b"v1").unwrap();
    let link = link_dir.join("agent");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _w = ExeWatcher::new([&link], tx).unwrap();
    let staged = real_dir.join("tmp");
    std::fs::write(&staged, b"v2").unwrap();
    std::fs::rename(&staged, &target).unwrap();
    // Reported under the path the policy wrote.
    expect_path(&mut rx, &link).await;
}

#[test]
fn http_rules_and_imdsv2() {
    let src = format!(
        "{EP}require_imdsv2 = true\n[[allow]]\nname = \"web\"\nusers = [0]\nhttp = [\n  {{ method = \"PUT\", path = \"/latest/api/token\" }},\n  {{ method = \"GET\", path = \"/latest/meta-data/instance-id\", require_headers = [\"X-aws-ec2-metadata-token\"] }},\n  {{ method = \"GET\", path = \"/latest/meta-data/placement/*\" }},\n]\n"
    );
    let p = parse(&src).unwrap();
    assert!(p.endpoints[0].require_imdsv2);
    let http = p.rules[0].http.as_ref().unwrap();
    assert_eq!(http.len(), 3);
    assert_eq!(
        http[1],
        HttpRule {
            method: "GET".into(),
            path: "/latest/meta-data/instance-id".into(),
            wildcard: false,
            require_headers: vec!["x-aws-ec2-metadata-token".into()],
        }
    );
    assert_eq!(http[2].path, "/latest/meta-data/placement/");
    assert!(http[2].wildcard);
}

#[test]
fn http_rule_errors() {
    let rule = |http: &str| format!("{EP}[[allow]]\nname = \"r\"\nusers = [0]\nhttp = {http}\n");
    let e = errors(&rule("[]"));
    assert!(e[0].contains("`http` is empty"), "{e:?}");
    let e = errors(&rule("[{ method = \"GET\" }]"));
    assert!(e[0].contains("needs both `method` and `path`"), "{e:?}");
    let e = errors(&rule("[{ method = \"G T\", path = \"/\" }]"));
    assert!(e[0].contains("is not an HTTP method"), "{e:?}");
    let e = errors(&rule("[{ method = \"GET\", path = \"/a//b\" }]"));
    assert!(
        e[0].contains("not in canonical form: write `/a/b`"),
        "{e:?}"
    );
    let e = errors(&rule("[{ method = \"GET\", path = \"/a/%2Fb\" }]"));
    assert!(e[0].contains("cannot be matched: encoded-slash"), "{e:?}");
    let e = errors(&rule(
        "[{ method = \"GET\", path = \"/a\" }, { method = \"GET\", path = \"/a\" }]",
    ));
    assert!(e[0].contains("duplicate `http` entry for GET /a"), "{e:?}");
    let e = errors(&rule("[{ method = \"GET\", path = \"/a\", verb = 1 }]"));
    assert!(
        e[0].contains("unknown key `verb` in an `http` entry"),
        "{e:?}"
    );
    let e = errors(&rule(
        "[{ method = \"GET\", path = \"/a\", require_headers = [\"a b\"] }]",
    ));
    assert!(e[0].contains("`a b` is not a header name"), "{e:?}");
    let e = errors(&format!("{EP}require_imdsv2 = \"yes\"\n"));
    assert!(
        e[0].contains("`require_imdsv2` must be true or false"),
        "{e:?}"
    );
}

#[test]
fn redact_lists() {
    use super::Redact;
    use metaguard_common::redact::{SHAPE_AWS_CREDENTIALS, SHAPE_CUSTOM_FIRST, SHAPE_GCP_TOKEN};
    let src = format!(
        "{EP}[[allow]]\nname = \"a\"\nusers = [0]\nredact = [\"gcp-access-token\", \"aws-credentials\", '\"client_secret\"', \"aws-credentials\"]\n\
         [[allow]]\nname = \"b\"\nusers = [1]\nredact = ['\"password\"', '\"client_secret\"']\n\
         [[allow]]\nname = \"c\"\nusers = [2]\n"
    );
    let p = parse(&src).unwrap();
    assert_eq!(
        p.rules[0].redact,
        [
            Redact::Builtin("aws-credentials"),
            Redact::Builtin("gcp-access-token"),
            Redact::Key("client_secret".into()),
        ]
    );
    assert_eq!(p.redact_keys(), ["client_secret", "password"]);
    assert_eq!(
        p.redact_bits(&p.rules[0]),
        SHAPE_AWS_CREDENTIALS | SHAPE_GCP_TOKEN | 1 << SHAPE_CUSTOM_FIRST
    );
    assert_eq!(p.redact_bits(&p.rules[1]), 3 << SHAPE_CUSTOM_FIRST);
    assert!(p.rules[2].redact.is_empty() && p.redact_bits(&p.rules[2]) == 0);
    assert!(summary(&p).contains("redact aws-credentials, gcp-access-token, \"client_secret\""));

    let rule = |r: &str| format!("{EP}[[allow]]\nname = \"r\"\nusers = [0]\nredact = {r}\n");
    assert!(error(&rule("[\"aws-keys\"]")).contains("unknown secret shape `aws-keys`"));
    assert!(error(&rule("[]")).contains("`redact` is empty"));
    assert!(error(&rule("['\"a\\\\b\"']")).contains("a custom shape is a JSON key"));
    assert!(error(&rule("['\"\"']")).contains("a custom shape is a JSON key"));
    let eight: Vec<String> = (0..8).map(|i| format!("'\"k{i}\"'")).collect();
    assert!(error(&rule(&format!("[{}]", eight.join(", "))))
        .contains("8 distinct custom `redact` keys; at most 7"));
}
