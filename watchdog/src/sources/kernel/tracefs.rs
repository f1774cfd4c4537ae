//! Tracepoint format files: where tracefs is, and what a `format` file says.
//!
//! Field offsets and enum name tables differ between kernel versions, so they are read at
//! start-up from `/sys/kernel/tracing/events/<group>/<event>/format` and never hard-coded.

use std::{
    collections::BTreeMap,
    ffi::CString,
    path::{Path, PathBuf},
};

/// What can go wrong finding tracefs or reading a format file.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// No tracefs mount was found and mounting one failed.
    #[error(
        "tracefs is not mounted at {tried} and mounting it failed ({mount_error}); mount it \
         (`mount -t tracefs nodev /sys/kernel/tracing`), or in a container mount the host's \
         /sys/kernel/tracing, or set tracefs_path in the config"
    )]
    NotFound {
        /// The places looked at.
        tried: String,
        /// Why the mount attempt failed.
        mount_error: String,
    },
    /// The event's format file could not be read (no such tracepoint on this kernel?).
    #[error("cannot read tracepoint format {path}: {source}")]
    Read {
        /// The format file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The format file's text is not what the kernel writes.
    #[error("malformed tracepoint format {path}: {what}")]
    Malformed {
        /// The format file (or `<text>` when parsed from a string).
        path: String,
        /// What was wrong.
        what: String,
    },
}

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The declaration as the kernel prints it, e.g. `enum skb_drop_reason reason`.
    pub decl: String,
    /// The field name, e.g. `reason`.
    pub name: String,
    /// Byte offset in the tracepoint record.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
    /// Whether the field is signed.
    pub signed: bool,
}

/// A parsed tracepoint `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracepointFormat {
    /// Event name (`name:` line).
    pub name: String,
    /// Event id (`ID:` line).
    pub id: u32,
    /// Every field, common ones included, in file order.
    pub fields: Vec<Field>,
    /// The `print fmt:` line, without the prefix.
    pub print_fmt: String,
}

impl TracepointFormat {
    /// Parses the text of a format file.
    pub fn parse(text: &str) -> Result<Self, TracefsError> {
        let bad = |what: String| TracefsError::Malformed {
            path: "<text>".into(),
            what,
        };
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        let mut print_fmt = None;
        for line in text.lines() {
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix("name:") {
                name = Some(rest.trim().to_owned());
            } else if let Some(rest) = trimmed.strip_prefix("ID:") {
                let value = rest.trim();
                id = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("ID `{value}` is not a number")))?,
                );
            } else if let Some(rest) = trimmed.strip_prefix("field:") {
                fields.push(parse_field(rest).map_err(bad)?);
            } else if let Some(rest) = trimmed.strip_prefix("print fmt:") {
                print_fmt = Some(rest.trim().to_owned());
            }
        }
        Ok(Self {
            name: name.ok_or_else(|| bad("no `name:` line".into()))?,
            id: id.ok_or_else(|| bad("no `ID:` line".into()))?,
            fields,
            print_fmt: print_fmt.ok_or_else(|| bad("no `print fmt:` line".into()))?,
        })
    }

    /// The field called `name`, if the kernel has it.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// The value → name table of `__print_symbolic(REC-><field>, { v, "NAME" }, …)` in the
    /// print format, e.g. the kernel's drop reason names. `None` if the field is not printed
    /// symbolically. Entries whose value the kernel left as an unresolved symbol are skipped.
    pub fn symbolic_table(&self, field: &str) -> Option<BTreeMap<u64, String>> {
        let marker = format!("__print_symbolic(REC->{field},");
        let start = self.print_fmt.find(&marker)? + marker.len();
        let mut table = BTreeMap::new();
        let mut rest = &self.print_fmt[start..];
        // Entries look like `{ 2, "NOT_SPECIFIED" }`; the list ends at the closing `)`.
        loop {
            let open = rest.find('{');
            let close = rest.find(')');
            match (open, close) {
                (Some(open), Some(close)) if open < close => {}
                _ => break,
            }
            let open = open?;
            let end = rest[open..].find('}')? + open;
            let entry = &rest[open + 1..end];
            if let Some((value, label)) = entry.split_once(',') {
                let label = label.trim().trim_matches('"');
                if let Some(value) = parse_number(value.trim()) {
                    table.insert(value, label.to_owned());
                }
            }
            rest = &rest[end + 1..];
        }
        Some(table)
    }
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Parses `unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;`.
fn parse_field(text: &str) -> Result<Field, String> {
    let mut parts = text.split(';').map(str::trim);
    let decl = parts.next().unwrap_or_default().to_owned();
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in parts {
        if let Some((key, value)) = part.split_once(':') {
            let number = || {
                value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| format!("field `{decl}`: {key} `{value}` is not a number"))
            };
            match key.trim() {
                "offset" => offset = Some(number()?),
                "size" => size = Some(number()?),
                "signed" => signed = number()? != 0,
                _ => {}
            }
        }
    }
    // The name is the last word of the declaration, without an array suffix: `char comm[16]`.
    let name = decl
        .rsplit(|c: char| c.is_whitespace() || c == '*')
        .next()
        .unwrap_or_default()
        .split('[')
        .next()
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() {
        return Err(format!("field `{decl}` has no name"));
    }
    Ok(Field {
        offset: offset.ok_or_else(|| format!("field `{decl}` has no offset"))?,
        size: size.ok_or_else(|| format!("field `{decl}` has no size"))?,
        decl,
        name,
        signed,
    })
}

/// A tracefs mount: the directory that holds `events/`.
#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
}

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

impl Tracefs {
    /// Uses `root` as given (a configured path); it must contain `events/`.
    pub fn at(root: impl Into<PathBuf>) -> Result<Self, TracefsError> {
        let root = root.into();
        if root.join("events").is_dir() {
            Ok(Self { root })
        } else {
            Err(TracefsError::NotFound {
                tried: root.display().to_string(),
                mount_error: "a configured path is never mounted by the watchdog".into(),
            })
        }
    }

    /// Finds tracefs at /sys/kernel/tracing or /sys/kernel/debug/tracing, mounting it at
    /// /sys/kernel/tracing if neither is there.
    pub fn locate() -> Result<Self, TracefsError> {
        let found = || {
            [TRACEFS, DEBUGFS_TRACING]
                .into_iter()
                .map(PathBuf::from)
                .find(|root| root.join("events").is_dir())
        };
        if let Some(root) = found() {
            return Ok(Self { root });
        }
        let mount_error = match mount("tracefs", TRACEFS) {
            Ok(()) => match found() {
                Some(root) => {
                    tracing::info!(path = TRACEFS, "mounted tracefs");
                    return Ok(Self { root });
                }
                None => "mounted, but it has no events/ directory".to_owned(),
            },
            Err(err) => err.to_string(),
        };
        Err(TracefsError::NotFound {
            tried: format!("{TRACEFS} and {DEBUGFS_TRACING}"),
            mount_error,
        })
    }

    /// The directory holding `events/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads and parses `events/<group>/<event>/format`.
    pub fn format(&self, group: &str, event: &str) -> Result<TracepointFormat, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(group)
            .join(event)
            .join("format");
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            path: path.clone(),
            source,
        })?;
        TracepointFormat::parse(&text).map_err(|err| match err {
            TracefsError::Malformed { what, .. } => TracefsError::Malformed {
                path: path.display().to_string(),
                what,
            },
            other => other,
        })
    }
}

fn mount(fstype: &str, target: &str) -> std::io::Result<()> {
    let source = CString::new("nodev").expect("no NUL");
    let fstype = CString::new(fstype).expect("no NUL");
    let target = CString::new(target).expect("no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> TracepointFormat {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tracefs")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        TracepointFormat::parse(&text).unwrap()
    }

    #[test]
    fn kfree_skb_before_5_17_has_no_reason() {
        let format = fixture("kfree_skb-5.15.format");
        assert_eq!(format.name, "kfree_skb");
        assert_eq!(format.field("skbaddr").unwrap().offset, 8);
        assert_eq!(format.field("protocol").unwrap().offset, 24);
        assert!(format.field("reason").is_none());
        assert!(format.symbolic_table("reason").is_none());
    }

    #[test]
    fn kfree_skb_6_0_has_reason_at_28() {
        let format = fixture("kfree_skb-6.0.format");
        let reason = format.field("reason").unwrap();
        assert_eq!((reason.offset, reason.size), (28, 4));
        assert_eq!(reason.decl, "enum skb_drop_reason reason");
        assert!(format.field("rx_sk").is_none());
        let table = format.symbolic_table("reason").unwrap();
        assert_eq!(table[&2], "NO_SOCKET");
        assert_eq!(table[&41], "NEIGH_FAILED");
        assert_eq!(table.len(), 65);
    }

    #[test]
    fn kfree_skb_6_18_has_rx_sk_and_reason_at_36() {
        let format = fixture("kfree_skb-6.18.format");
        assert_eq!(format.field("rx_sk").unwrap().offset, 24);
        assert_eq!(format.field("protocol").unwrap().offset, 32);
        assert_eq!(format.field("reason").unwrap().offset, 36);
        let table = format.symbolic_table("reason").unwrap();
        assert_eq!(table[&3], "NO_SOCKET");
        assert_eq!(table[&54], "IP_OUTNOROUTES");
        assert_eq!(table[&58], "NEIGH_FAILED");
        assert_eq!(table[&128], "MAX");
    }

    #[test]
    fn array_and_pointer_field_names() {
        let field = parse_field("char comm[16];\toffset:8;\tsize:16;\tsigned:1;").unwrap();
        assert_eq!(
            (field.name.as_str(), field.offset, field.size),
            ("comm", 8, 16)
        );
        assert!(field.signed);
        let field = parse_field("void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;").unwrap();
        assert_eq!(field.name, "skbaddr");
    }

    #[test]
    fn malformed_lines_name_the_problem() {
        let err = parse_field("int x;\toffset:eight;\tsize:4;").unwrap_err();
        assert!(err.contains("offset `eight`"), "{err}");
        let err = TracepointFormat::parse("name: x\nformat:\n").unwrap_err();
        assert!(err.to_string().contains("ID"), "{err}");
    }

    #[test]
    fn unresolved_symbols_are_skipped() {
        let format = TracepointFormat {
            name: "x".into(),
            id: 1,
            fields: vec![],
            print_fmt:
                r#""%s", __print_symbolic(REC->reason, { SKB_X, "X" }, { 0x10, "Y" }), REC->z"#
                    .into(),
        };
        let table = format.symbolic_table("reason").unwrap();
        assert_eq!(
            table.into_iter().collect::<Vec<_>>(),
            vec![(16, "Y".into())]
        );
    }

    #[test]
    fn this_kernels_format_parses_when_tracefs_is_there() {
        let test = "this_kernels_format_parses_when_tracefs_is_there";
        let format_file = Path::new(TRACEFS).join("events/skb/kfree_skb/format");
        if !super::super::kernel_file_present(test, &format_file) {
            return;
        }
        let tracefs = Tracefs::at(TRACEFS).unwrap();
        let format = tracefs.format("skb", "kfree_skb").unwrap();
        assert!(format.field("skbaddr").is_some());
    }
}
