#!/usr/bin/env python3
"""The SDK's flows against a real `forkd serve` (not run by unittest discover).

    FORKD_SOCKET=/var/lib/forkd/forkd.sock python3 sdk/python/tests/e2e_daemon.py [--image NAME] [--keep]

Needs a running daemon on $FORKD_SOCKET and the image (default
forkd-test-base, with python3: `make test-rootfs`). Without FORKD_SOCKET it
fails (exit 2) and says so: it never skips silently. Each step prints PASS
or FAIL with the reason; exit status 0 only if every step passed. Every VM
and snapshot it made is removed at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import forkd  # noqa: E402
from forkd import Controller, Sandbox  # noqa: E402


class E2E:
    def __init__(self, args):
        self.args = args
        self.c = Controller(socket=os.environ["FORKD_SOCKET"], timeout=args.timeout)
        self.passed = 0
        self.failed = []
        self.vms = []        # roots to delete with cascade
        self.tags = []
        self.sb = None
        self.children = []
        self.w = args.workdir.rstrip("/")  # where files go inside the guest

    def step(self, name, fn):
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported
            self.failed.append(name)
            print(f"FAIL {name} ({time.monotonic() - t0:.2f} s): {type(e).__name__}: {e}",
                  flush=True)
            if self.args.verbose:
                traceback.print_exc()
            return False
        self.passed += 1
        print(f"PASS {name} ({time.monotonic() - t0:.2f} s)", flush=True)
        return True

    # -- steps ---------------------------------------------------------------

    def health(self):
        h = self.c.health()
        check(h.get("ok") is True, f"healthz: {h}")
        check(isinstance(h.get("vms"), int), f"healthz without a VM count: {h}")

    def create(self):
        self.sb = Sandbox.create(self.args.image, controller=self.c, mem_mib=512, cpus=1,
                                 tag=f"sdk-e2e-{os.getpid()}")
        self.vms.append(self.sb.id)
        r = self.sb.commands.run(["mkdir", "-p", self.w])
        check(r.exit_code == 0, f"mkdir {self.w}: {r!r}")
        vm = self.c.vm(self.sb.id)
        check(vm.state == "running", f"state {vm.state}")
        check(vm.image == self.args.image, f"image {vm.image}")
        check(any(v.id == self.sb.id for v in self.c.vms()), "not in GET /v1/vms")

    def run_basic(self):
        r = self.sb.commands.run("echo hello; echo oops >&2; exit 3")
        check((r.exit_code, r.stdout, r.stderr) == (3, "hello\n", "oops\n"), repr(r))
        r = self.sb.commands.run(["python3", "-c", "import os,sys; print(os.getcwd(), "
                                  "os.environ['K'], sys.stdin.read())"],
                                 env={"K": "v"}, cwd=self.w, stdin=b"in")
        check(r.stdout == f"{self.w} v in\n" and r.exit_code == 0, repr(r))
        r = self.sb.commands.run("kill -TERM $$")
        check(r.signal == 15 and r.exit_code is None, repr(r))
        r = self.sb.commands.run("id -u", user="nobody")
        check(r.stdout.strip() not in ("", "0"), f"user=nobody ran as {r.stdout!r}")

    def run_streaming(self):
        times = []
        chunks = []

        def on_out(text):
            times.append(time.monotonic())
            chunks.append(text)

        t0 = time.monotonic()
        r = self.sb.commands.run("for i in 1 2 3 4; do echo $i; sleep 0.5; done",
                                 on_stdout=on_out)
        end = time.monotonic()
        check(r.stdout == "1\n2\n3\n4\n", repr(r))
        check("".join(chunks) == r.stdout, f"callbacks got {chunks!r}")
        check(times and times[0] - t0 < end - t0 - 1.0,
              f"first output {times[0] - t0:.2f} s, end {end - t0:.2f} s: not streamed")

    def run_timeout(self):
        try:
            self.sb.commands.run("echo before; sleep 30", timeout=1)
        except forkd.CommandTimeout as e:
            check(e.stdout == "before\n", f"partial stdout {e.stdout!r}")
            return
        raise AssertionError("no CommandTimeout")

    def files(self):
        data = os.urandom(5 << 20)
        self.sb.files.write(f"{self.w}/data.bin", data, mode=0o600)
        check(self.sb.files.read(f"{self.w}/data.bin") == data, "read back differs")
        r = self.sb.commands.run(["sh", "-c", 'sha256sum "$0"; stat -c %a "$0"',
                                  f"{self.w}/data.bin"])
        digest, mode = r.stdout.split()[0], r.stdout.split()[-1]
        check(digest == hashlib.sha256(data).hexdigest(), "sha256 inside the guest differs")
        check(mode == "600", f"mode {mode}")
        self.sb.files.write(f"{self.w}/text.txt", "héllo\n")
        check(self.sb.commands.run(["cat", f"{self.w}/text.txt"]).stdout == "héllo\n",
              "text file")
        try:
            self.sb.files.read("/nonexistent/sdk-e2e")
        except forkd.NotFound:
            return
        raise AssertionError("reading a missing file did not raise NotFound")

    def branch(self):
        self.sb.files.write(f"{self.w}/mark", "before-branch\n")
        self.children = self.sb.branch(4)
        check(len(self.children) == 4, f"{len(self.children)} children")
        rnd = set()
        for k in self.children:
            check(isinstance(k, Sandbox) and k.vm.parent == self.sb.id, f"parent {k.vm.parent}")
            r = k.commands.run(["python3", "-c", "import os; print(os.urandom(16).hex())"])
            check(r.exit_code == 0, repr(r))
            rnd.add(r.stdout.strip())
            check(k.commands.run(["cat", f"{self.w}/mark"]).stdout == "before-branch\n",
                  "child lost the source's state")
        check(len(rnd) == 4, f"children share os.urandom: {rnd}")
        check(self.sb.commands.run("true").exit_code == 0, "the source does not run on")

    def tree(self):
        nodes = self.c.tree()
        ids = {n.vm.id: n for n in nodes}
        check(self.sb.id in ids, "source missing from the tree")
        for k in self.children:
            check(k.id in ids and ids[k.id].depth == ids[self.sb.id].depth + 1,
                  f"child {k.id} not under its source")

    def snapshot_spawn(self):
        tag = f"sdk-e2e-{os.getpid()}"
        s = self.sb.snapshot(tag)
        self.tags.append(tag)
        check(s.tag == tag and s.state == "ready", repr(s))
        check(any(x.tag == tag for x in self.c.snapshots()), "not in GET /v1/snapshots")
        check(self.c.get_snapshot(tag).tag == tag, "GET /v1/snapshots/{tag}")
        spawned = Sandbox.spawn(tag, 2, controller=self.c)
        check(len(spawned) == 2, f"{len(spawned)} spawned")
        for sp in spawned:
            check(sp.commands.run(["cat", f"{self.w}/mark"]).stdout == "before-branch\n",
                  "spawned state")
        try:
            self.c.delete_snapshot(tag)
            raise AssertionError("deleting a snapshot with spawned VMs did not conflict")
        except forkd.Conflict:
            pass
        removed = self.c.delete_snapshot(tag, cascade=True)
        self.tags.remove(tag)
        check(tag in removed and all(sp.id in removed for sp in spawned), f"removed {removed}")

    def branch_persist(self):
        tag = f"sdk-e2e-p{os.getpid()}"
        res = self.c.branch(self.sb.id, 1, persist=True, tag=tag)
        self.tags.append(tag)
        check(res.snapshot is not None and res.snapshot.tag == tag, repr(res))
        check(len(res.children) == 1 and res.zygote, repr(res))
        deadline = time.monotonic() + self.args.timeout
        snap = res.snapshot
        while snap.state == "writing" and time.monotonic() < deadline:
            time.sleep(0.2)
            snap = self.c.get_snapshot(tag)
        check(snap.state == "ready", f"persisted snapshot {snap.state}")

    def errors(self):
        expect(forkd.NotFound, self.c.vm, "vm-00000000")
        expect(forkd.Conflict, self.c.delete_vm, self.sb.id)  # it has children
        expect(forkd.BadRequest, self.c.branch, self.sb.id, 0)
        expect(forkd.BadRequest, self.c.branch, self.sb.id, 65)
        expect(forkd.BadRequest, self.c.snapshot, self.sb.id, ".bad")
        try:
            self.c.create_vm(image="sdk-e2e-no-such-image")
            raise AssertionError("an unknown image was accepted")
        except forkd.ForkdError as e:
            check(e.status is not None and 400 <= e.status < 500, repr(e))

    def metrics(self):
        text = self.c.metrics()
        for name in ("forkd_branch_pause_seconds", "forkd_http_requests_total"):
            check(name in text, f"{name} missing from /metrics")

    def mcp(self):
        """The MCP server (python3 -m forkd.mcp) as an agent would drive it:
        a command in the sandbox, a BRANCH, the child's view of the file the
        branch step wrote, and the child removed."""
        import json
        import subprocess
        env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))}
        p = subprocess.Popen([sys.executable, "-m", "forkd.mcp", "--socket",
                              os.environ["FORKD_SOCKET"]], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        ids = iter(range(1, 100))

        def call(method, params):
            msg_id = next(ids)
            p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method,
                                      "params": params}) + "\n")
            p.stdin.flush()
            answer = json.loads(p.stdout.readline() or "null")
            check(isinstance(answer, dict) and answer.get("id") == msg_id, f"answer {answer!r}")
            check("result" in answer, f"{method}: {answer.get('error')}")
            return answer["result"]

        def tool(name, **arguments):
            r = call("tools/call", {"name": name, "arguments": arguments})
            check(r.get("isError") is False, f"{name}: {r.get('content')}")
            return r["structuredContent"]

        try:
            init = call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                       "clientInfo": {"name": "sdk-e2e", "version": "0"}})
            check(init["serverInfo"]["name"] == "forkd", repr(init))
            r = tool("sandbox_exec", id=self.sb.id, command="cat /etc/hostname; exit 4")
            check(r["exit_code"] == 4 and r["stdout"].strip(), repr(r))
            kids = tool("sandbox_branch", id=self.sb.id, n=1)["children"]
            check(len(kids) == 1, repr(kids))
            r = tool("sandbox_read_file", id=kids[0], path=f"{self.w}/mark")
            check(r["content"] == "before-branch\n", repr(r))
            check(kids[0] in tool("sandbox_delete", id=kids[0])["removed"], "child not removed")
        finally:
            p.stdin.close()
            check(p.wait(timeout=30) == 0, f"forkd.mcp exited {p.returncode}")

    def cleanup(self):
        for tag in list(self.tags):
            self.c.delete_snapshot(tag, cascade=True)
            self.tags.remove(tag)
        for vm in list(self.vms):
            removed = self.c.delete_vm(vm, cascade=True)
            check(vm in removed, f"removed {removed}")
            self.vms.remove(vm)
        left = {v.id for v in self.c.vms()} & ({self.sb.id} | {k.id for k in self.children}
                                               if self.sb else set())
        check(not left, f"still listed after delete: {left}")

    def main(self):
        if not self.step("health", self.health):
            return
        if not self.step("create", self.create):
            return
        for name in ("run_basic", "run_streaming", "run_timeout", "files", "branch", "tree",
                     "snapshot_spawn", "branch_persist", "errors", "metrics", "mcp"):
            self.step(name, getattr(self, name))
        if not self.args.keep:
            self.step("cleanup", self.cleanup)


def check(cond, why):
    if not cond:
        raise AssertionError(why)


def expect(cls, fn, *a):
    try:
        fn(*a)
    except cls:
        return
    except forkd.ForkdError as e:
        raise AssertionError(f"{fn.__name__}{a}: {type(e).__name__} ({e}), wanted {cls.__name__}")
    raise AssertionError(f"{fn.__name__}{a}: no error, wanted {cls.__name__}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=os.environ.get("FORKD_E2E_IMAGE", "forkd-test-base"))
    p.add_argument("--workdir", default="/tmp/forkd-sdk-e2e",
                   help="directory inside the guest for the test's files")
    p.add_argument("--timeout", type=float, default=300.0, help="per call, seconds")
    p.add_argument("--keep", action="store_true", help="leave the VMs and snapshots")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    if not os.environ.get("FORKD_SOCKET"):
        print("e2e_daemon: FAIL: FORKD_SOCKET is not set; start `forkd serve` and set "
              "FORKD_SOCKET to its socket (e.g. /var/lib/forkd/forkd.sock). Not skipping.",
              file=sys.stderr)
        return 2
    e = E2E(args)
    print(f"e2e_daemon: forkd SDK {forkd.__version__} against {e.c.transport.describe()}, "
          f"image {args.image}", flush=True)
    try:
        e.main()
    finally:
        if e.vms or e.tags:
            if not args.keep:
                for tag in e.tags:
                    try:
                        e.c.delete_snapshot(tag, cascade=True)
                    except forkd.ForkdError:
                        pass
                for vm in e.vms:
                    try:
                        e.c.delete_vm(vm, cascade=True)
                    except forkd.ForkdError:
                        pass
    print(f"e2e_daemon: {e.passed} passed, {len(e.failed)} failed"
          + (f" ({', '.join(e.failed)})" if e.failed else ""))
    return 0 if not e.failed and e.passed else 1


if __name__ == "__main__":
    sys.exit(main())
