//! A pure-Rust reader for capture files: classic pcap (micro- and nanosecond, either byte order)
//! and pcapng (section, interface and enhanced/simple packet blocks). No libpcap needed, so
//! `picket replay --format pcap` works on builds without it.
//!
//! The reader streams: one reusable buffer, one record at a time. A record longer than
//! [`MAX_RECORD`] or a block that does not fit its header is an error (a corrupt or hostile file
//! must not make us allocate gigabytes); a file cut short ends cleanly with
//! [`PcapReader::truncated`] set.

use std::io::{self, Read};

/// The largest record or block we accept (256 KiB: above any snaplen libpcap uses).
pub const MAX_RECORD: usize = 256 * 1024;

/// Errors reading a capture file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading the capture: {0}")]
    Io(#[from] io::Error),
    #[error("not a pcap or pcapng file (magic {0:#010x})")]
    BadMagic(u32),
    #[error("corrupt capture at byte {offset}: {why}")]
    Corrupt { offset: u64, why: &'static str },
}

/// One packet from the file.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_nanos: i64,
    /// The link type (`LINKTYPE_*`) of the interface it was captured on.
    pub linktype: u32,
    /// The captured bytes (at most the snaplen).
    pub data: &'a [u8],
    /// The length on the wire.
    pub orig_len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Classic pcap: big-endian?, nanosecond timestamps?, link type.
    Pcap { be: bool, nanos: bool, linktype: u32 },
    /// pcapng: byte order of the current section.
    PcapNg { be: bool },
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    /// Nanoseconds per timestamp unit (1000 for the default microseconds), or 0 with
    /// `ts_div` set for resolutions finer than a nanosecond.
    ts_mul: u64,
    ts_div: u64,
}

/// Streams records from a pcap or pcapng file.
#[derive(Debug)]
pub struct PcapReader<R: Read> {
    inner: R,
    format: Format,
    interfaces: Vec<Interface>,
    /// Read-ahead: records are served as slices of it, so a packet is copied once (kernel to here).
    buf: Vec<u8>,
    /// Unread bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
    eof: bool,
    offset: u64,
    truncated: bool,
}

/// Read-ahead size: big reads, few syscalls.
const CHUNK: usize = 1024 * 1024;

fn u16_at(b: &[u8], at: usize, be: bool) -> u16 {
    let a = [b[at], b[at + 1]];
    if be { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) }
}

fn u32_at(b: &[u8], at: usize, be: bool) -> u32 {
    let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if be { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl<R: Read> PcapReader<R> {
    /// Read the file header and detect the format.
    pub fn new(inner: R) -> Result<PcapReader<R>, FileError> {
        let mut me = PcapReader {
            inner,
            format: Format::PcapNg { be: false },
            interfaces: Vec::new(),
            buf: vec![0; CHUNK + MAX_RECORD],
            pos: 0,
            end: 0,
            eof: false,
            offset: 4,
            truncated: false,
        };
        if !me.fill(4)? {
            return Err(FileError::BadMagic(0));
        }
        let m = u32::from_le_bytes([me.buf[0], me.buf[1], me.buf[2], me.buf[3]]);
        me.pos = 4;
        match m {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                let be = matches!(m, 0xd4c3_b2a1 | 0x4d3c_b2a1);
                let nanos = matches!(m, 0xa1b2_3c4d | 0x4d3c_b2a1);
                if !me.fill(20)? {
                    return Err(FileError::Corrupt { offset: 4, why: "file header cut short" });
                }
                let hdr: [u8; 20] = me.buf[me.pos..me.pos + 20].try_into().unwrap_or([0; 20]);
                me.pos += 20;
                me.offset = 24;
                // The link type is the low 16 bits; the high bits carry FCS information.
                let linktype = u32_at(&hdr, 16, be) & 0xffff;
                me.format = Format::Pcap { be, nanos, linktype };
            }
            0x0a0d_0d0a => {
                me.read_shb_rest()?;
            }
            other => return Err(FileError::BadMagic(other)),
        }
        Ok(me)
    }

    /// Whether the file ended in the middle of a record (the partial record was skipped).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The link type of a classic pcap file, or of the first pcapng interface seen so far.
    pub fn linktype(&self) -> Option<u32> {
        match self.format {
            Format::Pcap { linktype, .. } => Some(linktype),
            Format::PcapNg { .. } => self.interfaces.first().map(|i| i.linktype),
        }
    }

    /// After the 4-byte block type of a section header block: byte order, length, body.
    fn read_shb_rest(&mut self) -> Result<(), FileError> {
        if !self.fill(8)? {
            return Err(FileError::Corrupt { offset: self.offset, why: "section header cut short" });
        }
        let hdr: [u8; 8] = self.buf[self.pos..self.pos + 8].try_into().unwrap_or([0; 8]);
        self.pos += 8;
        let be = match u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) {
            0x1a2b_3c4d => false,
            0x4d3c_2b1a => true,
            _ => return Err(FileError::Corrupt { offset: self.offset, why: "bad byte-order magic" }),
        };
        let len = u32_at(&hdr, 0, be) as usize;
        if !(28..=MAX_RECORD).contains(&len) || !len.is_multiple_of(4) {
            return Err(FileError::Corrupt { offset: self.offset, why: "bad section header length" });
        }
        if self.fill(len - 12)? {
            self.pos += len - 12;
        } else {
            self.truncated = true;
            self.pos = self.end;
        }
        self.offset += len as u64 - 4;
        self.format = Format::PcapNg { be };
        self.interfaces.clear();
        Ok(())
    }

    /// The next packet, or `None` at the end of the file.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Record<'_>>, FileError> {
        match self.format {
            Format::Pcap { be, nanos, linktype } => self.next_pcap(be, nanos, linktype),
            Format::PcapNg { .. } => self.next_pcapng(),
        }
    }

    /// Make at least `n` (at most [`MAX_RECORD`]) unread bytes available; false at the end of
    /// the file before that.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.end - self.pos >= n {
            return Ok(true);
        }
        if self.pos + n > self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        while self.end - self.pos < n {
            if self.eof {
                return Ok(false);
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The file ends inside a record: note it and consume the rest.
    fn cut_short(&mut self) -> Result<Option<Record<'_>>, FileError> {
        if self.end > self.pos {
            self.truncated = true;
        }
        self.pos = self.end;
        Ok(None)
    }

    fn next_pcap(&mut self, be: bool, nanos: bool, linktype: u32) -> Result<Option<Record<'_>>, FileError> {
        if !self.fill(16)? {
            return self.cut_short();
        }
        let at = self.pos;
        let sec = u64::from(u32_at(&self.buf, at, be));
        let frac = u64::from(u32_at(&self.buf, at + 4, be));
        let caplen = u32_at(&self.buf, at + 8, be) as usize;
        let orig_len = u32_at(&self.buf, at + 12, be);
        if caplen > MAX_RECORD {
            return Err(FileError::Corrupt { offset: self.offset, why: "record longer than 256 KiB" });
        }
        if !self.fill(16 + caplen)? {
            return self.cut_short();
        }
        let start = self.pos + 16;
        self.pos = start + caplen;
        self.offset += 16 + caplen as u64;
        let ts = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        Ok(Some(Record { ts_nanos: to_i64(ts), linktype, data: &self.buf[start..start + caplen], orig_len }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Record<'_>>, FileError> {
        loop {
            let be = match self.format {
                Format::PcapNg { be } => be,
                Format::Pcap { .. } => return Ok(None),
            };
            if !self.fill(8)? {
                return self.cut_short();
            }
            let block_type = u32_at(&self.buf, self.pos, be);
            if block_type == 0x0a0d_0d0a {
                // A new section: its byte order may differ from the last one's.
                if !self.fill(12)? {
                    return self.cut_short();
                }
                let p = self.pos;
                let be = match u32::from_le_bytes([
                    self.buf[p + 8],
                    self.buf[p + 9],
                    self.buf[p + 10],
                    self.buf[p + 11],
                ]) {
                    0x1a2b_3c4d => false,
                    0x4d3c_2b1a => true,
                    _ => return Err(FileError::Corrupt { offset: self.offset, why: "bad byte-order magic" }),
                };
                let len = u32_at(&self.buf, p + 4, be) as usize;
                if !(28..=MAX_RECORD).contains(&len) || !len.is_multiple_of(4) {
                    return Err(FileError::Corrupt { offset: self.offset, why: "bad section header length" });
                }
                if !self.fill(len)? {
                    return self.cut_short();
                }
                self.pos += len;
                self.offset += len as u64;
                self.format = Format::PcapNg { be };
                self.interfaces.clear();
                continue;
            }
            let len = u32_at(&self.buf, self.pos + 4, be) as usize;
            if !(12..=MAX_RECORD).contains(&len) || !len.is_multiple_of(4) {
                return Err(FileError::Corrupt { offset: self.offset, why: "bad block length" });
            }
            if !self.fill(len)? {
                return self.cut_short();
            }
            let block_offset = self.offset;
            self.offset += len as u64;
            let b = self.pos + 8; // body start
            let body_len = len - 12; // without the header and the trailing length
            self.pos += len;
            match block_type {
                // Interface description block.
                1 => {
                    if body_len < 8 {
                        return Err(FileError::Corrupt {
                            offset: block_offset,
                            why: "short interface block",
                        });
                    }
                    let linktype = u32::from(u16_at(&self.buf, b, be));
                    let (ts_mul, ts_div) = if_tsresol(&self.buf[b + 8..b + body_len], be);
                    self.interfaces.push(Interface { linktype, ts_mul, ts_div });
                }
                // Enhanced packet block.
                6 => {
                    if body_len < 20 {
                        return Err(FileError::Corrupt { offset: block_offset, why: "short packet block" });
                    }
                    let ifid = u32_at(&self.buf, b, be) as usize;
                    let Some(iface) = self.interfaces.get(ifid).copied() else {
                        return Err(FileError::Corrupt {
                            offset: block_offset,
                            why: "packet of an unknown interface",
                        });
                    };
                    let ts = (u64::from(u32_at(&self.buf, b + 4, be)) << 32)
                        | u64::from(u32_at(&self.buf, b + 8, be));
                    let caplen = u32_at(&self.buf, b + 12, be) as usize;
                    let orig_len = u32_at(&self.buf, b + 16, be);
                    if caplen > body_len - 20 {
                        return Err(FileError::Corrupt {
                            offset: block_offset,
                            why: "packet longer than its block",
                        });
                    }
                    let ts_nanos =
                        ts.checked_div(iface.ts_div).unwrap_or_else(|| ts.saturating_mul(iface.ts_mul));
                    return Ok(Some(Record {
                        ts_nanos: to_i64(ts_nanos),
                        linktype: iface.linktype,
                        data: &self.buf[b + 20..b + 20 + caplen],
                        orig_len,
                    }));
                }
                // Simple packet block: interface 0, no timestamp.
                3 => {
                    if body_len < 4 {
                        return Err(FileError::Corrupt { offset: block_offset, why: "short packet block" });
                    }
                    let Some(iface) = self.interfaces.first().copied() else {
                        return Err(FileError::Corrupt {
                            offset: block_offset,
                            why: "packet before any interface",
                        });
                    };
                    let orig_len = u32_at(&self.buf, b, be);
                    let caplen = (orig_len as usize).min(body_len - 4);
                    return Ok(Some(Record {
                        ts_nanos: 0,
                        linktype: iface.linktype,
                        data: &self.buf[b + 4..b + 4 + caplen],
                        orig_len,
                    }));
                }
                // Name resolution, statistics, custom, ...: skipped.
                _ => {}
            }
        }
    }
}

/// The `if_tsresol` option of an interface block: (nanoseconds per unit, or units per nanosecond).
fn if_tsresol(mut opts: &[u8], be: bool) -> (u64, u64) {
    while opts.len() >= 4 {
        let code = u16_at(opts, 0, be);
        let len = usize::from(u16_at(opts, 2, be));
        let padded = len.div_ceil(4) * 4;
        if code == 0 || opts.len() < 4 + padded {
            break;
        }
        if code == 9 && len >= 1 {
            let v = opts[4];
            let exp = u32::from(v & 0x7f);
            if v & 0x80 == 0 {
                // 10^-exp seconds per unit.
                return match exp {
                    0..=9 => (10u64.pow(9 - exp), 0),
                    10..=19 => (0, 10u64.pow(exp - 9)),
                    _ => (1, 0),
                };
            }
            // 2^-exp seconds per unit.
            return match exp {
                0..=29 => ((1_000_000_000u64 >> exp).max(1), 0),
                30..=63 => (0, (1u64 << exp) / 1_000_000_000),
                _ => (1, 0),
            };
        }
        opts = &opts[4 + padded..];
    }
    (1000, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap_file(be: bool, nanos: bool, linktype: u32, packets: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut f = Vec::new();
        f.extend(w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        f.extend(w16(2));
        f.extend(w16(4));
        f.extend(w32(0));
        f.extend(w32(0));
        f.extend(w32(65535));
        f.extend(w32(linktype));
        for (s, frac, data) in packets {
            f.extend(w32(*s));
            f.extend(w32(*frac));
            f.extend(w32(u32::try_from(data.len()).unwrap()));
            f.extend(w32(u32::try_from(data.len()).unwrap()));
            f.extend(*data);
        }
        f
    }

    #[test]
    fn reads_classic_pcap_in_both_byte_orders_and_resolutions() {
        for be in [false, true] {
            for nanos in [false, true] {
                let f = pcap_file(be, nanos, 1, &[(10, 5, b"abc"), (11, 0, b"")]);
                let mut r = PcapReader::new(&f[..]).unwrap();
                assert_eq!(r.linktype(), Some(1));
                let a = r.next().unwrap().unwrap();
                assert_eq!(a.data, b"abc");
                assert_eq!(a.ts_nanos, 10_000_000_000 + if nanos { 5 } else { 5000 });
                let b = r.next().unwrap().unwrap();
                assert_eq!(b.data, b"");
                assert!(r.next().unwrap().is_none());
                assert!(!r.truncated());
            }
        }
    }

    #[test]
    fn a_file_cut_short_ends_cleanly_and_says_so() {
        let f = pcap_file(false, false, 1, &[(10, 5, b"abcdef")]);
        let mut r = PcapReader::new(&f[..f.len() - 2]).unwrap();
        assert!(r.next().unwrap().is_none());
        assert!(r.truncated());
    }

    #[test]
    fn a_huge_record_length_is_an_error_not_an_allocation() {
        let mut f = pcap_file(false, false, 1, &[(10, 5, b"abc")]);
        f[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = PcapReader::new(&f[..]).unwrap();
        assert!(matches!(r.next(), Err(FileError::Corrupt { .. })));
    }

    #[test]
    fn reads_pcapng_with_interface_resolution() {
        let mut f = Vec::new();
        // SHB, 28 bytes.
        f.extend(0x0a0d_0d0au32.to_le_bytes());
        f.extend(28u32.to_le_bytes());
        f.extend(0x1a2b_3c4du32.to_le_bytes());
        f.extend(1u16.to_le_bytes());
        f.extend(0u16.to_le_bytes());
        f.extend(u64::MAX.to_le_bytes());
        f.extend(28u32.to_le_bytes());
        // IDB with if_tsresol = 9 (nanoseconds): 20 + 8 option + 4 end option = 32.
        f.extend(1u32.to_le_bytes());
        f.extend(32u32.to_le_bytes());
        f.extend(113u16.to_le_bytes());
        f.extend(0u16.to_le_bytes());
        f.extend(0u32.to_le_bytes());
        f.extend(9u16.to_le_bytes());
        f.extend(1u16.to_le_bytes());
        f.extend([9u8, 0, 0, 0]);
        f.extend(0u32.to_le_bytes());
        f.extend(32u32.to_le_bytes());
        // EPB with 5 bytes of data padded to 8: 32 + 8 = 40.
        f.extend(6u32.to_le_bytes());
        f.extend(40u32.to_le_bytes());
        f.extend(0u32.to_le_bytes());
        f.extend(0u32.to_le_bytes());
        f.extend(1234u32.to_le_bytes());
        f.extend(5u32.to_le_bytes());
        f.extend(5u32.to_le_bytes());
        f.extend(b"hello\0\0\0");
        f.extend(40u32.to_le_bytes());
        let mut r = PcapReader::new(&f[..]).unwrap();
        let rec = r.next().unwrap().unwrap();
        assert_eq!(rec.linktype, 113);
        assert_eq!(rec.ts_nanos, 1234);
        assert_eq!(rec.data, b"hello");
        assert!(r.next().unwrap().is_none());
    }

    #[test]
    fn rejects_what_is_not_a_capture() {
        assert!(matches!(PcapReader::new(&b"GET / HTTP/1.1\r\n"[..]), Err(FileError::BadMagic(_))));
        assert!(matches!(PcapReader::new(&b""[..]), Err(FileError::BadMagic(0))));
    }
}
