// SPDX-License-Identifier: GPL-2.0-only
/*
 * nofail_trigger: ground truth for nofail's tests.
 *
 * Through debugfs (/sys/kernel/debug/nofail_trigger/) it makes an exact
 * number of vmalloc-family calls of a chosen size from distinct call sites,
 * and can arm the kernel's own fault injection (failslab, fail_page_alloc,
 * fail_function with task-filter) for exactly its own calls by setting
 * current->make_it_fail around them.
 *
 *   echo 65536 > size; echo 5 > count; echo 1 > fail
 *   echo vmalloc_nofail > run; cat results
 *
 * fail: 0 = no injection; 1 = make_it_fail for the whole call; 2 = only
 * while the call is inside the page-table mapping function
 * (from the entry of __vmap_pages_range_noflush, through a kprobe), so the kernel's
 * fail_page_alloc fails page-table pages and nothing else.
 *
 * Sites (each its own noinline function, so each has its own caller address):
 *   vmalloc_nofail   __vmalloc(size, GFP_KERNEL | __GFP_NOFAIL)
 *   kvmalloc_nofail  kvmalloc(size, GFP_KERNEL | __GFP_NOFAIL)
 *   vmalloc          vmalloc(size)
 *   vmalloc_retry    vmalloc(size) retried by hand on NULL, sleeping with
 *                    memalloc_retry_wait() like xfs_buf_alloc_vmalloc()
 *   vmalloc_nofail_fresh
 *                    a NOFAIL vmalloc placed in vmalloc address space no
 *                    call used before (a new 1 GiB slot each call), so its
 *                    mapping stage allocates a page-table page before it
 *                    writes any PTE: a failed mapping attempt leaves nothing
 *                    mapped and the retry can succeed. Elsewhere the range
 *                    may start inside an existing PTE page, and a failure
 *                    after some PTEs were written makes every retry fail
 *                    with -EBUSY (vmap_pages_pte_range), for ever.
 */
#include <linux/debugfs.h>
#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/fs.h>
#include <linux/instruction_pointer.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pgtable.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#define RETRY_LIMIT 1000

static struct dentry *dir;
static DEFINE_MUTEX(lock);
static u64 size = 65536;
static u32 count = 1;
static u32 fail;
/* Results of the last finished run. Runs themselves are not serialised:
 * several tasks may run sites at once (the stress test does). */
static u32 last_calls, last_null, last_retries;
/* Totals since load, over all runs, concurrent ones included. */
static atomic64_t total_calls, total_null;
/* The thread ids that got the NULLs since the log was last reset (by a
 * write to null_tids), in order; the first NULL_TID_LOG of them. */
#define NULL_TID_LOG 64
static pid_t null_tids[NULL_TID_LOG];
static atomic_t null_tid_n = ATOMIC_INIT(0);

/* fail=2: the task whose mapping stage gets make_it_fail, and the size of
 * its call's mapping (the nested page-array vmalloc maps a smaller range
 * before the outer call's data pages are allocated: it must not arm). */
static struct task_struct *mapping_armed;
static unsigned long mapping_armed_size;

/* Entry of the outer call's mapping function: from here to the end of the
 * call the only allocations are page-table pages (data pages came before),
 * so make_it_fail stays set until run_site() clears it after the call. */
static int mapping_enter(struct kprobe *kp, struct pt_regs *regs)
{
	unsigned long start = regs_get_kernel_argument(regs, 0);
	unsigned long end = regs_get_kernel_argument(regs, 1);

	if (READ_ONCE(mapping_armed) == current && end - start == mapping_armed_size)
		current->make_it_fail = 1;
	return 0;
}

static struct kprobe mapping_probe = {
	.pre_handler = mapping_enter,
};
static bool mapping_probe_registered;

/* __vmalloc_node_range_noprof() takes the address range but is not
 * exported: the test writes its address (from /proc/kallsyms) to
 * vmalloc_range, and the module checks it names that function before
 * calling it. */
typedef void *(*vmalloc_range_fn)(unsigned long size, unsigned long align,
				  unsigned long start, unsigned long end,
				  gfp_t gfp_mask, pgprot_t prot,
				  unsigned long vm_flags, int node,
				  const void *caller);
static u64 vmalloc_range_addr;
static atomic_t fresh_slot;
/* Where the fresh-address-space site starts counting: a reloaded module
 * must not reuse slots an earlier load already mapped (their page tables
 * stay), so the tests pass a slot beyond them. */
static int first_fresh_slot;
module_param(first_fresh_slot, int, 0444);

static vmalloc_range_fn vmalloc_range(void)
{
	char name[KSYM_SYMBOL_LEN];
	unsigned long addr = READ_ONCE(vmalloc_range_addr);

	if (!addr)
		return NULL;
	sprint_symbol(name, addr);
	if (strncmp(name, "__vmalloc_node_range", 20) || !strstr(name, "+0x0/"))
		return NULL;
	return (vmalloc_range_fn)addr;
}

/* barrier() after each call keeps it out of tail position, so the return
 * address the allocator records really is inside the site function. */
static noinline void *site_vmalloc_nofail(unsigned long sz)
{
	void *p = __vmalloc(sz, GFP_KERNEL | __GFP_NOFAIL);

	barrier();
	return p;
}

static noinline void *site_kvmalloc_nofail(unsigned long sz)
{
	void *p = kvmalloc(sz, GFP_KERNEL | __GFP_NOFAIL);

	barrier();
	return p;
}

static noinline void *site_vmalloc(unsigned long sz)
{
	void *p = vmalloc(sz);

	barrier();
	return p;
}

/* An open-coded retry-forever loop like xfs_buf_alloc_vmalloc(), bounded
 * here so a test cannot hang. */
static noinline void *site_vmalloc_retry(unsigned long sz, u32 *retries)
{
	void *p;
	int tries = 0;

	for (;;) {
		p = vmalloc(sz);
		barrier();
		if (p || ++tries > RETRY_LIMIT)
			break;
		(*retries)++;
		memalloc_retry_wait(GFP_KERNEL);
	}
	return p;
}

/* Upper half of the vmalloc space, one PUD-sized slot per call: the
 * allocator picks the lowest free address, so nothing else maps there. */
/* The start of a 1 GiB slot of vmalloc space no call used before (its
 * page tables do not exist yet), a new one per call. */
static unsigned long fresh_start(void)
{
	unsigned long base = ALIGN(VMALLOC_START + (VMALLOC_END - VMALLOC_START) / 2,
				   PUD_SIZE);

	return base + (unsigned long)atomic_inc_return(&fresh_slot) * PUD_SIZE;
}

static noinline void *site_vmalloc_nofail_fresh(unsigned long sz)
{
	unsigned long start = fresh_start();
	vmalloc_range_fn fn = vmalloc_range();
	void *p;

	if (!fn || start + PUD_SIZE > VMALLOC_END)
		return NULL;
	p = fn(sz, 1, start, VMALLOC_END, GFP_KERNEL | __GFP_NOFAIL,
	       PAGE_KERNEL, 0, NUMA_NO_NODE, (void *)_THIS_IP_);
	barrier();
	return p;
}

/* The same without __GFP_NOFAIL: a plain call whose mapping stage must
 * allocate page tables, whatever ran before. */
static noinline void *site_vmalloc_fresh(unsigned long sz)
{
	unsigned long start = fresh_start();
	vmalloc_range_fn fn = vmalloc_range();
	void *p;

	if (!fn || start + PUD_SIZE > VMALLOC_END)
		return NULL;
	p = fn(sz, 1, start, VMALLOC_END, GFP_KERNEL,
	       PAGE_KERNEL, 0, NUMA_NO_NODE, (void *)_THIS_IP_);
	barrier();
	return p;
}

static int run_site(const char *site)
{
	void *(*fn)(unsigned long) = NULL;
	bool kv = false, retry = false;
	u32 i, n, calls = 0, nulls = 0, retries = 0;
	unsigned long sz;
	u32 arm;

	if (!strcmp(site, "vmalloc_nofail"))
		fn = site_vmalloc_nofail;
	else if (!strcmp(site, "kvmalloc_nofail")) {
		fn = site_kvmalloc_nofail;
		kv = true;
	} else if (!strcmp(site, "vmalloc"))
		fn = site_vmalloc;
	else if (!strcmp(site, "vmalloc_retry"))
		retry = true;
	else if (!strcmp(site, "vmalloc_nofail_fresh") && vmalloc_range())
		fn = site_vmalloc_nofail_fresh;
	else if (!strcmp(site, "vmalloc_fresh") && vmalloc_range())
		fn = site_vmalloc_fresh;
	else
		return -EINVAL;

	mutex_lock(&lock);
	n = count;
	sz = size;
	arm = fail;
	mutex_unlock(&lock);
	if (arm == 2 && !mapping_probe_registered)
		return -EOPNOTSUPP;

	for (i = 0; i < n; i++) {
		void *p;

		if (arm == 1)
			current->make_it_fail = 1;
		else if (arm == 2) {
			mapping_armed_size = PAGE_ALIGN(sz);
			WRITE_ONCE(mapping_armed, current);
		}
		p = retry ? site_vmalloc_retry(sz, &retries) : fn(sz);
		WRITE_ONCE(mapping_armed, NULL);
		current->make_it_fail = 0;
		calls++;
		if (!p) {
			int k = atomic_inc_return(&null_tid_n) - 1;

			nulls++;
			if (k < NULL_TID_LOG)
				null_tids[k] = current->pid;
		}
		else if (kv)
			kvfree(p);
		else
			vfree(p);
		cond_resched();
	}

	atomic64_add(calls, &total_calls);
	atomic64_add(nulls, &total_null);
	mutex_lock(&lock);
	last_calls = calls;
	last_null = nulls;
	last_retries = retries;
	mutex_unlock(&lock);
	return 0;
}

static ssize_t run_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	char site[32];
	int ret;

	if (len == 0 || len >= sizeof(site))
		return -EINVAL;
	if (copy_from_user(site, buf, len))
		return -EFAULT;
	site[len] = '\0';
	strim(site);
	ret = run_site(strim(site));
	return ret ? ret : len;
}

static ssize_t results_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	char text[160];
	int n;

	mutex_lock(&lock);
	n = scnprintf(text, sizeof(text),
		      "calls=%u null=%u retries=%u total_calls=%lld total_null=%lld\n",
		      last_calls, last_null, last_retries,
		      (long long)atomic64_read(&total_calls),
		      (long long)atomic64_read(&total_null));
	mutex_unlock(&lock);
	return simple_read_from_buffer(buf, len, ppos, text, n);
}

static const struct file_operations run_fops = {
	.owner = THIS_MODULE,
	.write = run_write,
};

static const struct file_operations results_fops = {
	.owner = THIS_MODULE,
	.read = results_read,
};

static ssize_t null_tids_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	char text[NULL_TID_LOG * 12 + 2];
	int i, n = min(atomic_read(&null_tid_n), NULL_TID_LOG), off = 0;

	for (i = 0; i < n; i++)
		off += scnprintf(text + off, sizeof(text) - off, "%d ", null_tids[i]);
	off += scnprintf(text + off, sizeof(text) - off, "\n");
	return simple_read_from_buffer(buf, len, ppos, text, off);
}

static ssize_t null_tids_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	atomic_set(&null_tid_n, 0);
	return len;
}

static const struct file_operations null_tids_fops = {
	.owner = THIS_MODULE,
	.read = null_tids_read,
	.write = null_tids_write,
};

/* Any write: free every lazily freed vmap area now (vm_unmap_aliases()),
 * so that a measured batch of calls meets no purge of earlier frees. */
static ssize_t purge_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	vm_unmap_aliases();
	return len;
}

static const struct file_operations purge_fops = {
	.owner = THIS_MODULE,
	.write = purge_write,
};

static int __init trigger_init(void)
{
	static const char *const mapping_fns[] = {
		"__vmap_pages_range_noflush", "vmap_pages_range_noflush",
	};
	int i;

	atomic_set(&fresh_slot, first_fresh_slot);
	for (i = 0; i < ARRAY_SIZE(mapping_fns) && !mapping_probe_registered; i++) {
		mapping_probe.symbol_name = mapping_fns[i];
		mapping_probe.addr = NULL;
		mapping_probe.flags = 0;
		mapping_probe_registered = register_kprobe(&mapping_probe) == 0;
	}
	if (!mapping_probe_registered)
		pr_warn("nofail_trigger: no mapping function to probe: fail=2 unavailable\n");
	dir = debugfs_create_dir("nofail_trigger", NULL);
	debugfs_create_u64("size", 0600, dir, &size);
	debugfs_create_u32("count", 0600, dir, &count);
	debugfs_create_u32("fail", 0600, dir, &fail);
	debugfs_create_x64("vmalloc_range", 0600, dir, &vmalloc_range_addr);
	debugfs_create_file("run", 0200, dir, NULL, &run_fops);
	debugfs_create_file("results", 0400, dir, NULL, &results_fops);
	debugfs_create_file("null_tids", 0600, dir, NULL, &null_tids_fops);
	debugfs_create_file("purge", 0200, dir, NULL, &purge_fops);
	return 0;
}

static void __exit trigger_exit(void)
{
	if (mapping_probe_registered)
		unregister_kprobe(&mapping_probe);
	debugfs_remove_recursive(dir);
}

module_init(trigger_init);
module_exit(trigger_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nofail test trigger: exact vmalloc-family calls with fault injection");
