//! A streaming reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`) that finds the byte
//! offsets of a few named struct members and nothing else.
//!
//! Why not aya's CO-RE: aya parses the whole BTF (5.5 MB, ~150,000 types) into memory, which
//! raised the agent's peak RSS by ~17 MB. This reads the file in 64 KiB chunks and keeps only
//! what the wanted members need: the string offsets of their names, the members of the wanted
//! structs, and the members of anonymous structs/unions that hold a wanted name or another
//! anonymous struct/union (recent kernels put `mm_struct`'s fields in one): a few KiB, plus the
//! two 64 KiB read buffers (~80 KiB of peak RSS measured).
//!
//! Format (kernel Documentation/bpf/btf.rst): a header (magic 0xeB9F, version, flags, hdr_len,
//! type_off, type_len, str_off, str_len; the offsets count from the end of the header), the type
//! section (records of 12 bytes `name_off, info, size|type` plus kind-specific data; ids count
//! from 1 in file order), and the string section (NUL-terminated names; `name_off` indexes it).
//! Only the host's byte order is read: the kernel's BTF always has it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: u32 = 24;
const CHUNK: usize = 64 * 1024;
/// Anonymous structs/unions nested deeper than this are not followed (a loop in a hostile file).
const MAX_DEPTH: u32 = 16;
/// Members kept at most (bounds memory on a hostile file; the kernel's BTF needs a few thousand).
const MAX_KEPT_MEMBERS: usize = 200_000;

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// Why the offsets could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not BTF in this machine's byte order ({detail})")]
    Format { path: PathBuf, detail: String },
    #[error(
        "{path}: kernel BTF has no member `{member}` in `struct {strukt}` (the kernel changed; \
         the exec tracer needs it)"
    )]
    MissingMember { path: PathBuf, strukt: String, member: String },
    #[error("{path}: `struct {strukt}`.{member} is a bitfield, not at a byte offset")]
    Bitfield { path: PathBuf, strukt: String, member: String },
}

/// One struct member kept: its name (an index into the wanted names; None: anonymous), the id
/// of its type, and its offset in bits.
#[derive(Debug, Clone, Copy)]
struct Member {
    name: Option<usize>,
    type_id: u32,
    bit_offset: u32,
}

/// The byte offset of each `(struct, member)` in `wanted`, from the BTF file at `path`; None
/// for a member the kernel does not have (the caller decides whether that is an error, see
/// [`BtfError::MissingMember`]). Members inside anonymous structs/unions are found too, with the
/// offsets added up.
pub fn member_offsets(path: &Path, wanted: &[(&str, &str)]) -> Result<Vec<Option<u32>>, BtfError> {
    let io_err = |source| BtfError::Io { path: path.to_owned(), source };
    let format = |detail: String| BtfError::Format { path: path.to_owned(), detail };

    // Every distinct name wanted, struct and member names alike.
    let mut names: Vec<&str> = Vec::new();
    for (s, m) in wanted {
        for n in [*s, *m] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }

    let mut file = BufReader::with_capacity(CHUNK, File::open(path).map_err(io_err)?);
    let mut hdr = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut hdr).map_err(|e| read_err(e, path, "header"))?;
    let magic = u16::from_ne_bytes([hdr[0], hdr[1]]);
    if magic != MAGIC {
        return Err(format(format!("magic {magic:#06x}, want {MAGIC:#06x}")));
    }
    let field = |i: usize| u32_ne(&hdr[i..i + 4]);
    let (hdr_len, type_off, type_len, str_off, str_len) =
        (field(4), field(8), field(12), field(16), field(20));
    if hdr_len < HEADER_LEN {
        return Err(format(format!("header length {hdr_len} < {HEADER_LEN}")));
    }
    let type_start = u64::from(hdr_len) + u64::from(type_off);
    let str_start = u64::from(hdr_len) + u64::from(str_off);

    // Strings first: the offsets at which the wanted names sit.
    file.seek(SeekFrom::Start(str_start)).map_err(io_err)?;
    let by_offset =
        name_offsets(&mut file, str_len, &names).map_err(|e| read_err(e, path, "string section"))?;

    // Then the types.
    file.seek(SeekFrom::Start(type_start)).map_err(io_err)?;
    let struct_names: Vec<usize> =
        wanted.iter().map(|(s, _)| names.iter().position(|n| n == s).unwrap_or(usize::MAX)).collect();
    let kept = scan_types(&mut file, type_len, &by_offset, &struct_names).map_err(|e| match e {
        ScanError::Io(e) => read_err(e, path, "type section"),
        ScanError::Format(d) => format(d),
    })?;

    wanted
        .iter()
        .zip(&struct_names)
        .map(|((strukt, member), sname)| {
            let member_idx = names.iter().position(|n| n == member).unwrap_or(usize::MAX);
            let Some(members) = kept.named.get(sname) else {
                return Err(BtfError::MissingMember {
                    path: path.to_owned(),
                    strukt: (*strukt).to_owned(),
                    member: (*member).to_owned(),
                });
            };
            match find(members, member_idx, &kept.anonymous, 0) {
                None => Ok(None),
                Some(bits) if bits % 8 != 0 => Err(BtfError::Bitfield {
                    path: path.to_owned(),
                    strukt: (*strukt).to_owned(),
                    member: (*member).to_owned(),
                }),
                Some(bits) => Ok(Some(bits / 8)),
            }
        })
        .collect()
}

fn read_err(e: io::Error, path: &Path, what: &str) -> BtfError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        BtfError::Format { path: path.to_owned(), detail: format!("{what} cut short (truncated file)") }
    } else {
        BtfError::Io { path: path.to_owned(), source: e }
    }
}

fn u32_ne(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// Streams `len` bytes of the string section; returns string offset → index in `names` for
/// every string equal to a wanted name.
fn name_offsets(r: &mut impl Read, len: u32, names: &[&str]) -> io::Result<HashMap<u32, usize>> {
    let longest = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut found = HashMap::new();
    // The string being read: its offset, and its bytes while it can still equal a name.
    let mut start = 0u32;
    let mut cur: Vec<u8> = Vec::with_capacity(longest + 1);
    let mut too_long = false;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u32;
    while pos < len {
        let n = usize::try_from(len - pos).unwrap_or(usize::MAX).min(CHUNK);
        r.read_exact(&mut buf[..n])?;
        for &b in &buf[..n] {
            if b == 0 {
                if !too_long && let Some(i) = names.iter().position(|w| w.as_bytes() == cur.as_slice()) {
                    found.insert(start, i);
                }
                cur.clear();
                too_long = false;
                start = pos + 1;
            } else if cur.len() < longest {
                cur.push(b);
            } else {
                too_long = true;
            }
            pos += 1;
        }
    }
    Ok(found)
}

enum ScanError {
    Io(io::Error),
    Format(String),
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        ScanError::Io(e)
    }
}

struct Kept {
    /// Wanted struct (index into the names) → its kept members; the first struct of that name
    /// with members (a forward declaration has none).
    named: HashMap<usize, Vec<Member>>,
    /// Anonymous struct/union type id → its kept members.
    anonymous: HashMap<u32, Vec<Member>>,
}

/// Streams `len` bytes of type records, keeping what [`find`] needs.
fn scan_types(
    r: &mut impl Read,
    len: u32,
    by_offset: &HashMap<u32, usize>,
    struct_names: &[usize],
) -> Result<Kept, ScanError> {
    let mut kept = Kept { named: HashMap::new(), anonymous: HashMap::new() };
    let mut kept_members = 0usize;
    let mut left = u64::from(len);
    let mut id = 0u32;
    let mut rec = [0u8; 12];
    while left > 0 {
        id = id.checked_add(1).ok_or_else(|| ScanError::Format("too many types".into()))?;
        take(&mut left, 12)?;
        r.read_exact(&mut rec)?;
        let (name_off, info) = (u32_ne(&rec[0..4]), u32_ne(&rec[4..8]));
        let vlen = info & 0xffff;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 == 1;
        let extra = match kind {
            KIND_STRUCT | KIND_UNION => {
                let name = if name_off == 0 { None } else { by_offset.get(&name_off).copied() };
                let wanted_struct = kind == KIND_STRUCT && name.is_some_and(|n| struct_names.contains(&n));
                let mut members = Vec::new();
                for _ in 0..vlen {
                    take(&mut left, 12)?;
                    r.read_exact(&mut rec)?;
                    let (m_name, m_type, mut m_off) =
                        (u32_ne(&rec[0..4]), u32_ne(&rec[4..8]), u32_ne(&rec[8..12]));
                    // With kind_flag the high 8 bits are a bitfield size.
                    if kind_flag {
                        m_off &= 0x00ff_ffff;
                    }
                    let m_name =
                        if m_name == 0 { Some(None) } else { by_offset.get(&m_name).map(|&i| Some(i)) };
                    if let Some(name) = m_name {
                        members.push(Member { name, type_id: m_type, bit_offset: m_off });
                    }
                }
                let keep = if wanted_struct {
                    name.is_some_and(|n| !kept.named.contains_key(&n)) && vlen > 0
                } else {
                    name_off == 0 && !members.is_empty()
                };
                if keep {
                    kept_members += members.len();
                    if kept_members > MAX_KEPT_MEMBERS {
                        return Err(ScanError::Format("too many anonymous struct members".into()));
                    }
                    match name {
                        Some(n) if wanted_struct => kept.named.insert(n, members),
                        _ => kept.anonymous.insert(id, members),
                    };
                }
                0
            }
            // int; var; decl_tag: one u32.
            1 | 14 | 17 => 4,
            // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag: nothing.
            2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
            3 => 12,                         // array
            6 | 13 => 8 * u64::from(vlen),   // enum values; func_proto params
            15 | 19 => 12 * u64::from(vlen), // datasec entries; enum64 values
            other => return Err(ScanError::Format(format!("type {id}: unknown kind {other}"))),
        };
        take(&mut left, extra)?;
        skip(r, extra)?;
    }
    Ok(kept)
}

/// Takes `n` bytes from what is left of the section, or says the record overruns it.
fn take(left: &mut u64, n: u64) -> Result<(), ScanError> {
    *left = left
        .checked_sub(n)
        .ok_or_else(|| ScanError::Format("a type record runs past the type section".into()))?;
    Ok(())
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
    if copied == n { Ok(()) } else { Err(io::ErrorKind::UnexpectedEof.into()) }
}

/// The bit offset of member `name` in `members`, looking into anonymous members too.
fn find(members: &[Member], name: usize, anonymous: &HashMap<u32, Vec<Member>>, depth: u32) -> Option<u32> {
    if let Some(m) = members.iter().find(|m| m.name == Some(name)) {
        return Some(m.bit_offset);
    }
    if depth >= MAX_DEPTH {
        return None;
    }
    members.iter().filter(|m| m.name.is_none()).find_map(|m| {
        let inner = anonymous.get(&m.type_id)?;
        find(inner, name, anonymous, depth + 1)?.checked_add(m.bit_offset)
    })
}
