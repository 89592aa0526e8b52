//! The streaming BTF reader (src/btf.rs): against aya's own BTF parse of the running kernel, on
//! hand-made BTF with members nested in anonymous structs/unions, and on hostile files.

use std::path::Path;

use picket_ebpf::btf::{BtfError, member_offsets};

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Every member the exec tracer reads has the offset aya's CO-RE relocation gives it: the
/// functions of bpf/core_offsets.bpf.c return each offset as a CO-RE relocation, and aya-obj
/// resolves those against the kernel BTF as parsed by aya (`Btf::from_sys_fs`).
#[test]
fn offsets_match_aya_core_relocations() {
    if !Path::new(VMLINUX).exists() {
        eprintln!("\n!!!!! *** SKIPPED (no {VMLINUX}: kernel without BTF) ***\n");
        return;
    }
    #[cfg(not(picket_ebpf_object))]
    {
        eprintln!("\n!!!!! *** SKIPPED (built without clang: no CO-RE reference object) ***\n");
    }
    #[cfg(picket_ebpf_object)]
    {
        let object = std::fs::read(concat!(env!("OUT_DIR"), "/core_offsets.bpf.o")).unwrap();
        let mut obj = aya_obj::Object::parse(&object).unwrap();
        let kernel = aya::Btf::from_sys_fs().unwrap();
        obj.relocate_btf(&kernel).unwrap();

        let wanted: Vec<(&str, &str)> =
            picket_ebpf::KERNEL_MEMBERS.iter().map(|(_, s, m, _)| (*s, *m)).collect();
        let ours = member_offsets(Path::new(VMLINUX), &wanted).unwrap();
        for ((strukt, member), ours) in wanted.iter().zip(ours) {
            let name = format!("{strukt}__{member}");
            let prog = obj.programs.get(&name).unwrap_or_else(|| panic!("no {name} in the object"));
            let insns = &obj.functions[&prog.function_key()].instructions;
            // `r0 = offset; exit`: the relocated immediate is the offset.
            assert_eq!(insns.len(), 2, "{name}: {insns:?}");
            let aya = u32::try_from(insns[0].imm).unwrap();
            eprintln!("{strukt}.{member}: {ours:?} (aya {aya})");
            assert_eq!(ours, Some(aya), "{strukt}.{member}");
        }
    }
}

/// A member the kernel does not have is None; a struct it does not have is an error naming it.
#[test]
fn missing_members_and_structs() {
    if !Path::new(VMLINUX).exists() {
        eprintln!("\n!!!!! *** SKIPPED (no {VMLINUX}: kernel without BTF) ***\n");
        return;
    }
    let got =
        member_offsets(Path::new(VMLINUX), &[("task_struct", "no_such_member"), ("task_struct", "pid")])
            .unwrap();
    assert_eq!(got[0], None);
    assert!(got[1].is_some());
    let e = member_offsets(Path::new(VMLINUX), &[("no_such_struct_xyz", "pid")]).unwrap_err();
    assert!(e.to_string().contains("no_such_struct_xyz"), "{e}");
}

/// Builds BTF: types as (name, kind, kind_flag, size, members (name, type, bit offset)).
struct Builder {
    strings: Vec<u8>,
    types: Vec<u8>,
}

impl Builder {
    fn new() -> Self {
        Builder { strings: vec![0], types: Vec::new() }
    }

    fn string(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = u32::try_from(self.strings.len()).unwrap();
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn push(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_ne_bytes());
        }
    }

    /// Kind 4 (struct) or 5 (union).
    fn composite(&mut self, name: &str, kind: u32, kind_flag: bool, members: &[(&str, u32, u32)]) {
        let name = self.string(name);
        let vlen = u32::try_from(members.len()).unwrap();
        self.push(&[name, vlen | kind << 24 | u32::from(kind_flag) << 31, 64]);
        for (m, ty, off) in members {
            let m = self.string(m);
            self.push(&[m, *ty, *off]);
        }
    }

    fn int(&mut self) {
        let name = self.string("int");
        self.push(&[name, 1 << 24, 4, 32]);
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0xeb9fu16.to_ne_bytes());
        b.extend_from_slice(&[1, 0]);
        let tl = u32::try_from(self.types.len()).unwrap();
        let sl = u32::try_from(self.strings.len()).unwrap();
        for w in [24u32, 0, tl, tl, sl] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b.extend_from_slice(&self.types);
        b.extend_from_slice(&self.strings);
        b
    }
}

fn sample() -> Vec<u8> {
    let mut b = Builder::new();
    b.int(); // id 1
    // id 2: anonymous union { int deep; } placed in id 3 at bit 64.
    b.composite("", 5, false, &[("deep", 1, 0)]);
    // id 3: anonymous struct { int arg_start @32; union {deep} @64 }.
    b.composite("", 4, false, &[("arg_start", 1, 32), ("", 2, 64)]);
    // id 4: a struct of another name with the same member names: ignored.
    b.composite("other", 4, false, &[("pid", 1, 800)]);
    // id 5: the wanted struct; kind_flag: a bitfield size in the high 8 bits of offsets.
    b.composite("mm_struct", 4, true, &[("pid", 1, 3 << 24 | 96), ("", 3, 128), ("bits", 1, 5 << 24 | 3)]);
    b.bytes()
}

fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    f
}

/// Members inside anonymous structs/unions, offsets added up; kind_flag offsets masked.
#[test]
fn nested_anonymous_members() {
    let f = write(&sample());
    let got = member_offsets(
        f.path(),
        &[("mm_struct", "pid"), ("mm_struct", "arg_start"), ("mm_struct", "deep"), ("mm_struct", "nope")],
    )
    .unwrap();
    assert_eq!(got, [Some(12), Some(20), Some(24), None]);
    let e = member_offsets(f.path(), &[("mm_struct", "bits")]).unwrap_err();
    assert!(matches!(e, BtfError::Bitfield { .. }), "{e}");
}

/// Truncated, garbage, empty and wrong-magic files are errors, never a panic.
#[test]
fn hostile_files_are_errors() {
    let good = sample();
    let want = [("mm_struct", "pid")];
    for cut in 0..good.len() {
        let f = write(&good[..cut]);
        // A cut inside the string section can still find the struct (names before the cut).
        if let Err(e) = member_offsets(f.path(), &want) {
            assert!(!e.to_string().is_empty());
        }
    }
    // Every 4-byte word of the file, set to garbage: error or an answer, never a panic or hang.
    for at in (0..good.len() - 3).step_by(4) {
        for garbage in [0xffff_ffffu32, 0x8000_0000, 0x1f00_ffff] {
            let mut b = good.clone();
            b[at..at + 4].copy_from_slice(&garbage.to_ne_bytes());
            let f = write(&b);
            let _ = member_offsets(f.path(), &want);
        }
    }
    for bad in [&b""[..], b"\x9f\xeb", &[0x55; 100][..]] {
        let f = write(bad);
        assert!(member_offsets(f.path(), &want).is_err(), "{bad:?}");
    }
    // A self-referencing anonymous struct does not loop.
    let mut b = Builder::new();
    b.composite("", 4, false, &[("", 1, 0)]);
    b.composite("mm_struct", 4, false, &[("", 1, 0)]);
    let f = write(&b.bytes());
    assert_eq!(member_offsets(f.path(), &want).unwrap(), [None]);
    let e = member_offsets(Path::new("/nonexistent/btf"), &want).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/btf"), "{e}");
}
