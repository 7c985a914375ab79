/* SPDX-License-Identifier: MIT */
/* `forkd`: the command-line client: one forkd-vmm's control socket, and fan-out of snapshot
 * children. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "control/control.h"

#define EXIT_NOT_OK CLI_EXIT_NOT_OK
#define EXIT_USAGE  CLI_EXIT_USAGE

#define DEFAULT_TIMEOUT_MS 10000

static const char usage_text[] =
    "usage: through the daemon (forkd serve), each also with [--daemon PATH | --url URL "
    "--token-file F]:\n"
    "       forkd vm create (--image NAME | --kernel PATH [--initrd PATH] [--append S])\n"
    "                       [--mem MIB] [--cpus N] [--tag T] [--net none|host|nat] [--no-vsock]\n"
    "                       [--memory-max SIZE] [--cpu-max QUOTA[/PERIOD]] [--pids-max N] "
    "[--json]\n"
    "       forkd vm ls [--json]\n"
    "       forkd vm rm ID [--cascade]\n"
    "       forkd branch ID [-n N] [--persist --tag T] [--no-wait] [--json]\n"
    "       forkd snapshot ID --tag T [--json]\n"
    "       forkd spawn TAG -n N [--memory-max SIZE] [--cpu-max QUOTA[/PERIOD]] [--pids-max N]\n"
    "                       [--json]\n"
    "       forkd snapshots [ls [--json] | rm TAG [--cascade]]\n"
    "       forkd tree [--json]\n"
    "       forkd exec ID [-i] [--env K=V]... [--cwd DIR] [--uid N] [--timeout MS] -- CMD "
    "[ARG]...\n"
    "       forkd cp SRC ID:/path | ID:/path DST\n"
    "   directly, one VMM or one VM's agent:\n"
    "       forkd vm status|pause|resume|shutdown --socket PATH [--timeout MS]\n"
    "       forkd vm call --socket PATH [--timeout MS] '<json request>'\n"
    "       forkd spawn SNAPSHOT_DIR -n N --out DIR [--mode fanout|exec] [--vmm PATH]\n"
    "                   [--timeout MS]\n"
    "       forkd kill DIR\n"
    "       forkd snapshot verify DIR [--json]\n"
    "       forkd snapshot prewarm DIR [--json]\n"
    "       forkd snapshot compact DIR OUT [--json]\n"
    "       forkd exec VM [-i] [--env K=V]... [--cwd DIR] [--uid N] [--gid N] [--timeout MS] -- "
    "CMD [ARG]...\n"
    "       forkd cp SRC DST            (one of them VM:/absolute/path)\n"
    "       forkd agent VM ping|stat PATH|ls PATH|rm [-r] PATH|shutdown [poweroff|reboot]\n"
    "       forkd image build NAME [--packages P1,P2,...] | ls | rm NAME\n"
    "       forkd doctor [--json]\n"
    "       forkd serve [--state-dir DIR] [--socket PATH] [--listen HOST:PORT --token-file F\n"
    "                   [--tls-cert F --tls-key F]] [--audit-log F] [--vmm PATH]\n"
    "                   [--jail-uids FIRST[:COUNT] | --no-jail]\n"
    "\n"
    "Daemon commands: the daemon is at --daemon PATH, else $FORKD_SOCKET, else\n"
    "/var/lib/forkd/forkd.sock; or over TCP at --url http(s)://HOST:PORT with the bearer\n"
    "token in --token-file F. ID is a VM id (vm-1a2b3c4d), TAG a snapshot tag. Output is\n"
    "for people (ids one per line, tables, the lineage as a tree); --json prints the\n"
    "daemon's JSON. create, branch, snapshot and spawn report progress on stderr.\n"
    "vm rm and snapshots rm refuse while there are descendants, unless --cascade.\n"
    "branch -n 0 only with --persist --tag T (keeps the instant as snapshot T).\n"
    "--memory-max (256M, 1G: whole MiB, 16M to 1T; no swap), --cpu-max (microseconds,\n"
    "50000 is half a CPU; period 100000 unless given) and --pids-max (tasks) put the VM in\n"
    "a cgroup v2 of its own with these limits (each VM of a spawn in its own); its BRANCH\n"
    "children share it. A VM over --memory-max is killed (exited, status 137).\n"
    "spawn TAG asks the daemon; spawn works on a local SNAPSHOT_DIR as below when the\n"
    "argument is an existing directory or a path, or --out is given.\n"
    "exec ID streams the command's output and exits with its status (128+N for signal\n"
    "N), 125 if it did not run; cp with ID:/path copies one file through the daemon.\n"
    "Exit status: 0 ok, 1 the daemon refused (its message is printed), 2 usage error or\n"
    "no daemon to ask.\n"
    "\n"
    "vm: sends one command to a forkd-vmm control socket and prints the reply as JSON.\n"
    "Exit status: 0 ok, 1 the VMM answered with an error, 2 usage error or no answer.\n"
    "\n"
    "spawn: starts N children of the snapshot, each in DIR/child-I/ (pid, control.sock,\n"
    "serial.log, serial.in FIFO, overlay/, vsock.sock if the snapshot has a vsock device),\n"
    "and prints one JSON line per child once its control socket answers, then a summary\n"
    "line. --mode fanout (the default for N > 1): one forkd-vmm restores the snapshot\n"
    "once and forks the children (docs/branch.md; their errors in DIR/child-I.err, the\n"
    "restore's in DIR/fanout.err); --mode exec (the default for N = 1): one forkd-vmm\n"
    "per child, each restoring it (errors in DIR/child-I/vmm.err).\n"
    "--vmm defaults to forkd-vmm next to forkd; --timeout (default 30000) bounds the wait.\n"
    "Exit status: 0 all running, 1 a child failed or the timeout passed (all children\n"
    "are then killed), 2 usage error.\n"
    "\n"
    "snapshot verify: checks every 1 MiB chunk of DIR/memory against the XXH3 recorded\n"
    "when the snapshot was written, naming the first bad chunk's offset.\n"
    "Exit status: 0 intact, 1 corrupt or unreadable, 2 usage error.\n"
    "\n"
    "snapshot prewarm: reads DIR/memory's data (not its holes) into the page cache before a\n"
    "fan-out (spawn), reporting MiB/s. Exit status: 0 done, 1 not a snapshot or unreadable,\n"
    "2 usage error.\n"
    "\n"
    "kill: SIGTERM to every child recorded under DIR, SIGKILL after 2 s; one JSON line each.\n"
    "Exit status: 0 all gone, 1 a child could not be killed or none was recorded, 2 usage.\n"
    "\n"
    "exec, cp, agent: talk to the guest agent (forkd-agent) of a VM through its vsock Unix\n"
    "socket. VM is the socket (forkd-vmm --vsock PATH) or a directory holding vsock.sock\n"
    "(a BRANCH child's). exec streams the command's stdout and stderr as they arrive, and\n"
    "its stdin with -i; it exits with the command's status (128+N for signal N), 124 if\n"
    "--timeout killed it, 125 if it did not run, 126 not executable, 127 not found.\n"
    "cp copies one regular file either way, written atomically, mode kept.\n"
    "\n"
    "image: root file system images for Linux sandboxes (images/rootfs.sh, docs/images.md).\n"
    "build makes NAME (Debian minbase + the packages + forkd-agent, ext4) in the image cache,\n"
    "or reuses it while its inputs are unchanged; ls prints one JSON line per image; rm\n"
    "removes one. Boot one with forkd-vmm --disk PATH,ro --append '... forkd.root=/dev/vda'.\n"
    "ls and rm [--daemon PATH | --url URL --token-file F] go through the daemon when one\n"
    "answers (rm is then refused while a VM or snapshot uses the image), else the local\n"
    "cache; stderr says which. build is always local.\n"
    "Exit status: the script's (0 ok, 1 failed), 2 usage error.\n"
    "\n"
    "doctor: can this machine run forkd? /dev/kvm and its kind (hardware, pvm: probe guests\n"
    "only, none: the nested test host scripts/testhost.sh runs everything), the KVM API\n"
    "version and capabilities, userfaultfd, transparent huge pages, cgroup v2, free disk\n"
    "space for images and scratch files, and a verdict; --json prints one JSON object.\n"
    "Exit status: 0 the machine was inspected (whatever it lacks), 2 usage error.\n"
    "\n"
    "serve: the daemon and its REST API (docs/rest-api.md) on a Unix socket (default\n"
    "DIR/forkd.sock, DIR defaulting to /var/lib/forkd; root and this uid only) and, with\n"
    "--listen, on TCP with a bearer token (--token-file, at least 16 bytes) and optional TLS.\n"
    "Prints one JSON line with the socket when ready. SIGTERM/SIGINT stop it (the VMs keep\n"
    "running; the next serve re-adopts them), SIGHUP reopens --audit-log. Every VM it\n"
    "starts is jailed (forkd-vmm --jail, docs/jail.md) with a uid of its own from FIRST\n"
    "(default 1879048192:65536) and the group FIRST; BRANCH children share their source's.\n"
    "--no-jail runs them as root, unjailed.\n"
    "Exit status: 0 stopped by a signal, 1 could not start, 2 usage error.\n";

int cli_usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("forkd: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s", usage_text);
	return EXIT_USAGE;
}

struct vm_args {
	const char *action;
	const char *socket;
	const char *raw;
	int timeout_ms;
};

int cli_parse_timeout(const char *s, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > 3600 * 1000)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

/* Returns 0, or an exit status after printing the problem. */
static int parse_vm_args(int argc, char **argv, struct vm_args *a)
{
	a->timeout_ms = DEFAULT_TIMEOUT_MS;
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i], *value = NULL;

		if (strncmp(arg, "--socket=", 9) == 0) {
			a->socket = arg + 9;
		} else if (strcmp(arg, "--socket") == 0 || strcmp(arg, "--timeout") == 0) {
			if (i + 1 == argc)
				return cli_usage_error("%s: expected a value after it", arg);
			value = argv[++i];
			if (arg[2] == 's')
				a->socket = value;
			else if (cli_parse_timeout(value, &a->timeout_ms) < 0)
				return cli_usage_error(
				    "--timeout '%s': expected milliseconds, 0 to 3600000", value);
		} else if (strncmp(arg, "--timeout=", 10) == 0) {
			if (cli_parse_timeout(arg + 10, &a->timeout_ms) < 0)
				return cli_usage_error("'%s': expected milliseconds, 0 to 3600000",
						       arg);
		} else if (arg[0] == '-' && arg[1] == '-') {
			return cli_usage_error("unknown option '%s'", arg);
		} else if (!a->action) {
			a->action = arg;
		} else if (strcmp(a->action, "call") == 0 && !a->raw) {
			a->raw = arg;
		} else {
			return cli_usage_error("unexpected argument '%s'", arg);
		}
	}
	if (!a->action)
		return cli_usage_error(
		    "%s", "vm: expected an action (create, ls, rm through the daemon; status, "
			  "pause, resume, shutdown, call with --socket)");
	if (!a->socket || !a->socket[0])
		return cli_usage_error("vm %s: expected --socket PATH", a->action);
	if (strcmp(a->action, "call") == 0 && !a->raw)
		return cli_usage_error(
		    "%s", "vm call: expected a JSON request such as '{\"cmd\":\"help\"}'");
	return 0;
}

static json_t *build_request(const struct vm_args *a)
{
	static const char *const simple[] = {"status", "pause", "resume", "shutdown"};
	json_error_t jerr;
	json_t *req;

	if (strcmp(a->action, "call") == 0) {
		req = json_loads(a->raw, JSON_DECODE_ANY, &jerr);
		if (!req) {
			fprintf(stderr, "forkd: vm call '%s': invalid JSON at column %d: %s\n",
				a->raw, jerr.column, jerr.text);
			return NULL;
		}
		if (!json_is_object(req)) {
			fprintf(stderr,
				"forkd: vm call '%s': expected a JSON object such as "
				"{\"cmd\":\"status\"}\n",
				a->raw);
			json_decref(req);
			return NULL;
		}
		return req;
	}
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
		if (strcmp(a->action, simple[i]) == 0)
			return json_pack("{s:s}", "cmd", simple[i]);
	cli_usage_error(
	    "vm '%s': unknown action (expected create, ls, rm, or status, pause, resume, "
	    "shutdown or call with --socket)",
	    a->action);
	return NULL;
}

static int vm_command(int argc, char **argv)
{
	struct fk_err err = {0};
	struct vm_args a = {0};
	json_t *req, *reply;
	json_t *ok, *error;
	int ret;

	if (argc > 0 && (strcmp(argv[0], "create") == 0 || strcmp(argv[0], "ls") == 0 ||
			 strcmp(argv[0], "rm") == 0))
		return cli_vm_daemon(argc, argv);
	ret = parse_vm_args(argc, argv, &a);
	if (ret)
		return ret;
	req = build_request(&a);
	if (!req)
		return EXIT_USAGE;
	ret = control_call(a.socket, req, &reply, a.timeout_ms, &err);
	json_decref(req);
	if (ret < 0) {
		fprintf(stderr, "forkd: vm %s: %s\n", a.action, err.msg);
		return EXIT_USAGE;
	}
	ok = json_object_get(reply, "ok");
	if (json_is_true(ok)) {
		json_dumpf(reply, stdout, JSON_INDENT(2));
		putchar('\n');
		json_decref(reply);
		return fflush(stdout) == 0 ? 0 : EXIT_NOT_OK;
	}
	error = json_object_get(reply, "error");
	fprintf(stderr, "forkd: vm %s: %s\n", a.action,
		json_is_string(error) ? json_string_value(error)
				      : "the VMM replied without \"ok\":true and without an error");
	json_decref(reply);
	return EXIT_NOT_OK;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error(
		    "%s", "expected a command (vm, branch, snapshot, snapshots, spawn, tree, exec, "
			  "cp, kill, agent, image, doctor, serve)");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(usage_text, stdout);
		return 0;
	}
	if (strcmp(argv[1], "vm") == 0)
		return vm_command(argc - 2, argv + 2);
	if (strcmp(argv[1], "spawn") == 0)
		return cli_spawn(argc - 2, argv + 2);
	if (strcmp(argv[1], "kill") == 0)
		return cli_kill(argc - 2, argv + 2);
	if (strcmp(argv[1], "exec") == 0)
		return cli_exec(argc - 2, argv + 2);
	if (strcmp(argv[1], "cp") == 0)
		return cli_cp(argc - 2, argv + 2);
	if (strcmp(argv[1], "agent") == 0)
		return cli_agent(argc - 2, argv + 2);
	if (strcmp(argv[1], "image") == 0)
		return cli_image(argc - 2, argv + 2);
	if (strcmp(argv[1], "doctor") == 0)
		return cli_doctor(argc - 2, argv + 2);
	if (strcmp(argv[1], "branch") == 0)
		return cli_branch(argc - 2, argv + 2);
	if (strcmp(argv[1], "snapshot") == 0 && argc > 2 && strcmp(argv[2], "verify") == 0)
		return cli_snapshot_verify(argc - 3, argv + 3);
	if (strcmp(argv[1], "snapshot") == 0 && argc > 2 && strcmp(argv[2], "prewarm") == 0)
		return cli_snapshot_prewarm(argc - 3, argv + 3);
	if (argc >= 3 && strcmp(argv[1], "snapshot") == 0 && strcmp(argv[2], "compact") == 0)
		return cli_snapshot_compact(argc - 3, argv + 3);
	if (strcmp(argv[1], "snapshot") == 0)
		return cli_snapshot(argc - 2, argv + 2);
	if (strcmp(argv[1], "snapshots") == 0)
		return cli_snapshots(argc - 2, argv + 2);
	if (strcmp(argv[1], "tree") == 0)
		return cli_tree(argc - 2, argv + 2);
	if (strcmp(argv[1], "serve") == 0)
		return cli_serve(argc - 2, argv + 2);
	return cli_usage_error("unknown command '%s' (expected vm, branch, snapshot, snapshots, "
			       "spawn, tree, exec, cp, kill, agent, image, doctor or serve)",
			       argv[1]);
}
