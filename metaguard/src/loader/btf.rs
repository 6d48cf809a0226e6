//! Reads struct member offsets from the kernel's BTF (/sys/kernel/btf/vmlinux).
//!
//! The kernel programs are compiled without CO-RE relocations, so the daemon
//! resolves the few fields they read (task → mm → exe_file → inode …) here and
//! hands them over as a global. aya-obj parses BTF but keeps struct members
//! private, so this is a minimal reader of the stable BTF format
//! (Documentation/bpf/btf.rst): types and strings, no more.
use anyhow::{bail, Context as _, Result};
use metaguard_common::offsets::KernelOffsets;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name_off: u32,
    type_id: u32,
    /// Bits from the start of the enclosing struct.
    bit_offset: u32,
}

struct Type {
    name_off: u32,
    kind: u32,
    /// For modifiers and typedefs, the referenced type.
    type_ref: u32,
    members: Vec<Member>,
}

pub struct Btf {
    types: Vec<Type>, // index = type id; id 0 is void
    strings: Vec<u8>,
}

fn u32_at(d: &[u8], off: usize) -> Result<u32> {
    let b = d.get(off..off + 4).context("BTF truncated")?;
    Ok(u32::from_le_bytes(b.try_into().unwrap()))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).with_context(|| {
            format!("reading {path}: metaguard needs a kernel built with CONFIG_DEBUG_INFO_BTF")
        })?;
        Btf::parse(&data).with_context(|| format!("parsing {path}"))
    }

    pub fn parse(d: &[u8]) -> Result<Btf> {
        if u32_at(d, 0)? & 0xffff != 0xeb9f {
            bail!("not little-endian BTF (bad magic)");
        }
        let hdr_len = u32_at(d, 4)? as usize;
        let (type_off, type_len) = (u32_at(d, 8)? as usize, u32_at(d, 12)? as usize);
        let (str_off, str_len) = (u32_at(d, 16)? as usize, u32_at(d, 20)? as usize);
        let types_data = d
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .context("BTF type section out of bounds")?;
        let strings = d
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("BTF string section out of bounds")?
            .to_vec();
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            type_ref: 0,
            members: vec![],
        }];
        let mut p = 0;
        while p < types_data.len() {
            let name_off = u32_at(types_data, p)?;
            let info = u32_at(types_data, p + 4)?;
            let size_or_type = u32_at(types_data, p + 8)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = vec![];
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => p += 4,
                KIND_ARRAY => p += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = p + i * 12;
                        let raw = u32_at(types_data, m + 8)?;
                        let bit_offset = if kind_flag { raw & 0xff_ffff } else { raw };
                        members.push(Member {
                            name_off: u32_at(types_data, m)?,
                            type_id: u32_at(types_data, m + 4)?,
                            bit_offset,
                        });
                    }
                    p += vlen * 12;
                }
                KIND_ENUM => p += vlen * 8,
                KIND_FUNC_PROTO => p += vlen * 8,
                KIND_DATASEC => p += vlen * 12,
                KIND_ENUM64 => p += vlen * 12,
                _ => {} // ptr, fwd, typedef, modifiers, func, float, type tag: no trailing data
            }
            types.push(Type {
                name_off,
                kind,
                type_ref: size_or_type,
                members,
            });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = &self.strings[(off as usize).min(self.strings.len())..];
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    fn struct_id(&self, name: &str) -> Result<u32> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
            .map(|i| i as u32)
            .with_context(|| format!("struct {name} not found in kernel BTF"))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.type_ref
                }
                _ => break,
            }
        }
        id
    }

    /// Byte offset and type of `field` in struct/union `id`, searching
    /// anonymous members (whose offsets add up) as the C compiler does.
    fn member(&self, id: u32, field: &str) -> Option<(u32, u32)> {
        let t = self.types.get(id as usize)?;
        if let Some(m) = t
            .members
            .iter()
            .find(|m| self.name(m.name_off) == field.as_bytes())
        {
            return Some((m.bit_offset / 8, m.type_id));
        }
        for m in t
            .members
            .iter()
            .filter(|m| self.name(m.name_off).is_empty())
        {
            let inner = self.resolve(m.type_id);
            if !matches!(
                self.types.get(inner as usize)?.kind,
                KIND_STRUCT | KIND_UNION
            ) {
                continue;
            }
            if let Some((off, ty)) = self.member(inner, field) {
                return Some((m.bit_offset / 8 + off, ty));
            }
        }
        None
    }

    /// Offset of a dotted path of embedded members ("f_path.dentry").
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32> {
        let mut id = self.struct_id(strukt)?;
        let mut total = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (off, ty) = self
                .member(id, part)
                .with_context(|| format!("field {strukt}.{path} not found in kernel BTF"))?;
            total += off;
            if parts.peek().is_some() {
                id = self.resolve(ty);
            }
        }
        Ok(total)
    }
}

/// The offsets the kernel programs need to identify the running executable.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets> {
    Ok(KernelOffsets {
        task_mm: btf.offset_of("task_struct", "mm")?,
        mm_exe_file: btf.offset_of("mm_struct", "exe_file")?,
        file_inode: btf.offset_of("file", "f_inode")?,
        file_dentry: btf.offset_of("file", "f_path.dentry")?,
        inode_ino: btf.offset_of("inode", "i_ino")?,
        inode_sb: btf.offset_of("inode", "i_sb")?,
        inode_generation: btf.offset_of("inode", "i_generation")?,
        sb_dev: btf.offset_of("super_block", "s_dev")?,
        dentry_name: btf.offset_of("dentry", "d_name.name")?,
        task_cred: btf.offset_of("task_struct", "cred")?,
        cred_group_info: btf.offset_of("cred", "group_info")?,
        group_info_ngroups: btf.offset_of("group_info", "ngroups")?,
        group_info_gid: btf.offset_of("group_info", "gid")?,
        task_start_boottime: btf.offset_of("task_struct", "start_boottime")?,
        tcp_fastopen_req: btf.offset_of("tcp_sock", "fastopen_req")?,
        tcp_sock_cookie: btf
            .offset_of("tcp_sock", "inet_conn.icsk_inet.sk.__sk_common.skc_cookie")?,
        valid: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_kernels_offsets() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux on this kernel");
            return;
        };
        let o = kernel_offsets(&btf).expect("offsets");
        // Stable facts of the layout: dentry follows mnt in struct path; the
        // name pointer is after the hash in struct qstr.
        assert_eq!(o.file_dentry, btf.offset_of("file", "f_path").unwrap() + 8);
        assert!(o.task_mm > 0 && o.mm_exe_file > 0 && o.inode_sb > 0);
        assert_eq!(btf.offset_of("qstr", "name").unwrap(), 8);
        assert!(btf.offset_of("inode", "no_such_field").is_err());
    }
}
