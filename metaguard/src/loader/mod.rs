//! Loads the kernel programs, fills their maps from a policy and attaches
//! them to a cgroup. Dropping the [`Guard`] detaches everything.
pub mod btf;
pub mod encode;
pub mod pins;
pub mod redact;

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{
        lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, RingBuf,
        SockHash,
    },
    programs::{
        links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, SkMsg,
        SockOps,
    },
    Ebpf, EbpfLoader,
};
use metaguard_common::{
    addr::PREFILTER_BUCKETS,
    event::{AggCount, AggKey},
    http::{HeaderTable, HttpKey},
    maps::{
        names, prefilter_with, slot_prefix_key, CgroupKey, Config, DestKey, ExeEntry, ExeKey,
        Grant, HttpAllow, IdKey, PortKey, PrefixInfo, Protected, SubjectEntry, CONFIG_GRANTS,
        HTTP_SLOT_SHIFT, MAX_CGROUP_LEVEL, SLOT_PREFIX_BITS, SLOT_PREFIX_KEY_LEN,
    },
};

use crate::{policy::Policy, sys::rcu::GracePeriod};
use encode::Encoded;

/// The wait between policy switch steps where the kernel offers no RCU
/// grace period to userspace (see [`Guard::grace_period`]).
const FALLBACK_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// What a cleared slot's `CONFIG` holds: a slot number no program asks for,
/// so a decision that found it would refuse (never happens: `ACTIVE` only
/// names written slots).
const EMPTY_CONFIG: Config = Config {
    slot: u32::MAX,
    ..unsafe { std::mem::zeroed() }
};

/// The kernel object built by build.rs from metaguard-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/metaguard-bpf"));

/// The sock_addr programs, by name in the object.
pub const SOCK_ADDR_PROGRAMS: [&str; 4] = ["connect4", "connect6", "sendmsg4", "sendmsg6"];
pub const EGRESS_PROGRAM: &str = "egress";
/// Puts established TCP sockets to protected destinations in `PROTECTED_SOCKS`.
pub const SOCK_OPS_PROGRAM: &str = "sock_established";
/// Attached to `PROTECTED_SOCKS`: decides again for the sender on every send.
pub const SK_MSG_PROGRAM: &str = "msg_sender";

pub struct Guard {
    ebpf: Ebpf,
    cgroup: PathBuf,
    generation: u32,
    /// The pinned set this guard attached through, if any.
    pinned: Option<PathBuf>,
    /// The CONFIG in force (grants change only its flags).
    config: Config,
    /// The policy slot in force (`ACTIVE`).
    slot: u32,
    /// Provides the grace periods of a policy switch; `None` when the
    /// kernel refused it (a fixed wait is used instead).
    grace: Option<GracePeriod>,
    /// The sk_msg attachment, when pinned (kept or dropped on purpose).
    sk_msg_link: Option<aya::programs::sk_msg::SkMsgLink>,
    /// The attachments to `REDACT_SOCKS`.
    redact_links: Option<redact::Links>,
    /// The policy the redaction maps were last written for.
    redact_policy: Option<Policy>,
}

impl Guard {
    /// Loads the programs (not yet attached). Fails with a message naming
    /// the missing capability or kernel feature.
    pub fn load() -> Result<Guard> {
        Guard::load_with(&[])
    }

    /// As [`Guard::load`], with `MAP=N` capacities overriding the built-in
    /// ones. Test only (`run --test-map-entries`, hidden): it gives a second
    /// daemon maps of another shape than the first one's, as an upgraded
    /// build would have, so upgrade-style takeovers are tested without a
    /// second build. Policy maps are not accepted (their capacities are
    /// checked against the policy limits).
    pub fn load_with(map_entries: &[String]) -> Result<Guard> {
        let mut sizes = Vec::new();
        for e in map_entries {
            let (name, n) = e
                .split_once('=')
                .with_context(|| format!("--test-map-entries {e}: expected MAP=N"))?;
            let n: u32 = n
                .parse()
                .with_context(|| format!("--test-map-entries {e}: N is not a number"))?;
            if ![names::SOCK_TAGS, names::AGGREGATES, names::PROTECTED_SOCKS].contains(&name) {
                bail!("--test-map-entries: {name} cannot be resized (SOCK_TAGS, AGGREGATES, PROTECTED_SOCKS can)");
            }
            sizes.push((name, n));
        }
        if OBJECT.is_empty() {
            bail!("this metaguard was built with AYA_BUILD_SKIP: it carries no kernel programs; rebuild without it");
        }
        let btf = btf::Btf::from_sys_fs()?;
        let offsets =
            btf::kernel_offsets(&btf).context("reading kernel struct offsets from BTF")?;
        let mut loader = EbpfLoader::new();
        loader.override_global(names::OFFSETS, &offsets, true);
        for (name, n) in &sizes {
            loader.map_max_entries(name, *n);
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| explain_load_error(anyhow!(e)))?;
        for name in SOCK_ADDR_PROGRAMS {
            let p: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            p.load().map_err(|e| {
                explain_load_error(anyhow!(e).context(format!("loading program {name}")))
            })?;
        }
        let p: &mut CgroupSkb = program(&mut ebpf, EGRESS_PROGRAM)?;
        p.load()
            .map_err(|e| explain_load_error(anyhow!(e).context("loading program egress")))?;
        let p: &mut SockOps = program(&mut ebpf, SOCK_OPS_PROGRAM)?;
        p.load().map_err(|e| {
            explain_load_error(anyhow!(e).context(format!("loading program {SOCK_OPS_PROGRAM}")))
        })?;
        let p: &mut SkMsg = program(&mut ebpf, SK_MSG_PROGRAM)?;
        p.load().map_err(|e| {
            explain_load_error(anyhow!(e).context(format!("loading program {SK_MSG_PROGRAM}")))
        })?;
        redact::load(&mut ebpf)?;
        let grace = match GracePeriod::new() {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!(
                    "metaguard: no RCU grace period from the kernel ({e}); policy switches wait {FALLBACK_GRACE:?} instead"
                );
                None
            }
        };
        let mut g = Guard {
            ebpf,
            cgroup: PathBuf::new(),
            generation: 0,
            pinned: None,
            config: EMPTY_CONFIG,
            slot: 0,
            grace,
            sk_msg_link: None,
            redact_links: None,
            redact_policy: None,
        };
        // Both slots empty (refusing); slot 0 is "in force" until `apply`.
        g.clear_slot(0)?;
        g.clear_slot(1)?;
        Ok(g)
    }

    /// Puts `policy` in force, atomically: it is written whole into the
    /// slot not in use, then one update of `ACTIVE` switches every decision
    /// from then on to it (see `metaguard_common::maps`, "Policy slots").
    /// Also called before attaching, so the programs never run without a
    /// policy. On error the policy in force stays, untouched.
    pub fn apply(&mut self, policy: &Policy) -> Result<()> {
        for c in policy
            .guard
            .cgroups
            .iter()
            .chain(policy.rules.iter().flat_map(|r| r.cgroups.iter()))
        {
            if c.level > MAX_CGROUP_LEVEL {
                bail!(
                    "cgroup {} is {} levels deep; metaguard supports up to {MAX_CGROUP_LEVEL}",
                    c.path,
                    c.level
                );
            }
        }
        let enc = encode::encode(policy, self.generation + 1, self.slot ^ 1);
        // The redaction maps are not slotted: while the switch is under way
        // they hold what either policy redacts (more masking for a moment,
        // never less), then exactly the new policy's.
        let both: Vec<&Policy> = self.redact_policy.iter().chain([policy]).collect();
        redact::write(&mut self.ebpf, &both)?;
        if let Err(e) = self.switch_to(&enc) {
            if let Some(old) = self.redact_policy.clone() {
                let _ = redact::write(&mut self.ebpf, &[&old]);
            }
            return Err(e);
        }
        redact::write(&mut self.ebpf, &[policy])?;
        self.redact_policy = Some(policy.clone());
        self.generation += 1;
        Ok(())
    }

    /// Writes `enc` into its slot (the inactive one), makes it the active
    /// one, and clears the other.
    ///
    /// Ordering: (1) the inactive slot is written completely, including its
    /// byte of every `PREFILTER` word; (2) a grace period: any program run
    /// that read a `PREFILTER` word before (1) has finished; (3) `ACTIVE`
    /// flips in one update; (4) a grace period: no run still uses the old
    /// slot; (5) the old slot is cleared. A decision reads `ACTIVE` once and
    /// keys every lookup with that slot, so it sees one policy whole.
    fn switch_to(&mut self, enc: &Encoded) -> Result<()> {
        let next = enc.config.slot;
        if next == self.slot {
            bail!("internal error: writing the policy slot in force");
        }
        // Leftovers of an earlier failed write (nothing reads this slot).
        self.clear_slot(next)?;
        if let Err(e) = self.write_slot(enc) {
            let _ = self.clear_slot(next);
            return Err(e);
        }
        self.grace_period()?;
        {
            let mut a: Array<&mut MapData, u32> = map(&mut self.ebpf, names::ACTIVE)?;
            a.set(0, next, 0).context("ACTIVE")?;
        }
        let old = std::mem::replace(&mut self.slot, next);
        self.config = enc.config;
        self.grace_period()?;
        if let Err(e) = self.clear_slot(old) {
            // In force already; the next switch clears the rest first.
            eprintln!("metaguard: clearing the previous policy slot: {e:#}");
        }
        Ok(())
    }

    /// Waits until no program run that started before can still be running
    /// (an RCU grace period, see [`crate::sys::rcu`]); where the kernel
    /// refuses the map that provides it, a conservative fixed wait: the
    /// programs run for microseconds and never sleep.
    fn grace_period(&self) -> Result<()> {
        match &self.grace {
            Some(g) => g.wait().context("waiting for an RCU grace period"),
            None => {
                std::thread::sleep(FALLBACK_GRACE);
                Ok(())
            }
        }
    }

    /// Writes every map entry of `enc` in `enc.config.slot`.
    fn write_slot(&mut self, enc: &Encoded) -> Result<()> {
        let slot = enc.config.slot;
        {
            let mut m: LpmTrie<&mut MapData, [u8; SLOT_PREFIX_KEY_LEN], PrefixInfo> =
                map(&mut self.ebpf, names::PREFIXES)?;
            for (p, info) in &enc.prefixes {
                let key = Key::new(SLOT_PREFIX_BITS + p.bits, slot_prefix_key(slot, &p.key));
                m.insert(&key, info, 0).context("writing map PREFIXES")?;
            }
        }
        insert_all(&mut self.ebpf, names::PORTS, &enc.ports)?;
        insert_all(&mut self.ebpf, names::DESTS, &enc.dests)?;
        insert_all(&mut self.ebpf, names::EXES, &enc.exes)?;
        insert_all(&mut self.ebpf, names::UIDS, &enc.uids)?;
        insert_all(&mut self.ebpf, names::GIDS, &enc.gids)?;
        insert_all(&mut self.ebpf, names::CGROUPS, &enc.cgroups)?;
        insert_all(&mut self.ebpf, names::HTTP_RULES, &enc.http_rules)?;
        {
            let mut t: Array<&mut MapData, HeaderTable> = map(&mut self.ebpf, names::HTTP_TABLE)?;
            t.set(slot, enc.headers, 0).context("HTTP_TABLE")?;
        }
        let cfg = self.with_grants(enc.config)?;
        {
            let mut c: Array<&mut MapData, Config> = map(&mut self.ebpf, names::CONFIG)?;
            c.set(slot, cfg, 0).context("CONFIG")?;
        }
        self.write_prefilter(slot, &enc.prefilter)
    }

    /// Removes every entry of `slot` (which no program may be using).
    fn clear_slot(&mut self, slot: u32) -> Result<()> {
        self.write_prefilter(slot, &[])?;
        {
            let mut m: LpmTrie<&mut MapData, [u8; SLOT_PREFIX_KEY_LEN], PrefixInfo> =
                map(&mut self.ebpf, names::PREFIXES)?;
            let stale: Vec<_> = m
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| k.data()[0] as u32 == slot)
                .collect();
            for k in stale {
                let _ = m.remove(&k);
            }
        }
        remove_where::<PortKey, Protected>(&mut self.ebpf, names::PORTS, |k| k.slot == slot)?;
        remove_where::<DestKey, Protected>(&mut self.ebpf, names::DESTS, |k| k.slot == slot)?;
        remove_where::<ExeKey, ExeEntry>(&mut self.ebpf, names::EXES, |k| k.slot == slot)?;
        remove_where::<IdKey, SubjectEntry>(&mut self.ebpf, names::UIDS, |k| k.slot == slot)?;
        remove_where::<IdKey, SubjectEntry>(&mut self.ebpf, names::GIDS, |k| k.slot == slot)?;
        remove_where::<CgroupKey, SubjectEntry>(&mut self.ebpf, names::CGROUPS, |k| {
            k.slot == slot
        })?;
        remove_where::<HttpKey, HttpAllow>(&mut self.ebpf, names::HTTP_RULES, |k| {
            k.scope >> HTTP_SLOT_SHIFT == slot
        })?;
        {
            let mut t: Array<&mut MapData, HeaderTable> = map(&mut self.ebpf, names::HTTP_TABLE)?;
            t.set(slot, HeaderTable::default(), 0)
                .context("HTTP_TABLE")?;
        }
        let mut c: Array<&mut MapData, Config> = map(&mut self.ebpf, names::CONFIG)?;
        c.set(slot, EMPTY_CONFIG, 0).context("CONFIG")
    }

    /// `config` with the grants flag when grants exist.
    fn with_grants(&self, config: Config) -> Result<Config> {
        let mut c = config;
        let g: HashMap<&MapData, u32, Grant> =
            HashMap::try_from(self.ebpf.map(names::GRANTS).context("GRANTS map")?)?;
        if g.keys().next().is_some() {
            c.flags |= CONFIG_GRANTS;
        }
        Ok(c)
    }

    /// Rewrites the configuration in force with the grants flag as the
    /// grants now are. Only `flags` changes, a single aligned word: a
    /// decision reads it either way.
    fn write_config(&mut self) -> Result<()> {
        let c = self.with_grants(self.config)?;
        let mut cfg: Array<&mut MapData, Config> = map(&mut self.ebpf, names::CONFIG)?;
        cfg.set(self.slot, c, 0).context("CONFIG")
    }

    /// Lets process `pid` (as it runs now: start time and executable) reach
    /// `endpoints` (bit per endpoint index; `u64::MAX` = all) until
    /// `expires_ns` (CLOCK_MONOTONIC).
    pub fn grant(&mut self, pid: u32, g: Grant) -> Result<()> {
        {
            let mut m: HashMap<&mut MapData, u32, Grant> = map(&mut self.ebpf, names::GRANTS)?;
            m.insert(pid, g, 0).context("writing GRANTS")?;
        }
        self.write_config()
    }

    /// Removes the grant of `pid`; false when there was none.
    pub fn revoke(&mut self, pid: u32) -> Result<bool> {
        let removed = {
            let mut m: HashMap<&mut MapData, u32, Grant> = map(&mut self.ebpf, names::GRANTS)?;
            m.remove(&pid).is_ok()
        };
        self.write_config()?;
        Ok(removed)
    }

    /// The grants in the kernel, by pid.
    pub fn grants(&self) -> Vec<(u32, Grant)> {
        self.ebpf
            .map(names::GRANTS)
            .and_then(|m| HashMap::<&MapData, u32, Grant>::try_from(m).ok())
            .map(|m| m.iter().filter_map(|r| r.ok()).collect())
            .unwrap_or_default()
    }

    /// Sets `slot`'s byte of every pre-filter word: the buckets in `flags`
    /// get their flags, the others 0. The other slot's byte is left as it
    /// is, so decisions under it see no change. Only changed words are
    /// written.
    fn write_prefilter(&mut self, slot: u32, flags: &[(u32, u32)]) -> Result<()> {
        let mut m: Array<&mut MapData, u32> = map(&mut self.ebpf, names::PREFILTER)?;
        for i in 0..PREFILTER_BUCKETS {
            let f = flags
                .iter()
                .find(|(b, _)| *b == i)
                .map_or(0, |(_, flags)| *flags);
            let cur = m.get(&i, 0).context("PREFILTER")?;
            let v = prefilter_with(cur, slot, f);
            if v != cur {
                m.set(i, v, 0).context("PREFILTER")?;
            }
        }
        Ok(())
    }

    /// Re-encodes the policy after a rule's executable changed on disk and
    /// switches to it like a reload (atomically, as a new generation, so no
    /// verdict cached under the old executables is reused).
    pub fn update_exes(&mut self, policy: &Policy) -> Result<()> {
        self.apply(policy)
    }

    /// Attaches every program to the cgroup at `dir` (a cgroup2 directory).
    pub fn attach(&mut self, dir: &Path) -> Result<()> {
        self.attach_inner(dir, None)
    }

    /// Attaches like `attach`, but through links pinned under `pin_root`
    /// (see [`pins`]): the programs stay attached when the daemon exits.
    /// Older pinned sets for the same cgroup are taken over once these are
    /// in: their programs detach, their socket maps drain (see [`pins`]).
    pub fn attach_pinned(&mut self, dir: &Path, pin_root: &Path) -> Result<()> {
        pins::ensure_bpffs(pin_root)?;
        let base = pins::cgroup_pins(pin_root, dir)?;
        let set = pins::new_set(&base)?;
        if let Err(e) = self.attach_inner(dir, Some(&set)) {
            let _ = pins::remove_set(&set);
            return Err(e);
        }
        let (replaced, drained) = pins::take_over(&base, &set)?;
        if replaced > 0 {
            eprintln!(
                "metaguard: took over from {replaced} earlier attachment(s) on {}; {drained} socket map(s) drain under {}",
                dir.display(),
                base.display()
            );
        }
        self.pinned = Some(set);
        Ok(())
    }

    /// Where this guard's links are pinned, if they are.
    pub fn pinned(&self) -> Option<&Path> {
        self.pinned.as_deref()
    }

    /// Leaves the pinned programs attached when the guard is dropped (the
    /// kernel keeps them; the next `run` takes over, `unload` removes them).
    pub fn keep_attached(&mut self) {
        if let Some(l) = self.sk_msg_link.take() {
            // The sk_msg attachment to the socket map is not a link that can
            // be pinned; not dropping it keeps it.
            std::mem::forget(l);
        }
        if let Some(l) = self.redact_links.take() {
            l.forget();
        }
    }

    /// The directory of this cgroup's pinned sets (draining ones included).
    pub fn pin_base(&self) -> Option<&Path> {
        self.pinned.as_deref().and_then(Path::parent)
    }

    /// Detaches the pinned programs now and removes their pins, and the
    /// draining socket maps of the sets this guard took over.
    pub fn detach_pinned(&mut self) -> Result<()> {
        drop(self.sk_msg_link.take());
        drop(self.redact_links.take());
        if let Some(set) = self.pinned.take() {
            pins::remove_set(&set)?;
            if let Some(base) = set.parent() {
                pins::remove_draining(base)?;
                pins::remove_base(base);
            }
        }
        Ok(())
    }

    fn attach_inner(&mut self, dir: &Path, pin: Option<&Path>) -> Result<()> {
        let cg = File::open(dir).with_context(|| format!("opening cgroup {}", dir.display()))?;
        for name in SOCK_ADDR_PROGRAMS {
            let p: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            let id = p.attach(&cg, CgroupAttachMode::Single).map_err(|e| {
                explain_load_error(
                    anyhow!(e).context(format!("attaching {name} to {}", dir.display())),
                )
            })?;
            if let Some(set) = pin {
                let link: FdLink = p.take_link(id)?.try_into()?;
                pins::pin(link, set, name)?;
            }
        }
        let p: &mut CgroupSkb = program(&mut self.ebpf, EGRESS_PROGRAM)?;
        let id = p
            .attach(&cg, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
            .map_err(|e| {
                explain_load_error(
                    anyhow!(e).context(format!("attaching egress to {}", dir.display())),
                )
            })?;
        if let Some(set) = pin {
            let link: FdLink = p.take_link(id)?.try_into()?;
            pins::pin(link, set, EGRESS_PROGRAM)?;
        }
        // The socket map outlives a takeover pinned (see `pins`): pinned
        // before sock_ops can put a socket in it.
        if let Some(set) = pin {
            pins::pin_socks(
                self.ebpf
                    .map(names::PROTECTED_SOCKS)
                    .context("PROTECTED_SOCKS map")?,
                set,
                pins::SOCKS_PIN,
            )?;
            pins::pin_socks(
                self.ebpf
                    .map(redact::REDACT_SOCKS)
                    .context("REDACT_SOCKS map")?,
                set,
                pins::REDACT_SOCKS_PIN,
            )?;
        }
        // sk_msg first: a socket takes the map's programs when it is added.
        let socks = {
            let m: SockHash<&MapData, u64> = SockHash::try_from(
                self.ebpf
                    .map(names::PROTECTED_SOCKS)
                    .context("PROTECTED_SOCKS map")?,
            )?;
            m.fd().try_clone().context("PROTECTED_SOCKS fd")?
        };
        let p: &mut SkMsg = program(&mut self.ebpf, SK_MSG_PROGRAM)?;
        let id = p.attach(&socks).map_err(|e| {
            explain_load_error(anyhow!(e).context("attaching sk_msg to PROTECTED_SOCKS"))
        })?;
        if pin.is_some() {
            self.sk_msg_link = Some(p.take_link(id)?);
        }
        self.redact_links = Some(redact::attach(&mut self.ebpf)?);
        let p: &mut SockOps = program(&mut self.ebpf, SOCK_OPS_PROGRAM)?;
        let id = p.attach(&cg, CgroupAttachMode::Single).map_err(|e| {
            explain_load_error(
                anyhow!(e).context(format!("attaching sock_ops to {}", dir.display())),
            )
        })?;
        if let Some(set) = pin {
            let link: FdLink = p.take_link(id)?.try_into()?;
            pins::pin(link, set, SOCK_OPS_PROGRAM)?;
        }
        self.cgroup = dir.to_path_buf();
        Ok(())
    }

    /// The policy generation in the kernel's CONFIG (events carry it).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The event ring buffer; can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let m = self
            .ebpf
            .take_map(names::EVENTS)
            .context("EVENTS map already taken")?;
        Ok(RingBuf::try_from(m)?)
    }

    /// Events the kernel could not queue because the ring buffer was full.
    pub fn lost_events(&self) -> Result<u64> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(names::LOST).context("LOST map")?)?;
        Ok(m.get(&0, 0)?.iter().sum())
    }

    /// The kernel's repeat counts: per decision key, one count per CPU.
    pub fn repeat_counts(&self) -> Result<Vec<(AggKey, Vec<AggCount>)>> {
        let m: PerCpuHashMap<&MapData, AggKey, AggCount> =
            PerCpuHashMap::try_from(self.ebpf.map(names::AGGREGATES).context("AGGREGATES map")?)?;
        Ok(m.iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (k, v.iter().copied().collect()))
            .collect())
    }

    /// (run time in ns, run count) of a program since load, as the kernel
    /// counts them while `kernel.bpf_stats_enabled` is 1.
    pub fn program_stats(&self, name: &str) -> Result<(u64, u64)> {
        let p = self
            .ebpf
            .program(name)
            .with_context(|| format!("program {name}"))?;
        let i = p.info()?;
        Ok((i.run_time().as_nanos() as u64, i.run_count()))
    }

    /// Kernel ids of the loaded programs (for `bpftool prog show id N`).
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        self.ebpf
            .programs()
            .filter_map(|(name, p)| p.info().ok().map(|i| (name.to_string(), i.id())))
            .collect()
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} missing from the kernel object"))?
        .try_into()
        .with_context(|| format!("program {name} has an unexpected type"))
}

fn map<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf
        .map_mut(name)
        .with_context(|| format!("map {name} missing from the kernel object"))?;
    T::try_from(m).with_context(|| format!("map {name} has an unexpected type"))
}

/// Inserts `entries` into the hash map `name`.
fn insert_all<K, V>(ebpf: &mut Ebpf, name: &str, entries: &[(K, V)]) -> Result<()>
where
    K: aya::Pod,
    V: aya::Pod,
{
    let mut m: HashMap<&mut MapData, K, V> = map(ebpf, name)?;
    for (k, v) in entries {
        m.insert(k, v, 0)
            .with_context(|| format!("writing map {name}"))?;
    }
    Ok(())
}

/// Removes the keys of the hash map `name` for which `stale` holds.
fn remove_where<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    stale: impl Fn(&K) -> bool,
) -> Result<()> {
    let mut m: HashMap<&mut MapData, K, V> = map(ebpf, name)?;
    let keys: Vec<K> = m
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| stale(k))
        .collect();
    for k in keys {
        let _ = m.remove(&k);
    }
    Ok(())
}

/// Adds what the operator can do about the usual load failures.
fn explain_load_error(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        e.context("the kernel refused: loading and attaching BPF programs needs root (CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, or CAP_SYS_ADMIN)")
    } else if text.contains("Invalid argument") {
        e.context("the kernel rejected a program or map: metaguard needs Linux 5.10+ with cgroup v2, BTF and BPF socket storage")
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program passes this kernel's verifier and every map is created.
    #[test]
    fn programs_load_into_this_kernel() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED programs_load_into_this_kernel: needs root to load BPF programs");
            return;
        }
        let mut g = Guard::load().expect("load");
        let names: Vec<String> = g.program_ids().into_iter().map(|(n, _)| n).collect();
        for p in
            SOCK_ADDR_PROGRAMS
                .iter()
                .chain([&EGRESS_PROGRAM, &SOCK_OPS_PROGRAM, &SK_MSG_PROGRAM])
        {
            assert!(names.iter().any(|n| n == p), "{p} loaded: {names:?}");
        }
        // Sizes, for the record (`--nocapture`): what each program costs
        // the verifier and the kernel.
        for (name, p) in g.ebpf.programs() {
            if let Ok(i) = p.info() {
                eprintln!(
                    "{name}: verified_insns {:?}, xlated insns {}",
                    i.verified_instruction_count(),
                    i.size_translated().unwrap_or(0) / 8
                );
            }
        }
        assert_eq!(g.lost_events().unwrap(), 0);
        g.take_events().expect("ring buffer");
    }
}
