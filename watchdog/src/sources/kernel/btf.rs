//! Struct member offsets from raw kernel BTF (`/sys/kernel/btf/vmlinux`), read in passes
//! instead of kept in memory.
//!
//! The eBPF programs cannot use CO-RE relocations, so the daemon computes the byte offsets
//! of the few kernel struct members they read (e.g. `sk_buff.dev`, `net.ns.inum`) here and
//! passes them to the programs as globals. A distribution kernel's BTF is about 5 MiB, and a
//! table of all its types several more; the daemon needs seven numbers from it. So nothing
//! of it is kept: opening checks every type record in one pass through a small buffer and
//! notes where every [`CHECKPOINT`]th type starts; a lookup makes one pass over the strings
//! (where the names asked for are), one over the types (the struct with that name), then
//! reads the few types on its way where they are. What stays in memory is a few KiB.
//!
//! Only the raw BTF format (no ELF wrapper) of the host's byte order is supported.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
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
/// Every this many type ids, where the type starts is noted: a type is found by reading
/// forward from the last noted one before it.
const CHECKPOINT: u32 = 64;
/// The buffer of a pass over a whole section.
const PASS_BUFFER: usize = 64 * 1024;
/// The buffer of a read from a checkpoint to one type.
const SEEK_BUFFER: usize = 4 * 1024;

macro_rules! malformed {
    ($($arg:tt)*) => { BtfError::Malformed(format!($($arg)*)) };
}

/// One type record, as far as lookups need it.
#[derive(Clone, Copy, Default)]
struct Type {
    name_off: u32,
    info: u32,
    size_or_type: u32,
    /// INT: the encoding word.
    int_encoding: u32,
    /// STRUCT/UNION: where the members start (within the type section).
    members_at: u32,
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

/// Names and the string offsets where each is.
struct Names<'a> {
    names: &'a [&'a str],
    offsets: &'a [Vec<u32>],
}

impl Names<'_> {
    fn offsets(&self, name: &str) -> &[u32] {
        let i = self.names.iter().position(|n| *n == name);
        i.map_or(&[], |i| &self.offsets[i])
    }
}

/// Where the bytes are: the file (read where needed), or a copy (tests).
enum Data {
    File(File),
    Bytes(Box<[u8]>),
}

impl Data {
    fn len(&self) -> std::io::Result<u64> {
        match self {
            Data::File(file) => Ok(file.metadata()?.len()),
            Data::Bytes(bytes) => Ok(bytes.len() as u64),
        }
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the data.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        match self {
            Data::File(file) => {
                let mut done = 0;
                while done < buf.len() {
                    match file.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(done)
            }
            Data::Bytes(bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let n = buf.len().min(bytes.len() - start);
                buf[..n].copy_from_slice(&bytes[start..start + n]);
                Ok(n)
            }
        }
    }
}

/// Kernel BTF, open for lookups: the file, where its sections are, and where every
/// [`CHECKPOINT`]th type starts.
pub struct Btf {
    data: Data,
    /// Named in errors.
    path: PathBuf,
    /// Byte offset of the type section, and its length.
    types: (u64, u32),
    /// Byte offset of the string section, and its length.
    strings: (u64, u32),
    /// The number of types (ids 1 to `count`; 0 is void).
    count: u32,
    /// Where type `1 + i * CHECKPOINT` starts, within the type section.
    checkpoints: Vec<u32>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, s) = (self.count, self.strings.1);
        write!(
            f,
            "Btf {{ {t} types, {s} string bytes, read from {} }}",
            self.path.display()
        )
    }
}

fn kind_name(kind: u32) -> &'static str {
    "void/integer/pointer/array/struct/union/enum/forward declaration/typedef/volatile/\
     const/restrict/function/function prototype/variable/data section/float/\
     declaration tag/type tag/enum64"
        .split('/')
        .nth(kind as usize)
        .unwrap_or("unknown kind")
}

/// Reads a byte range front to back through a buffer.
struct Stream<'a> {
    btf: &'a Btf,
    /// The next byte to read into the buffer, and the end of the range.
    next: u64,
    end: u64,
    buf: Vec<u8>,
    /// The unread part of `buf`.
    at: usize,
    filled: usize,
}

impl<'a> Stream<'a> {
    fn new(btf: &'a Btf, start: u64, len: u64, buffer: usize) -> Self {
        Stream {
            btf,
            next: start,
            end: start + len,
            buf: vec![0; buffer.min(len as usize).max(16)],
            at: 0,
            filled: 0,
        }
    }

    /// Bytes not read yet.
    fn remaining(&self) -> u64 {
        (self.filled - self.at) as u64 + (self.end - self.next)
    }

    /// Refills the buffer (keeping the unread bytes); false at the end of the range.
    fn refill(&mut self) -> Result<bool, BtfError> {
        self.buf.copy_within(self.at..self.filled, 0);
        self.filled -= self.at;
        self.at = 0;
        let want = (self.buf.len() - self.filled).min((self.end - self.next) as usize);
        if want == 0 {
            return Ok(false);
        }
        let n = self
            .btf
            .read_at(&mut self.buf[self.filled..self.filled + want], self.next)?;
        if n < want {
            return Err(malformed!("{} ends early", self.btf.path.display()));
        }
        self.filled += n;
        self.next += n as u64;
        Ok(true)
    }

    /// The next native-endian word; `None` if fewer than 4 bytes are left.
    fn word(&mut self) -> Result<Option<u32>, BtfError> {
        while self.filled - self.at < 4 {
            if !self.refill()? {
                return Ok(None);
            }
        }
        let bytes = self.buf[self.at..self.at + 4].try_into().expect("4 bytes");
        self.at += 4;
        Ok(Some(u32::from_ne_bytes(bytes)))
    }

    /// The unread bytes of the buffer, refilled first if empty (all consumed); `None` at
    /// the end.
    fn chunk(&mut self) -> Result<Option<&[u8]>, BtfError> {
        if self.at == self.filled && !self.refill()? {
            return Ok(None);
        }
        let chunk = &self.buf[self.at..self.filled];
        self.at = self.filled;
        Ok(Some(chunk))
    }
}

/// Reads type records one after the other from a stream over the type section.
struct Records<'a> {
    stream: Stream<'a>,
    /// The id of the next record.
    id: u32,
    /// Where the next record starts, within the type section.
    pos: u32,
    /// Each member's name offset, read while reading it (for the opening check).
    member_names: Vec<u32>,
}

impl Records<'_> {
    /// The next record and where it starts; `None` after the last. Member names are left
    /// in `member_names`.
    fn next(&mut self) -> Result<Option<(Type, u32)>, BtfError> {
        if self.stream.remaining() == 0 {
            return Ok(None);
        }
        let (id, start) = (self.id, self.pos);
        let truncated = || malformed!("type id {id} is truncated");
        let word = |stream: &mut Stream<'_>| stream.word()?.ok_or_else(truncated);
        let (name_off, info, size_or_type) = (
            word(&mut self.stream)?,
            word(&mut self.stream)?,
            word(&mut self.stream)?,
        );
        let mut t = Type {
            name_off,
            info,
            size_or_type,
            ..Type::default()
        };
        let vlen = t.vlen();
        let trailing = match t.kind() {
            K_INT | 14 | 17 => 4,
            2 | 7..=12 | 16 | 18 => 0,
            3 => 12,
            K_STRUCT | K_UNION | 15 | 19 => vlen * 12,
            6 | 13 => vlen * 8,
            k => return Err(malformed!("unknown kind {k} at type id {id}")),
        };
        self.member_names.clear();
        if t.kind() == K_INT {
            t.int_encoding = word(&mut self.stream)?;
        } else if t.is_composite() {
            t.members_at = start + 12;
            for _ in 0..vlen {
                self.member_names.push(word(&mut self.stream)?);
                word(&mut self.stream)?;
                word(&mut self.stream)?;
            }
        } else {
            for _ in 0..trailing / 4 {
                word(&mut self.stream)?;
            }
        }
        self.pos = start + 12 + trailing as u32;
        self.id += 1;
        Ok(Some((t, start)))
    }
}

impl Btf {
    /// Checks raw BTF bytes (host byte order) and keeps a copy: for tests.
    pub fn from_bytes(data: &[u8]) -> Result<Btf, BtfError> {
        Btf::open(Data::Bytes(data.into()), PathBuf::from("<memory>"))
    }

    /// Opens a raw BTF file such as `/sys/kernel/btf/vmlinux` and checks every type record
    /// in it (nothing of it is kept but where every [`CHECKPOINT`]th type starts).
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let io_err = |source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        Btf::open(Data::File(file), path.to_path_buf()).map_err(|e| match e {
            BtfError::Malformed(m) => malformed!("{}: {m}", path.display()),
            e => e,
        })
    }

    fn open(data: Data, path: PathBuf) -> Result<Btf, BtfError> {
        let len = data.len().map_err(|source| BtfError::Io {
            path: path.clone(),
            source,
        })?;
        let mut header = [0u8; HDR_MIN];
        let got = data
            .read_at(&mut header, 0)
            .map_err(|source| BtfError::Io {
                path: path.clone(),
                source,
            })?;
        if got < HDR_MIN {
            return Err(malformed!("truncated header ({got} bytes)"));
        }
        let hdr = |i: usize| u32::from_ne_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let magic = u16::from_ne_bytes([header[0], header[1]]);
        if magic == MAGIC.swap_bytes() {
            return Err(malformed!(
                "byte-swapped magic: big-endian BTF not supported"
            ));
        }
        if magic != MAGIC {
            return Err(malformed!("bad magic {magic:#06x}, expected {MAGIC:#06x}"));
        }
        if header[2] != 1 {
            return Err(malformed!("unsupported BTF version {}", header[2]));
        }
        let hdr_len = u64::from(hdr(4));
        if !(HDR_MIN as u64..=len).contains(&hdr_len) {
            return Err(malformed!("bad header length {hdr_len}"));
        }
        let section = |off: u32, sec_len: u32| {
            let start = hdr_len + u64::from(off);
            (start + u64::from(sec_len) <= len).then_some((start, sec_len))
        };
        let types = section(hdr(8), hdr(12));
        let types = types.ok_or_else(|| malformed!("type section is truncated"))?;
        let strings = section(hdr(16), hdr(20));
        let strings = strings.ok_or_else(|| malformed!("string section is truncated"))?;
        let mut btf = Btf {
            data,
            path,
            types,
            strings,
            count: 0,
            checkpoints: Vec::new(),
        };
        // The one pass over every type: each record well formed, every name inside the
        // string section, and where every CHECKPOINT-th type starts.
        let max = strings.1.max(1);
        let mut checkpoints = Vec::new();
        let mut records = btf.records(1, 0, PASS_BUFFER);
        loop {
            let id = records.id;
            let Some((t, start)) = records.next()? else {
                break;
            };
            if (id - 1).is_multiple_of(CHECKPOINT) {
                checkpoints.push(start);
            }
            if t.name_off >= max || records.member_names.iter().any(|&n| n >= max) {
                return Err(malformed!("name offset beyond string section"));
            }
        }
        btf.count = records.id - 1;
        btf.checkpoints = checkpoints;
        Ok(btf)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, BtfError> {
        self.data
            .read_at(buf, offset)
            .map_err(|source| BtfError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Records from type `id`, which starts at `pos` within the type section.
    fn records(&self, id: u32, pos: u32, buffer: usize) -> Records<'_> {
        let (start, len) = self.types;
        Records {
            stream: Stream::new(self, start + u64::from(pos), u64::from(len - pos), buffer),
            id,
            pos,
            member_names: Vec::new(),
        }
    }

    /// Byte offset of `path` inside the struct (or union) named `type_name`,
    /// looking through anonymous struct/union members at any depth, and through
    /// typedef/const/volatile/restrict/type_tag modifiers of intermediate member types.
    pub fn member_offset(&self, type_name: &str, path: &[&str]) -> Result<u32, BtfError> {
        self.member_offsets(&[(type_name, path)])?.remove(0)
    }

    /// [`Btf::member_offset`] of each query `(type name, path)`, in one pass over the
    /// strings and one over the types for all of them. The outer error is a read of the
    /// file failing; the inner ones are each query's.
    pub fn member_offsets(
        &self,
        queries: &[(&str, &[&str])],
    ) -> Result<Vec<Result<u32, BtfError>>, BtfError> {
        let mut names: Vec<&str> = Vec::new();
        for (type_name, path) in queries {
            for name in std::iter::once(type_name).chain(path.iter()) {
                if !names.contains(name) {
                    names.push(name);
                }
            }
        }
        let offsets = self.name_offsets(&names)?;
        let names = Names {
            names: &names,
            offsets: &offsets,
        };
        let types: Vec<&str> = queries.iter().map(|(type_name, _)| *type_name).collect();
        let type_offsets: Vec<&[u32]> = types.iter().map(|n| names.offsets(n)).collect();
        let found = self.find_composites(&types, &type_offsets)?;
        Ok(queries
            .iter()
            .zip(found)
            .map(|((type_name, path), id)| self.walk(type_name, id?, path, &names))
            .collect())
    }

    /// The offset of `path` from struct `id` (named `type_name`).
    fn walk(
        &self,
        type_name: &str,
        mut id: u32,
        path: &[&str],
        names: &Names<'_>,
    ) -> Result<u32, BtfError> {
        let mut walked = type_name.to_owned();
        let mut bits = 0u64;
        for member in path {
            let (_, t) = self.resolve(id)?;
            if !t.is_composite() {
                let kind = kind_name(t.kind());
                return Err(BtfError::NotAStruct { path: walked, kind });
            }
            let Some((off, bitfield_size, ty)) = self.find_member(&t, names.offsets(member), 0)?
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
        let offsets = self.name_offsets(&[type_name])?;
        let id = self
            .find_composites(&[type_name], &[&offsets[0]])?
            .remove(0)?;
        Ok(self.ty(id)?.size_or_type)
    }

    /// For each of `names`, every string offset whose string is that name: one pass over
    /// the string section (a name may also be the end of a longer string).
    fn name_offsets(&self, names: &[&str]) -> Result<Vec<Vec<u32>>, BtfError> {
        let mut found = vec![Vec::new(); names.len()];
        let mut check = |string: &[u8], end: u32| {
            for (name, found) in names.iter().zip(&mut found) {
                if !name.is_empty() && string.ends_with(name.as_bytes()) {
                    found.push(end - name.len() as u32);
                }
            }
        };
        let (start, len) = self.strings;
        let mut stream = Stream::new(self, start, u64::from(len), PASS_BUFFER);
        // A string begun in an earlier chunk.
        let mut partial: Vec<u8> = Vec::new();
        let mut chunk_at = 0u32;
        while let Some(chunk) = stream.chunk()? {
            let mut begin = 0;
            while let Some(nul) = chunk[begin..].iter().position(|&b| b == 0) {
                let end = begin + nul;
                if partial.is_empty() {
                    check(&chunk[begin..end], chunk_at + end as u32);
                } else {
                    partial.extend_from_slice(&chunk[begin..end]);
                    check(&partial, chunk_at + end as u32);
                    partial.clear();
                }
                begin = end + 1;
            }
            partial.extend_from_slice(&chunk[begin..]);
            chunk_at += chunk.len() as u32;
        }
        // An unterminated last string ends with the section.
        check(&partial, chunk_at);
        Ok(found)
    }

    /// Type `id` (0: void), read forward from the checkpoint before it.
    fn ty(&self, id: u32) -> Result<Type, BtfError> {
        if id == 0 {
            return Ok(Type::default());
        }
        if id > self.count {
            return Err(malformed!("reference to missing type id {id}"));
        }
        let checkpoint = (id - 1) / CHECKPOINT;
        let pos = self.checkpoints[checkpoint as usize];
        let mut records = self.records(1 + checkpoint * CHECKPOINT, pos, SEEK_BUFFER);
        loop {
            let here = records.id;
            match records.next()? {
                Some((t, _)) if here == id => return Ok(t),
                Some(_) => {}
                None => return Err(malformed!("reference to missing type id {id}")),
            }
        }
    }

    /// The members of struct/union `t`, each `[name_off, type, offset]`.
    fn members(&self, t: &Type) -> Result<Vec<[u32; 3]>, BtfError> {
        let mut bytes = vec![0u8; t.vlen() * 12];
        let at = self.types.0 + u64::from(t.members_at);
        if self.read_at(&mut bytes, at)? < bytes.len() {
            return Err(malformed!("{} ends early", self.path.display()));
        }
        let word = |i: usize| u32::from_ne_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        Ok((0..t.vlen())
            .map(|m| [word(m * 12), word(m * 12 + 4), word(m * 12 + 8)])
            .collect())
    }

    /// Follows typedef/volatile/const/restrict/type_tag to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<(u32, Type), BtfError> {
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            match t.kind() {
                K_TYPEDEF | 9 | 10 | 11 | 18 => id = t.size_or_type,
                _ => return Ok((id, t)),
            }
        }
        Err(malformed!("type reference chain too long at type id {id}"))
    }

    /// For each name (whose string offsets are `offsets`), the first struct/union with
    /// that name, else a typedef of one: one pass over the types for all of them.
    fn find_composites(
        &self,
        names: &[&str],
        offsets: &[&[u32]],
    ) -> Result<Vec<Result<u32, BtfError>>, BtfError> {
        // Per name: the first struct/union, typedef, and type of any kind with the name.
        let mut first = vec![(None, None, None); names.len()];
        let mut any: Vec<u32> = offsets.iter().flat_map(|o| o.iter().copied()).collect();
        any.sort_unstable();
        let mut records = self.records(1, 0, PASS_BUFFER);
        loop {
            let id = records.id;
            let Some((t, _)) = records.next()? else {
                break;
            };
            if any.binary_search(&t.name_off).is_err() {
                continue;
            }
            for (offsets, first) in offsets.iter().zip(&mut first) {
                if !offsets.contains(&t.name_off) {
                    continue;
                }
                if t.is_composite() {
                    first.0.get_or_insert(id);
                }
                if t.kind() == K_TYPEDEF {
                    first.1.get_or_insert(id);
                }
                if t.kind() != 0 {
                    first.2.get_or_insert(id);
                }
            }
        }
        let mut found = Vec::new();
        for (name, (composite, typedef, other)) in names.iter().zip(first) {
            found.push(self.composite(name, composite, typedef, other)?);
        }
        Ok(found)
    }

    /// The struct `name` names, from the first struct/union, typedef and type of any kind
    /// with that name.
    fn composite(
        &self,
        name: &str,
        composite: Option<u32>,
        typedef: Option<u32>,
        other: Option<u32>,
    ) -> Result<Result<u32, BtfError>, BtfError> {
        if let Some(id) = composite {
            return Ok(Ok(id));
        }
        if let Some(id) = typedef {
            let (rid, t) = self.resolve(id)?;
            if t.is_composite() {
                return Ok(Ok(rid));
            }
        }
        let path = name.to_owned();
        Ok(Err(match other {
            Some(id) => {
                let kind = kind_name(self.resolve(id)?.1.kind());
                BtfError::NotAStruct { path, kind }
            }
            None => BtfError::NoSuchType(path),
        }))
    }

    /// Searches struct/union `t`, and depth-first its anonymous struct/union members, for
    /// the member whose name is at one of `offsets`.
    fn find_member(
        &self,
        t: &Type,
        offsets: &[u32],
        depth: usize,
    ) -> Result<Option<Hit>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed!("anonymous members nested too deeply"));
        }
        let kflag = t.info >> 31 != 0;
        let mask = if kflag { 0xff_ffff } else { u32::MAX };
        for [name_off, ty, raw] in self.members(t)? {
            let (off, size) = (u64::from(raw & mask), (raw >> 24) * u32::from(kflag));
            if offsets.contains(&name_off) {
                return Ok(Some((off, size, ty)));
            }
            // Anonymous: no name (the kernel checks that a member's name, where it has
            // one, is an identifier, so never empty).
            if name_off != 0 {
                continue;
            }
            let (_, rt) = self.resolve(ty)?;
            if rt.is_composite()
                && let Some((o, s, ty)) = self.find_member(&rt, offsets, depth + 1)?
            {
                return Ok(Some((off + o, s, ty)));
            }
        }
        Ok(None)
    }

    /// Old-style (kind_flag unset) bitfields encode the bit size in the INT type.
    fn is_int_bitfield(&self, id: u32) -> Result<bool, BtfError> {
        let t = self.resolve(id)?.1;
        let (bits, bit_off) = (t.int_encoding & 0xff, (t.int_encoding >> 16) & 0xff);
        Ok(t.kind() == K_INT && (bit_off != 0 || bits != t.size_or_type * 8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], off: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
    }

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

    /// Names found where they end a longer string (shared tails) and where a string runs
    /// across the reading buffer's end; types found past many checkpoints; one pass over
    /// the strings and one over the types answer several queries.
    #[test]
    fn names_anywhere_types_far_and_queries_batched() {
        let mut b = Builder::new();
        let int = b.int("int", 4, 32);
        for i in 0..300 {
            b.int(&format!("pad{i}"), 4, 32); // many checkpoints
        }
        // A long string section, and a name across the 64 KiB buffer's end.
        while b.strings.len() < PASS_BUFFER - 3 {
            b.s("padding_padding_padding");
        }
        let inner = b.st("inner_across", 8, &[("x", int, 32)]);
        let tail = b.s("not_sk") + 4; // "sk", as the end of another string
        let words = [16, b.s("a"), int, 0, tail, inner, 64];
        let info = (K_STRUCT << 24) | 2;
        let name = b.s("outer");
        b.types.extend([name, info].iter().chain(&words));
        b.next += 1;
        let btf = Btf::from_bytes(&b.build()).unwrap();
        assert_eq!(off(&btf, "outer.sk.x").unwrap(), 12);
        assert_eq!(off(&btf, "inner_across.x").unwrap(), 4);
        let both = btf
            .member_offsets(&[("outer", &["sk"]), ("inner_across", &["x"]), ("no", &["x"])])
            .unwrap();
        assert_eq!(both[0].as_ref().unwrap(), &8);
        assert_eq!(both[1].as_ref().unwrap(), &4);
        assert!(matches!(both[2], Err(BtfError::NoSuchType(_))));
    }

    #[test]
    fn real_vmlinux() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !super::super::kernel_file_present("real_vmlinux", path) {
            return;
        }
        let t0 = std::time::Instant::now();
        let btf = Btf::from_file(path).unwrap();
        println!("opened {btf:?} in {:?}", t0.elapsed());
        let t1 = std::time::Instant::now();
        let netns = crate::sources::probes::NetnsOffsets::from_btf(&btf).unwrap();
        println!("the probes' offsets in {:?}: {netns:?}", t1.elapsed());
        assert_eq!(netns.skb_dev, off(&btf, "sk_buff.dev").unwrap());
        assert_eq!(netns.sk_net, off(&btf, "sock.__sk_common.skc_net.net").ok());
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
