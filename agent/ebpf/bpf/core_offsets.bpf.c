// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
// Test only (tests/btf.rs): never loaded into the kernel. Each function returns the byte offset
// of one kernel struct member as a CO-RE relocation, which aya-obj resolves against the kernel's
// BTF with aya's own BTF parser; the test compares the results with src/btf.rs. The function
// names are `<struct>__<member>`; the declarations need only the members asked about.

#define SEC(name) __attribute__((section(name), used))
#define CORE __attribute__((preserve_access_index))
#define BPF_FIELD_BYTE_OFFSET 0
#define OFFSET(s, m)                                                                            \
  SEC("raw_tracepoint/" #s "__" #m) int s##__##m(void *ctx) {                                   \
    return __builtin_preserve_field_info(((struct s *)ctx)->m, BPF_FIELD_BYTE_OFFSET);          \
  }

struct linux_binprm {
  const char *filename;
} CORE;

typedef struct {
  unsigned int val;
} kuid_t;

struct cred {
  kuid_t euid;
} CORE;

struct mm_struct {
  unsigned long arg_start;
  unsigned long arg_end;
} CORE;

struct task_struct {
  int pid;
  int tgid;
  struct task_struct *real_parent;
  struct mm_struct *mm;
  const struct cred *cred;
  unsigned long long start_boottime;
} CORE;

OFFSET(linux_binprm, filename)
OFFSET(task_struct, pid)
OFFSET(task_struct, tgid)
OFFSET(task_struct, real_parent)
OFFSET(task_struct, mm)
OFFSET(task_struct, cred)
OFFSET(task_struct, start_boottime)
OFFSET(mm_struct, arg_start)
OFFSET(mm_struct, arg_end)
OFFSET(cred, euid)

char LICENSE[] SEC("license") = "Dual MIT/GPL";
