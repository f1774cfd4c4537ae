//! Policy routing rules (RTM_NEWRULE).

use std::net::IpAddr;

use super::Prefix;

/// What a policy rule does when it matches (FR_ACT_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Look the destination up in `table`.
    ToTable,
    /// Jump to the first rule at or after priority `goto`.
    Goto,
    /// Do nothing.
    Nop,
    /// Discard silently.
    Blackhole,
    /// Discard with ICMP unreachable.
    Unreachable,
    /// Discard with ICMP prohibited.
    Prohibit,
    /// Any other action, by number.
    Other(u8),
}

/// A policy routing rule (`ip rule`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The address family: `libc::AF_INET` (2) or `libc::AF_INET6` (10).
    pub family: u8,
    /// The priority; rules are tried lowest first.
    pub priority: u32,
    /// The table for [`RuleAction::ToTable`].
    pub table: u32,
    /// The action.
    pub action: RuleAction,
    /// `from` selector.
    pub src: Option<Prefix>,
    /// `to` selector.
    pub dst: Option<Prefix>,
    /// `iif` selector.
    pub iif: Option<String>,
    /// `oif` selector.
    pub oif: Option<String>,
    /// `fwmark` selector value.
    pub fwmark: Option<u32>,
    /// `fwmark` selector mask (all ones when only a mark is given).
    pub fwmask: Option<u32>,
    /// The target priority of a `goto` rule.
    pub goto: Option<u32>,
    /// `suppress_prefixlength`: a route found with a prefix this short or shorter is
    /// ignored (wg-quick's `table main suppress_prefixlength 0`).
    pub suppress_prefixlen: Option<u32>,
    /// `not`: the selectors are inverted.
    pub invert: bool,
    /// `l3mdev`: the table comes from the VRF device.
    pub l3mdev: bool,
    /// `tos` selector (0: any).
    pub tos: u8,
    /// `ipproto` selector.
    pub ip_proto: Option<u8>,
    /// `sport` selector (first, last).
    pub sport: Option<(u16, u16)>,
    /// `dport` selector (first, last).
    pub dport: Option<(u16, u16)>,
    /// `uidrange` selector (first, last).
    pub uid_range: Option<(u32, u32)>,
    /// `tun_id` selector.
    pub tun_id: Option<u64>,
    /// `realms` selector (source << 16 | destination).
    pub realms: Option<u32>,
    /// `suppress_ifgroup`: a route through a device of this group is ignored.
    pub suppress_ifgroup: Option<u32>,
    /// Who installed it (`protocol`, RTPROT_*).
    pub protocol: u8,
}

impl Rule {
    /// A rule of `family` at `priority` that looks up `table`, without selectors.
    pub fn to_table(family: u8, priority: u32, table: u32) -> Self {
        Self {
            family,
            priority,
            table,
            action: RuleAction::ToTable,
            src: None,
            dst: None,
            iif: None,
            oif: None,
            fwmark: None,
            fwmask: None,
            goto: None,
            suppress_prefixlen: None,
            invert: false,
            l3mdev: false,
            tos: 0,
            ip_proto: None,
            sport: None,
            dport: None,
            uid_range: None,
            tun_id: None,
            realms: None,
            suppress_ifgroup: None,
            protocol: 0,
        }
    }

    /// Whether the rule matches a locally originated packet (mark 0, no bound oif,
    /// iif `lo`, TOS 0, no tunnel) from `src` (unspecified when `None`) to `dst`. A rule
    /// that selects on what such a lookup does not know (protocol, ports, the sending
    /// user, realms) does not match.
    pub(super) fn matches_local(&self, dst: &IpAddr, src: Option<&IpAddr>) -> bool {
        let unspecified = Prefix::default_for(dst).addr;
        let src = src.unwrap_or(&unspecified);
        let selectors = self.src.is_none_or(|p| p.contains(src))
            && self.dst.is_none_or(|p| p.contains(dst))
            && self.iif.as_deref().is_none_or(|iif| iif == "lo")
            && self.oif.is_none()
            && !self.l3mdev
            && self.tos == 0
            && self.ip_proto.is_none()
            && self.sport.is_none()
            && self.dport.is_none()
            && self.uid_range.is_none()
            && self.tun_id.is_none()
            && self.realms.is_none()
            && self
                .fwmark
                .is_none_or(|mark| mark & self.fwmask.unwrap_or(u32::MAX) == 0);
        selectors != self.invert
    }
}
