//! The bounded config file reader: a config file is a small regular file. Anything else
//! (a FIFO that never ends, `/dev/zero`, a huge or absurdly nested document) is refused
//! before a parser sees it, so no file can hang the daemon or eat its memory.

use std::{fs::OpenOptions, io::Read as _, os::unix::fs::OpenOptionsExt as _, path::Path};

/// The largest config file read (the shipped examples are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The deepest nesting of `[`/`{` allowed (the schema needs 3).
pub const MAX_NESTING: usize = 32;

/// Why a config file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// Not a regular file.
    #[error("is a {0}, not a regular file; point --config at a TOML or YAML file")]
    NotAFile(&'static str),
    /// Larger than [`MAX_CONFIG_BYTES`].
    #[error("is larger than {MAX_CONFIG_BYTES} bytes; a config file is a few KiB")]
    TooLarge,
    /// Not UTF-8.
    #[error("is not UTF-8 text")]
    NotText,
}

/// Reads a config file: a regular file (checked on the open descriptor, opened without
/// blocking so a FIFO cannot hang), at most [`MAX_CONFIG_BYTES`], UTF-8.
pub fn read_config_file(path: &Path) -> Result<String, ReadError> {
    read_small_file(path, MAX_CONFIG_BYTES)
}

/// Reads a regular file of at most `max` bytes of UTF-8 text, opened without blocking and
/// checked on the open descriptor: a FIFO, a device or a growing file cannot hang or flood
/// the reader. [`ReadError::TooLarge`] means over `max`.
pub fn read_small_file(path: &Path, max: u64) -> Result<String, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    let kind = file.metadata().map_err(ReadError::Io)?.file_type();
    if !kind.is_file() {
        use std::os::unix::fs::FileTypeExt as _;
        return Err(ReadError::NotAFile(if kind.is_dir() {
            "directory"
        } else if kind.is_fifo() {
            "FIFO"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_socket() {
            "socket"
        } else {
            "special file"
        }));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText)
}

/// The deepest nesting of flow collections (`[`, `{`) in a TOML or YAML text, outside
/// quoted strings and comments: a cheap bound checked before parsing, since a parser
/// recurses once per level.
pub fn nesting(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    for c in text.chars() {
        if comment {
            comment = c != '\n';
            continue;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' && q == '"' {
                escaped = true;
            } else if c == q || c == '\n' {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '#' => comment = true,
            '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Why a network interface name cannot exist (the kernel's `dev_valid_name`): empty,
/// longer than 15 bytes, `.` or `..`, or holding `/`, `:` or whitespace.
pub fn invalid_interface_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes (IFNAMSIZ - 1)")
    } else if name == "." || name == ".." {
        Some("is `.` or `..`")
    } else if name.contains('/') {
        Some("contains `/`")
    } else if name.contains(':') {
        Some("contains `:`")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace or a control character")
    } else {
        None
    }
}

/// serde's wording (each allowed name in backticks, as the TOML parser says it) for an
/// unknown field or value, serde-saphyr's for the rest.
struct YamlMessages;

impl serde_saphyr::MessageFormatter for YamlMessages {
    fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> std::borrow::Cow<'a, str> {
        let quoted = |names: &[&str]| {
            names
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match err {
            serde_saphyr::Error::SerdeUnknownField {
                field, expected, ..
            } => format!(
                "unknown field `{field}`, expected one of {}",
                quoted(expected)
            )
            .into(),
            serde_saphyr::Error::SerdeUnknownVariant {
                variant, expected, ..
            } => format!(
                "unknown variant `{variant}`, expected one of {}",
                quoted(expected)
            )
            .into(),
            other => serde_saphyr::DefaultMessageFormatter.format_message(other),
        }
    }
}

/// A YAML error on one line: where, the line itself (which names the key) and what is
/// wrong: ``line 3 column 9 (`kfree: true`): unknown field `kfree`, expected one of …``.
pub fn yaml_error(err: &serde_saphyr::Error, text: &str) -> String {
    use serde_saphyr::MessageFormatter as _;
    let err = err.without_snippet();
    let message = YamlMessages.format_message(err);
    let Some(at) = err.location().filter(|at| at.line() > 0) else {
        return message.into_owned();
    };
    let source = usize::try_from(at.line() - 1)
        .ok()
        .and_then(|line| text.lines().nth(line))
        .map(str::trim)
        .filter(|line| !line.is_empty() && line.len() <= 120);
    match source {
        Some(source) => format!(
            "line {} column {} (`{source}`): {message}",
            at.line(),
            at.column()
        ),
        None => format!("line {} column {}: {message}", at.line(), at.column()),
    }
}

#[cfg(test)]
mod tests {
    use std::{ffi::CString, time::Instant};

    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("watchdog-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.toml");
        std::fs::write(&ok, "listen = \"127.0.0.1:1\"\n").unwrap();
        assert_eq!(read_config_file(&ok).unwrap(), "listen = \"127.0.0.1:1\"\n");
        // /dev/zero never ends: refused at once, nothing read.
        let zero = read_config_file(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(zero, ReadError::NotAFile("character device")),
            "{zero}"
        );
        // A FIFO with no writer would block a plain open forever.
        let fifo = dir.join("fifo.toml");
        let c = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let start = Instant::now();
        let err = read_config_file(&fifo).unwrap_err();
        assert!(matches!(err, ReadError::NotAFile("FIFO")), "{err}");
        assert!(start.elapsed().as_secs() < 5);
        let err = read_config_file(&dir).unwrap_err();
        assert!(matches!(err, ReadError::NotAFile("directory")), "{err}");
        // One byte over the cap.
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        assert!(matches!(read_config_file(&big), Err(ReadError::TooLarge)));
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize]).unwrap();
        assert!(read_config_file(&big).is_ok());
        std::fs::write(&big, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_config_file(&big), Err(ReadError::NotText)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nesting_counts_brackets_outside_strings_and_comments() {
        assert_eq!(nesting("a = 1\n"), 0);
        assert_eq!(nesting("[peers]\ninterfaces = [\"a\"]\n"), 1);
        assert_eq!(nesting("x: {a: [1, {b: 2}]}\n"), 3);
        assert_eq!(nesting("x = \"[[[[\" # {{{{\ny = '[['\n"), 0);
        assert_eq!(nesting(&"[".repeat(100_000)), 100_000);
    }

    #[test]
    fn interface_names_that_cannot_exist() {
        for ok in [
            "eth0",
            "flannel.1",
            "cni0",
            "veth1234abcd567",
            "wg-0",
            "tailscale0",
        ] {
            assert_eq!(invalid_interface_name(ok), None, "{ok}");
        }
        for bad in [
            "",
            "a b",
            "../../etc",
            ".",
            "..",
            "a/b",
            "eth0:1",
            "veth1234abcd5678",
            "x\t",
        ] {
            assert!(invalid_interface_name(bad).is_some(), "{bad:?}");
        }
    }
}
