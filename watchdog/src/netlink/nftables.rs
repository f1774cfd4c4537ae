//! nftables' netlink messages (`NETLINK_NETFILTER`, `NFT_MSG_GETTABLE`/`GETCHAIN`/
//! `GETRULE` dumps), iptables-nft's included: the dump requests, the replies' framing, and
//! the ruleset they make: tables, base chains with their hook, policy and counter, rules
//! with their counter, final verdict and a rendering in nft's words. The socket that sends
//! and reads them is `sources::stack`'s.

use std::{collections::BTreeMap, io, net::IpAddr};

use crate::model::stack::{BaseChain, Chain, Counter, Family, Hook, Rule, Table, Verdict};

/// `NFNL_SUBSYS_NFTABLES`.
const SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_*`.
const MSG_NEWTABLE: u16 = 0;
const MSG_GETTABLE: u16 = 1;
const MSG_NEWCHAIN: u16 = 3;
const MSG_GETCHAIN: u16 = 4;
const MSG_NEWRULE: u16 = 6;
const MSG_GETRULE: u16 = 7;
/// `NLMSG_ERROR`, `NLMSG_DONE`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST | NLM_F_DUMP`.
const DUMP_FLAGS: u16 = 0x1 | 0x300;
/// Netlink header and `nfgenmsg` lengths.
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// What one dump asks for: the ruleset is read as three dumps, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dump {
    Tables,
    Chains,
    Rules,
}

impl Dump {
    /// The `NFT_MSG_GET*` request and the `NFT_MSG_NEW*` replies.
    fn messages(self) -> (u16, u16) {
        match self {
            Self::Tables => (MSG_GETTABLE, MSG_NEWTABLE),
            Self::Chains => (MSG_GETCHAIN, MSG_NEWCHAIN),
            Self::Rules => (MSG_GETRULE, MSG_NEWRULE),
        }
    }
}

/// One reply of a dump: the message's family (`nfgenmsg`) and its attributes.
pub type Reply = (u8, Vec<u8>);

/// The request for one dump of every family.
pub fn dump_request(dump: Dump, sequence: u32) -> Vec<u8> {
    let (get, _) = dump.messages();
    let mut request = Vec::with_capacity(NLMSG_HDRLEN + NFGENMSG_LEN);
    request.extend_from_slice(&((NLMSG_HDRLEN + NFGENMSG_LEN) as u32).to_ne_bytes());
    request.extend_from_slice(&(SUBSYS_NFTABLES << 8 | get).to_ne_bytes());
    request.extend_from_slice(&DUMP_FLAGS.to_ne_bytes());
    request.extend_from_slice(&sequence.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: NFPROTO_UNSPEC (every family), NFNETLINK_V0, res_id 0.
    request.extend_from_slice(&[0, 0, 0, 0]);
    request
}

/// Adds the replies of dump `sequence` in one datagram to `replies` (other sequences'
/// messages are skipped); `true` when the dump is done, the kernel's error if it failed.
pub fn dump_replies(
    datagram: &[u8],
    dump: Dump,
    sequence: u32,
    replies: &mut Vec<Reply>,
) -> io::Result<bool> {
    let (_, new) = dump.messages();
    let size = datagram.len();
    let mut offset = 0;
    while offset + NLMSG_HDRLEN <= size {
        let header = &datagram[offset..];
        let length = u32::from_ne_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(header[4..6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(header[8..12].try_into().expect("4 bytes"));
        if length < NLMSG_HDRLEN || offset + length > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a truncated netlink message",
            ));
        }
        let body = &header[NLMSG_HDRLEN..length];
        offset += align(length);
        if seq != sequence {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = body
                    .get(0..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                if code == 0 {
                    return Ok(true);
                }
                return Err(io::Error::from_raw_os_error(-code));
            }
            kind if kind == SUBSYS_NFTABLES << 8 | new && body.len() >= NFGENMSG_LEN => {
                replies.push((body[0], body[NFGENMSG_LEN..].to_vec()));
            }
            _ => {}
        }
    }
    Ok(false)
}

/// The ruleset the three dumps' replies make: every table with its chains and rules (a
/// chain or rule whose table or chain is not there is left out).
pub fn ruleset(tables: &[Reply], chains: &[Reply], rules: &[Reply]) -> Vec<Table> {
    let mut ruleset: Vec<Table> = Vec::new();
    for (family, attrs) in tables {
        let attrs = Attrs::parse(attrs);
        if let Some(name) = attrs.string(TABLE_NAME) {
            ruleset.push(Table {
                family: Family::from_nfproto(*family),
                name,
                chains: Vec::new(),
            });
        }
    }
    for (family, attrs) in chains {
        let family = Family::from_nfproto(*family);
        let attrs = Attrs::parse(attrs);
        let (Some(table), Some(name)) = (attrs.string(CHAIN_TABLE), attrs.string(CHAIN_NAME))
        else {
            continue;
        };
        let Some(table) = ruleset
            .iter_mut()
            .find(|t| t.family == family && t.name == table)
        else {
            continue;
        };
        table.chains.push(chain(family, name, &attrs));
    }
    for (family, attrs) in rules {
        let family = Family::from_nfproto(*family);
        let attrs = Attrs::parse(attrs);
        let (Some(table), Some(chain)) = (attrs.string(RULE_TABLE), attrs.string(RULE_CHAIN))
        else {
            continue;
        };
        let Some(chain) = ruleset
            .iter_mut()
            .filter(|t| t.family == family && t.name == table)
            .flat_map(|t| t.chains.iter_mut())
            .find(|c| c.name == chain)
        else {
            continue;
        };
        chain.rules.push(rule(&attrs));
    }
    ruleset
}

/// Netlink attributes are 4-byte aligned.
fn align(length: usize) -> usize {
    (length + 3) & !3
}

// NFTA_TABLE_*, NFTA_CHAIN_*, NFTA_HOOK_*, NFTA_COUNTER_*, NFTA_RULE_*.
const TABLE_NAME: u16 = 1;
const CHAIN_TABLE: u16 = 1;
const CHAIN_NAME: u16 = 3;
const CHAIN_HOOK: u16 = 4;
const CHAIN_POLICY: u16 = 5;
const CHAIN_TYPE: u16 = 7;
const CHAIN_COUNTERS: u16 = 8;
const HOOK_HOOKNUM: u16 = 1;
const HOOK_PRIORITY: u16 = 2;
const COUNTER_BYTES: u16 = 1;
const COUNTER_PACKETS: u16 = 2;
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_HANDLE: u16 = 3;
const RULE_EXPRESSIONS: u16 = 4;
const RULE_USERDATA: u16 = 7;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;

/// The attributes of one message or nest, by type (the last of a type wins, except
/// through [`Attrs::all`]).
struct Attrs<'a> {
    list: Vec<(u16, &'a [u8])>,
}

impl<'a> Attrs<'a> {
    fn parse(bytes: &'a [u8]) -> Self {
        let mut list = Vec::new();
        let mut offset = 0;
        while offset + 4 <= bytes.len() {
            let length =
                u16::from_ne_bytes(bytes[offset..offset + 2].try_into().expect("2")) as usize;
            let kind = u16::from_ne_bytes(bytes[offset + 2..offset + 4].try_into().expect("2"));
            if length < 4 || offset + length > bytes.len() {
                break;
            }
            // NLA_F_NESTED and NLA_F_NET_BYTEORDER are flags, not part of the type.
            list.push((kind & 0x3fff, &bytes[offset + 4..offset + length]));
            offset += align(length);
        }
        Self { list }
    }

    fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.list
            .iter()
            .rev()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| *v)
    }

    fn all(&self, kind: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.list
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, v)| *v)
    }

    fn nested(&self, kind: u16) -> Option<Attrs<'a>> {
        self.get(kind).map(Attrs::parse)
    }

    fn string(&self, kind: u16) -> Option<String> {
        self.get(kind).map(c_string)
    }

    /// A big-endian u32 (nftables attributes are in network order).
    fn be32(&self, kind: u16) -> Option<u32> {
        let bytes = self.get(kind)?;
        Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
    }

    fn be64(&self, kind: u16) -> Option<u64> {
        let bytes = self.get(kind)?;
        Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
    }
}

/// A NUL-terminated (or not) string attribute.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn counter(attrs: &Attrs<'_>) -> Option<Counter> {
    Some(Counter {
        packets: attrs.be64(COUNTER_PACKETS)?,
        bytes: attrs.be64(COUNTER_BYTES).unwrap_or(0),
    })
}

fn chain(family: Family, name: String, attrs: &Attrs<'_>) -> Chain {
    let base = attrs.nested(CHAIN_HOOK).and_then(|hook| {
        let hook_num = hook.be32(HOOK_HOOKNUM)?;
        Some(BaseChain {
            hook: Hook::from_hooknum(family, hook_num)?,
            priority: hook.be32(HOOK_PRIORITY).unwrap_or(0) as i32,
            // NF_DROP is 0, NF_ACCEPT 1; a base chain without a policy accepts.
            policy_drop: attrs.be32(CHAIN_POLICY) == Some(0),
            kind: attrs.string(CHAIN_TYPE).unwrap_or_else(|| "filter".into()),
        })
    });
    Chain {
        name,
        counter: base
            .as_ref()
            .and_then(|_| attrs.nested(CHAIN_COUNTERS))
            .and_then(|c| counter(&c)),
        base,
        rules: Vec::new(),
    }
}

fn rule(attrs: &Attrs<'_>) -> Rule {
    let mut render = Render::default();
    if let Some(expressions) = attrs.nested(RULE_EXPRESSIONS) {
        for element in expressions.all(LIST_ELEM) {
            let element = Attrs::parse(element);
            let Some(name) = element.string(EXPR_NAME) else {
                continue;
            };
            let data = element
                .nested(EXPR_DATA)
                .unwrap_or(Attrs { list: Vec::new() });
            render.expression(&name, &data);
        }
    }
    Rule {
        handle: attrs.be64(RULE_HANDLE).unwrap_or(0),
        counter: render.counter,
        verdict: render.verdict,
        text: without_implied_nfproto(&render.words.join(" ")),
        comment: attrs.get(RULE_USERDATA).and_then(comment),
    }
}

/// The comment in a rule's user data (libnftnl's TLVs: type `NFTNL_UDATA_RULE_COMMENT`
/// = 0, a length byte, the NUL-terminated text).
fn comment(userdata: &[u8]) -> Option<String> {
    let mut offset = 0;
    while offset + 2 <= userdata.len() {
        let (kind, length) = (userdata[offset], usize::from(userdata[offset + 1]));
        let value = userdata.get(offset + 2..offset + 2 + length)?;
        if kind == 0 {
            return Some(c_string(value));
        }
        offset += 2 + length;
    }
    None
}

/// What a register holds, for rendering the comparison on it.
#[derive(Clone, Debug)]
enum Loaded {
    /// An IPv4 or IPv6 address field, with the prefix a mask applied.
    Address {
        what: &'static str,
        prefix: Option<u32>,
    },
    /// A port.
    Port(&'static str),
    /// An IP protocol number.
    Protocol(&'static str),
    /// An interface name.
    Name(&'static str),
    /// `meta nfproto`.
    NfProto,
    /// Connection tracking state bits, with the mask a `bitwise` applied.
    CtState(Option<u32>),
    /// Something else, named.
    Other(String),
}

/// Renders a rule's expressions in nft-like words and collects its counter and verdict.
#[derive(Default)]
struct Render {
    registers: BTreeMap<u32, Loaded>,
    words: Vec<String>,
    counter: Option<Counter>,
    verdict: Option<Verdict>,
}

impl Render {
    fn expression(&mut self, name: &str, data: &Attrs<'_>) {
        match name {
            "payload" => self.payload(data),
            "meta" => self.meta(data),
            "ct" => {
                // NFTA_CT_DREG 1, NFTA_CT_KEY 2 (NFT_CT_STATE 0).
                if let (Some(dreg), Some(key)) = (data.be32(1), data.be32(2)) {
                    let loaded = if key == 0 {
                        Loaded::CtState(None)
                    } else {
                        Loaded::Other(format!("ct key {key}"))
                    };
                    self.registers.insert(dreg, loaded);
                }
            }
            "bitwise" => {
                // NFTA_BITWISE_SREG 1, DREG 2, MASK 4 (nested data).
                if let (Some(sreg), Some(dreg)) = (data.be32(1), data.be32(2)) {
                    let mask = data
                        .nested(4)
                        .and_then(|d| d.get(DATA_VALUE))
                        .unwrap_or(&[]);
                    let loaded = match self.registers.get(&sreg).cloned() {
                        Some(Loaded::Address { what, .. }) => Loaded::Address {
                            what,
                            prefix: Some(mask.iter().map(|b| b.count_ones()).sum()),
                        },
                        Some(Loaded::CtState(_)) => Loaded::CtState(
                            mask.get(..4)
                                .map(|m| u32::from_ne_bytes(m.try_into().expect("4"))),
                        ),
                        Some(other) => other,
                        None => Loaded::Other("?".into()),
                    };
                    self.registers.insert(dreg, loaded);
                }
            }
            "cmp" => self.cmp(data),
            "lookup" => {
                // NFTA_LOOKUP_SET 1, SREG 2, FLAGS 5 (NFT_LOOKUP_F_INV 1).
                let set = data.string(1).unwrap_or_default();
                let what = data
                    .be32(2)
                    .and_then(|reg| self.registers.get(&reg))
                    .map(describe)
                    .unwrap_or_default();
                let not = if data.be32(5).unwrap_or(0) & 1 != 0 {
                    "!= "
                } else {
                    ""
                };
                self.words
                    .push(format!("{what} {not}@{set}").trim().to_owned());
            }
            "counter" => {
                self.counter = counter(data);
                self.words.push("counter".into());
            }
            "immediate" => {
                // NFTA_IMMEDIATE_DREG 1 (0: the verdict register), DATA 2.
                let verdict = data
                    .nested(2)
                    .and_then(|d| d.nested(DATA_VERDICT))
                    .and_then(|v| {
                        let code = v.be32(1)? as i32;
                        verdict(code, v.string(2))
                    });
                if let Some(verdict) = verdict {
                    self.words.push(verdict_word(&verdict));
                    self.verdict = Some(verdict);
                }
            }
            "reject" => {
                self.words.push("reject".into());
                self.verdict = Some(Verdict::Reject);
            }
            "match" => {
                // NFTA_MATCH_NAME 1: an xtables match (iptables-nft).
                let name = data.string(1).unwrap_or_default();
                self.words.push(format!("xt match {name:?}"));
            }
            "target" => {
                // NFTA_TARGET_NAME 1: an xtables target (iptables-nft's REJECT, LOG, …).
                let name = data.string(1).unwrap_or_default();
                if name == "REJECT" {
                    self.verdict = Some(Verdict::Reject);
                }
                self.words.push(format!("xt target {name:?}"));
            }
            "queue" => {
                self.words.push("queue".into());
                self.verdict = Some(Verdict::Queue);
            }
            other => self.words.push(other.to_owned()),
        }
    }

    fn payload(&mut self, data: &Attrs<'_>) {
        // NFTA_PAYLOAD_DREG 1, BASE 2 (link 0, network 1, transport 2), OFFSET 3, LEN 4.
        let (Some(dreg), Some(base), Some(offset), Some(len)) =
            (data.be32(1), data.be32(2), data.be32(3), data.be32(4))
        else {
            self.words.push("payload set".into());
            return;
        };
        let loaded = match (base, offset, len) {
            (1, 12, 4) => Loaded::Address {
                what: "ip saddr",
                prefix: None,
            },
            (1, 16, 4) => Loaded::Address {
                what: "ip daddr",
                prefix: None,
            },
            (1, 8, 16) => Loaded::Address {
                what: "ip6 saddr",
                prefix: None,
            },
            (1, 24, 16) => Loaded::Address {
                what: "ip6 daddr",
                prefix: None,
            },
            (1, 9, 1) => Loaded::Protocol("ip protocol"),
            (1, 6, 1) => Loaded::Protocol("ip6 nexthdr"),
            (2, 0, 2) => Loaded::Port("th sport"),
            (2, 2, 2) => Loaded::Port("th dport"),
            (base, offset, len) => {
                let base = ["@ll", "@nh", "@th", "@ih"].get(base as usize).copied();
                Loaded::Other(format!(
                    "{},{},{}",
                    base.unwrap_or("@?"),
                    offset * 8,
                    len * 8
                ))
            }
        };
        self.registers.insert(dreg, loaded);
    }

    fn meta(&mut self, data: &Attrs<'_>) {
        // NFTA_META_DREG 1, KEY 2; SREG 3 (a meta set).
        let (Some(dreg), Some(key)) = (data.be32(1), data.be32(2)) else {
            self.words.push("meta set".into());
            return;
        };
        let loaded = match key {
            4 => Loaded::Other("iif".into()),
            5 => Loaded::Other("oif".into()),
            6 => Loaded::Name("iifname"),
            7 => Loaded::Name("oifname"),
            3 => Loaded::Other("meta mark".into()),
            15 => Loaded::NfProto,
            16 => Loaded::Protocol("meta l4proto"),
            key => Loaded::Other(format!("meta key {key}")),
        };
        self.registers.insert(dreg, loaded);
    }

    fn cmp(&mut self, data: &Attrs<'_>) {
        // NFTA_CMP_SREG 1, OP 2, DATA 3.
        let op = match data.be32(2).unwrap_or(0) {
            0 => "",
            1 => "!= ",
            2 => "< ",
            3 => "<= ",
            4 => "> ",
            _ => ">= ",
        };
        let value = data
            .nested(3)
            .and_then(|d| d.get(DATA_VALUE))
            .unwrap_or(&[]);
        let loaded = data
            .be32(1)
            .and_then(|reg| self.registers.get(&reg))
            .cloned();
        let text = match loaded {
            Some(Loaded::Address { what, prefix }) => {
                let address = match value.len() {
                    4 => Some(IpAddr::from(<[u8; 4]>::try_from(value).expect("4"))),
                    16 => Some(IpAddr::from(<[u8; 16]>::try_from(value).expect("16"))),
                    _ => None,
                };
                let address = address.map_or_else(|| hex(value), |a| a.to_string());
                match prefix {
                    Some(prefix) => format!("{what} {op}{address}/{prefix}"),
                    None => format!("{what} {op}{address}"),
                }
            }
            Some(Loaded::Port(what)) if value.len() == 2 => {
                let port = u16::from_be_bytes([value[0], value[1]]);
                // `th dport 1000-2000` compiles to `>= 1000` then `<= 2000` on one register.
                let low = self.words.last().and_then(|last| {
                    last.strip_prefix(what)?
                        .strip_prefix(" >= ")?
                        .parse::<u16>()
                        .ok()
                });
                match low {
                    Some(low) if op == "<= " => {
                        self.words.pop();
                        format!("{what} {low}-{port}")
                    }
                    _ => format!("{what} {op}{port}"),
                }
            }
            Some(Loaded::Protocol(what)) if value.len() == 1 => {
                format!("{what} {op}{}", protocol_name(value[0]))
            }
            Some(Loaded::Name(what)) => format!("{what} {op}\"{}\"", c_string(value)),
            Some(Loaded::NfProto) => match value.first() {
                Some(2) => format!("meta nfproto {op}ipv4"),
                Some(10) => format!("meta nfproto {op}ipv6"),
                _ => format!("meta nfproto {op}{}", hex(value)),
            },
            Some(Loaded::CtState(Some(mask))) if value.iter().all(|b| *b == 0) && op == "!= " => {
                // `ct state established,related` compiles to a mask and `!= 0`.
                format!("ct state {}", ct_states(mask))
            }
            Some(Loaded::CtState(_)) => format!("ct state {op}{}", hex(value)),
            Some(loaded) => format!("{} {op}{}", describe(&loaded), hex(value)),
            None => format!("? {op}{}", hex(value)),
        };
        self.words.push(text);
    }
}

// NFTA_DATA_VALUE, NFTA_DATA_VERDICT.
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;

/// What a register holds, in words.
fn describe(loaded: &Loaded) -> String {
    match loaded {
        Loaded::Address { what, .. } | Loaded::Port(what) | Loaded::Protocol(what) => {
            (*what).to_owned()
        }
        Loaded::Name(what) => (*what).to_owned(),
        Loaded::NfProto => "meta nfproto".into(),
        Loaded::CtState(_) => "ct state".into(),
        Loaded::Other(what) => what.clone(),
    }
}

/// A verdict code (`NF_DROP` 0, `NF_ACCEPT` 1, `NF_QUEUE` 3, `NFT_JUMP` -3, `NFT_GOTO`
/// -4, `NFT_RETURN` -5); `None` for `continue`/`break`.
fn verdict(code: i32, chain: Option<String>) -> Option<Verdict> {
    match code {
        0 => Some(Verdict::Drop),
        1 => Some(Verdict::Accept),
        3 => Some(Verdict::Queue),
        -3 => Some(Verdict::Jump(chain.unwrap_or_default())),
        -4 => Some(Verdict::Goto(chain.unwrap_or_default())),
        -5 => Some(Verdict::Return),
        _ => None,
    }
}

fn verdict_word(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Reject => "reject".into(),
        Verdict::Jump(chain) => format!("jump {chain}"),
        Verdict::Goto(chain) => format!("goto {chain}"),
        Verdict::Return => "return".into(),
        Verdict::Queue => "queue".into(),
    }
}

/// Connection tracking state bits in nft's words (`NF_CT_STATE_*_BIT`).
fn ct_states(mask: u32) -> String {
    let names = [
        (1, "invalid"),
        (2, "established"),
        (4, "related"),
        (8, "new"),
        (64, "untracked"),
    ];
    let words: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if words.is_empty() {
        hex(&mask.to_ne_bytes())
    } else {
        words.join(",")
    }
}

fn protocol_name(value: u8) -> String {
    match value {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "ipv6-icmp".into(),
        other => other.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{digits}")
}

/// Leaves out the `meta nfproto` test nft adds (and hides) before an `ip`/`ip6` match in
/// an inet table, as `nft list ruleset` does.
fn without_implied_nfproto(text: &str) -> String {
    text.replace("meta nfproto ipv4 ip ", "ip ")
        .replace("meta nfproto ipv6 ip6 ", "ip6 ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute: length, type, value, padding.
    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(value);
        while bytes.len() % 4 != 0 {
            bytes.push(0);
        }
        bytes
    }

    fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(kind | 0x8000, &parts.concat())
    }

    fn expr(name: &str, data: &[Vec<u8>]) -> Vec<u8> {
        nest(
            LIST_ELEM,
            &[
                attr(EXPR_NAME, format!("{name}\0").as_bytes()),
                nest(EXPR_DATA, data),
            ],
        )
    }

    fn be32(value: u32) -> Vec<u8> {
        value.to_be_bytes().to_vec()
    }

    /// A netlink message: header (length, type, flags, sequence, port) and body.
    fn message(kind: u16, sequence: u32, body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&0u16.to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn a_dumps_replies_make_tables_until_done_and_the_kernels_error_is_reported() {
        let request = dump_request(Dump::Tables, 7);
        assert_eq!(request.len(), NLMSG_HDRLEN + NFGENMSG_LEN);
        assert_eq!(
            u16::from_ne_bytes([request[4], request[5]]),
            SUBSYS_NFTABLES << 8 | MSG_GETTABLE
        );
        // NFPROTO_INET 1, NFNETLINK_V0, res_id 0, then the table's name.
        let table = [&[1u8, 0, 0, 0][..], &attr(TABLE_NAME, b"filter\0")].concat();
        let new_table = SUBSYS_NFTABLES << 8 | MSG_NEWTABLE;
        let datagram = [
            message(new_table, 7, &table),
            message(new_table, 6, &table), // another dump's: skipped
        ]
        .concat();
        let mut replies = Vec::new();
        assert!(!dump_replies(&datagram, Dump::Tables, 7, &mut replies).unwrap());
        assert_eq!(replies.len(), 1);
        assert!(
            dump_replies(
                &message(NLMSG_DONE, 7, &[0; 4]),
                Dump::Tables,
                7,
                &mut replies
            )
            .unwrap()
        );
        let tables = ruleset(&replies, &[], &[]);
        assert_eq!(tables.len(), 1);
        assert_eq!(
            (tables[0].family, tables[0].name.as_str()),
            (Family::Inet, "filter")
        );
        // EPERM, and a message cut short.
        let error = message(NLMSG_ERROR, 7, &(-1i32).to_ne_bytes());
        let err = dump_replies(&error, Dump::Tables, 7, &mut replies).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(1));
        let cut = &message(new_table, 7, &table)[..NLMSG_HDRLEN + 2];
        assert!(dump_replies(cut, Dump::Tables, 7, &mut replies).is_err());
    }

    /// What iptables-nft makes of `iptables -A FORWARD -s 10.244.1.0/24 -j DROP` with a
    /// comment, as the kernel dumps it.
    #[test]
    fn an_inet_rules_implied_nfproto_is_left_out_as_nft_does() {
        assert_eq!(
            without_implied_nfproto("meta nfproto ipv4 ip daddr 10.244.2.2 counter drop"),
            "ip daddr 10.244.2.2 counter drop"
        );
        assert_eq!(
            without_implied_nfproto("meta nfproto ipv6 ip6 daddr fd00::2 drop"),
            "ip6 daddr fd00::2 drop"
        );
        // An nfproto test of its own stays.
        assert_eq!(
            without_implied_nfproto("meta nfproto ipv4 counter drop"),
            "meta nfproto ipv4 counter drop"
        );
    }

    #[test]
    fn an_iptables_nft_rule_reads_with_its_counter_verdict_and_comment() {
        let expressions = [
            expr(
                "payload",
                &[
                    attr(1, &be32(1)),
                    attr(2, &be32(1)),
                    attr(3, &be32(12)),
                    attr(4, &be32(4)),
                ],
            ),
            expr(
                "bitwise",
                &[
                    attr(1, &be32(1)),
                    attr(2, &be32(1)),
                    attr(3, &be32(4)),
                    nest(4, &[attr(DATA_VALUE, &[255, 255, 255, 0])]),
                    nest(5, &[attr(DATA_VALUE, &[0, 0, 0, 0])]),
                ],
            ),
            expr(
                "cmp",
                &[
                    attr(1, &be32(1)),
                    attr(2, &be32(0)),
                    nest(3, &[attr(DATA_VALUE, &[10, 244, 1, 0])]),
                ],
            ),
            expr(
                "counter",
                &[
                    attr(1, &7000u64.to_be_bytes()),
                    attr(2, &72u64.to_be_bytes()),
                ],
            ),
            expr(
                "immediate",
                &[
                    attr(1, &be32(0)),
                    nest(2, &[nest(DATA_VERDICT, &[attr(1, &be32(0))])]),
                ],
            ),
        ];
        let mut userdata = vec![0u8, 8];
        userdata.extend_from_slice(b"docker\0\0");
        let message = [
            attr(RULE_TABLE, b"filter\0"),
            attr(RULE_CHAIN, b"FORWARD\0"),
            attr(RULE_HANDLE, &9u64.to_be_bytes()),
            nest(RULE_EXPRESSIONS, &expressions),
            attr(RULE_USERDATA, &userdata),
        ]
        .concat();
        let rule = rule(&Attrs::parse(&message));
        assert_eq!(rule.handle, 9);
        assert_eq!(rule.text, "ip saddr 10.244.1.0/24 counter drop");
        assert_eq!(
            rule.counter,
            Some(Counter {
                packets: 72,
                bytes: 7000
            })
        );
        assert_eq!(rule.verdict, Some(Verdict::Drop));
        assert_eq!(rule.comment.as_deref(), Some("docker"));
    }

    #[test]
    fn a_port_range_reads_as_nft_writes_it() {
        let port = |op: u32, port: u16| {
            expr(
                "cmp",
                &[
                    attr(1, &be32(1)),
                    attr(2, &be32(op)),
                    nest(3, &[attr(DATA_VALUE, &port.to_be_bytes())]),
                ],
            )
        };
        let dport = expr(
            "payload",
            &[
                attr(1, &be32(1)),
                attr(2, &be32(2)),
                attr(3, &be32(2)),
                attr(4, &be32(2)),
            ],
        );
        let drop = expr(
            "immediate",
            &[
                attr(1, &be32(0)),
                nest(2, &[nest(DATA_VERDICT, &[attr(1, &be32(0))])]),
            ],
        );
        let text = |expressions: &[Vec<u8>]| {
            let message = nest(RULE_EXPRESSIONS, expressions);
            rule(&Attrs::parse(&message)).text
        };
        // NFT_CMP_GTE 5 then NFT_CMP_LTE 3.
        assert_eq!(
            text(&[dport.clone(), port(5, 1000), port(3, 2000), drop.clone()]),
            "th dport 1000-2000 drop"
        );
        // A bound alone stays a comparison.
        assert_eq!(text(&[dport, port(5, 1000), drop]), "th dport >= 1000 drop");
    }

    #[test]
    fn a_base_chain_has_its_hook_policy_and_counter() {
        let message = [
            attr(CHAIN_TABLE, b"filter\0"),
            attr(CHAIN_NAME, b"FORWARD\0"),
            nest(
                CHAIN_HOOK,
                &[attr(HOOK_HOOKNUM, &be32(2)), attr(HOOK_PRIORITY, &be32(0))],
            ),
            attr(CHAIN_POLICY, &be32(0)),
            attr(CHAIN_TYPE, b"filter\0"),
            nest(
                CHAIN_COUNTERS,
                &[
                    attr(COUNTER_BYTES, &6048u64.to_be_bytes()),
                    attr(COUNTER_PACKETS, &72u64.to_be_bytes()),
                ],
            ),
        ]
        .concat();
        let chain = chain(Family::Ip, "FORWARD".into(), &Attrs::parse(&message));
        let base = chain.base.expect("a base chain");
        assert_eq!(base.hook, Hook::Forward);
        assert!(base.policy_drop);
        assert_eq!(chain.counter.map(|c| c.packets), Some(72));
        // A regular chain has no hook and no counter.
        let regular = [
            attr(CHAIN_TABLE, b"filter\0"),
            attr(CHAIN_NAME, b"DOCKER\0"),
        ]
        .concat();
        let regular = super::chain(Family::Ip, "DOCKER".into(), &Attrs::parse(&regular));
        assert!(regular.base.is_none() && regular.counter.is_none());
    }
}
