//! The redaction pieces of the kernel object: the `redact_verdict` sk_skb
//! program and the second socket map (`REDACT_SOCKS`) it shares with the
//! sk_msg program, and the maps a policy's `redact` lists fill.
use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{Array, MapData, SockHash},
    programs::{sk_msg::SkMsgLink, sk_skb::SkSkbLink, SkMsg, SkSkb},
    Ebpf,
};
use metaguard_common::{
    redact::{RedactTable, MAX_CUSTOM},
    ruleset::{RuleSet, MAX_RULES},
};

use super::{explain_load_error, map, program, SK_MSG_PROGRAM};
use crate::policy::Policy;

/// Attached to `REDACT_SOCKS`: masks secrets in answers.
pub const VERDICT_PROGRAM: &str = "redact_verdict";
pub const REDACT_SOCKS: &str = "REDACT_SOCKS";
pub const REDACT_RULES: &str = "REDACT_RULES";
pub const REDACT_ANY: &str = "REDACT_ANY";
pub const REDACT_TABLE: &str = "REDACT_TABLE";

/// The attachments to `REDACT_SOCKS` (not links that can be pinned: kept
/// alive by not dropping them, like the sk_msg one on `PROTECTED_SOCKS`).
pub struct Links {
    msg: SkMsgLink,
    verdict: SkSkbLink,
}

impl Links {
    /// Leaves both attached after the daemon is gone.
    pub fn forget(self) {
        std::mem::forget(self.msg);
        std::mem::forget(self.verdict);
    }
}

pub fn load(ebpf: &mut Ebpf) -> Result<()> {
    let p: &mut SkSkb = program(ebpf, VERDICT_PROGRAM)?;
    p.load().map_err(|e| {
        explain_load_error(anyhow!(e).context(format!("loading program {VERDICT_PROGRAM}")))
    })
}

/// Attaches the sk_msg and verdict programs to `REDACT_SOCKS` (before the
/// sock_ops program can add sockets to it).
pub fn attach(ebpf: &mut Ebpf) -> Result<Links> {
    let socks = {
        let m: SockHash<&MapData, u64> =
            SockHash::try_from(ebpf.map(REDACT_SOCKS).context("REDACT_SOCKS map")?)?;
        m.fd().try_clone().context("REDACT_SOCKS fd")?
    };
    let p: &mut SkMsg = program(ebpf, SK_MSG_PROGRAM)?;
    let id = p
        .attach(&socks)
        .map_err(|e| explain_load_error(anyhow!(e).context("attaching sk_msg to REDACT_SOCKS")))?;
    let msg = p.take_link(id)?;
    let p: &mut SkSkb = program(ebpf, VERDICT_PROGRAM)?;
    let id = p.attach(&socks).map_err(|e| {
        explain_load_error(anyhow!(e).context("attaching the sk_skb verdict to REDACT_SOCKS"))
    })?;
    let verdict = p.take_link(id)?;
    Ok(Links { msg, verdict })
}

/// Fills the redaction maps with what any of `policies` redacts (rule `i`
/// masks every shape rule `i` of any of them does): one policy normally,
/// the old and the new one while a reload switches between them.
pub fn write(ebpf: &mut Ebpf, policies: &[&Policy]) -> Result<()> {
    let mut keys: Vec<String> = vec![];
    for p in policies.iter().rev() {
        for k in p.redact_keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    if keys.len() > MAX_CUSTOM {
        // Old and new custom keys do not fit together: the new policy's
        // alone (the last given), which is what is about to be in force.
        keys = policies.last().map(|p| p.redact_keys()).unwrap_or_default();
    }
    let key_bytes: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    let table =
        RedactTable::new(&key_bytes).map_err(|e| anyhow!("custom redact keys {keys:?}: {e:?}"))?;
    let mut any = RuleSet::EMPTY;
    let mut bits = vec![0u32; MAX_RULES];
    for p in policies {
        for (i, r) in p.rules.iter().enumerate().take(MAX_RULES) {
            let b = Policy::redact_bits_with(r, &keys);
            if b != 0 {
                any.insert(i);
            }
            bits[i] |= b;
        }
    }
    {
        let mut t: Array<&mut MapData, RedactTable> = map(ebpf, REDACT_TABLE)?;
        t.set(0, table, 0).context("REDACT_TABLE")?;
    }
    {
        let mut m: Array<&mut MapData, u32> = map(ebpf, REDACT_RULES)?;
        for (i, b) in bits.iter().enumerate() {
            m.set(i as u32, *b, 0).context("REDACT_RULES")?;
        }
    }
    let mut m: Array<&mut MapData, RuleSet> = map(ebpf, REDACT_ANY)?;
    m.set(0, any, 0).context("REDACT_ANY")
}
