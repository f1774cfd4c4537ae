//! Which namespaces sit at the other end of the daemon's veths, over rtnetlink: a link dump
//! gives each veth's peer namespace as an nsid (`IFLA_LINK_NETNSID`, local to the daemon's
//! namespace), and `RTM_GETNSID` with a namespace's file descriptor says which nsid, if
//! any, the daemon's namespace gave it. Synchronous: called only when a namespace not seen
//! before shows up in the kernel's maps.

use std::{collections::BTreeSet, io, os::fd::AsRawFd, path::Path};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    nsid::{NsidAttribute, NsidMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// An rtnetlink socket in the daemon's namespace.
pub struct Nsids {
    socket: Socket,
    sequence: u32,
}

impl Nsids {
    /// Opens the socket.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// The nsids of the namespaces the daemon's veths lead to.
    pub fn veth_peers(&mut self) -> io::Result<BTreeSet<i32>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        let mut peers = BTreeSet::new();
        for reply in replies {
            let RouteNetlinkMessage::NewLink(link) = reply else {
                continue;
            };
            let is_veth = link.attributes.iter().any(|attr| {
                matches!(attr, LinkAttribute::LinkInfo(infos)
                    if infos.iter().any(|info| matches!(info, LinkInfo::Kind(InfoKind::Veth))))
            });
            if !is_veth {
                continue;
            }
            peers.extend(link.attributes.iter().find_map(|attr| match attr {
                LinkAttribute::LinkNetNsId(id) => Some(*id),
                _ => None,
            }));
        }
        Ok(peers)
    }

    /// The nsid the daemon's namespace gave the namespace at `path`
    /// (`/proc/<pid>/ns/net`), if any.
    pub fn nsid_of(&mut self, path: &Path) -> io::Result<Option<i32>> {
        let file = std::fs::File::open(path)?;
        let mut message = NsidMessage::default();
        message
            .attributes
            .push(NsidAttribute::Fd(file.as_raw_fd() as u32));
        let replies = self.request(RouteNetlinkMessage::GetNsId(message), NLM_F_REQUEST)?;
        Ok(replies.into_iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewNsId(message) => {
                message.attributes.iter().find_map(|attr| match attr {
                    NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                    _ => None,
                })
            }
            _ => None,
        }))
    }

    /// Sends one request and collects the replies (until DONE for a dump, else the first).
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket.send(&buffer, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        let mut receive = vec![0u8; 64 * 1024];
        loop {
            let size = self.socket.recv(&mut &mut receive[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let bytes = &receive[offset..size];
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err.to_string()))?;
                let length = reply.header.length as usize;
                if length == 0 {
                    return Ok(replies);
                }
                offset += length;
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(replies),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if !dump {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs no privilege: the daemon's own namespace has no nsid for itself, and a dump
    /// of its links works (an unprivileged test runner's namespace has at least `lo`).
    #[test]
    fn own_namespace_has_no_nsid_and_links_dump() {
        let mut nsids = Nsids::open().unwrap();
        nsids.veth_peers().unwrap();
        let own = nsids.nsid_of(Path::new("/proc/self/ns/net")).unwrap();
        // The kernel answers NETNSA_NSID_NOT_ASSIGNED (-1) or, for itself, may assign one.
        assert!(own.is_none() || own.is_some_and(|id| id >= 0));
    }
}
