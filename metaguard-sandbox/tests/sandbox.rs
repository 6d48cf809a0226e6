//! Root tests: real namespaces, cgroups and clients. Skipped (with a message) when not root.
//! All traffic goes from the client netns to the sandbox's own metadata netns.
use metaguard_sandbox::addrs::{self, CLIENT_V4, CLIENT_V6, IMDS_V4, IMDS_V6, UNPROTECTED_V4};
use metaguard_sandbox::fake_imds::responses::{AWS_INSTANCE_ID, AWS_TOKEN, GCE_INSTANCE_ID};
use metaguard_sandbox::{is_root, Sandbox};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: this test needs root (namespaces and cgroups)");
            return;
        }
    };
}

fn curl(sb: &Sandbox, extra: &[&str], url: &str) -> String {
    let out = sb
        .client("curl")
        .args(["-s", "-g", "-m", "3"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn stdout_of(cmd: &mut metaguard_sandbox::ClientCommand) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn curl_reaches_the_fake_service_on_every_family() {
    require_root!();
    let sb = Sandbox::create("curl").unwrap();
    let cases: [(&str, IpAddr, IpAddr); 3] = [
        (
            "http://169.254.169.254/latest/meta-data/instance-id",
            IMDS_V4.into(),
            CLIENT_V4.into(),
        ),
        (
            "http://[fd00:ec2::254]/latest/meta-data/instance-id",
            IMDS_V6.into(),
            CLIENT_V6.into(),
        ),
        (
            "http://198.51.100.1/latest/meta-data/instance-id",
            UNPROTECTED_V4.into(),
            CLIENT_V4.into(),
        ),
    ];
    for (url, local, peer) in cases {
        sb.clear_log();
        assert_eq!(curl(&sb, &[], url), AWS_INSTANCE_ID, "{url}");
        let reqs = sb.requests();
        assert_eq!(reqs.len(), 1, "{url}: {reqs:?}");
        assert_eq!(
            (reqs[0].method.as_str(), reqs[0].target.as_str()),
            ("GET", "/latest/meta-data/instance-id")
        );
        assert_eq!(reqs[0].local, SocketAddr::new(local, addrs::HTTP_PORT));
        assert_eq!(reqs[0].peer.ip(), peer);
        assert!(
            reqs[0].headers.iter().any(|(n, _)| n == "Host"),
            "header case kept: {:?}",
            reqs[0].headers
        );
        assert_eq!(sb.connections(), 1);
    }
}

#[test]
fn imdsv2_gce_and_alt_port_through_curl() {
    require_root!();
    let sb = Sandbox::create("v2").unwrap();
    let ttl = [
        "-X",
        "PUT",
        "-H",
        "X-aws-ec2-metadata-token-ttl-seconds: 60",
    ];
    let token = curl(&sb, &ttl, "http://169.254.169.254/latest/api/token");
    assert_eq!(token, AWS_TOKEN);
    let hdr = format!("X-aws-ec2-metadata-token: {token}");
    assert_eq!(
        curl(
            &sb,
            &["-H", &hdr],
            "http://169.254.169.254:8080/latest/meta-data/instance-id"
        ),
        AWS_INSTANCE_ID
    );
    let code = curl(
        &sb,
        &["-o", "/dev/null", "-w", "%{http_code}"],
        "http://169.254.169.254/computeMetadata/v1/instance/id",
    );
    assert_eq!(code, "403");
    let gce = curl(
        &sb,
        &["-H", "Metadata-Flavor: Google"],
        "http://169.254.169.254/computeMetadata/v1/instance/id",
    );
    assert_eq!(gce, GCE_INSTANCE_ID);
    let reqs = sb.requests();
    assert_eq!(reqs[0].method, "PUT");
    assert_eq!(reqs[1].local.port(), addrs::ALT_PORT);
    assert_eq!(reqs[1].header("x-aws-ec2-metadata-token"), Some(AWS_TOKEN));
}

#[test]
fn credentials_and_cgroup_apply_to_clients() {
    require_root!();
    let sb = Sandbox::create("creds").unwrap();
    assert_eq!(
        stdout_of(sb.client("id").arg("-u").uid(65534).gid(65534)).trim(),
        "65534"
    );
    assert_eq!(
        stdout_of(sb.client("id").arg("-G").uid(65534).gid(65534)).trim(),
        "65534",
        "groups dropped"
    );
    assert_eq!(
        stdout_of(
            sb.client("id")
                .arg("-G")
                .uid(65534)
                .gid(65534)
                .groups(&[65534, 100])
        )
        .trim(),
        "65534 100"
    );
    let line = format!("0::{}", sb.cgroup_rel());
    assert!(stdout_of(sb.client("cat").arg("/proc/self/cgroup"))
        .lines()
        .any(|l| l == line));
    let outside = stdout_of(sb.client("cat").arg("/proc/self/cgroup").in_cgroup(false));
    assert!(!outside.lines().any(|l| l == line), "{outside}");
    // The same builder can spawn twice, even after a uid drop.
    let mut twice = sb.client("id");
    twice.arg("-u").uid(65534);
    assert_eq!(stdout_of(&mut twice), stdout_of(&mut twice));
    assert_eq!(
        std::fs::metadata(sb.cgroup_dir())
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap(),
        sb.cgroup_id()
    );
}

#[test]
fn in_client_ns_runs_there_and_reports_stderr() {
    require_root!();
    let sb = Sandbox::create("ns").unwrap();
    let out = sb.in_client_ns(&["ip", "-o", "addr", "show"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("198.51.100.2/24") && text.contains("2001:db8:5a::2/64"),
        "{text}"
    );
    let err = sb
        .in_client_ns(&["ip", "link", "show", "nosuchdev0"])
        .unwrap_err();
    assert!(format!("{err:#}").contains("nosuchdev0"), "{err:#}");
    let outside = String::from_utf8_lossy(
        &sb.in_client_ns(&["cat", "/proc/self/cgroup"])
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!outside.contains(&sb.cgroup_rel()));
}

#[test]
fn udp_datagrams_are_recorded() {
    require_root!();
    let sb = Sandbox::create("udp").unwrap();
    sb.client("bash")
        .args(["-c", "echo hi > /dev/udp/169.254.169.254/80"])
        .status()
        .unwrap();
    sb.client("bash")
        .args(["-c", "echo six > /dev/udp/fd00:ec2::254/8080"])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while sb.datagrams().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let d = sb.datagrams();
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(
        (d[0].payload.as_slice(), d[0].local),
        (&b"hi\n"[..], SocketAddr::new(IMDS_V4.into(), 80))
    );
    assert_eq!(d[0].peer.ip(), IpAddr::from(CLIENT_V4));
    assert_eq!(
        (d[1].payload.as_slice(), d[1].local),
        (&b"six\n"[..], SocketAddr::new(IMDS_V6.into(), 8080))
    );
}

struct Names {
    cgroup: PathBuf,
    netns: [String; 2],
    veth: [String; 2],
}

fn names(sb: &Sandbox) -> Names {
    let (vc, vm) = sb.veth_names();
    Names {
        cgroup: sb.cgroup_dir().to_path_buf(),
        netns: [
            sb.client_netns().to_string(),
            sb.metadata_netns().to_string(),
        ],
        veth: [vc.to_string(), vm.to_string()],
    }
}

fn assert_gone(n: &Names) {
    assert!(!n.cgroup.exists(), "{} left", n.cgroup.display());
    for ns in &n.netns {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "netns {ns} left"
        );
    }
    let links = String::from_utf8(
        std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for v in &n.veth {
        assert!(!links.contains(v.as_str()), "veth {v} left");
    }
}

#[test]
fn drop_removes_everything_and_kills_clients() {
    require_root!();
    let sb = Sandbox::create("drop").unwrap();
    let n = names(&sb);
    assert!(
        n.cgroup.exists()
            && n.cgroup
                .file_name()
                .unwrap()
                .to_string_lossy()
                .contains("metaguard")
    );
    for ns in &n.netns {
        assert!(Path::new("/run/netns").join(ns).exists());
    }
    assert!(n.veth.iter().all(|v| v.len() <= 15));
    sb.in_client_ns(&["ip", "link", "show", &n.veth[0]])
        .unwrap();
    let mut sleeper = sb.client("sleep").arg("30").spawn().unwrap();
    let t = Instant::now();
    drop(sb);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "drop took {:?}",
        t.elapsed()
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&sleeper.wait().unwrap()),
        Some(9)
    );
    assert_gone(&n);
}

#[test]
fn cleanup_also_happens_when_a_test_panics() {
    require_root!();
    let seen = std::sync::Mutex::new(None);
    let child = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let sb = Sandbox::create("panic").unwrap();
        *seen.lock().unwrap() = Some(names(&sb));
        *child.lock().unwrap() = Some(sb.client("sleep").arg("30").spawn().unwrap());
        panic!("deliberate panic with a live sandbox");
    }));
    assert!(result.is_err());
    assert_gone(seen.lock().unwrap().as_ref().unwrap());
    let status = child.lock().unwrap().take().unwrap().wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

#[test]
fn several_sandboxes_coexist() {
    require_root!();
    let boxes: Vec<Sandbox> = (0..3)
        .map(|i| Sandbox::create(&format!("multi{i}")).unwrap())
        .collect();
    for sb in &boxes {
        assert_eq!(
            curl(
                sb,
                &[],
                "http://169.254.169.254/latest/meta-data/instance-id"
            ),
            AWS_INSTANCE_ID
        );
        assert_eq!(
            sb.requests().len(),
            1,
            "each sandbox sees only its own client"
        );
    }
    let mut all: Vec<&str> = boxes
        .iter()
        .flat_map(|b| [b.client_netns(), b.metadata_netns()])
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6);
}

#[test]
fn host_namespace_gets_no_sandbox_addresses_or_routes() {
    require_root!();
    let host = || {
        let out = std::process::Command::new("ip")
            .args(["-o", "addr"])
            .output()
            .unwrap()
            .stdout;
        let route = std::process::Command::new("ip")
            .args(["route", "show", "table", "all"])
            .output()
            .unwrap()
            .stdout;
        String::from_utf8(out).unwrap() + &String::from_utf8(route).unwrap()
    };
    let sb = Sandbox::create("host").unwrap();
    let during = host();
    // The host itself may sit on any TEST-NET range, so look only for
    // what the sandbox would add: the served addresses and the veth's v6 prefix.
    let added = [
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "2001:db8:5a::",
        "100.100.100.200",
        "168.63.129.16",
        "inet 198.51.100.1/",
    ];
    for a in added {
        assert!(!during.contains(a), "host namespace has {a}");
    }
    drop(sb);
}
