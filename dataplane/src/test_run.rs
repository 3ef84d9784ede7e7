//! BPF_PROG_TEST_RUN for XDP programs: run the program on a frame without a network.
//! aya 0.14 does not wrap this command, so it is one raw `bpf(2)` call.

use std::io;
use std::os::fd::RawFd;

use crate::DataplaneError;

/// Largest frame a test run returns; XDP frames fit in a page.
const MAX_FRAME: usize = 4096;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Transmit the frames the program returns XDP_TX or XDP_REDIRECT for, instead of returning them.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// What one test run returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP action (`XDP_DROP` = 1, `XDP_PASS` = 2, `XDP_TX` = 3, `XDP_REDIRECT` = 4).
    pub action: u32,
    /// The frame after the program ran.
    pub frame: Vec<u8>,
    /// The kernel's measured run time, in nanoseconds.
    pub duration_ns: u32,
}

/// XDP actions, for readable assertions.
pub mod action {
    pub const ABORTED: u32 = 0;
    pub const DROP: u32 = 1;
    pub const PASS: u32 = 2;
    pub const TX: u32 = 3;
    pub const REDIRECT: u32 = 4;
}

/// `struct xdp_md` as the test-run context.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// The kernel rejects an attr whose bytes past the last field it knows are not zero, so the
    /// tail padding is spelled out to be sure it is.
    _pad: u32,
}

/// Runs an XDP program `repeat` times on copies of `frame` in live-frames mode: frames it returns
/// XDP_TX for leave through `ingress_ifindex` (in the calling thread's namespace), which must
/// have registered XDP receive queues. This is the benchmark's packet generator.
pub fn xdp_live_frames(
    prog_fd: RawFd,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
) -> Result<(), DataplaneError> {
    let ctx = XdpMd {
        data: 0,
        data_end: frame.len() as u32,
        ingress_ifindex,
        ..XdpMd::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..TestRunAttr::default()
    };
    bpf_test_run(&mut attr)
}

fn bpf_test_run(attr: &mut TestRunAttr) -> Result<(), DataplaneError> {
    // SAFETY: attr points at buffers that outlive the call and whose sizes it states.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(DataplaneError::Syscall {
            call: "BPF_PROG_TEST_RUN",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

pub(crate) fn xdp_test_run(
    prog_fd: RawFd,
    frame: &[u8],
    ingress_ifindex: u32,
) -> Result<TestRunOutput, DataplaneError> {
    let mut out = vec![0u8; MAX_FRAME];
    let ctx = XdpMd {
        data: 0,
        data_end: frame.len() as u32,
        ingress_ifindex,
        ..XdpMd::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        // Without a context the kernel runs the frame as if it came from loopback; with one, the
        // interface must have registered XDP receive queues (a driver with an XDP program on it).
        ctx_size_in: if ingress_ifindex == 0 {
            0
        } else {
            std::mem::size_of::<XdpMd>() as u32
        },
        ctx_in: if ingress_ifindex == 0 {
            0
        } else {
            &ctx as *const XdpMd as u64
        },
        ..TestRunAttr::default()
    };
    bpf_test_run(&mut attr)?;
    out.truncate(attr.data_size_out as usize);
    Ok(TestRunOutput {
        action: attr.retval,
        frame: out,
        duration_ns: attr.duration,
    })
}
