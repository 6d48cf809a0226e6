//! A human summary of a compiled policy, for `metaguard check`.
use std::fmt::Write as _;

use nix::unistd::{Gid, Group, Uid, User};

use super::{CgroupRef, Policy};

/// Mode, guard, every endpoint (addresses, ports, mode), every rule with its
/// selectors (executables as `path (dev:ino[:generation])`), and counts.
pub fn summary(p: &Policy) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "policy {}: {}", p.source.display(), p.mode);
    if p.guard.guards_everyone() {
        let _ = writeln!(s, "guard: every process");
    } else {
        let mut parts = Vec::new();
        if !p.guard.users.is_empty() {
            parts.push(format!("uid in {}", users(&p.guard.users)));
        }
        if !p.guard.cgroups.is_empty() {
            parts.push(format!("cgroup in or under {}", cgroups(&p.guard.cgroups)));
        }
        let _ = writeln!(s, "guard: processes with {}", parts.join("; or with "));
    }

    let _ = writeln!(s, "endpoints ({}):", p.endpoints.len());
    for e in &p.endpoints {
        let addrs: Vec<String> = e.prefixes.iter().map(|n| n.to_string()).collect();
        let ports = match &e.ports {
            None => "every port".to_string(),
            Some(ps) => format!("port{} {}", if ps.len() == 1 { "" } else { "s" }, join(ps)),
        };
        let from = e
            .preset
            .as_ref()
            .map(|p| format!(" [preset {p}]"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  {}{from}: {}; {ports} (tcp, udp); {}",
            e.name,
            addrs.join(", "),
            e.mode
        );
    }

    let _ = writeln!(s, "rules ({}):", p.rules.len());
    for r in &p.rules {
        let eps = if r.endpoints.len() == p.endpoints.len() {
            "every endpoint".to_string()
        } else {
            r.endpoints
                .iter()
                .map(|&i| p.endpoints[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "  {} -> {eps}", r.name);
        if let Some(x) = &r.exe {
            let id = if x.id.is_none() {
                "missing".to_string()
            } else {
                x.id.to_string()
            };
            let _ = writeln!(s, "    exe {} ({id})", x.path.display());
        }
        if !r.users.is_empty() {
            let _ = writeln!(s, "    users {}", users(&r.users));
        }
        if !r.groups.is_empty() {
            let _ = writeln!(s, "    groups {}", groups(&r.groups));
        }
        if !r.cgroups.is_empty() {
            let _ = writeln!(s, "    cgroups {}", cgroups(&r.cgroups));
        }
        if !r.redact.is_empty() {
            let names: Vec<String> = r
                .redact
                .iter()
                .map(|e| match e {
                    super::Redact::Builtin(n) => n.to_string(),
                    super::Redact::Key(k) => format!("\"{k}\""),
                })
                .collect();
            let _ = writeln!(s, "    redact {}", names.join(", "));
        }
    }
    let _ =
        writeln!(
        s,
        "{} endpoint{}, {} rule{}: guarded processes reach these endpoints only through a rule{}",
        p.endpoints.len(),
        plural(p.endpoints.len()),
        p.rules.len(),
        plural(p.rules.len()),
        if p.mode == super::Mode::Audit { " (audit: logged, not blocked)" } else { "" }
    );
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn users(ids: &[u32]) -> String {
    let v: Vec<String> = ids
        .iter()
        .map(|&u| match User::from_uid(Uid::from_raw(u)) {
            Ok(Some(user)) => format!("{} ({u})", user.name),
            _ => u.to_string(),
        })
        .collect();
    v.join(", ")
}

fn groups(ids: &[u32]) -> String {
    let v: Vec<String> = ids
        .iter()
        .map(|&g| match Group::from_gid(Gid::from_raw(g)) {
            Ok(Some(group)) => format!("{} ({g})", group.name),
            _ => g.to_string(),
        })
        .collect();
    v.join(", ")
}

fn cgroups(c: &[CgroupRef]) -> String {
    let v: Vec<String> = c
        .iter()
        .map(|c| format!("{} (id {})", c.path, c.id))
        .collect();
    v.join(", ")
}
