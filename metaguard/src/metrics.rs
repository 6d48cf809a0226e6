//! Prometheus metrics (opt-in with `run --metrics ADDR`): decisions by
//! action, rule and endpoint; lost events; policy reloads and rejections;
//! per-program run counts. Served as text on `GET /metrics`.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::events::Decision;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub action: String,
    pub rule: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImdsLabels {
    pub exe: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub program: String,
}

/// The same counts as the Prometheus metrics, readable (for `metaguard
/// status`). Decisions without a rule or endpoint count under "-".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub by_action: BTreeMap<String, u64>,
    pub by_endpoint: BTreeMap<String, u64>,
    pub by_rule: BTreeMap<String, u64>,
    pub lost_events: u64,
    pub reloads_applied: u64,
    pub reloads_rejected: u64,
}

/// The daemon's metrics; cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    counters: Arc<Mutex<Counters>>,
    decisions: Family<DecisionLabels, Counter>,
    requests: Family<DecisionLabels, Counter>,
    imds: Family<ImdsLabels, Counter>,
    lost: Counter,
    reloads: Family<ReloadLabels, Counter>,
    program_runs: Family<ProgramLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("metaguard");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions on connections to protected endpoints (repeats included)",
            decisions.clone(),
        );
        let requests = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests on connections to protected endpoints, by verdict",
            requests.clone(),
        );
        let imds = Family::<ImdsLabels, Counter>::default();
        registry.register(
            "imds_requests",
            "Requests to AWS metadata endpoints by executable and IMDS version (v1: no session token)",
            imds.clone(),
        );
        let lost = Counter::default();
        registry.register(
            "lost_events",
            "Events the kernel could not queue (ring buffer full)",
            lost.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads by result (applied, rejected)",
            reloads.clone(),
        );
        let program_runs = Family::<ProgramLabels, Gauge>::default();
        registry.register(
            "program_runs",
            "Runs of each kernel program since load (counted while kernel.bpf_stats_enabled=1)",
            program_runs.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            counters: Arc::default(),
            decisions,
            requests,
            imds,
            lost,
            reloads,
            program_runs,
        }
    }

    pub fn decision(&self, d: &Decision) {
        // Redaction reports travel with the decisions (and are counted in
        // windows like them) but are not decisions.
        if d.kind == "redact" {
            return;
        }
        let labels = DecisionLabels {
            action: d.action.to_string(),
            rule: d.rule.clone().unwrap_or_default(),
            endpoint: d.endpoint.clone().unwrap_or_default(),
        };
        if let Some(r) = &d.request {
            if let Some(v) = r.imds {
                let exe = d
                    .exe
                    .as_ref()
                    .map(|x| x.path.clone().unwrap_or_else(|| x.name.clone()))
                    .unwrap_or_default();
                self.imds
                    .get_or_create(&ImdsLabels {
                        exe,
                        version: v.into(),
                    })
                    .inc_by(d.count);
            }
            self.requests.get_or_create(&labels).inc_by(d.count);
            return;
        }
        self.decisions.get_or_create(&labels).inc_by(d.count);
        let mut c = self.counts();
        let name = |n: &Option<String>| n.clone().unwrap_or_else(|| "-".into());
        *c.by_action.entry(d.action.to_string()).or_default() += d.count;
        *c.by_endpoint.entry(name(&d.endpoint)).or_default() += d.count;
        *c.by_rule.entry(name(&d.rule)).or_default() += d.count;
    }

    pub fn lost(&self, n: u64) {
        self.lost.inc_by(n);
        self.counts().lost_events += n;
    }

    pub fn reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        let mut c = self.counts();
        if applied {
            c.reloads_applied += 1;
        } else {
            c.reloads_rejected += 1;
        }
        drop(c);
        self.reloads
            .get_or_create(&ReloadLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn program_runs(&self, program: &str, runs: u64) {
        self.program_runs
            .get_or_create(&ProgramLabels {
                program: program.into(),
            })
            .set(runs as i64);
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counts since start.
    pub fn counters(&self) -> Counters {
        self.counts().clone()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = encode(&mut out, &reg);
        out
    }

    /// Serves `GET /metrics` on `addr` until the task is dropped.
    pub async fn serve(self, addr: SocketAddr) -> Result<tokio::task::JoinHandle<()>> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        Ok(tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    continue;
                };
                let m = self.clone();
                tokio::spawn(async move {
                    // One small request per connection; anything else is 404.
                    let mut buf = [0u8; 1024];
                    let n = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        conn.read(&mut buf),
                    )
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .unwrap_or(0);
                    let req = &buf[..n];
                    let (status, ctype, body) =
                        if req.starts_with(b"GET /metrics ") || req.starts_with(b"GET /metrics?") {
                            (
                                "200 OK",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                m.render(),
                            )
                        } else {
                            ("404 Not Found", "text/plain", "not found\n".to_string())
                        };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(body.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_decisions_with_their_repeat_counts() {
        let m = Metrics::new();
        let line = r#"{"time":"t","type":"decision","action":"deny","reason":"no-matching-rule","rule":null,"endpoint":"aws-imds","pid":1,"tid":1,"uid":0,"gid":0,"comm":"c","exe":null,"cgroup":{"id":1,"path":null},"destination":{"address":"169.254.169.254","port":80},"protocol":"tcp","hook":"connect4","count":5,"policy_generation":1}"#;
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let d = Decision {
            time: "t".into(),
            kind: "decision",
            action: "deny",
            reason: "no-matching-rule",
            rule: None,
            endpoint: Some("aws-imds".into()),
            pid: Some(1),
            tid: Some(1),
            uid: 0,
            gid: Some(0),
            comm: None,
            exe: None,
            cgroup: crate::events::CgroupInfo { id: 1, path: None },
            destination: crate::events::Destination {
                address: "169.254.169.254".into(),
                port: Some(80),
            },
            protocol: "tcp",
            hook: "connect4",
            count: v["count"].as_u64().unwrap(),
            policy_generation: 1,
            request: None,
            connection: None,
            redacted: None,
        };
        m.decision(&d);
        // A redaction report is not a decision: it changes no count.
        m.decision(&Decision {
            kind: "redact",
            ..d.clone()
        });
        m.decision(&Decision { count: 1, ..d });
        m.lost(3);
        m.reload(false);
        m.program_runs("connect4", 42);
        let c = m.counters();
        assert_eq!(c.by_action["deny"], 6);
        assert_eq!(c.by_endpoint["aws-imds"], 6);
        assert_eq!(c.by_rule["-"], 6);
        assert_eq!(
            (c.lost_events, c.reloads_applied, c.reloads_rejected),
            (3, 0, 1)
        );
        let text = m.render();
        assert!(
            text.contains(
                r#"metaguard_decisions_total{action="deny",rule="",endpoint="aws-imds"} 6"#
            ),
            "{text}"
        );
        assert!(text.contains("metaguard_lost_events_total 3"), "{text}");
        assert!(
            text.contains(r#"metaguard_policy_reloads_total{result="rejected"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"metaguard_program_runs{program="connect4"} 42"#),
            "{text}"
        );
    }
}
