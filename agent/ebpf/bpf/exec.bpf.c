// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
// picket exec tracer: one record per successful execve/execveat, with the filename exactly as
// the kernel got it (bprm->filename: symlinks not followed, relative paths as passed) and the raw
// argv block of the new program. Built by agent/ebpf/build.rs with
// `clang -O2 -g -target bpfel|bpfeb -c`; loaded by src/load.rs with the kernel's struct offsets
// (src/btf.rs) in the `off_*` globals.
//
// No system headers (a BPF target has no libc and linux/bpf.h pulls arch headers): the few
// types and helper ids used are declared here. Helper ids are the kernel's
// stable UAPI numbers (include/uapi/linux/bpf.h, __BPF_FUNC_MAPPER).
//
// Hook: raw_tracepoint/sched_process_exec, TP_PROTO(struct task_struct *p, pid_t old_pid,
// struct linux_binprm *bprm). It fires in exec_binprm() after the new program is set up and
// before the process returns to user space, so even a process that exits at once is seen; a
// raw tracepoint needs no tracefs mount (the classic tracepoint does) and no BPF trampoline
// (tp_btf/fentry, refused in some VMs).
//
// The record layout must match src/lib.rs (parse_record).

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

enum {
  BPF_MAP_TYPE_PERCPU_ARRAY = 6,
  BPF_MAP_TYPE_RINGBUF = 27,
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)112;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *unsafe_ptr) =
    (void *)115;
static __u64 (*bpf_ktime_get_boot_ns)(void) = (void *)125;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) =
    (void *)130;

// Kernel struct offsets: no CO-RE (aya would parse the whole 5.5 MB kernel BTF for it, ~17 MB of
// peak memory). src/btf.rs streams /sys/kernel/btf/vmlinux for the byte offsets of exactly the
// members read below (by name, also inside anonymous structs/unions), and the loader writes them
// into these read-only globals before load; `volatile` so clang does not fold the placeholders.
// The members' types are fixed here, as they have been in the kernel for years: pid/tgid s32,
// pointers, arg_start/arg_end unsigned long (64-bit kernels only), euid a kuid_t (one u32),
// start_boottime u64.
#define NO_OFFSET 0xffffffffu
volatile const __u32 off_bprm_filename = 0;
volatile const __u32 off_task_pid = 0;
volatile const __u32 off_task_tgid = 0;
volatile const __u32 off_task_real_parent = 0;
volatile const __u32 off_task_mm = 0;
volatile const __u32 off_task_cred = 0;
volatile const __u32 off_task_start_boottime = NO_OFFSET; // NO_OFFSET: not in this kernel
volatile const __u32 off_mm_arg_start = 0;
volatile const __u32 off_mm_arg_end = 0;
volatile const __u32 off_cred_euid = 0;

// Reads the field at byte `off` of the kernel object at `base` into `dst`.
#define read_field(dst, base, off)                                                              \
  bpf_probe_read_kernel(&(dst), sizeof(dst), (const char *)(base) + (off))

struct bpf_raw_tracepoint_args {
  __u64 args[0];
};

// Sizes: FILENAME_MAX_LEN is PATH_MAX (getname() refuses longer paths, so only a kernel-made
// "/dev/fd/N/..." name of an execveat can be longer); ARGV_BUF bounds the argv copy, and the
// rodata `argv_cap` (set by the loader, at most ARGV_BUF) the bytes actually sent.
#define FILENAME_MAX_LEN 4096
#define ARGV_BUF 16384

#define FLAG_FILENAME_TRUNCATED 1
#define FLAG_ARGV_TRUNCATED 2
#define FLAG_FILENAME_FAULT 4
#define FLAG_ARGV_FAULT 8

struct exec_hdr {
  __u64 boot_ns;       // bpf_ktime_get_boot_ns(): CLOCK_BOOTTIME at the exec
  __u64 mono_ns;       // bpf_ktime_get_ns(): CLOCK_MONOTONIC at the exec (cn_proc's clock)
  __u64 start_boot_ns; // task->start_boottime: the fork, as /proc/PID/stat field 22 (0: unknown)
  __u32 pid;           // tgid
  __u32 tid;
  __u32 ppid; // real_parent->tgid
  __u32 uid;  // real uid
  __u32 euid;
  __u32 flags;
  __u32 filename_len; // bytes following the header, no NUL
  __u32 argv_len;     // bytes following the filename: the NUL-separated argv block
  __u64 argv_total;   // arg_end - arg_start: the full argv size before the cap
};

struct scratch {
  struct exec_hdr hdr;
  char data[FILENAME_MAX_LEN + ARGV_BUF];
};

// Per-CPU scratch: a record is built here (too big for the 512-byte stack) and copied into the
// ring buffer with its real size, so a short exec costs ~100 bytes of ring, not 20 KiB.
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct scratch);
} scratch SEC(".maps");

// Size set by the loader (ExecTracerOptions::ring_bytes).
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} events SEC(".maps");

// Records the ring buffer had no room for (index 0), per CPU; summed by user space.
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} lost SEC(".maps");

// Set by the loader before load; volatile so clang does not fold the default.
volatile const __u32 argv_cap = 4096;

SEC("raw_tracepoint/sched_process_exec")
int picket_exec(struct bpf_raw_tracepoint_args *ctx) {
  __u32 zero = 0;
  struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
  if (!s)
    return 0;

  const void *task = (const void *)ctx->args[0];
  const void *bprm = (const void *)ctx->args[2];

  __s32 pid = 0, tid = 0, ppid = 0;
  const void *parent = 0;
  read_field(pid, task, off_task_tgid);
  read_field(tid, task, off_task_pid);
  read_field(parent, task, off_task_real_parent);
  if (parent)
    read_field(ppid, parent, off_task_tgid);

  // cred->euid is a kuid_t, a struct of one uid_t.
  __u32 euid = 0;
  const void *cred = 0;
  read_field(cred, task, off_task_cred);
  if (cred)
    read_field(euid, cred, off_cred_euid);

  __u64 start_boot = 0;
  __u32 off_start = off_task_start_boottime;
  if (off_start != NO_OFFSET)
    read_field(start_boot, task, off_start);

  s->hdr.boot_ns = bpf_ktime_get_boot_ns();
  s->hdr.mono_ns = bpf_ktime_get_ns();
  s->hdr.start_boot_ns = start_boot;
  s->hdr.pid = pid;
  s->hdr.tid = tid;
  s->hdr.ppid = ppid;
  s->hdr.uid = (__u32)bpf_get_current_uid_gid();
  s->hdr.euid = euid;
  __u32 flags = 0;

  // Filename: bprm->filename, a kernel string.
  const char *filename = 0;
  read_field(filename, bprm, off_bprm_filename);
  long n = bpf_probe_read_kernel_str(s->data, FILENAME_MAX_LEN, filename);
  __u32 fn_len = 0;
  if (n <= 0) {
    flags |= FLAG_FILENAME_FAULT;
  } else {
    // n counts the NUL; a full buffer may have cut the name (or it was exactly 4095 bytes).
    if (n >= FILENAME_MAX_LEN)
      flags |= FLAG_FILENAME_TRUNCATED;
    fn_len = (__u32)(n - 1);
    if (fn_len > FILENAME_MAX_LEN - 1)
      fn_len = FILENAME_MAX_LEN - 1;
  }

  // Argv: the new program's mm->arg_start..arg_end, user memory the kernel just wrote.
  __u64 arg_start = 0, arg_end = 0;
  const void *mm = 0;
  read_field(mm, task, off_task_mm);
  if (mm) {
    read_field(arg_start, mm, off_mm_arg_start);
    read_field(arg_end, mm, off_mm_arg_end);
  }
  __u64 total = arg_end > arg_start ? arg_end - arg_start : 0;
  __u64 cap = argv_cap;
  if (cap > ARGV_BUF)
    cap = ARGV_BUF;
  __u64 av_len = total;
  if (av_len > cap) {
    av_len = cap;
    flags |= FLAG_ARGV_TRUNCATED;
  }
  // Restated for the verifier, which must see av_len <= ARGV_BUF at the read.
  if (av_len > ARGV_BUF)
    av_len = ARGV_BUF;
  if (av_len > 0) {
    if (bpf_probe_read_user(s->data + fn_len, (__u32)av_len, (const void *)arg_start) < 0) {
      flags |= FLAG_ARGV_FAULT;
      av_len = 0;
    }
  }

  s->hdr.flags = flags;
  s->hdr.filename_len = fn_len;
  s->hdr.argv_len = (__u32)av_len;
  s->hdr.argv_total = total;

  __u64 size = sizeof(struct exec_hdr) + fn_len + av_len;
  if (size > sizeof(struct scratch))
    size = sizeof(struct scratch);
  if (bpf_ringbuf_output(&events, s, size, 0) < 0) {
    __u64 *count = bpf_map_lookup_elem(&lost, &zero);
    if (count)
      *count += 1;
  }
  return 0;
}

// bpf_probe_read_kernel is GPL-only: the kernel loads the program only with a GPL-compatible
// license string. This file alone is dual-licensed (GPL-2.0 or MIT, see the SPDX line); the rest
// of picket is Apache-2.0, which the kernel does not list as GPL-compatible.
char LICENSE[] SEC("license") = "Dual MIT/GPL";
