//! Removing the `clsact` qdisc the agent added, and only that one.
//!
//! aya can add a clsact qdisc but not delete one, so this sends the one
//! rtnetlink request it takes (`RTM_DELQDISC` for the clsact handle on the
//! interface) and reads the kernel's acknowledgement.

use std::{ffi::CString, io, mem::size_of};

/// `TC_H_CLSACT`: the parent of a clsact qdisc.
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// `TC_H_MAKE(TC_H_CLSACT, 0)`: its handle (`ffff:`).
const CLSACT_HANDLE: u32 = 0xFFFF_0000;

/// `struct tcmsg` from `linux/rtnetlink.h`.
#[repr(C)]
#[derive(Clone, Copy)]
struct TcMsg {
    family: u8,
    pad1: u8,
    pad2: u16,
    ifindex: i32,
    handle: u32,
    parent: u32,
    info: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    header: libc::nlmsghdr,
    tc: TcMsg,
}

/// Whether `interface` exists in this network namespace.
pub fn interface_exists(interface: &str) -> bool {
    CString::new(interface).is_ok_and(|name| {
        // SAFETY: `name` is a valid NUL-terminated string.
        unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
    })
}

/// Deletes the clsact qdisc of `interface` (and with it any filter still
/// attached through netlink).
pub fn delete_clsact(interface: &str) -> io::Result<()> {
    let name =
        CString::new(interface).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain socket(2) call; the descriptor is closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = send_and_ack(fd, ifindex as i32);
    // SAFETY: `fd` is ours and not used after this.
    unsafe { libc::close(fd) };
    result
}

fn send_and_ack(fd: i32, ifindex: i32) -> io::Result<()> {
    let req = Request {
        header: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: libc::RTM_DELQDISC,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        tc: TcMsg {
            family: libc::AF_UNSPEC as u8,
            pad1: 0,
            pad2: 0,
            ifindex,
            handle: CLSACT_HANDLE,
            parent: TC_H_CLSACT,
            info: 0,
        },
    };
    // SAFETY: `req` is a plain repr(C) value of the length given.
    let sent = unsafe { libc::send(fd, (&raw const req).cast(), size_of::<Request>(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 512];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let header_len = size_of::<libc::nlmsghdr>();
    if (n as usize) < header_len + size_of::<i32>() {
        return Err(io::Error::other("short netlink answer"));
    }
    // SAFETY: at least a header and an error code were received; both are
    // read unaligned from the byte buffer.
    let (header, code) = unsafe {
        (
            std::ptr::read_unaligned(buf.as_ptr().cast::<libc::nlmsghdr>()),
            std::ptr::read_unaligned(buf.as_ptr().add(header_len).cast::<i32>()),
        )
    };
    match (header.nlmsg_type as i32, code) {
        (libc::NLMSG_ERROR, 0) => Ok(()),
        (libc::NLMSG_ERROR, e) => Err(io::Error::from_raw_os_error(-e)),
        (t, _) => Err(io::Error::other(format!(
            "unexpected netlink answer type {t}"
        ))),
    }
}
