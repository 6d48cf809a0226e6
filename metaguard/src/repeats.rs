//! Repeated decisions: the kernel sends a decision once per aggregation
//! window and counts its repeats per CPU in `AGGREGATES` (counts only grow).
//! This turns those counts into decision events whose `count` is the number
//! of repeats since the last report, so that summing `count` over all events
//! gives every decision exactly once.
use std::collections::HashMap;

use metaguard_common::event::{AggCount, AggKey, Event};

use crate::events::{Decision, Renderer};

#[derive(Default)]
pub struct Repeats {
    /// Per (key, CPU): the entry's creation time and the count reported so far.
    reported: HashMap<(AggKey, usize), (u64, u64)>,
    /// The last decision sent for each key, to label its repeats.
    last: HashMap<AggKey, Decision>,
}

impl Repeats {
    /// Remembers a decision the kernel sent, to label later repeats.
    pub fn note(&mut self, ev: &Event, d: &Decision) {
        self.last.insert(AggKey::of(ev), d.clone());
    }

    /// Decisions for the repeats counted since the previous call.
    pub fn report(
        &mut self,
        counts: &[(AggKey, Vec<AggCount>)],
        renderer: &mut Renderer,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        for (key, per_cpu) in counts {
            let mut delta = 0;
            for (cpu, c) in per_cpu.iter().enumerate() {
                if c.created == 0 {
                    continue;
                }
                let seen = self.reported.entry((*key, cpu)).or_insert((c.created, 0));
                if seen.0 != c.created {
                    // Evicted and recreated: counting restarted from zero.
                    *seen = (c.created, 0);
                }
                delta += c.repeats.saturating_sub(seen.1);
                seen.1 = c.repeats;
            }
            if delta == 0 {
                continue;
            }
            let mut d = match self.last.get(key) {
                Some(d) => d.clone(),
                None => {
                    let mut ev: Event = unsafe { std::mem::zeroed() };
                    ev.set_key(key);
                    if let Some(c) = per_cpu.iter().find(|c| c.created != 0) {
                        ev.set_verdict(c);
                    }
                    renderer.render(&ev)
                }
            };
            d.time = renderer.now();
            d.count = delta;
            out.push(d);
        }
        // Forget keys the kernel no longer has.
        let live: std::collections::HashSet<&AggKey> = counts.iter().map(|(k, _)| k).collect();
        self.reported.retain(|(k, _), _| live.contains(k));
        self.last.retain(|k, _| live.contains(k));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: u32) -> AggKey {
        AggKey {
            pid,
            dport: 80,
            ..Default::default()
        }
    }

    fn empty_policy() -> crate::policy::Policy {
        crate::policy::Policy {
            source: "t.toml".into(),
            mode: Default::default(),
            guard: Default::default(),
            endpoints: vec![],
            rules: vec![],
            events: Default::default(),
        }
    }

    fn count(created: u64, repeats: u64) -> AggCount {
        AggCount {
            window_start: created,
            created,
            repeats,
            action: 2,
            rule: u16::MAX,
            ..Default::default()
        }
    }

    #[test]
    fn reports_each_repeat_once_across_cpus_and_recreation() {
        let mut r = Renderer::new(&empty_policy());
        let mut rep = Repeats::default();
        let k = key(7);
        let first = rep.report(&[(k, vec![count(10, 3), count(0, 0)])], &mut r);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].count, 3);
        assert_eq!(first[0].pid, Some(7));
        // No event seen for the key: the verdict comes from the counts.
        assert_eq!(first[0].action, "deny");
        // Nothing new: no event.
        assert!(rep
            .report(&[(k, vec![count(10, 3), count(0, 0)])], &mut r)
            .is_empty());
        // More on CPU 0, first counts on CPU 1.
        let next = rep.report(&[(k, vec![count(10, 5), count(20, 4)])], &mut r);
        assert_eq!(next[0].count, 6);
        // CPU 0's entry was evicted and recreated: its count restarts.
        let again = rep.report(&[(k, vec![count(30, 1), count(20, 4)])], &mut r);
        assert_eq!(again[0].count, 1);
        // Gone from the map: forgotten.
        assert!(rep.report(&[], &mut r).is_empty());
        assert!(rep.reported.is_empty());
    }

    /// Repeats of a redaction report come back as redaction events naming
    /// the key's shapes, whether or not the first one was seen.
    #[test]
    fn redaction_repeats_name_their_shapes() {
        use metaguard_common::{
            decide::{Action, Reason},
            event::{Hook, EVENT_REDACT},
            redact::SHAPE_AWS_CREDENTIALS,
        };
        let mut r = Renderer::new(&empty_policy());
        let mut rep = Repeats::default();
        let k = AggKey {
            hook: Hook::Response as u8,
            flags: EVENT_REDACT,
            redacted: SHAPE_AWS_CREDENTIALS as u16,
            ..key(9)
        };
        let c = |repeats| AggCount {
            action: Action::Allow as u8,
            reason: Reason::Redacted as u8,
            ..count(10, repeats)
        };
        let unseen = rep.report(&[(k, vec![c(2)])], &mut r);
        assert_eq!(unseen[0].kind, "redact");
        assert_eq!(unseen[0].reason, "redacted");
        assert_eq!(unseen[0].count, 2);
        assert_eq!(
            unseen[0].redacted.as_deref(),
            Some(&["aws-credentials".to_string()][..])
        );
        // Seen first: its labels (connection, comm) carry over.
        let mut ev: Event = unsafe { std::mem::zeroed() };
        ev.set_key(&k);
        ev.set_verdict(&c(0));
        ev.cookie = 77;
        rep.note(&ev, &r.render(&ev));
        let seen = rep.report(&[(k, vec![c(5)])], &mut r);
        assert_eq!(seen[0].kind, "redact");
        assert_eq!(seen[0].count, 3);
        assert_eq!(seen[0].connection, Some(77));
        assert!(seen[0].text().contains("redacted=aws-credentials"));
    }
}
