//! Minimal reader for raw kernel BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF programs cannot use CO-RE relocations, so the daemon computes the
//! byte offsets of the kernel struct members they read (e.g. `sk_buff.dev`,
//! `net.ns.inum`) here and passes them to the programs as globals.
//!
//! Only the raw BTF format (no ELF wrapper) of the host's byte order is
//! supported. The type section is parsed once into a table indexed by type id;
//! names are resolved lazily against a copy of the string section.

use std::fmt;
use std::path::{Path, PathBuf};

/// Errors from loading BTF or resolving member offsets in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error(
        "cannot read BTF from {}: {source}; set btf_path to the kernel's BTF file \
         (usually /sys/kernel/btf/vmlinux) or to \"\" to run without BTF",
        .path.display()
    )]
    Io {
        /// File that was being read.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The data is not valid raw BTF.
    #[error(
        "malformed BTF: {0}; btf_path must name a raw BTF file such as \
         /sys/kernel/btf/vmlinux (not an ELF image), or be \"\" to run without BTF"
    )]
    Malformed(String),
    /// No struct or union (or typedef of one) has this name.
    #[error(
        "kernel BTF has no struct or union named `{0}`; this kernel is not supported \
         (inspect it with `bpftool btf dump file /sys/kernel/btf/vmlinux format c`)"
    )]
    NoSuchType(String),
    /// A path component names no member (anonymous members were searched too).
    #[error(
        "`{ty}` has no member `{member}` (anonymous struct/union members included); \
         this kernel's layout differs from what the watchdog expects (inspect it with \
         `bpftool btf dump file /sys/kernel/btf/vmlinux format c`)"
    )]
    NoSuchMember {
        /// The type name or member path that was searched.
        ty: String,
        /// The member that was not found.
        member: String,
    },
    /// A type name or intermediate path component is not a struct or union.
    #[error(
        "`{path}` is a {kind}, not a struct or union, so member offsets cannot be looked \
         up through it (pointers must be dereferenced by the eBPF program instead)"
    )]
    NotAStruct {
        /// The type name or member path that was reached.
        path: String,
        /// BTF kind of that type, e.g. "pointer".
        kind: &'static str,
    },
    /// The member is a bitfield or not byte-aligned, so it has no byte offset.
    #[error("`{path}` is a bitfield or not byte-aligned; it has no byte offset to pass to eBPF")]
    Bitfield {
        /// The full member path.
        path: String,
    },
}

const MAGIC: u16 = 0xEB9F;
const HDR_MIN: usize = 24;
const K_INT: u32 = 1;
const K_STRUCT: u32 = 4;
const K_UNION: u32 = 5;
const K_TYPEDEF: u32 = 8;
/// Bound on modifier chains and anonymous-member nesting (guards against cycles).
const MAX_DEPTH: usize = 64;

macro_rules! malformed {
    ($($arg:tt)*) => { BtfError::Malformed(format!($($arg)*)) };
}

#[derive(Clone, Copy, Default)]
struct Type {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    /// STRUCT/UNION: index of the first member in `Btf::members`; INT: encoding word.
    extra: u32,
}

impl Type {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn is_composite(&self) -> bool {
        matches!(self.kind(), K_STRUCT | K_UNION)
    }
}

/// A found member: (bit offset, bitfield size, member type id).
type Hit = (u64, u32, u32);

/// Parsed kernel BTF: the type table (index = type id, 0 = void) and strings.
pub struct Btf {
    types: Vec<Type>,
    /// Struct/union members of all types, each `[name_off, type, offset]`.
    members: Vec<[u32; 3]>,
    strings: Box<[u8]>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, m, s) = (self.types.len() - 1, self.members.len(), self.strings.len());
        write!(f, "Btf {{ {t} types, {m} members, {s} string bytes }}")
    }
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn kind_name(kind: u32) -> &'static str {
    "void/integer/pointer/array/struct/union/enum/forward declaration/typedef/volatile/\
     const/restrict/function/function prototype/variable/data section/float/\
     declaration tag/type tag/enum64"
        .split('/')
        .nth(kind as usize)
        .unwrap_or("unknown kind")
}

/// Returns the section `[hdr_len + off, + len)` of `data`, if in bounds.
fn section(data: &[u8], hdr_len: usize, off: u32, len: u32) -> Option<&[u8]> {
    let start = hdr_len.checked_add(off as usize)?;
    data.get(start..start.checked_add(len as usize)?)
}

impl Btf {
    /// Parses raw BTF bytes (host byte order).
    pub fn from_bytes(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < HDR_MIN {
            return Err(malformed!("truncated header ({} bytes)", data.len()));
        }
        let hdr = |i| u32_at(data, i).unwrap_or(0);
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        if magic == MAGIC.swap_bytes() {
            return Err(malformed!(
                "byte-swapped magic: big-endian BTF not supported"
            ));
        }
        if magic != MAGIC {
            return Err(malformed!("bad magic {magic:#06x}, expected {MAGIC:#06x}"));
        }
        if data[2] != 1 {
            return Err(malformed!("unsupported BTF version {}", data[2]));
        }
        let hdr_len = hdr(4) as usize;
        if !(HDR_MIN..=data.len()).contains(&hdr_len) {
            return Err(malformed!("bad header length {hdr_len}"));
        }
        let tsec = section(data, hdr_len, hdr(8), hdr(12));
        let tsec = tsec.ok_or_else(|| malformed!("type section is truncated"))?;
        let strings = section(data, hdr_len, hdr(16), hdr(20));
        let strings = strings.ok_or_else(|| malformed!("string section is truncated"))?;

        let mut types = Vec::with_capacity(tsec.len() / 20 + 1);
        types.push(Type::default());
        let mut members = Vec::with_capacity(tsec.len() / 24);
        let mut pos = 0;
        while pos < tsec.len() {
            let id = types.len();
            let word =
                |i| u32_at(tsec, pos + i).ok_or_else(|| malformed!("type id {id} is truncated"));
            let (name_off, info, size_or_type) = (word(0)?, word(4)?, word(8)?);
            let mut t = Type {
                name_off,
                info,
                size_or_type,
                extra: 0,
            };
            let vlen = t.vlen();
            let trailing = match t.kind() {
                K_INT => {
                    t.extra = word(12)?;
                    4
                }
                2 | 7..=12 | 16 | 18 => 0,
                3 => 12,
                K_STRUCT | K_UNION => {
                    t.extra = members.len() as u32;
                    for m in (12..12 + vlen * 12).step_by(12) {
                        members.push([word(m)?, word(m + 4)?, word(m + 8)?]);
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,
                14 | 17 => 4,
                15 | 19 => vlen * 12,
                k => return Err(malformed!("unknown kind {k} at type id {id}")),
            };
            pos += 12 + trailing;
            if pos > tsec.len() {
                return Err(malformed!("type id {id} is truncated"));
            }
            types.push(t);
        }
        let max = strings.len().max(1) as u32;
        if types.iter().any(|t| t.name_off >= max) || members.iter().any(|m| m[0] >= max) {
            return Err(malformed!("name offset beyond string section"));
        }
        let strings = strings.into();
        Ok(Btf {
            types,
            members,
            strings,
        })
    }

    /// Reads and parses a raw BTF file such as `/sys/kernel/btf/vmlinux`.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let io_err = |source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        };
        Btf::from_bytes(&std::fs::read(path).map_err(io_err)?).map_err(|e| match e {
            BtfError::Malformed(m) => malformed!("{}: {m}", path.display()),
            e => e,
        })
    }

    /// Byte offset of `path` inside the struct (or union) named `type_name`,
    /// looking through anonymous struct/union members at any depth, and through
    /// typedef/const/volatile/restrict/type_tag modifiers of intermediate member types.
    pub fn member_offset(&self, type_name: &str, path: &[&str]) -> Result<u32, BtfError> {
        let mut id = self.find_composite(type_name)?;
        let mut walked = type_name.to_owned();
        let mut bits = 0u64;
        for member in path {
            let (sid, t) = self.resolve(id)?;
            if !t.is_composite() {
                let kind = kind_name(t.kind());
                return Err(BtfError::NotAStruct { path: walked, kind });
            }
            let Some((off, bitfield_size, ty)) = self.find_member(sid, member.as_bytes(), 0)?
            else {
                let member = (*member).to_owned();
                return Err(BtfError::NoSuchMember { ty: walked, member });
            };
            walked = format!("{walked}.{member}");
            if bitfield_size != 0 || off % 8 != 0 || self.is_int_bitfield(ty)? {
                return Err(BtfError::Bitfield { path: walked });
            }
            bits += off;
            id = ty;
        }
        u32::try_from(bits / 8).map_err(|_| malformed!("offset of `{walked}` overflows"))
    }

    /// Size in bytes of the named struct/union (useful for sanity checks).
    pub fn struct_size(&self, type_name: &str) -> Result<u32, BtfError> {
        Ok(self.types[self.find_composite(type_name)? as usize].size_or_type)
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        s.split(|&b| b == 0).next().unwrap_or_default()
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        let t = self.types.get(id as usize);
        t.ok_or_else(|| malformed!("reference to missing type id {id}"))
    }

    /// Follows typedef/volatile/const/restrict/type_tag to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<(u32, &Type), BtfError> {
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            match t.kind() {
                K_TYPEDEF | 9 | 10 | 11 | 18 => id = t.size_or_type,
                _ => return Ok((id, t)),
            }
        }
        Err(malformed!("type reference chain too long at type id {id}"))
    }

    /// Finds the first struct/union named `name`, else a typedef of one.
    fn find_composite(&self, name: &str) -> Result<u32, BtfError> {
        let named = |want: fn(&Type) -> bool| {
            let mut ids = 1..self.types.len() as u32;
            ids.find(|&i| {
                let t = &self.types[i as usize];
                want(t) && self.name(t.name_off) == name.as_bytes()
            })
        };
        if let Some(id) = named(Type::is_composite) {
            return Ok(id);
        }
        if let Some(id) = named(|t| t.kind() == K_TYPEDEF) {
            let (rid, t) = self.resolve(id)?;
            if t.is_composite() {
                return Ok(rid);
            }
        }
        let path = name.to_owned();
        match named(|t| t.kind() != 0) {
            Some(id) => {
                let kind = kind_name(self.resolve(id)?.1.kind());
                Err(BtfError::NotAStruct { path, kind })
            }
            None => Err(BtfError::NoSuchType(path)),
        }
    }

    /// Searches struct/union `sid`, and depth-first its anonymous struct/union
    /// members, for the member `name`.
    fn find_member(&self, sid: u32, name: &[u8], depth: usize) -> Result<Option<Hit>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed!("anonymous members nested too deeply"));
        }
        let t = self.ty(sid)?;
        let kflag = t.info >> 31 != 0;
        let mask = if kflag { 0xff_ffff } else { u32::MAX };
        let start = t.extra as usize;
        for &[name_off, ty, raw] in &self.members[start..start + t.vlen()] {
            let (off, size) = (u64::from(raw & mask), (raw >> 24) * u32::from(kflag));
            let member_name = self.name(name_off);
            if member_name == name {
                return Ok(Some((off, size, ty)));
            }
            if !member_name.is_empty() {
                continue;
            }
            let (rid, rt) = self.resolve(ty)?;
            if rt.is_composite()
                && let Some((o, s, ty)) = self.find_member(rid, name, depth + 1)?
            {
                return Ok(Some((off + o, s, ty)));
            }
        }
        Ok(None)
    }

    /// Old-style (kind_flag unset) bitfields encode the bit size in the INT type.
    fn is_int_bitfield(&self, id: u32) -> Result<bool, BtfError> {
        let t = self.resolve(id)?.1;
        let (bits, bit_off) = (t.extra & 0xff, (t.extra >> 16) & 0xff);
        Ok(t.kind() == K_INT && (bit_off != 0 || bits != t.size_or_type * 8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member: (name, type id, offset word).
    type Mem<'a> = (&'a str, u32, u32);

    /// Builds synthetic BTF blobs; type ids are assigned in order from 1.
    struct Builder {
        strings: Vec<u8>,
        types: Vec<u32>,
        next: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                strings: vec![0],
                types: Vec::new(),
                next: 1,
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            (self.strings.len() - name.len() - 1) as u32
        }
        /// Adds a type with `words` as its size_or_type word and trailing data.
        fn add(&mut self, kind: u32, name: &str, vlen: usize, kflag: bool, words: &[u32]) -> u32 {
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen as u32;
            let name = self.s(name);
            self.types.extend([name, info].iter().chain(words));
            self.next += 1;
            self.next - 1
        }
        fn int(&mut self, name: &str, size: u32, bits: u32) -> u32 {
            self.add(K_INT, name, 0, false, &[size, bits])
        }
        /// Sets kind_flag if any member's offset word has a bitfield size.
        fn comp(&mut self, kind: u32, name: &str, size: u32, ms: &[Mem]) -> u32 {
            let mut words = vec![size];
            for &(n, ty, off) in ms {
                words.extend([self.s(n), ty, off]);
            }
            let kflag = ms.iter().any(|m| m.2 >> 24 != 0);
            self.add(kind, name, ms.len(), kflag, &words)
        }
        fn st(&mut self, name: &str, size: u32, ms: &[Mem]) -> u32 {
            self.comp(K_STRUCT, name, size, ms)
        }
        fn un(&mut self, name: &str, size: u32, ms: &[Mem]) -> u32 {
            self.comp(K_UNION, name, size, ms)
        }
        fn build(&self) -> Vec<u8> {
            let (tlen, slen) = (self.types.len() as u32 * 4, self.strings.len() as u32);
            let mut out = [MAGIC.to_ne_bytes(), [1, 0]].concat();
            for w in [24, 0, tlen, tlen, slen].iter().chain(&self.types) {
                out.extend(w.to_ne_bytes());
            }
            out.extend(&self.strings);
            out
        }
    }

    /// Kernel-like layout: sk_buff, net, ns_common, possible_net_t, net_device.
    fn sample() -> Btf {
        let mut b = Builder::new();
        let uint = b.int("unsigned int", 4, 32);
        let ulong = b.int("unsigned long", 8, 64);
        let fwd = b.add(7, "sk_buff", 0, false, &[0]);
        let pskb = b.add(2, "", 0, false, &[fwd]);
        let pvoid = b.add(2, "", 0, false, &[0]);
        let devu = b.un("", 8, &[("dev", pvoid, 0), ("dev_scratch", ulong, 0)]);
        let ms = [("next", pskb, 0), ("prev", pskb, 64), ("", devu, 128)];
        let inner = b.st("", 24, &ms);
        let rb = b.st("rb_node", 24, &[("rb_parent_color", ulong, 0)]);
        let outer = b.un("", 24, &[("", inner, 0), ("rbnode", rb, 0)]);
        b.add(K_TYPEDEF, "sk_buff", 0, false, &[ulong]); // same name, not a struct
        b.st("sk_buff", 232, &[("", outer, 0), ("sk", pvoid, 192)]);
        let ns = b.st("ns_common", 16, &[("ops", ulong, 0), ("inum", uint, 64)]);
        let net = b.st("net", 64, &[("passive", uint, 0), ("ns", ns, 128)]);
        let pnet = b.add(2, "", 0, false, &[net]);
        let anon = b.st("", 8, &[("net", pnet, 0)]);
        let td = b.add(K_TYPEDEF, "possible_net_t", 0, false, &[anon]);
        let cnst = b.add(10, "", 0, false, &[td]);
        let ms = [("mtu", uint, 0), ("nd_net", cnst, 320)];
        b.st("net_device", 128, &ms);
        let u8t = b.int("u8", 1, 8);
        let ms = [("ihl", u8t, 4 << 24), ("tos", u8t, 8), ("ttl", u8t, 68)];
        b.st("iphdr", 20, &ms);
        let bits3 = b.int("u8", 1, 3); // old-style bitfield: size in the INT type
        b.st("old", 4, &[("f", bits3, 0), ("g", u8t, 8)]);
        b.add(6, "color", 0, false, &[4]);
        Btf::from_bytes(&b.build()).expect("sample BTF parses")
    }

    fn off(btf: &Btf, dotted: &str) -> Result<u32, BtfError> {
        let parts: Vec<&str> = dotted.split('.').collect();
        btf.member_offset(parts[0], &parts[1..])
    }

    fn err(btf: &Btf, dotted: &str) -> String {
        off(btf, dotted).unwrap_err().to_string()
    }

    #[test]
    fn plain_and_anonymous_members() {
        let btf = sample();
        for (path, want) in [
            ("sk_buff.sk", 24),
            ("sk_buff.dev", 16),
            ("sk_buff.dev_scratch", 16),
            ("sk_buff.prev", 8),
            ("sk_buff.rbnode.rb_parent_color", 0),
            ("sk_buff", 0),
            ("iphdr.tos", 1),
            ("old.g", 1),
        ] {
            assert_eq!(off(&btf, path).unwrap(), want, "{path}");
        }
        assert_eq!(btf.struct_size("sk_buff").unwrap(), 232);
    }

    #[test]
    fn multi_level_through_typedef_and_const() {
        let btf = sample();
        assert_eq!(off(&btf, "net_device.nd_net.net").unwrap(), 40);
        assert_eq!(off(&btf, "net.ns.inum").unwrap(), 24);
        assert_eq!(off(&btf, "possible_net_t.net").unwrap(), 0);
        assert_eq!(btf.struct_size("possible_net_t").unwrap(), 8);
    }

    #[test]
    fn lookup_errors() {
        let btf = sample();
        let bitfield = |p| matches!(off(&btf, p), Err(BtfError::Bitfield { path }) if path == p);
        assert!(bitfield("iphdr.ihl") && bitfield("iphdr.ttl") && bitfield("old.f"));
        assert!(matches!(off(&btf, "no.x"), Err(BtfError::NoSuchType(_))));
        assert!(err(&btf, "no.x").contains("no struct or union named `no`"));
        let e = err(&btf, "net_device.nd_net.bogus");
        assert!(
            e.contains("`net_device.nd_net` has no member `bogus`"),
            "{e}"
        );
        let e = err(&btf, "sk_buff.dev.nd_net");
        assert!(
            e.contains("`sk_buff.dev` is a pointer, not a struct"),
            "{e}"
        );
        let e = btf.struct_size("color");
        assert!(matches!(e, Err(BtfError::NotAStruct { kind: "enum", .. })));
    }

    #[test]
    fn malformed_input() {
        let mut b = Builder::new();
        let int = b.int("int", 4, 32);
        b.st("s", 4, &[("a", int, 0)]);
        let good = b.build();
        assert_eq!(off(&Btf::from_bytes(&good).unwrap(), "s.a").unwrap(), 0);
        let err = |d: &[u8]| Btf::from_bytes(d).unwrap_err().to_string();
        assert!(err(&good[..10]).contains("truncated header"));
        assert!(err(&good[..good.len() - 1]).contains("string section is truncated"));
        let mut bad = good.clone();
        bad[0] ^= 0xff;
        assert!(err(&bad).contains("bad magic"));
        bad[..2].copy_from_slice(&MAGIC.swap_bytes().to_ne_bytes());
        assert!(err(&bad).contains("big-endian BTF not supported"));
        let mut short = good.clone(); // type_len cut inside type 2
        short[12..16].copy_from_slice(&(u32_at(&good, 12).unwrap() - 4).to_ne_bytes());
        assert!(err(&short).contains("type id 2 is truncated"));
        let mut unknown = good.clone(); // kind of type 1 := 25
        let info = (u32_at(&good, 28).unwrap() & !(0x1f << 24)) | (25 << 24);
        unknown[28..32].copy_from_slice(&info.to_ne_bytes());
        assert!(err(&unknown).contains("unknown kind 25"));
        let e = Btf::from_file(Path::new("/nonexistent/btf")).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("/nonexistent/btf") && e.contains("set btf_path"),
            "{e}"
        );
    }

    #[test]
    fn real_vmlinux() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !super::super::kernel_file_present("real_vmlinux", path) {
            return;
        }
        let t0 = std::time::Instant::now();
        let btf = Btf::from_file(path).unwrap();
        println!("parsed {btf:?} in {:?}", t0.elapsed());
        for dotted in [
            "sk_buff.dev",
            "sk_buff.sk",
            "net_device.nd_net.net",
            "sock.__sk_common.skc_net.net",
            "net.ns.inum",
        ] {
            let (o, ty) = (
                off(&btf, dotted).unwrap(),
                &dotted[..dotted.find('.').unwrap()],
            );
            let size = btf.struct_size(ty).unwrap();
            println!("{dotted} = {o} (sizeof {ty} = {size})");
            assert!(o < size, "{dotted}");
        }
        if cfg!(target_arch = "x86_64") {
            assert_eq!(off(&btf, "sk_buff.dev").unwrap(), 16);
        }
        assert!(off(&btf, "net.ns.inum").unwrap() > 0);
    }
}
