//! The per-CPU perf rings the classifier writes packets into, opened here
//! rather than by aya so that the kernel wakes the reader only when a ring
//! is filled to a watermark (an eighth, set by the pipeline), not after
//! every sample.
//!
//! aya 0.14 opens its perf buffers with `wakeup_events = 1`: every sample
//! then queues an IRQ-work wakeup on the CPU that wrote it, which is the
//! live sender's CPU (and, in a VM, a self-IPI and a VM exit). Here the
//! capture thread reads the rings on a short timer instead, and the
//! watermark only hurries it when a burst fills a ring faster.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    ptr::{self, NonNull},
    slice,
    sync::atomic::{self, Ordering},
};

use aya_obj::generated::{
    PERF_FLAG_FD_CLOEXEC, perf_event_attr, perf_event_header, perf_event_mmap_page,
    perf_event_sample_format::PERF_SAMPLE_RAW, perf_event_type,
    perf_sw_ids::PERF_COUNT_SW_BPF_OUTPUT, perf_type_id::PERF_TYPE_SOFTWARE,
};

/// `PERF_EVENT_IOC_ENABLE`: `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
/// `BPF_MAP_UPDATE_ELEM`.
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// What a ring holds, as [`PerfRing::for_each`] hands it out.
pub enum RingEvent<'a> {
    /// A sample's bytes, in two parts where it wraps the ring's end.
    Sample { head: &'a [u8], tail: &'a [u8] },
    /// Samples the kernel could not write because the ring was full.
    Lost { count: u64 },
}

/// One CPU's ring, mapped into this process.
pub struct PerfRing {
    fd: OwnedFd,
    base: NonNull<perf_event_mmap_page>,
    /// The whole mapping: a header page, then `size` bytes of data.
    map_len: usize,
    page_size: usize,
    size: usize,
}

// SAFETY: the mapping is owned by this value alone; the kernel's concurrent
// writes are read with volatile loads and fences.
unsafe impl Send for PerfRing {}

impl PerfRing {
    /// Opens the BPF-output ring of `cpu` with `pages` data pages (a power
    /// of two), waking a poller once `watermark` bytes are unread.
    pub fn open(cpu: u32, pages: usize, watermark: u32) -> io::Result<Self> {
        if !pages.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pages} ring pages is not a power of two"),
            ));
        }
        // SAFETY: perf_event_attr is plain old data; all zero is valid.
        let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
        attr.size = std::mem::size_of::<perf_event_attr>() as u32;
        attr.type_ = PERF_TYPE_SOFTWARE as u32;
        attr.config = PERF_COUNT_SW_BPF_OUTPUT as u64;
        attr.sample_type = PERF_SAMPLE_RAW as u64;
        attr.__bindgen_anon_1.sample_period = 1;
        attr.set_watermark(1);
        attr.__bindgen_anon_2.wakeup_watermark = watermark;
        // SAFETY: a valid attr for its size; pid -1 with a cpu is every
        // process on that CPU; no group.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const perf_event_attr,
                -1 as libc::pid_t,
                cpu as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let page_size = crate::util::page_size();
        let size = page_size * pages;
        let map_len = size + page_size;
        // SAFETY: maps the ring of a perf descriptor we own, shared with the
        // kernel; checked for failure below.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = Self {
            fd,
            base: NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)?,
            map_len,
            page_size,
            size,
        };
        // SAFETY: an ioctl without argument on our descriptor.
        if unsafe { libc::ioctl(ring.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ring)
    }

    /// Puts this ring at `cpu` of the BPF perf event array `map`, where the
    /// program's `BPF_F_CURRENT_CPU` output finds it.
    pub fn attach(&self, map: BorrowedFd<'_>, cpu: u32) -> io::Result<()> {
        #[repr(C)]
        struct Update {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let value = self.fd.as_raw_fd() as u32;
        let attr = Update {
            map_fd: map.as_raw_fd() as u32,
            _pad: 0,
            key: &cpu as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        };
        // SAFETY: the attr and what it points to live across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_ELEM,
                &attr as *const Update,
                std::mem::size_of::<Update>(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The kernel's write position, read before the data it covers.
    fn data_head(&self) -> u64 {
        // SAFETY: in bounds of the header page for the life of `self`; the
        // kernel writes it concurrently, hence the volatile read.
        let v = unsafe { ptr::read_volatile(&raw const (*self.base.as_ptr()).data_head) };
        atomic::fence(Ordering::Acquire);
        v
    }

    fn data_tail(&self) -> u64 {
        // SAFETY: only this process writes `data_tail`.
        unsafe { ptr::read_volatile(&raw const (*self.base.as_ptr()).data_tail) }
    }

    pub fn readable(&self) -> bool {
        self.data_head() != self.data_tail()
    }

    /// Hands out the records written so far, then frees their room. Stops
    /// after about `max_bytes`, at a record after which `f` returned true
    /// (the rest waits for the next call).
    pub fn for_each(&mut self, max_bytes: usize, mut f: impl FnMut(RingEvent<'_>) -> bool) {
        // SAFETY: the data pages follow the header page in the mapping.
        let base = unsafe { self.base.as_ptr().cast::<u8>().add(self.page_size) };
        let size = self.size;
        let head = self.data_head();
        let mut tail = self.data_tail();
        let stop_at = tail.wrapping_add(max_bytes as u64);
        let header_len = std::mem::size_of::<perf_event_header>();
        let mut may_stop = true;
        while tail != head && !(may_stop && tail.wrapping_sub(stop_at) as i64 > 0) {
            let start = (tail % size as u64) as usize;
            // SAFETY: records are 8-byte aligned and padded, so a header
            // never wraps; the kernel does not touch [tail, head).
            let header: perf_event_header = unsafe { ptr::read(base.add(start).cast()) };
            if header.size == 0 {
                break;
            }
            tail = tail.wrapping_add(u64::from(header.size));
            if header.type_ == perf_event_type::PERF_RECORD_SAMPLE as u32 {
                // The u32 length sits 8-aligned right after the header.
                let len_at = (start + header_len) % size;
                // SAFETY: as above.
                let len = unsafe { ptr::read(base.add(len_at).cast::<u32>()) } as usize;
                let from = (start + header_len + 4) % size;
                let len = len.min(size);
                let (first, second) = match (from + len).checked_sub(size) {
                    Some(wrapped) => (size - from, wrapped),
                    None => (len, 0),
                };
                // SAFETY: both ranges lie inside the data pages, unread by
                // the kernel until `data_tail` moves past them.
                let (a, b) = unsafe {
                    (
                        slice::from_raw_parts(base.add(from), first),
                        slice::from_raw_parts(base, second),
                    )
                };
                may_stop = f(RingEvent::Sample { head: a, tail: b });
            } else if header.type_ == perf_event_type::PERF_RECORD_LOST as u32 {
                // { header, u64 id, u64 lost }.
                let at = (start + header_len + 8) % size;
                // SAFETY: as above.
                let count = unsafe { ptr::read(base.add(at).cast::<u64>()) };
                may_stop = f(RingEvent::Lost { count });
            }
        }
        // Everything read is released to the kernel at once.
        atomic::fence(Ordering::SeqCst);
        // SAFETY: only this process writes `data_tail`.
        unsafe { ptr::write_volatile(&raw mut (*self.base.as_ptr()).data_tail, tail) };
    }
}

impl AsFd for PerfRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_ring_is_a_power_of_two_pages() {
        let e = super::PerfRing::open(0, 3, 4096)
            .err()
            .expect("3 pages refused");
        assert!(e.to_string().contains("not a power of two"), "{e}");
    }
}
