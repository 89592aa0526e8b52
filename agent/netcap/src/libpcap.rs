//! libpcap, loaded with `dlopen` when live capture starts rather than linked.
//!
//! Linked, libpcap and what it pulls in (libdbus, libsystemd, libgcrypt, liblzma, libzstd, …) are
//! mapped into every agent, about 1 MiB of resident memory, even when the network source is off,
//! which is the default; and the package would need libpcap to install at all. Loaded here, they
//! are mapped only when the source starts, and a device without libpcap runs every other source,
//! with the network source reporting what is missing.
//!
//! Only the calls the live source makes are bound, with the types of libpcap ≥ 1.5's `pcap.h`
//! (`pcap_create`/`pcap_activate`, `pcap_set_immediate_mode`, all there since 2013). A static
//! build (musl) cannot `dlopen`; there the source reports that instead.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::net::IpAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::OnceLock;

/// The sonames tried, in order: upstream's, Debian's, and the development link.
const SONAMES: [&CStr; 3] = [c"libpcap.so.1", c"libpcap.so.0.8", c"libpcap.so"];

const ERRBUF_SIZE: usize = 256; // PCAP_ERRBUF_SIZE
const NETMASK_UNKNOWN: c_uint = 0xffff_ffff; // PCAP_NETMASK_UNKNOWN

#[repr(C)]
struct PktHdr {
    ts: libc::timeval,
    caplen: u32,
    len: u32,
}

#[repr(C)]
struct RawStat {
    ps_recv: c_uint,
    ps_drop: c_uint,
    ps_ifdrop: c_uint,
}

#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut c_void,
}

#[repr(C)]
struct PcapIf {
    next: *mut PcapIf,
    name: *mut c_char,
    description: *mut c_char,
    addresses: *mut PcapAddr,
    flags: u32,
}

#[repr(C)]
struct PcapAddr {
    next: *mut PcapAddr,
    addr: *mut libc::sockaddr,
    netmask: *mut libc::sockaddr,
    broadaddr: *mut libc::sockaddr,
    dstaddr: *mut libc::sockaddr,
}

/// libpcap's opaque handle.
enum PcapT {}

/// The entry points: `Lib` and `resolve`, which looks each one up by its C name.
macro_rules! entry_points {
    ($($field:ident = $name:literal: $ty:ty;)*) => {
        struct Lib {
            $($field: $ty,)*
        }

        fn resolve(handle: *mut c_void) -> Result<Lib, String> {
            Ok(Lib {
                $($field: {
                    // SAFETY: `handle` is a live dlopen handle and the name is NUL-terminated.
                    let p = unsafe { libc::dlsym(handle, concat!($name, "\0").as_ptr().cast()) };
                    if p.is_null() {
                        return Err(format!("libpcap has no {} (older than 1.5?)", $name));
                    }
                    // SAFETY: the symbol is libpcap's function of that name, whose C signature
                    // (pcap.h) is this type.
                    unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
                },)*
            })
        }
    };
}

entry_points! {
    create = "pcap_create": unsafe extern "C" fn(*const c_char, *mut c_char) -> *mut PcapT;
    set_snaplen = "pcap_set_snaplen": unsafe extern "C" fn(*mut PcapT, c_int) -> c_int;
    set_buffer_size = "pcap_set_buffer_size": unsafe extern "C" fn(*mut PcapT, c_int) -> c_int;
    set_promisc = "pcap_set_promisc": unsafe extern "C" fn(*mut PcapT, c_int) -> c_int;
    set_immediate_mode = "pcap_set_immediate_mode": unsafe extern "C" fn(*mut PcapT, c_int) -> c_int;
    set_timeout = "pcap_set_timeout": unsafe extern "C" fn(*mut PcapT, c_int) -> c_int;
    activate = "pcap_activate": unsafe extern "C" fn(*mut PcapT) -> c_int;
    setnonblock = "pcap_setnonblock": unsafe extern "C" fn(*mut PcapT, c_int, *mut c_char) -> c_int;
    compile = "pcap_compile":
        unsafe extern "C" fn(*mut PcapT, *mut BpfProgram, *const c_char, c_int, c_uint) -> c_int;
    setfilter = "pcap_setfilter": unsafe extern "C" fn(*mut PcapT, *mut BpfProgram) -> c_int;
    freecode = "pcap_freecode": unsafe extern "C" fn(*mut BpfProgram);
    datalink = "pcap_datalink": unsafe extern "C" fn(*mut PcapT) -> c_int;
    next_ex = "pcap_next_ex": unsafe extern "C" fn(*mut PcapT, *mut *mut PktHdr, *mut *const u8) -> c_int;
    stats = "pcap_stats": unsafe extern "C" fn(*mut PcapT, *mut RawStat) -> c_int;
    get_selectable_fd = "pcap_get_selectable_fd": unsafe extern "C" fn(*mut PcapT) -> c_int;
    geterr = "pcap_geterr": unsafe extern "C" fn(*mut PcapT) -> *const c_char;
    statustostr = "pcap_statustostr": unsafe extern "C" fn(c_int) -> *const c_char;
    close = "pcap_close": unsafe extern "C" fn(*mut PcapT);
    findalldevs = "pcap_findalldevs": unsafe extern "C" fn(*mut *mut PcapIf, *mut c_char) -> c_int;
    freealldevs = "pcap_freealldevs": unsafe extern "C" fn(*mut PcapIf);
}

/// libpcap, loaded on first use and kept for the life of the process (never `dlclose`d).
fn lib() -> Result<&'static Lib, String> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Lib, String> {
    let mut tried = Vec::new();
    let handle = SONAMES.iter().find_map(|name| {
        // SAFETY: `name` is NUL-terminated; dlopen runs libpcap's initialisers, which have no
        // preconditions.
        let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            tried.push(dlerror());
            None
        } else {
            Some(h)
        }
    });
    let Some(handle) = handle else {
        return Err(format!(
            "libpcap cannot be loaded (apt install libpcap0.8, dnf install libpcap): {}",
            tried.join("; ")
        ));
    };
    resolve(handle)
}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call on
    // this thread; it is copied at once.
    let e = unsafe { libc::dlerror() };
    if e.is_null() { "dlopen failed".into() } else { cstr(e) }
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: every non-NULL string libpcap or libdl returns is NUL-terminated and outlives
    // this copy.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn errbuf_str(buf: &[c_char; ERRBUF_SIZE]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c.cast_unsigned()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// libpcap's counters (`pcap_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    /// Packets received; on Linux this includes the dropped ones.
    pub received: u32,
    /// Dropped because the ring buffer was full.
    pub dropped: u32,
    /// Dropped by the interface or its driver.
    pub if_dropped: u32,
}

/// What [`Capture::next_packet`] found.
#[derive(Debug)]
pub enum Next<'a> {
    /// A packet: capture time in Unix nanoseconds and the captured bytes.
    Packet { ts_nanos: i64, data: &'a [u8] },
    /// Nothing waiting (the handle is non-blocking).
    Empty,
}

/// How a live capture is opened.
#[derive(Debug)]
pub struct Options<'a> {
    pub interface: &'a str,
    pub snaplen: i32,
    pub buffer_size: i32,
    pub promisc: bool,
    pub immediate: bool,
    pub timeout_ms: i32,
}

/// An activated, non-blocking live capture handle.
pub struct Capture {
    lib: &'static Lib,
    p: NonNull<PcapT>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("handle", &self.p).finish()
    }
}

// SAFETY: a pcap_t may be used from any thread, one at a time; `Capture` is not `Sync`, and
// every call takes `&self` or `&mut self` of the one owner.
unsafe impl Send for Capture {}

impl Capture {
    /// `pcap_create` + settings + `pcap_activate` + non-blocking. Errors name what failed, in
    /// libpcap's words (no such device, no permission).
    pub fn open(o: &Options) -> Result<Capture, String> {
        let lib = lib()?;
        let dev = CString::new(o.interface).map_err(|_| "interface name has a NUL byte".to_string())?;
        let mut err = [0 as c_char; ERRBUF_SIZE];
        // SAFETY: `dev` is NUL-terminated and `err` has PCAP_ERRBUF_SIZE bytes.
        let p = unsafe { (lib.create)(dev.as_ptr(), err.as_mut_ptr()) };
        let p = NonNull::new(p).ok_or_else(|| errbuf_str(&err))?;
        let cap = Capture { lib, p };
        let h = cap.p.as_ptr();
        // SAFETY (the setters and activate): `h` is a live handle from pcap_create, not yet
        // activated; these setters only store the value (errors: already activated, which
        // cannot be).
        unsafe {
            (lib.set_snaplen)(h, o.snaplen);
            (lib.set_buffer_size)(h, o.buffer_size);
            (lib.set_promisc)(h, c_int::from(o.promisc));
            (lib.set_immediate_mode)(h, c_int::from(o.immediate));
            (lib.set_timeout)(h, o.timeout_ms);
        }
        // SAFETY: as above.
        let rc = unsafe { (lib.activate)(h) };
        if rc < 0 {
            // activate leaves its reason in geterr (filled with statustostr's text when it has
            // nothing more specific).
            let detail = cap.geterr();
            let msg = if detail.is_empty() { cap.status_str(rc) } else { detail };
            return Err(msg);
        }
        // rc > 0 is a warning (e.g. promiscuous mode not supported): the handle works.
        // SAFETY: `h` is activated; `err` has PCAP_ERRBUF_SIZE bytes.
        if unsafe { (lib.setnonblock)(h, 1, err.as_mut_ptr()) } < 0 {
            return Err(errbuf_str(&err));
        }
        Ok(cap)
    }

    fn geterr(&self) -> String {
        // SAFETY: the handle is live; the string is copied before any other call on it.
        cstr(unsafe { (self.lib.geterr)(self.p.as_ptr()) })
    }

    fn status_str(&self, rc: c_int) -> String {
        // SAFETY: pcap_statustostr accepts any code and returns a static (or thread-local)
        // string, copied at once.
        cstr(unsafe { (self.lib.statustostr)(rc) })
    }

    /// Compile and install a BPF filter in tcpdump syntax.
    pub fn set_filter(&mut self, expr: &str) -> Result<(), String> {
        let c = CString::new(expr).map_err(|_| "filter has a NUL byte".to_string())?;
        let mut prog = BpfProgram { bf_len: 0, bf_insns: ptr::null_mut() };
        let h = self.p.as_ptr();
        // SAFETY: live activated handle, valid out-pointer, NUL-terminated expression.
        if unsafe { (self.lib.compile)(h, &mut prog, c.as_ptr(), 1, NETMASK_UNKNOWN) } < 0 {
            return Err(self.geterr());
        }
        // SAFETY: `prog` was filled by pcap_compile; pcap_setfilter copies it, so it is freed
        // right after.
        let rc = unsafe { (self.lib.setfilter)(h, &mut prog) };
        // SAFETY: `prog` came from pcap_compile and is freed once.
        unsafe { (self.lib.freecode)(&mut prog) };
        if rc < 0 { Err(self.geterr()) } else { Ok(()) }
    }

    /// The link-layer header type (`DLT_*`).
    pub fn datalink(&self) -> i32 {
        // SAFETY: live activated handle.
        unsafe { (self.lib.datalink)(self.p.as_ptr()) }
    }

    /// The next packet, if one is waiting. The bytes are valid until the next call.
    pub fn next_packet(&mut self) -> Result<Next<'_>, String> {
        let mut hdr: *mut PktHdr = ptr::null_mut();
        let mut data: *const u8 = ptr::null();
        // SAFETY: live activated handle, valid out-pointers.
        match unsafe { (self.lib.next_ex)(self.p.as_ptr(), &mut hdr, &mut data) } {
            1 if !hdr.is_null() && !data.is_null() => {
                // SAFETY: on 1, `hdr` points to the packet's header and `data` to `caplen`
                // bytes, both owned by libpcap and valid until the next call on this handle,
                // which `&mut self` for the returned lifetime prevents.
                let (h, bytes) = unsafe {
                    let h = &*hdr;
                    (h, std::slice::from_raw_parts(data, h.caplen as usize))
                };
                // timeval fields are i64 on 64-bit Linux, i32 on some 32-bit targets.
                #[allow(clippy::useless_conversion)]
                let ts_nanos = i64::from(h.ts.tv_sec) * 1_000_000_000 + i64::from(h.ts.tv_usec) * 1000;
                Ok(Next::Packet { ts_nanos, data: bytes })
            }
            0 | 1 => Ok(Next::Empty),
            _ => Err(self.geterr()),
        }
    }

    /// libpcap's counters, if it can give them.
    pub fn stats(&self) -> Option<Stat> {
        let mut s = RawStat { ps_recv: 0, ps_drop: 0, ps_ifdrop: 0 };
        // SAFETY: live activated handle, valid out-pointer of pcap_stat's layout.
        (unsafe { (self.lib.stats)(self.p.as_ptr(), &mut s) } == 0).then_some(Stat {
            received: s.ps_recv,
            dropped: s.ps_drop,
            if_dropped: s.ps_ifdrop,
        })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: live activated handle.
        let fd: RawFd = unsafe { (self.lib.get_selectable_fd)(self.p.as_ptr()) };
        // SAFETY: on Linux a live capture always has a selectable descriptor (the packet socket),
        // owned by the handle, which outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(fd) }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SAFETY: the handle is live and closed once.
        unsafe { (self.lib.close)(self.p.as_ptr()) }
    }
}

/// Every address of every interface libpcap knows (`pcap_findalldevs`); empty when libpcap
/// cannot be loaded or the list fails.
pub fn local_addrs() -> Vec<IpAddr> {
    let Ok(lib) = lib() else { return Vec::new() };
    let mut devs: *mut PcapIf = ptr::null_mut();
    let mut err = [0 as c_char; ERRBUF_SIZE];
    // SAFETY: valid out-pointer and PCAP_ERRBUF_SIZE error buffer.
    if unsafe { (lib.findalldevs)(&mut devs, err.as_mut_ptr()) } < 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut d = devs;
    while !d.is_null() {
        // SAFETY: `d` walks the list pcap_findalldevs built, which stays valid until
        // pcap_freealldevs below.
        let dev = unsafe { &*d };
        let mut a = dev.addresses;
        while !a.is_null() {
            // SAFETY: as above, for the device's address list.
            let addr = unsafe { &*a };
            // SAFETY: a non-NULL `addr` points to a sockaddr whose family says its real type.
            if let Some(ip) = unsafe { sockaddr_ip(addr.addr) } {
                out.push(ip);
            }
            a = addr.next;
        }
        d = dev.next;
    }
    // SAFETY: the list from pcap_findalldevs, freed once; nothing of it is used after.
    unsafe { (lib.freealldevs)(devs) };
    out
}

/// # Safety
/// `sa` is NULL or points to a valid socket address of the type its family says.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller's promise; the family says which struct it is.
    unsafe {
        match c_int::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*sa.cast::<libc::sockaddr_in>();
                Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
            }
            libc::AF_INET6 => {
                let sin6 = &*sa.cast::<libc::sockaddr_in6>();
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interface_is_an_error_in_libpcaps_words_not_a_crash() {
        match lib() {
            Err(e) => println!("SKIPPED: libpcap cannot be loaded here: {e}"),
            Ok(_) => {
                let o = Options {
                    interface: "picket-no-such0",
                    snaplen: 1600,
                    buffer_size: 1 << 20,
                    promisc: false,
                    immediate: false,
                    timeout_ms: 50,
                };
                let e = Capture::open(&o).expect_err("no such interface");
                assert!(e.to_lowercase().contains("such device"), "{e}");
                println!("open error: {e}");
            }
        }
    }

    #[test]
    fn local_addresses_include_loopback() {
        if let Err(e) = lib() {
            println!("SKIPPED: libpcap cannot be loaded here: {e}");
            return;
        }
        let addrs = local_addrs();
        assert!(addrs.contains(&IpAddr::from([127, 0, 0, 1])), "{addrs:?}");
    }
}
