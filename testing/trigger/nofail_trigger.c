// SPDX-License-Identifier: GPL-2.0
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
 * Sites (each its own noinline function, so each has its own caller address):
 *   vmalloc_nofail   __vmalloc(size, GFP_KERNEL | __GFP_NOFAIL)
 *   kvmalloc_nofail  kvmalloc(size, GFP_KERNEL | __GFP_NOFAIL)
 *   vmalloc          vmalloc(size)
 *   vmalloc_retry    vmalloc(size) retried by hand on NULL, sleeping with
 *                    memalloc_retry_wait() like xfs_buf_alloc_vmalloc()
 */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/mutex.h>
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
static u32 last_calls, last_null, last_retries;

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

/* An open-coded retry-forever loop, bounded here so a test cannot hang. */
static noinline void *site_vmalloc_retry(unsigned long sz)
{
	void *p;
	int tries = 0;

	for (;;) {
		p = vmalloc(sz);
		barrier();
		if (p || ++tries > RETRY_LIMIT)
			break;
		last_retries++;
		memalloc_retry_wait(GFP_KERNEL);
	}
	return p;
}

static int run_site(const char *site)
{
	void *(*fn)(unsigned long);
	bool kv = false;
	u32 i;

	if (!strcmp(site, "vmalloc_nofail"))
		fn = site_vmalloc_nofail;
	else if (!strcmp(site, "kvmalloc_nofail")) {
		fn = site_kvmalloc_nofail;
		kv = true;
	} else if (!strcmp(site, "vmalloc"))
		fn = site_vmalloc;
	else if (!strcmp(site, "vmalloc_retry"))
		fn = site_vmalloc_retry;
	else
		return -EINVAL;

	last_calls = last_null = last_retries = 0;
	for (i = 0; i < count; i++) {
		void *p;

		if (fail)
			current->make_it_fail = 1;
		p = fn(size);
		current->make_it_fail = 0;
		last_calls++;
		if (!p)
			last_null++;
		else if (kv)
			kvfree(p);
		else
			vfree(p);
		cond_resched();
	}
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
	mutex_lock(&lock);
	ret = run_site(strim(site));
	mutex_unlock(&lock);
	return ret ? ret : len;
}

static ssize_t results_read(struct file *file, char __user *buf, size_t len, loff_t *ppos)
{
	char text[96];
	int n;

	mutex_lock(&lock);
	n = scnprintf(text, sizeof(text), "calls=%u null=%u retries=%u\n",
		      last_calls, last_null, last_retries);
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

static int __init trigger_init(void)
{
	dir = debugfs_create_dir("nofail_trigger", NULL);
	debugfs_create_u64("size", 0600, dir, &size);
	debugfs_create_u32("count", 0600, dir, &count);
	debugfs_create_u32("fail", 0600, dir, &fail);
	debugfs_create_file("run", 0200, dir, NULL, &run_fops);
	debugfs_create_file("results", 0400, dir, NULL, &results_fops);
	return 0;
}

static void __exit trigger_exit(void)
{
	debugfs_remove_recursive(dir);
}

module_init(trigger_init);
module_exit(trigger_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nofail test trigger: exact vmalloc-family calls with fault injection");
