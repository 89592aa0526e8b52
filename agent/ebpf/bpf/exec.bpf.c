// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
// picket exec tracer: one record per successful execve/execveat, with the filename exactly as
// the kernel got it (bprm->filename: symlinks not followed, relative paths as passed) and the raw
// argv block of the new program. Built by agent/ebpf/build.rs with
// `clang -O2 -g -target bpfel|bpfeb -c`; loaded by aya, which applies the CO-RE relocations
// against /sys/kernel/btf/vmlinux.
//
// No system headers (a BPF target has no libc and linux/bpf.h pulls arch headers): the few
// types, helper ids and kernel structs used are declared here. Helper ids are the kernel's
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

// CO-RE: clang records each field access below as a relocation; the loader rewrites the offset
// to the running kernel's (found by name in its BTF), so these declarations only need the fields
// read, with the right types.
#define CORE __attribute__((preserve_access_index))
#define BPF_FIELD_EXISTS 2
#define field_exists(f) __builtin_preserve_field_info(f, BPF_FIELD_EXISTS)
#define read_kernel(dst, src) bpf_probe_read_kernel(&(dst), sizeof(dst), &(src))

struct linux_binprm {
  const char *filename;
} CORE;

typedef struct {
  __u32 val;
} kuid_t;

struct cred {
  kuid_t euid;
} CORE;

struct mm_struct {
  unsigned long arg_start;
  unsigned long arg_end;
} CORE;

struct task_struct {
  __s32 pid;
  __s32 tgid;
  struct task_struct *real_parent;
  struct mm_struct *mm;
  const struct cred *cred;
  __u64 start_boottime;
} CORE;

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

// Set by the loader before load (aya set_global); volatile so clang does not fold the default.
volatile const __u32 argv_cap = 4096;

SEC("raw_tracepoint/sched_process_exec")
int picket_exec(struct bpf_raw_tracepoint_args *ctx) {
  __u32 zero = 0;
  struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
  if (!s)
    return 0;

  struct task_struct *task = (struct task_struct *)ctx->args[0];
  struct linux_binprm *bprm = (struct linux_binprm *)ctx->args[2];

  __s32 pid = 0, tid = 0, ppid = 0;
  struct task_struct *parent = 0;
  read_kernel(pid, task->tgid);
  read_kernel(tid, task->pid);
  read_kernel(parent, task->real_parent);
  if (parent)
    read_kernel(ppid, parent->tgid);

  __u32 euid = 0;
  const struct cred *cred = 0;
  read_kernel(cred, task->cred);
  if (cred)
    read_kernel(euid, cred->euid.val);

  __u64 start_boot = 0;
  if (field_exists(task->start_boottime))
    read_kernel(start_boot, task->start_boottime);

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
  read_kernel(filename, bprm->filename);
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
  struct mm_struct *mm = 0;
  read_kernel(mm, task->mm);
  if (mm) {
    read_kernel(arg_start, mm->arg_start);
    read_kernel(arg_end, mm->arg_end);
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
