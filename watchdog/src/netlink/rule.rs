//! Policy rules (RTM_NEWRULE).

use netlink_packet_route::{
    AddressFamily,
    rule::{RuleAction as NlRuleAction, RuleAttribute, RuleFlags, RuleMessage},
};

use crate::model::net::{Prefix, Rule, RuleAction};

/// The rule a message describes (IPv4 and IPv6).
pub(super) fn decode(m: &RuleMessage) -> Option<Rule> {
    let h = &m.header;
    let family = match h.family {
        AddressFamily::Inet => libc::AF_INET as u8,
        AddressFamily::Inet6 => libc::AF_INET6 as u8,
        _ => return None,
    };
    let mut rule = Rule::to_table(family, 0, u32::from(h.table));
    rule.action = match h.action {
        NlRuleAction::ToTable => RuleAction::ToTable,
        NlRuleAction::Goto => RuleAction::Goto,
        NlRuleAction::Nop => RuleAction::Nop,
        NlRuleAction::Blackhole => RuleAction::Blackhole,
        NlRuleAction::Unreachable => RuleAction::Unreachable,
        NlRuleAction::Prohibit => RuleAction::Prohibit,
        other => RuleAction::Other(u8::from(other)),
    };
    rule.invert = h.flags.contains(RuleFlags::Invert);
    rule.tos = h.tos;
    for attr in &m.attributes {
        match attr {
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::Table(t) => rule.table = *t,
            RuleAttribute::Source(ip) => rule.src = Prefix::new(*ip, h.src_len).ok(),
            RuleAttribute::Destination(ip) => rule.dst = Prefix::new(*ip, h.dst_len).ok(),
            RuleAttribute::Iifname(name) => rule.iif = Some(name.clone()),
            RuleAttribute::Oifname(name) => rule.oif = Some(name.clone()),
            RuleAttribute::FwMark(mark) => rule.fwmark = Some(*mark),
            RuleAttribute::FwMask(mask) => rule.fwmask = Some(*mask),
            RuleAttribute::Goto(target) => rule.goto = Some(*target),
            RuleAttribute::SuppressPrefixLen(len) if *len != u32::MAX => {
                rule.suppress_prefixlen = Some(*len)
            }
            RuleAttribute::L3MDev(on) => rule.l3mdev = *on,
            RuleAttribute::IpProtocol(proto) => rule.ip_proto = Some(u8::from(*proto)),
            RuleAttribute::SourcePortRange(r) => rule.sport = Some((r.start, r.end)),
            RuleAttribute::DestinationPortRange(r) => rule.dport = Some((r.start, r.end)),
            RuleAttribute::UidRange(r) => rule.uid_range = Some((r.start, r.end)),
            RuleAttribute::TunId(id) => rule.tun_id = Some(*id),
            RuleAttribute::Realm(r) => {
                rule.realms = Some(u32::from(r.source) << 16 | u32::from(r.destination))
            }
            RuleAttribute::SuppressIfGroup(group) if *group != u32::MAX => {
                rule.suppress_ifgroup = Some(*group)
            }
            RuleAttribute::Protocol(proto) => rule.protocol = u8::from(*proto),
            _ => {}
        }
    }
    Some(rule)
}
