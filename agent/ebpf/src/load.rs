//! Loads exec.bpf.o without aya's `EbpfLoader`: its constructor parses the whole kernel BTF
//! (`Btf::from_sys_fs`, ~17 MB of peak memory) even when relocations do not need it, and aya
//! 0.14 has no way to skip that. aya-obj still parses the ELF object and applies the map
//! relocations, and aya still creates the maps (`MapData::create`) and reads the ring buffer;
//! only the three steps aya keeps private are done here with the bpf(2) system call: writing a
//! global data section into its map, loading the program and attaching it to the raw
//! tracepoint (plus reading its run-time statistics).

// The bpf(2) calls and taking ownership of the fds they return; the rest of the crate is safe.
#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya::maps::MapData;
use aya_obj::generated::{bpf_insn, bpf_prog_info};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
/// A failed step: what was being done, and why.
pub(crate) type Failure = (&'static str, BoxError);

const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_int = 17;
const BPF_MAP_FREEZE: libc::c_int = 22;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
/// The verifier log asked for when a load failed, to say why (the end of it is kept).
const VERIFIER_LOG_BYTES: usize = 256 * 1024;
const VERIFIER_LOG_KEPT: usize = 4096;

/// The program, loaded and attached, and the maps user space reads.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) prog: OwnedFd,
    /// Closing it detaches the program.
    pub(crate) link: OwnedFd,
    pub(crate) maps: HashMap<String, MapData>,
}

/// Parses `object`, sets its `u32` globals, creates its maps (`max_entries` overrides by map
/// name), loads program `program` as a raw tracepoint program (retrying a load interrupted with
/// EAGAIN up to `attempts` times) and attaches it to raw tracepoint `tracepoint`.
pub(crate) fn load(
    object: &[u8],
    globals: &[(&str, u32)],
    max_entries: &[(&str, u32)],
    program: &str,
    tracepoint: &CStr,
    attempts: u32,
) -> Result<Loaded, Failure> {
    let stage = "loading the object (maps, relocations)";
    let mut obj = aya_obj::Object::parse(object).map_err(|e| (stage, e.into()))?;
    let bytes: Vec<[u8; 4]> = globals.iter().map(|(_, v)| v.to_ne_bytes()).collect();
    let patch = globals.iter().zip(&bytes).map(|((name, _), b)| (*name, (&b[..], true))).collect();
    obj.patch_map_data(patch).map_err(|e| (stage, e.into()))?;

    // Each map: created by aya; a global data section gets its bytes, read-only ones are then
    // frozen (as libbpf and aya do). A copy of each definition is kept for the relocations.
    let mut maps = HashMap::new();
    let mut defs = Vec::new();
    for (name, mut def) in obj.maps.drain() {
        if let Some((_, n)) = max_entries.iter().find(|(m, _)| *m == name) {
            def.set_max_entries(*n);
        }
        // No BTF is loaded for the object (aya would), so the maps carry no BTF type ids: the
        // kernel uses those only to pretty-print map contents.
        if let aya_obj::Map::Btf(m) = &mut def {
            m.def.btf_key_type_id = 0;
            m.def.btf_value_type_id = 0;
        }
        defs.push((name.clone(), def.clone()));
        let data = def.data().to_vec();
        let map = MapData::create(def, &name, None).map_err(|e| ("creating the maps", e.into()))?;
        if !data.is_empty() {
            map_update(map.fd().as_fd(), &data).map_err(|e| ("writing global data", e.into()))?;
            if name.starts_with(".rodata") {
                map_freeze(map.fd().as_fd()).map_err(|e| ("freezing global data", e.into()))?;
            }
        }
        maps.insert(name, map);
    }
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(
        defs.iter().map(|(name, def)| (name.as_str(), maps[name].fd().as_fd().as_raw_fd(), def)),
        &text_sections,
    )
    .map_err(|e| (stage, e.into()))?;
    obj.relocate_calls(&text_sections).map_err(|e| (stage, e.into()))?;

    let prog_obj = obj
        .programs
        .get(program)
        .ok_or_else(|| ("finding the program", format!("no {program} in the object").into()))?;
    let function = obj
        .functions
        .get(&prog_obj.function_key())
        .ok_or_else(|| ("finding the program", format!("no code for {program}").into()))?;
    let name = CString::new(program).map_err(|e| ("finding the program", e.into()))?;
    let mut attempt = 1;
    let prog = loop {
        match prog_load(&function.instructions, &prog_obj.license, &name, None) {
            Ok(fd) => break fd,
            // The verifier gives up with EAGAIN when a signal arrives for the loading thread (a
            // child exiting, say); libbpf retries such loads too.
            Err(e) if attempt < attempts && e.raw_os_error() == Some(libc::EAGAIN) => attempt += 1,
            Err(error) => {
                let mut log = vec![0u8; VERIFIER_LOG_BYTES];
                let _ = prog_load(&function.instructions, &prog_obj.license, &name, Some(&mut log));
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[end.saturating_sub(VERIFIER_LOG_KEPT)..end]);
                return Err((
                    "loading the program (verifier)",
                    Box::new(VerifierError { error, log: text.trim().to_owned() }),
                ));
            }
        }
    };
    let link = raw_tracepoint_open(tracepoint, prog.as_fd())
        .map_err(|e| ("attaching to raw tracepoint sched_process_exec", e.into()))?;
    Ok(Loaded { prog, link, maps })
}

/// The program's run count and run time in ns (counted only while BPF statistics are on).
pub(crate) fn run_stats(prog: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // Room for the kernel's whole struct, whatever its version: it fills what it has.
    let mut info = [0u64; 64];
    let len = u32::try_from(size_of::<bpf_prog_info>().min(size_of_val(&info))).unwrap_or(0);
    let mut attr = InfoAttr { bpf_fd: fd_u32(prog), info_len: len, info: info.as_mut_ptr() as u64 };
    // SAFETY: `info` is a live, writable buffer of at least `info_len` bytes for the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &raw mut attr, size_of::<InfoAttr>()) }?;
    let at = |off: usize| info.get(off / 8).copied().unwrap_or(0);
    Ok((
        at(std::mem::offset_of!(bpf_prog_info, run_cnt)),
        at(std::mem::offset_of!(bpf_prog_info, run_time_ns)),
    ))
}

/// A verifier refusal: the errno, and the end of the verifier's log.
#[derive(Debug)]
struct VerifierError {
    error: io::Error,
    log: String,
}

impl fmt::Display for VerifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; verifier log: {}", self.error, self.log)
    }
}

impl std::error::Error for VerifierError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

// The bpf(2) attributes used, as the kernel lays them out (include/uapi/linux/bpf.h, union
// bpf_attr). The kernel takes a shorter attr than its own and zero-fills the rest.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

#[repr(C)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    pad: u32,
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct MapFdAttr {
    map_fd: u32,
    pad: u32,
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // A valid fd is never negative.
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

fn prog_load(insns: &[bpf_insn], license: &CStr, name: &CStr, log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    let mut prog_name = [0u8; 16];
    // At most 15 bytes and a NUL (BPF_OBJ_NAME_LEN).
    for (d, s) in prog_name.iter_mut().take(15).zip(name.to_bytes()) {
        *d = *s;
    }
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, u32::try_from(buf.len()).unwrap_or(u32::MAX), buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
    };
    // SAFETY: the kernel reads `insn_cnt` instructions and the NUL-terminated license through
    // pointers to live borrowed data, and writes at most `log_size` bytes into the live log
    // buffer; all outlive the call.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &raw mut attr, size_of::<ProgLoadAttr>()) }?;
    owned(fd)
}

fn raw_tracepoint_open(name: &CStr, prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut attr = RawTracepointAttr { name: name.as_ptr() as u64, prog_fd: fd_u32(prog), pad: 0 };
    // SAFETY: the kernel reads the NUL-terminated name through a pointer to borrowed data.
    let fd = unsafe { bpf(BPF_RAW_TRACEPOINT_OPEN, &raw mut attr, size_of::<RawTracepointAttr>()) }?;
    owned(fd)
}

/// Writes element 0 of an array map (a global data section is a one-element array).
fn map_update(map: BorrowedFd<'_>, value: &[u8]) -> io::Result<()> {
    let key = 0u32;
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map),
        pad: 0,
        key: (&raw const key) as u64,
        value: value.as_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the kernel reads the map's key size (4) from `key` and its value size from
    // `value`, which is the section's data, exactly the map's value size (aya-obj made the map
    // from it); both live through the call.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &raw mut attr, size_of::<MapElemAttr>()) }?;
    Ok(())
}

fn map_freeze(map: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = MapFdAttr { map_fd: fd_u32(map), pad: 0 };
    // SAFETY: no pointers in the attr.
    unsafe { bpf(BPF_MAP_FREEZE, &raw mut attr, size_of::<MapFdAttr>()) }?;
    Ok(())
}

fn owned(fd: i64) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this fd for a new object; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The bpf(2) system call.
///
/// # Safety
/// `attr` must point to a live attr of `size` bytes for command `cmd`, and every pointer in it
/// must be valid for what the kernel does with it for that command.
unsafe fn bpf<T>(cmd: libc::c_int, attr: *mut T, size: usize) -> io::Result<i64> {
    // The kernel takes `int cmd, union bpf_attr *attr, unsigned int size`.
    let size = libc::c_uint::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: per this function's contract.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // c_long is i32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let r = i64::from(r);
    Ok(r)
}
