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
 *   burst            a plain vmalloc whose recorded caller differs from
 *                    call to call: COUNT call sites from one loop
 *
 * Real exhaustion (exhaust, exhaust_results): a kernel thread makes one
 * NOFAIL call that loops until something is freed, and the module frees
 * at a known retry sleep (see exhaust_write()).
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/kthread.h>
#include <linux/gfp.h>
#include <linux/ktime.h>
#include <linux/workqueue.h>
#include <linux/fs.h>
#include <linux/instruction_pointer.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pgtable.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/stringify.h>
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
static u32 last_calls, last_null, last_retries, last_sleeps;
/* The task of the run that counts its one-jiffy retry sleeps (one run at
 * a time; a run started while another counts leaves it and reports
 * sleeps=0): the kernel's own loop turns, seen from outside nofail. */
static struct task_struct *sleep_task;
static atomic_t site_sleeps = ATOMIC_INIT(0);
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

/*
 * Many call sites from one loop: site "burst" makes plain one-page
 * vmallocs through __vmalloc_node_range(), call i (since load) passing
 * site_burst_callers + 16 + i as its caller, the argument the kernel
 * records (/proc/vmallocinfo shows it) and nofail keys callers by. The
 * addresses lie inside a function of their own, BURST_SPAN bytes long,
 * so each is named site_burst_callers+0x..; the first BURST_CALLERS calls
 * since load have distinct callers.
 */
#define BURST_SPAN 16384
#define BURST_CALLERS (BURST_SPAN - 32)
static noinline void site_burst_callers(void)
{
	asm volatile(".skip " __stringify(BURST_SPAN) ", 0x90");
}

static atomic_t burst_next = ATOMIC_INIT(0);

static noinline void *site_burst(unsigned long sz)
{
	vmalloc_range_fn fn = vmalloc_range();
	unsigned int i = (atomic_inc_return(&burst_next) - 1) % BURST_CALLERS;
	/* Hidden from the compiler: a constant base + 16 would be a
	 * relocation into the middle of a function, which objtool flags
	 * (IBT: not an ENDBR). Nothing calls these addresses. */
	unsigned long base = (unsigned long)site_burst_callers;
	void *p;

	OPTIMIZER_HIDE_VAR(base);
	if (!fn)
		return NULL;
	p = fn(sz, 1, VMALLOC_START, VMALLOC_END, GFP_KERNEL, PAGE_KERNEL, 0,
	       NUMA_NO_NODE, (void *)(base + 16 + i));
	barrier();
	return p;
}

/*
 * Exhaustion. "area PAGES DECOYS FREE_AT" reserves one-page areas (no
 * pages behind them) in a window of PAGES pages of fresh vmalloc space
 * until the window is full, reserves DECOYS more in another fresh slot,
 * and starts a kernel thread whose NOFAIL vmalloc of one page into the
 * window fails in the area stage and sleeps a jiffy per retry. Retry
 * sleep i (counted by a kprobe on schedule_timeout_uninterruptible for that
 * thread) frees decoy i while i <= DECOYS (vmap space no call of the window
 * can use) and, at i == FREE_AT, one reservation of the window: the next
 * attempt purges it and succeeds. "mapping FREE_AT" makes the thread's
 * NOFAIL call of 64 KiB in a fresh slot with make_it_fail set in its
 * mapping stage (the test arms fail_page_alloc for K page-table pages) and
 * frees a page the module held at retry sleep FREE_AT. Frees run from a
 * work item queued at the sleep's entry, so they land inside that sleep
 * unless the jiffy ends first; exhaust_results gives the times of every
 * sleep, wake and free (ktime_get_ns(), the clock of bpf_ktime_get_ns())
 * so the test can tell.
 */
#define EXHAUST_MAX 64
typedef struct vm_struct *(*get_area_fn)(unsigned long size, unsigned long flags,
					 unsigned long start, unsigned long end,
					 const void *caller);
static u64 get_area_addr;
static struct vm_struct *window_areas[EXHAUST_MAX], *decoy_areas[EXHAUST_MAX];
static int n_window, n_decoys, decoys_freed;
/* Reservations the window took at the start (n_window drops to 0 at the end). */
static int window_reserved;
static unsigned long window_start, window_end;
static struct page *held_page;
static u32 ex_decoys, ex_free_at;
static unsigned long ex_size;
static bool ex_mapping;
static struct task_struct *ex_task;
static pid_t ex_tid;
static int ex_done, ex_ok;
static atomic_t ex_sleeps = ATOMIC_INIT(0);
static u64 sleep_ns[EXHAUST_MAX], wake_ns[EXHAUST_MAX];
static u64 free_start_ns, free_end_ns;
static atomic_t ex_wakes = ATOMIC_INIT(0);
/* Timed mode (ex_free_us > 0): the frees come at set times after the
 * first retry sleep began, from ex_freer, whatever the sleeps do; ret_ns
 * is when the NOFAIL call returned. */
static u32 ex_free_us;
static struct task_struct *ex_freer;
static u64 ret_ns;

static get_area_fn get_area(void)
{
	char name[KSYM_SYMBOL_LEN];
	unsigned long addr = READ_ONCE(get_area_addr);

	if (!addr)
		return NULL;
	sprint_symbol(name, addr);
	if (strncmp(name, "__get_vm_area_caller+0x0/", 25))
		return NULL;
	return (get_area_fn)addr;
}

/* Frees the kprobe handler asked for, at its sleep: decoys due (one per
 * sleep up to DECOYS), and the window's reservation or the held page. */
static atomic_t decoys_due = ATOMIC_INIT(0);
static int free_due;

/* Frees what ends the failures (the window's reservation, or the held
 * page), timed for the test. */
static void free_the_one(void)
{
	WRITE_ONCE(free_start_ns, ktime_get_ns());
	if (ex_mapping) {
		__free_page(held_page);
		held_page = NULL;
	} else {
		free_vm_area(window_areas[0]);
		window_areas[0] = NULL;
	}
	WRITE_ONCE(free_end_ns, ktime_get_ns());
}

static void free_work_fn(struct work_struct *w)
{
	while (decoys_freed < atomic_read(&decoys_due) && decoys_freed < n_decoys) {
		free_vm_area(decoy_areas[decoys_freed]);
		decoy_areas[decoys_freed++] = NULL;
	}
	if (!READ_ONCE(free_due))
		return;
	WRITE_ONCE(free_due, 0);
	free_the_one();
}
static DECLARE_WORK(free_work, free_work_fn);

static int ex_sleep_enter(struct kprobe *kp, struct pt_regs *regs)
{
	int n;

	if (current == READ_ONCE(sleep_task))
		atomic_inc(&site_sleeps);
	if (current != READ_ONCE(ex_task))
		return 0;
	n = atomic_inc_return(&ex_sleeps);
	if (n <= EXHAUST_MAX)
		WRITE_ONCE(sleep_ns[n - 1], ktime_get_ns());
	if (ex_free_us)
		return 0;
	if (!ex_mapping && n <= (int)ex_decoys)
		atomic_inc(&decoys_due);
	if (n == (int)ex_free_at)
		WRITE_ONCE(free_due, 1);
	if ((!ex_mapping && n <= (int)ex_decoys) || n == (int)ex_free_at)
		queue_work_on(raw_smp_processor_id(), system_highpri_wq, &free_work);
	return 0;
}

static struct kprobe sleep_probe = {
	.symbol_name = "schedule_timeout_uninterruptible",
	.pre_handler = ex_sleep_enter,
};

static int ex_sleep_return(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	int n;

	if (current != READ_ONCE(ex_task))
		return 0;
	n = atomic_inc_return(&ex_wakes);
	if (n <= EXHAUST_MAX)
		wake_ns[n - 1] = ktime_get_ns();
	return 0;
}

static struct kretprobe wake_probe = {
	.kp.symbol_name = "schedule_timeout_uninterruptible",
	.handler = ex_sleep_return,
	.maxactive = 8,
};
static bool sleep_probes;

/* The area stage's wait on a kernel with testing/patches/
 * vmalloc-nofail-event-wait.patch: a retry sleep like the one above. */
static struct kprobe event_wait_probe = {
	.symbol_name = "vmap_nofail_wait",
	.pre_handler = ex_sleep_enter,
};
static struct kretprobe event_wake_probe = {
	.kp.symbol_name = "vmap_nofail_wait",
	.handler = ex_sleep_return,
	.maxactive = 8,
};
static bool event_wait_probes;

/* Timed mode: waits for the first retry sleep, then frees decoy i at
 * i * FREE_US / (DECOYS + 1) after its start and the window's reservation
 * (or the held page) at FREE_US, on hrtimer sleeps (not on a jiffy tick,
 * where the stock loop's timer also fires). */
static void sleep_until(u64 t)
{
	u64 now = ktime_get_ns();

	if (t > now)
		usleep_range((t - now) / 1000, (t - now) / 1000 + 10);
}

static int freer_thread(void *unused)
{
	u64 t0, give_up = ktime_get_ns() + 10 * NSEC_PER_SEC;
	int i;

	/* No retry sleep in 10 s (a sleep this module cannot probe): free
	 * anyway, so that the call ends; sleeps=0 tells the test. Waits for
	 * the first sleep's time, not its count: the count is raised before
	 * the time is stored, and a time of 0 made every free come at once. */
	while (!READ_ONCE(sleep_ns[0]) && ktime_get_ns() < give_up) {
		if (kthread_should_stop() || smp_load_acquire(&ex_done))
			goto out;
		usleep_range(20, 40);
	}
	t0 = READ_ONCE(sleep_ns[0]) ?: ktime_get_ns();
	for (i = 0; i < n_decoys; i++) {
		sleep_until(t0 + (u64)ex_free_us * 1000 * (i + 1) / (n_decoys + 1));
		free_vm_area(decoy_areas[i]);
		decoy_areas[i] = NULL;
		decoys_freed++;
	}
	sleep_until(t0 + (u64)ex_free_us * 1000);
	free_the_one();
out:
	while (!kthread_should_stop())
		schedule_timeout_interruptible(1);
	return 0;
}

static noinline void *site_vmalloc_nofail_window(unsigned long sz)
{
	vmalloc_range_fn fn = vmalloc_range();
	void *p;

	if (!fn)
		return NULL;
	p = fn(sz, 1, window_start, window_end, GFP_KERNEL | __GFP_NOFAIL,
	       PAGE_KERNEL, 0, NUMA_NO_NODE, (void *)_THIS_IP_);
	barrier();
	return p;
}

static void release_reservations(void)
{
	int i;

	flush_work(&free_work);
	if (ex_freer) {
		kthread_stop(ex_freer);
		ex_freer = NULL;
	}
	for (i = 0; i < n_window; i++)
		if (window_areas[i])
			free_vm_area(window_areas[i]);
	for (i = 0; i < n_decoys; i++)
		if (decoy_areas[i])
			free_vm_area(decoy_areas[i]);
	n_window = n_decoys = 0;
	if (held_page)
		__free_page(held_page);
	held_page = NULL;
}

static void *site_vmalloc_nofail_fresh_armed(unsigned long sz);

static int exhaust_thread(void *unused)
{
	void *p;

	/* A size read at run time: a constant argument would make the compiler
	 * specialise the site function (site_vmalloc_nofail_window.constprop.0). */
	if (ex_mapping)
		p = site_vmalloc_nofail_fresh_armed(READ_ONCE(ex_size));
	else
		p = site_vmalloc_nofail_window(READ_ONCE(ex_size));
	WRITE_ONCE(ret_ns, ktime_get_ns());
	WRITE_ONCE(ex_task, NULL);
	ex_ok = p != NULL;
	if (p)
		vfree(p);
	release_reservations();
	smp_store_release(&ex_done, 1);
	return 0;
}

static int exhaust_start(char *cmd)
{
	get_area_fn reserve = get_area();
	unsigned int pages = 0;
	unsigned long base;
	struct task_struct *t;

	if (!sleep_probes || !vmalloc_range() || (ex_task && !ex_done))
		return -EBUSY;
	n_window = n_decoys = decoys_freed = 0;
	ex_decoys = 0;
	ex_free_at = 0;
	ex_free_us = 0;
	atomic_set(&decoys_due, 0);
	free_due = 0;
	if (sscanf(cmd, "area_timed %u %u %u", &pages, &ex_decoys, &ex_free_us) == 3 ||
	    sscanf(cmd, "area %u %u %u", &pages, &ex_decoys, &ex_free_at) == 3) {
		if (!reserve || pages < 2 || pages > 2 * EXHAUST_MAX || ex_decoys > EXHAUST_MAX)
			return -EINVAL;
		ex_mapping = false;
		ex_size = PAGE_SIZE;
		window_start = fresh_start();
		window_end = window_start + pages * PAGE_SIZE;
		while (n_window < EXHAUST_MAX) {
			struct vm_struct *a = reserve(PAGE_SIZE, VM_ALLOC, window_start,
						      window_end, (void *)_THIS_IP_);
			if (!a)
				break;
			window_areas[n_window++] = a;
		}
		window_reserved = n_window;
		base = fresh_start();
		while (n_decoys < (int)ex_decoys) {
			struct vm_struct *a = reserve(PAGE_SIZE, VM_ALLOC, base,
						      base + PUD_SIZE, (void *)_THIS_IP_);
			if (!a)
				break;
			decoy_areas[n_decoys++] = a;
		}
	} else if (sscanf(cmd, "mapping_timed %u", &ex_free_us) == 1 ||
		   sscanf(cmd, "mapping %u", &ex_free_at) == 1) {
		ex_mapping = true;
		ex_size = 64 << 10;
		held_page = alloc_page(GFP_KERNEL);
		if (!held_page)
			return -ENOMEM;
	} else {
		return -EINVAL;
	}
	atomic_set(&ex_sleeps, 0);
	atomic_set(&ex_wakes, 0);
	memset(sleep_ns, 0, sizeof(sleep_ns));
	memset(wake_ns, 0, sizeof(wake_ns));
	free_start_ns = free_end_ns = ret_ns = 0;
	ex_done = ex_ok = 0;
	if (ex_free_us) {
		ex_freer = kthread_run(freer_thread, NULL, "nofail_freer");
		if (IS_ERR(ex_freer)) {
			ex_freer = NULL;
			release_reservations();
			return -ENOMEM;
		}
	}
	t = kthread_create(exhaust_thread, NULL, "nofail_exhaust");
	if (IS_ERR(t)) {
		release_reservations();
		return PTR_ERR(t);
	}
	ex_tid = t->pid;
	WRITE_ONCE(ex_task, t);
	wake_up_process(t);
	return 0;
}

static ssize_t exhaust_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	char cmd[64];
	int ret;

	if (len == 0 || len >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, buf, len))
		return -EFAULT;
	cmd[len] = '\0';
	mutex_lock(&lock);
	ret = exhaust_start(strim(cmd));
	mutex_unlock(&lock);
	return ret ? ret : len;
}

static ssize_t exhaust_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	int i, n = min(atomic_read(&ex_sleeps), EXHAUST_MAX), off;
	size_t cap = 512 + EXHAUST_MAX * 48;
	char *text = kmalloc(cap, GFP_KERNEL);
	ssize_t ret;

	if (!text)
		return -ENOMEM;
	off = scnprintf(text, cap,
			"done=%d ok=%d tid=%d window=%d decoys=%d decoys_freed=%d sleeps=%d free_start_ns=%llu free_end_ns=%llu ret_ns=%llu\n",
			smp_load_acquire(&ex_done), ex_ok, ex_tid, window_reserved, n_decoys,
			decoys_freed, atomic_read(&ex_sleeps),
			(unsigned long long)READ_ONCE(free_start_ns),
			(unsigned long long)READ_ONCE(free_end_ns),
			(unsigned long long)READ_ONCE(ret_ns));
	for (i = 0; i < n; i++)
		off += scnprintf(text + off, cap - off, "sleep %llu %llu\n",
				 (unsigned long long)sleep_ns[i],
				 (unsigned long long)wake_ns[i]);
	ret = simple_read_from_buffer(buf, len, ppos, text, off);
	kfree(text);
	return ret;
}

static const struct file_operations exhaust_fops = {
	.owner = THIS_MODULE,
	.read = exhaust_read,
	.write = exhaust_write,
};

/* The exhaustion thread's mapping-stage call: a fresh-slot NOFAIL call
 * with make_it_fail armed in its mapping stage (fail=2). */
static noinline void *site_vmalloc_nofail_fresh_armed(unsigned long sz)
{
	void *p;

	mapping_armed_size = PAGE_ALIGN(sz);
	WRITE_ONCE(mapping_armed, current);
	p = site_vmalloc_nofail_fresh(sz);
	WRITE_ONCE(mapping_armed, NULL);
	current->make_it_fail = 0;
	return p;
}

static int run_site(const char *site)
{
	void *(*fn)(unsigned long) = NULL;
	bool kv = false, retry = false;
	u32 i, n, calls = 0, nulls = 0, retries = 0, sleeps = 0;
	unsigned long sz;
	u32 arm;
	bool counting;

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
	else if (!strcmp(site, "burst") && vmalloc_range())
		fn = site_burst;
	else
		return -EINVAL;

	mutex_lock(&lock);
	n = count;
	sz = size;
	arm = fail;
	mutex_unlock(&lock);
	if (arm == 2 && !mapping_probe_registered)
		return -EOPNOTSUPP;

	counting = cmpxchg(&sleep_task, NULL, current) == NULL;
	if (counting)
		atomic_set(&site_sleeps, 0);
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

	if (counting) {
		sleeps = atomic_read(&site_sleeps);
		WRITE_ONCE(sleep_task, NULL);
	}
	atomic64_add(calls, &total_calls);
	atomic64_add(nulls, &total_null);
	mutex_lock(&lock);
	last_calls = calls;
	last_null = nulls;
	last_retries = retries;
	last_sleeps = sleeps;
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
		      "calls=%u null=%u retries=%u sleeps=%u total_calls=%lld total_null=%lld\n",
		      last_calls, last_null, last_retries, last_sleeps,
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
	sleep_probes = register_kprobe(&sleep_probe) == 0;
	if (sleep_probes && register_kretprobe(&wake_probe)) {
		unregister_kprobe(&sleep_probe);
		sleep_probes = false;
	}
	if (!sleep_probes)
		pr_warn("nofail_trigger: no probe on schedule_timeout_uninterruptible: exhaust unavailable\n");
	/* Only on a kernel with the event-wait patch. */
	event_wait_probes = sleep_probes && register_kprobe(&event_wait_probe) == 0;
	if (event_wait_probes && register_kretprobe(&event_wake_probe)) {
		unregister_kprobe(&event_wait_probe);
		event_wait_probes = false;
	}
	dir = debugfs_create_dir("nofail_trigger", NULL);
	debugfs_create_u64("size", 0600, dir, &size);
	debugfs_create_u32("count", 0600, dir, &count);
	debugfs_create_u32("fail", 0600, dir, &fail);
	debugfs_create_x64("vmalloc_range", 0600, dir, &vmalloc_range_addr);
	debugfs_create_file("run", 0200, dir, NULL, &run_fops);
	debugfs_create_file("results", 0400, dir, NULL, &results_fops);
	debugfs_create_file("null_tids", 0600, dir, NULL, &null_tids_fops);
	debugfs_create_file("purge", 0200, dir, NULL, &purge_fops);
	debugfs_create_x64("get_area", 0600, dir, &get_area_addr);
	debugfs_create_file("exhaust", 0600, dir, NULL, &exhaust_fops);
	return 0;
}

static void __exit trigger_exit(void)
{
	if (mapping_probe_registered)
		unregister_kprobe(&mapping_probe);
	debugfs_remove_recursive(dir);
	if (event_wait_probes) {
		unregister_kretprobe(&event_wake_probe);
		unregister_kprobe(&event_wait_probe);
	}
	if (sleep_probes) {
		unregister_kretprobe(&wake_probe);
		unregister_kprobe(&sleep_probe);
	}
	/* A thread still looping in vmalloc holds code of this module: the
	 * test never unloads before exhaust_results says done. */
	flush_work(&free_work);
}

module_init(trigger_init);
module_exit(trigger_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nofail test trigger: exact vmalloc-family calls with fault injection");
