/*
 * edgekit's instruction counter: a QEMU TCG plugin for user-mode qemu-aarch64 (plugin API v1,
 * QEMU 7.2). Built at `edgekit devices setup` with the system C compiler.
 *
 * It counts guest instructions per vCPU (in user mode: per guest thread) and takes a snapshot
 * of all counters at every marker syscall the guest makes: sched_get_priority_max(MAGIC_START)
 * and sched_get_priority_max(MAGIC_STOP). Every start/stop pair becomes one line of the output
 * file. A real kernel answers those calls with EINVAL, so the markers cost nothing on a board.
 *
 *   qemu-aarch64 -plugin ./insn_count.so,out=/path/counts.txt ...
 *
 * Output (text, one record per line):
 *   edgekit-insn-count 1
 *   pair <vcpu that emitted the stop> <count vcpu0> <count vcpu1> ...
 *   total <count vcpu0> <count vcpu1> ...      (whole run)
 *
 * Debian ships no qemu-plugin.h, so the few declarations used are written out below from the
 * documented v1 API; QEMU checks qemu_plugin_version when it loads the library.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };

typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                             uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,
                             uint64_t a6, uint64_t a7, uint64_t a8);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);

EXPORT int qemu_plugin_version = 1;

/* aarch64 sched_get_priority_max; the magic words must match remote_runner.py. */
#define SYS_SCHED_GET_PRIORITY_MAX 125
#define MAGIC_START 0x45444b01u
#define MAGIC_STOP 0x45444b02u
/* vCPU indexes are reused after a thread exits, so this bounds live threads, not all threads. */
#define MAX_VCPUS 256

static uint64_t counts[MAX_VCPUS];
static uint64_t at_start[MAX_VCPUS];
static unsigned int n_vcpus; /* highest index seen + 1 */
static uint64_t lost;        /* instructions of vCPUs beyond MAX_VCPUS */
static bool started;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;

/*
 * A callback per executed block (not an inline add): the v1 inline op writes one fixed address
 * for all vCPUs without atomicity, which would mix threads up. Each vCPU writes only its own
 * counter here; the marker thread reads the others with relaxed atomic loads.
 */
static void on_block(unsigned int vcpu, void *n_insns)
{
    uint64_t n = (uint64_t)(uintptr_t)n_insns;
    if (vcpu >= MAX_VCPUS) {
        __atomic_fetch_add(&lost, n, __ATOMIC_RELAXED);
        return;
    }
    __atomic_store_n(&counts[vcpu], __atomic_load_n(&counts[vcpu], __ATOMIC_RELAXED) + n,
                     __ATOMIC_RELAXED);
    if (vcpu >= __atomic_load_n(&n_vcpus, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&lock);
        if (vcpu >= n_vcpus)
            n_vcpus = vcpu + 1;
        pthread_mutex_unlock(&lock);
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    /* The policy argument is a C int: compare its low 32 bits only. */
    uint32_t word = (uint32_t)a1;
    if (num != SYS_SCHED_GET_PRIORITY_MAX || (word != MAGIC_START && word != MAGIC_STOP))
        return;
    pthread_mutex_lock(&lock);
    unsigned int n = n_vcpus;
    if (word == MAGIC_START) {
        for (unsigned int i = 0; i < n; i++)
            at_start[i] = __atomic_load_n(&counts[i], __ATOMIC_RELAXED);
        for (unsigned int i = n; i < MAX_VCPUS; i++)
            at_start[i] = 0;
        started = true;
    } else if (started && out) {
        fprintf(out, "pair %u", vcpu);
        for (unsigned int i = 0; i < n; i++)
            fprintf(out, " %" PRIu64, __atomic_load_n(&counts[i], __ATOMIC_RELAXED) - at_start[i]);
        fputc('\n', out);
        started = false;
    }
    pthread_mutex_unlock(&lock);
}

static void on_exit_(qemu_plugin_id_t id, void *p)
{
    if (!out)
        return;
    pthread_mutex_lock(&lock);
    fprintf(out, "total");
    for (unsigned int i = 0; i < n_vcpus; i++)
        fprintf(out, " %" PRIu64, counts[i]);
    fprintf(out, "\nlost %" PRIu64 "\n", lost);
    fclose(out);
    out = NULL;
    pthread_mutex_unlock(&lock);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                               char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0)
            path = argv[i] + 4;
    if (!path) {
        fprintf(stderr, "insn_count: expected the argument out=PATH\n");
        return -1;
    }
    out = fopen(path, "w");
    if (!out) {
        perror("insn_count: cannot open the output file");
        return -1;
    }
    /* Line buffered so that the pairs survive a guest that dies before the atexit callback. */
    setvbuf(out, NULL, _IOLBF, 0);
    fprintf(out, "edgekit-insn-count 1\n");
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit_, NULL);
    return 0;
}
