/* SPDX-License-Identifier: MIT */
/*
 * forkd-uffd: the page-fault handler of a lazy restore. Listens on a Unix
 * socket for one VMM (forkd-vmm --restore DIR --restore-mode uffd
 * --uffd-handler SOCK, or any VMM speaking Firecracker's handshake), then
 * serves its guest RAM from a snapshot's memory file on first touch until
 * the VMM exits. docs/design/userfaultfd.md.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "uffd/uffd_handler.h"
#include "uffd/uffd_proto.h"
#include "util/unix_socket.h"

static void usage(FILE *f)
{
	fputs("usage: forkd-uffd --socket SOCK (--snapshot DIR | --memory FILE)\n"
	      "                  [--record FILE] [--prefetch FILE] [--fault-around PAGES]\n"
	      "Serves one VM's guest RAM lazily from a snapshot memory file: listens on\n"
	      "SOCK for the VMM's userfaultfd handshake (SCM_RIGHTS + a JSON array of\n"
	      "{base_host_virt_addr, size, offset, page_size}), then fills each page on\n"
	      "first touch (UFFDIO_COPY; holes and discarded pages as zeros) until the\n"
	      "VMM exits; prints one JSON line of counts at the end.\n"
	      "\n"
	      "  --socket SOCK    Unix socket to listen on (a stale one is replaced)\n"
	      "  --snapshot DIR   serve DIR/memory\n"
	      "  --memory FILE    serve FILE (a snapshot's memory file)\n"
	      "  --record FILE    write the file offsets of the pages in the order the VM\n"
	      "                   first touched them (8-byte little-endian each)\n"
	      "  --prefetch FILE  fill the pages of such a record in bulk at once,\n"
	      "                   serving faults in between\n"
	      "  --fault-around N a fault fills its untouched neighbours too, within its\n"
	      "                   aligned block of N pages (1..512, default 1: only the page)\n"
	      "Exit status: 0 the VM exited, 1 an error (one line on stderr), 2 bad usage.\n",
	      f);
}

static int listen_on(const char *path, struct fk_err *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path))
		return fk_fail(err, ENAMETOOLONG, "--socket %s: longer than %zu bytes", path,
			       sizeof(sa.sun_path) - 1);
	ret = unix_socket_clear_stale("uffd handler socket", path, err);
	if (ret < 0)
		return ret;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fk_fail_errno(err, errno, "--socket %s: socket", path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
		ret = fk_fail_errno(err, errno, "--socket %s: bind/listen", path);
		close(fd);
		return ret;
	}
	return fd;
}

static void print_stats(const struct uffd_handler_stats *s, const char *how)
{
	printf("{\"uffd\":\"%s\",\"faults\":%llu,\"copied\":%llu,\"zeroed\":%llu,"
	       "\"already\":%llu,\"around\":%llu,\"prefetched\":%llu,\"prefetch_us\":%llu,"
	       "\"removed\":%llu,"
	       "\"unmapped\":%llu,\"recorded\":%llu}\n",
	       how, (unsigned long long)s->faults, (unsigned long long)s->copied,
	       (unsigned long long)s->zeroed, (unsigned long long)s->already,
	       (unsigned long long)s->around, (unsigned long long)s->prefetched,
	       (unsigned long long)s->prefetch_us, (unsigned long long)s->removed,
	       (unsigned long long)s->unmapped, (unsigned long long)s->recorded);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"snapshot", required_argument, NULL, 'd'},
	    {"memory", required_argument, NULL, 'm'},
	    {"record", required_argument, NULL, 'r'},
	    {"prefetch", required_argument, NULL, 'p'},
	    {"fault-around", required_argument, NULL, 'a'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *sock_path = NULL, *memory = NULL, *record = NULL, *prefetch = NULL;
	char memory_buf[4200];
	struct uffd_region regions[UFFD_MAX_REGIONS];
	struct uffd_handler h = {.uffd = -1};
	struct fk_err err = {0};
	int c, lfd = -1, conn = -1, uffd = -1, nr = 0, ret = 1;
	unsigned long around = 1;
	char *end;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			sock_path = optarg;
			break;
		case 'd':
			snprintf(memory_buf, sizeof(memory_buf), "%s/memory", optarg);
			memory = memory_buf;
			break;
		case 'm':
			memory = optarg;
			break;
		case 'r':
			record = optarg;
			break;
		case 'p':
			prefetch = optarg;
			break;
		case 'a':
			errno = 0;
			around = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || around < 1 ||
			    around > UFFD_MAX_FAULT_AROUND) {
				fprintf(stderr,
					"forkd-uffd: error: --fault-around '%s': expected 1 to %d "
					"pages\n",
					optarg, UFFD_MAX_FAULT_AROUND);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "forkd-uffd: error: bad option '%s'\n", argv[optind - 1]);
			usage(stderr);
			return 2;
		}
	}
	if (!sock_path || !memory || optind != argc) {
		fprintf(stderr, "forkd-uffd: error: --socket and one of --snapshot, --memory are "
				"required, and nothing else\n");
		usage(stderr);
		return 2;
	}
	lfd = listen_on(sock_path, &err);
	if (lfd < 0)
		goto fail;
	/* Whoever starts us waits for this line before starting the VMM. */
	printf("forkd-uffd: listening on %s\n", sock_path);
	fflush(stdout);
	do
		conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	while (conn < 0 && errno == EINTR);
	if (conn < 0) {
		fk_fail_errno(&err, errno, "--socket %s: accept", sock_path);
		goto fail;
	}
	close(lfd);
	lfd = -1;
	unlink(sock_path);
	if (uffd_handshake_recv(conn, UFFD_HANDSHAKE_WAIT, &uffd, regions, UFFD_MAX_REGIONS, &nr,
				&err) < 0)
		goto fail;
	if (uffd_handler_open(&h, uffd, regions, nr, memory, &err) < 0)
		goto fail;
	uffd = -1; /* h owns it */
	h.fault_around = around;
	if (prefetch && uffd_handler_load_prefetch(&h, prefetch, &err) < 0)
		goto fail;
	if (record) {
		h.record = fopen(record, "wbe");
		if (!h.record) {
			fk_fail_errno(&err, errno, "--record %s", record);
			goto fail;
		}
	}
	if (uffd_handler_run(&h, conn, &err) < 0)
		goto fail;
	print_stats(&h.stats, "done");
	ret = 0;
	goto out;
fail:
	fprintf(stderr, "forkd-uffd: error: %s\n", err.msg);
	if (h.state)
		print_stats(&h.stats, "failed");
out:
	if (h.record && fclose(h.record) != 0 && ret == 0) {
		fprintf(stderr, "forkd-uffd: error: --record %s: %s\n", record, strerror(errno));
		ret = 1;
	}
	h.record = NULL;
	uffd_handler_close(&h);
	if (uffd >= 0)
		close(uffd);
	if (conn >= 0)
		close(conn);
	if (lfd >= 0) {
		close(lfd);
		unlink(sock_path);
	}
	return ret;
}
