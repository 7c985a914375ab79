/*
 * userfaultfd and pagemap definitions newer than this machine's headers
 * (Debian 12's linux-libc-dev is 6.1; the kernels these run on are newer).
 * One copy, for the engines and the benches that probe the same features.
 */
#ifndef FORKD_UTIL_UFFD_COMPAT_H
#define FORKD_UTIL_UFFD_COMPAT_H

#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/userfaultfd.h>

/* Linux 6.4: write protection of pages that have no PTE yet. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
/* Linux 6.7: write-protect faults resolved by the kernel, collected with PAGEMAP_SCAN. */
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
/* Linux 5.14. */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
/* Linux 6.7: the ioctl on /proc/PID/pagemap. */
#ifndef PAGEMAP_SCAN
struct page_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted,
	    category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN	      _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING   (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#define PAGE_IS_WPALLOWED     (1 << 0)
#define PAGE_IS_WRITTEN	      (1 << 1)
#define PAGE_IS_FILE	      (1 << 2)
#define PAGE_IS_PRESENT	      (1 << 3)
#define PAGE_IS_SWAPPED	      (1 << 4)
#endif

#endif
