//! Block-I/O telemetry against a loop device of known size, with O_DIRECT
//! requests of known count and size.

use std::{alloc::Layout, os::unix::fs::FileExt, os::unix::fs::OpenOptionsExt, time::Duration};

use shadow_tests::{Agent, kernel_test, sh};

const WRITES: u64 = 256;
const WRITE_SIZE: usize = 4096;
const READS: u64 = 128;
const READ_SIZE: usize = 8192;

struct LoopDev(String);

impl LoopDev {
    /// A loop device over a new 64 MiB sparse file in `dir`, and its name
    /// (`loop0`).
    fn over_sparse_file(dir: &std::path::Path) -> (Self, String) {
        let backing = dir.join("disk.img");
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let dev = LoopDev(
            sh("losetup", &["--find", "--show", backing.to_str().unwrap()])
                .trim()
                .to_owned(),
        );
        let name = dev.0.trim_start_matches("/dev/").to_owned();
        (dev, name)
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .output();
    }
}

/// A page-aligned buffer, as O_DIRECT requires.
struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> Self {
        let layout = Layout::from_size_align(len, 4096).expect("layout");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        // SAFETY: ptr is valid for len bytes.
        unsafe { ptr.write_bytes(fill, len) };
        Self { ptr, layout }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() bytes and uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

#[test]
fn o_direct_io_on_a_loop_device_gives_matching_counts_and_bytes() {
    let Some(_kernel) = kernel_test("o_direct_io_on_a_loop_device_gives_matching_counts_and_bytes")
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("shadow-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (dev, name) = LoopDev::over_sparse_file(&dir);

    let agent = Agent::start("block");
    let before = agent.fresh_view();
    let count = |v: &shadow_proxy::kernel::view::View, op: &str| {
        v.kernel.block(&name, op).map_or((0, 0, 0), |b| {
            (b.size_bytes.count(), b.size_bytes.sum, b.latency_ns.count())
        })
    };
    let (w0, wb0, _) = count(&before, "write");
    let (r0, rb0, _) = count(&before, "read");

    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&dev.0)
        .expect("open loop device with O_DIRECT");
    let mut wbuf = Aligned::new(WRITE_SIZE, 0xab);
    for i in 0..WRITES {
        // 64 KiB apart, one at a time: nothing for the block layer to merge.
        file.write_all_at(wbuf.as_mut(), i * 65_536)
            .expect("O_DIRECT write");
    }
    let mut rbuf = Aligned::new(READ_SIZE, 0);
    for i in 0..READS {
        file.read_exact_at(rbuf.as_mut(), i * 131_072 + 32_768)
            .expect("O_DIRECT read");
    }

    let after = agent.wait_for(Duration::from_secs(10), |v| {
        count(v, "write").0 >= w0 + WRITES && count(v, "read").0 >= r0 + READS
    });
    let (w1, wb1, wl1) = count(&after, "write");
    let (r1, rb1, rl1) = count(&after, "read");
    assert_eq!(w1 - w0, WRITES, "write requests on {name}");
    assert_eq!(
        wb1 - wb0,
        WRITES * WRITE_SIZE as u64,
        "bytes written on {name}"
    );
    assert_eq!(r1 - r0, READS, "read requests on {name}");
    assert_eq!(rb1 - rb0, READS * READ_SIZE as u64, "bytes read on {name}");
    assert_eq!(wl1, w1, "every write has a latency sample");
    assert_eq!(rl1, r1, "every read has a latency sample");
    let lat = after
        .kernel
        .block(&name, "write")
        .unwrap()
        .latency_ns
        .clone();
    assert!(lat.sum > 0, "latencies are positive");
    assert_eq!(after.kernel.drops.block_start_insert_failed, 0);

    // The same figures on the Prometheus page.
    let page = agent.get("/metrics");
    let line = format!("shadow_block_io_requests_total{{device=\"{name}\",op=\"write\"}} {w1}");
    assert!(page.contains(&line), "missing {line:?} in /metrics");
    let line = format!("shadow_block_io_bytes_total{{device=\"{name}\",op=\"read\"}} {rb1}");
    assert!(page.contains(&line), "missing {line:?} in /metrics");
    let line =
        format!("shadow_block_io_latency_seconds_count{{device=\"{name}\",op=\"write\"}} {w1}");
    assert!(page.contains(&line), "missing {line:?} in /metrics");
    drop(file);
    let _ = std::fs::remove_dir_all(dir);
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn writes_the_driver_fails_are_counted_as_block_io_errors() {
    let Some(_kernel) = kernel_test("writes_the_driver_fails_are_counted_as_block_io_errors")
    else {
        return;
    };
    // A real failing disk: a loop device whose 64 MiB backing file lives
    // on a 1 MiB tmpfs, so once the tmpfs is full the loop driver completes
    // each further write with -ENOSPC (block:block_rq_complete's `error`).
    let dir = std::env::temp_dir().join(format!("shadow-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    sh(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            dir.to_str().unwrap(),
        ],
    );
    let mount = Mount(dir.clone());
    let (dev, name) = LoopDev::over_sparse_file(&dir);

    let agent = Agent::start("block-errors");
    let before = agent.fresh_view();
    let counts = |v: &shadow_proxy::kernel::view::View| {
        v.kernel
            .block(&name, "write")
            .map_or((0, 0), |b| (b.size_bytes.count(), b.errors))
    };
    let (w0, e0) = counts(&before);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&dev.0)
        .expect("open loop device with O_DIRECT");
    // One page per write (one request each), 16 KiB apart over 8 MiB:
    // about the first 1 MiB fits, the rest fails.
    let mut buf = Aligned::new(WRITE_SIZE, 0xcd);
    let mut failed = 0u64;
    for i in 0..WRITES * 2 {
        if file.write_all_at(buf.as_mut(), i * 16_384).is_err() {
            failed += 1;
        }
    }
    assert!(
        failed > 0 && failed < WRITES * 2,
        "{failed} of {} writes failed: the tmpfs should fill part way",
        WRITES * 2
    );
    let after = agent.wait_for(Duration::from_secs(10), |v| counts(v).0 >= w0 + WRITES * 2);
    let (w1, e1) = counts(&after);
    assert_eq!(w1 - w0, WRITES * 2, "write requests on {name}");
    assert_eq!(e1 - e0, failed, "failed writes counted as errors on {name}");
    let page = agent.get("/metrics");
    let line = format!("shadow_block_io_errors_total{{device=\"{name}\",op=\"write\"}} {e1}");
    assert!(page.contains(&line), "missing {line:?} in /metrics");
    drop(file);
    drop(dev);
    drop(mount);
}
