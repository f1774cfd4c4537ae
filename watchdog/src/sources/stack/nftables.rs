//! The nftables ruleset of the daemon's namespace over netlink (`NETLINK_NETFILTER`):
//! the socket that sends `netlink::nftables`' dump requests and reads their replies.
//! Synchronous and read only when netfilter drops of this node's traffic are seen.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::{
    model::stack::Table,
    netlink::nftables::{self, Dump, Reply},
};

/// Reads every table with its chains and rules.
pub fn read_ruleset() -> io::Result<Vec<Table>> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut sequence = 0;
    let tables = dump(&mut socket, &mut sequence, Dump::Tables)?;
    let chains = dump(&mut socket, &mut sequence, Dump::Chains)?;
    let rules = dump(&mut socket, &mut sequence, Dump::Rules)?;
    Ok(nftables::ruleset(&tables, &chains, &rules))
}

/// Sends one dump request for every family and returns each reply's (family, attributes).
fn dump(socket: &mut Socket, sequence: &mut u32, what: Dump) -> io::Result<Vec<Reply>> {
    *sequence += 1;
    socket.send(&nftables::dump_request(what, *sequence), 0)?;
    let mut replies = Vec::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0)?;
        if nftables::dump_replies(&buffer[..size], what, *sequence, &mut replies)? {
            return Ok(replies);
        }
    }
}
