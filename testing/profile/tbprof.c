// SPDX-License-Identifier: MIT OR Apache-2.0
/* A QEMU TCG plugin (QEMU 7.2 API, version 1; declared here, not
 * included: Debian ships no qemu-plugin.h) counting executions of every
 * translated block. Each execution of the block at `toggle=ADDR` (a guest
 * kernel address: boot with nokaslr) writes a snapshot of all counts to
 * `out=PREFIX.N`, one line per block: address, instructions, executions.
 * Two snapshots around a workload give the instructions each kernel
 * function ran for it, whatever the host was doing (a block cut short by
 * an interrupt counts whole). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(unsigned int, void *);
typedef void (*atexit_cb)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *, udata_cb, enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op, void *, uint64_t);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, atexit_cb, void *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

struct ent { uint64_t vaddr, n, count; };
#define CHUNK 65536
static struct ent *chunks[4096];
static size_t used;
static uint64_t toggle;
static const char *out = "/tmp/tbprof";
static int snap;

static struct ent *new_ent(void) {
    size_t c = used / CHUNK, i = used % CHUNK;
    if (!chunks[c]) chunks[c] = calloc(CHUNK, sizeof(struct ent));
    used++;
    return &chunks[c][i];
}

static void dump(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    for (size_t k = 0; k < used; k++) {
        struct ent *e = &chunks[k / CHUNK][k % CHUNK];
        if (e->count) fprintf(f, "%lx %lu %lu\n", e->vaddr, e->n, e->count);
    }
    fclose(f);
}

static void on_toggle(unsigned int vcpu, void *u) {
    char path[512];
    snprintf(path, sizeof path, "%s.%d", out, snap++);
    dump(path);
}

static void on_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    struct ent *e = new_ent();
    e->vaddr = qemu_plugin_tb_vaddr(tb);
    e->n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &e->count, 1);
    if (toggle && e->vaddr == toggle)
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_toggle, QEMU_PLUGIN_CB_NO_REGS, NULL);
}

static void at_end(qemu_plugin_id_t id, void *u) {
    char path[512];
    snprintf(path, sizeof path, "%s.exit", out);
    dump(path);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "toggle=", 7)) toggle = strtoull(argv[i] + 7, NULL, 16);
        else if (!strncmp(argv[i], "out=", 4)) out = strdup(argv[i] + 4);
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_trans);
    qemu_plugin_register_atexit_cb(id, at_end, NULL);
    return 0;
}
