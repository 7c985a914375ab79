"""Sandbox against the fake daemon: streamed commands, files, branch,
snapshot, lifecycle."""

import base64
import os
import threading
import time
import unittest
from unittest import mock

from fake_daemon import FakeDaemon, Reply, b64, error_reply, snap_json, vm_json

import forkd
import forkd.controller
from forkd import CommandResult, Controller, Sandbox

VM_ID = "vm-00000001"
EXEC = f"/v1/vms/{VM_ID}/exec"
FILES = f"/v1/vms/{VM_ID}/files"


class SandboxTestBase(unittest.TestCase):
    def setUp(self):
        self.fake = FakeDaemon().__enter__()
        self.addCleanup(self.fake.__exit__, None, None, None)
        self.c = Controller(socket=self.fake.socket, timeout=10)
        self.sb = Sandbox(VM_ID, self.c)

    def route(self, method, path, reply):
        self.fake.routes[(method, path)] = reply


class CommandsTest(SandboxTestBase):
    def test_streaming_callbacks_in_order_before_the_end(self):
        first_cb = threading.Event()
        seen = []

        def before_last():
            # The fake holds the last line back until the client has
            # reported output: only a streaming client gets past this.
            self.fake.event(("first callback before last chunk", first_cb.wait(5)))

        lines = [{"stdout": b64("hel")}, {"stderr": b64("warn1\n")}, {"stdout": b64("lo\n")},
                 {"stdout": b64(b"caf\xc3")}, {"stdout": b64(b"\xa9!")},  # é split in two
                 {"stderr": b64("warn2\n")}, {"exit": 0}]
        self.route("POST", EXEC, Reply(lines=lines, delay=0.05, before_last=before_last))

        def on(stream):
            def cb(text):
                seen.append((stream, text))
                self.fake.event(("cb", stream, text))
                first_cb.set()
            return cb

        res = self.sb.commands.run("echo hello", on_stdout=on("out"), on_stderr=on("err"))
        self.assertEqual(seen, [("out", "hel"), ("err", "warn1\n"), ("out", "lo\n"),
                                ("out", "caf"), ("out", "é!"), ("err", "warn2\n")])
        self.assertIsInstance(res, CommandResult)
        self.assertEqual(res.exit_code, 0)
        self.assertIsNone(res.signal)
        self.assertTrue(res.ok)
        self.assertEqual(res.stdout, "hello\ncafé!")
        self.assertEqual(res.stderr, "warn1\nwarn2\n")
        self.assertEqual(res.stdout_bytes, "hello\ncafé!".encode())
        ev = self.fake.events
        self.assertIn(("first callback before last chunk", True), ev)
        first = next(i for i, e in enumerate(ev) if e[0] == "cb")
        last_sent = ev.index(("send", len(lines) - 1))
        self.assertLess(first, last_sent, ev)
        body = self.fake.last.json()
        self.assertEqual(body, {"argv": ["/bin/sh", "-c", "echo hello"], "timeout_ms": 60000})
        self.assertEqual(self.fake.last.headers["content-type"], "application/json")

    def test_request_fields(self):
        self.route("POST", EXEC, Reply(lines=[{"exit": 3}]))
        res = self.sb.commands.run(["python3", "-c", "x"], env={"A": "1", "B": 2}, cwd="/tmp",
                                   uid=1000, stdin=b"\x00\xffin", timeout=2.5)
        self.assertEqual(res.exit_code, 3)
        self.assertFalse(res.ok)
        self.assertEqual(self.fake.last.json(),
                         {"argv": ["python3", "-c", "x"], "env": {"A": "1", "B": "2"},
                          "cwd": "/tmp", "uid": 1000,
                          "stdin": base64.b64encode(b"\x00\xffin").decode(), "timeout_ms": 2500})
        self.sb.commands.run("cat", stdin="héllo", timeout=0)  # 0: no time limit
        self.assertEqual(self.fake.last.json(),
                         {"argv": ["/bin/sh", "-c", "cat"], "stdin": b64("héllo")})
        with self.assertRaises(ValueError):
            self.sb.commands.run([])
        with self.assertRaises(ValueError):
            self.sb.commands.run("x", user="root", uid=0)

    def test_user_names(self):
        self.route("POST", EXEC, Reply(lines=[{"exit": 0}]))
        self.route("GET", FILES, Reply(body=b"root:x:0:0:root:/root:/bin/sh\n"
                                            b"nobody:x:65534:65534:nobody:/:/bin/false\n"))
        self.sb.commands.run("id", user="root")
        self.assertEqual(self.fake.last.json()["uid"], 0)
        self.sb.commands.run("id", user="nobody")
        self.assertEqual(self.fake.last.json()["uid"], 65534)
        self.assertEqual(self.fake.requests[-2].query, {"path": "/etc/passwd"})
        self.sb.commands.run("id", user=42)
        self.assertEqual(self.fake.last.json()["uid"], 42)
        with self.assertRaises(ValueError):
            self.sb.commands.run("id", user="nosuchuser")

    def test_signal(self):
        self.route("POST", EXEC, Reply(lines=[{"stdout": b64("x")}, {"signal": 15}]))
        res = self.sb.commands.run("kill -TERM $$")
        self.assertIsNone(res.exit_code)
        self.assertEqual(res.signal, 15)
        self.assertEqual(res.stdout, "x")
        self.assertFalse(res.ok)

    def test_agent_timeout(self):
        self.route("POST", EXEC, Reply(lines=[{"stdout": b64("partial")},
                                              {"signal": 9, "timed_out": True}]))
        with self.assertRaises(forkd.CommandTimeout) as cm:
            self.sb.commands.run("sleep 100", timeout=1)
        self.assertEqual(cm.exception.stdout, "partial")
        self.assertEqual(cm.exception.result.signal, 9)
        self.assertIsInstance(cm.exception, TimeoutError)

    def test_sigkill_at_the_limit_without_timed_out(self):
        # A daemon that reports only {"signal":9} at the time limit.
        self.route("POST", EXEC, Reply(lines=[{"stdout": b64("p")}, {"signal": 9}], delay=0.3))
        with self.assertRaises(forkd.CommandTimeout) as cm:
            self.sb.commands.run("sleep 100", timeout=0.2)
        self.assertEqual(cm.exception.stdout, "p")
        # Before the limit a SIGKILL is just a signal.
        self.route("POST", EXEC, Reply(lines=[{"signal": 9}]))
        res = self.sb.commands.run("kill -9 $$", timeout=30)
        self.assertEqual((res.signal, res.timed_out), (9, False))
        # An explicit "timed_out": false wins.
        self.route("POST", EXEC, Reply(lines=[{"stdout": b64("p")}, {"signal": 9,
                                                                     "timed_out": False}],
                                       delay=0.3))
        self.assertEqual(self.sb.commands.run("x", timeout=0.2).signal, 9)

    def test_client_side_deadline(self):
        self.route("POST", EXEC, Reply(lines=[{"stdout": b64("a")}, {"exit": 0}], delay=3))
        with mock.patch.object(forkd.controller, "COMMAND_TIMEOUT_GRACE", 0.2):
            t0 = time.monotonic()
            with self.assertRaises(forkd.CommandTimeout) as cm:
                self.sb.commands.run("sleep 100", timeout=0.1)
            self.assertLess(time.monotonic() - t0, 2.5)
        self.assertEqual(cm.exception.stdout, "a")

    def test_error_line(self):
        self.route("POST", EXEC, Reply(lines=[{"error": {"code": "bad_request",
                                                         "message": "ARGV0: no such file"}}]))
        with self.assertRaises(forkd.BadRequest) as cm:
            self.sb.commands.run(["/nope"])
        self.assertEqual(cm.exception.message, "ARGV0: no such file")
        self.assertEqual(cm.exception.code, "bad_request")
        self.assertEqual(cm.exception.status, 400)

    def test_error_status(self):
        self.route("POST", EXEC, error_reply(503, "unavailable", "VM vm-00000001 has no vsock"))
        with self.assertRaises(forkd.Unavailable) as cm:
            self.sb.commands.run("true")
        self.assertIsInstance(cm.exception, forkd.ServerError)
        self.assertEqual(cm.exception.status, 503)

    def test_stream_without_exit(self):
        self.route("POST", EXEC, Reply(lines=[{"stdout": b64("a")}]))
        with self.assertRaises(forkd.ConnectionFailed):
            self.sb.commands.run("true")

    def test_close_delimited_stream(self):
        self.route("POST", EXEC, Reply(lines=[{"stdout": b64("a")}, {"stdout": b64("b")},
                                              {"exit": 1}], chunked=False, delay=0.01))
        got = []
        res = self.sb.commands.run("true", on_stdout=got.append)
        self.assertEqual((res.exit_code, res.stdout, got), (1, "ab", ["a", "b"]))

    def test_large_output(self):
        blob = os.urandom(3 << 20)
        lines = [{"stdout": b64(blob[i:i + 65536])} for i in range(0, len(blob), 65536)]
        self.route("POST", EXEC, Reply(lines=lines + [{"exit": 0}]))
        res = self.sb.commands.run("head -c 3M /dev/urandom")
        self.assertEqual(res.stdout_bytes, blob)


class FilesTest(SandboxTestBase):
    def setUp(self):
        super().setUp()
        self.store = {}

        def put(req):
            self.store[req.query["path"]] = (req.body, req.query.get("mode"),
                                             req.headers.get("content-type"))
            return Reply(204)

        def get(req):
            if req.query["path"] not in self.store:
                return error_reply(404, "not_found", f"{req.query['path']}: no such file")
            return Reply(body=self.store[req.query["path"]][0])

        self.route("PUT", FILES, put)
        self.route("GET", FILES, get)

    def test_roundtrip_5mib_binary(self):
        data = os.urandom(5 << 20)
        self.sb.files.write("/root/data.bin", data)
        body, mode, ctype = self.store["/root/data.bin"]
        self.assertEqual(body, data)
        self.assertEqual(mode, "0644")
        self.assertEqual(ctype, "application/octet-stream")
        self.assertEqual(self.sb.files.read("/root/data.bin"), data)

    def test_text_mode_and_odd_paths(self):
        path = "/tmp/a b&c=d?é.txt"
        self.sb.files.write(path, "héllo\n", mode=0o755)
        self.assertEqual(self.store[path][:2], ("héllo\n".encode(), "0755"))
        self.assertEqual(self.sb.files.read(path), "héllo\n".encode())
        self.assertEqual(self.sb.files.read_text(path), "héllo\n")
        self.sb.files.write("/empty", b"")
        self.assertEqual(self.sb.files.read("/empty"), b"")
        with self.assertRaises(ValueError):
            self.sb.files.write("/x", b"", mode=0o17777)

    def test_missing_file(self):
        with self.assertRaises(forkd.NotFound) as cm:
            self.sb.files.read("/nope")
        self.assertIn("/nope", cm.exception.message)


class LifecycleTest(SandboxTestBase):
    def test_create(self):
        self.route("POST", "/v1/vms", Reply(201, obj=vm_json("vm-new")))
        sb = Sandbox.create(controller=self.c, mem_mib=1024, cpus=2)
        self.assertEqual(sb.id, "vm-new")
        self.assertIs(sb.controller, self.c)
        self.assertEqual(sb.vm.mem_mib, 512)
        self.assertEqual(self.fake.last.json(),
                         {"image": "forkd-test-base", "mem_mib": 1024, "cpus": 2})
        Sandbox.create("py", controller=self.c)
        self.assertEqual(self.fake.last.json(), {"image": "py"})
        Sandbox.create(controller=self.c, kernel="/k", append="x")
        self.assertEqual(self.fake.last.json(), {"kernel": "/k", "append": "x"})

    def test_create_uses_env_socket_by_default(self):
        self.route("POST", "/v1/vms", Reply(201, obj=vm_json("vm-env")))
        with mock.patch.dict(os.environ, {"FORKD_SOCKET": self.fake.socket}):
            sb = Sandbox.create()
        self.assertEqual(sb.id, "vm-env")

    def test_branch_returns_sandboxes(self):
        kids = [vm_json(f"vm-k{i}", parent=VM_ID, zygote="zy-1") for i in range(4)]
        self.route("POST", f"/v1/vms/{VM_ID}/branch",
                   Reply(201, obj={"zygote": "zy-1", "pause_us": 700, "children": kids}))
        children = self.sb.branch(4)
        self.assertEqual(self.fake.last.json(), {"n": 4, "persist": False, "wait": True})
        self.assertEqual([k.id for k in children], [f"vm-k{i}" for i in range(4)])
        for k in children:
            self.assertIsInstance(k, Sandbox)
            self.assertIs(k.controller, self.c)
            self.assertEqual(k.vm.parent, VM_ID)
        # A child is a full sandbox: its commands go to its own id.
        self.route("POST", "/v1/vms/vm-k2/exec", Reply(lines=[{"stdout": b64("k2")},
                                                               {"exit": 0}]))
        self.assertEqual(children[2].commands.run("hostname").stdout, "k2")
        self.assertEqual(self.sb.branch().__len__(), 4)  # the canned answer; n=1 sent
        self.assertEqual(self.fake.last.json()["n"], 1)

    def test_snapshot_and_spawn(self):
        self.route("POST", f"/v1/vms/{VM_ID}/snapshot", Reply(201, obj=snap_json("warm")))
        s = self.sb.snapshot("warm")
        self.assertEqual((s.tag, s.state), ("warm", "ready"))
        self.assertEqual(self.fake.last.json(), {"tag": "warm"})
        self.route("POST", "/v1/snapshots/warm/spawn",
                   Reply(201, obj={"vms": [vm_json("vm-a"), vm_json("vm-b")]}))
        sbs = Sandbox.spawn("warm", 2, controller=self.c)
        self.assertEqual([s.id for s in sbs], ["vm-a", "vm-b"])

    def test_info_and_connect(self):
        self.route("GET", f"/v1/vms/{VM_ID}", Reply(obj=vm_json(VM_ID, state="paused")))
        self.assertEqual(self.sb.info().state, "paused")
        sb = Sandbox.connect(VM_ID, self.c)
        self.assertTrue(sb.keep)
        with self.assertRaises(forkd.NotFound):
            Sandbox.connect("vm-gone", self.c)

    def test_context_manager_kills(self):
        deleted = []

        def delete(req):
            deleted.append((req.path, req.query))
            return Reply(obj={"removed": [req.path.rsplit("/", 1)[1]]})

        self.route("DELETE", f"/v1/vms/{VM_ID}", delete)
        with Sandbox(VM_ID, self.c) as sb:
            self.assertEqual(sb.id, VM_ID)
        self.assertEqual(deleted, [(f"/v1/vms/{VM_ID}", {"cascade": "true"})])
        with Sandbox(VM_ID, self.c, keep=True):
            pass
        self.assertEqual(len(deleted), 1)
        with self.assertRaises(RuntimeError):
            with Sandbox(VM_ID, self.c):
                raise RuntimeError("boom")  # killed, and the error propagates
        self.assertEqual(len(deleted), 2)
        self.assertEqual(self.sb.kill(), [VM_ID])
        self.assertEqual(deleted[-1][1], {})
        self.assertEqual(self.sb.kill(cascade=True), [VM_ID])
        self.assertEqual(deleted[-1][1], {"cascade": "true"})

    def test_kill_of_a_gone_vm(self):
        self.assertEqual(Sandbox("vm-gone", self.c).kill(), [])

    def test_kill_conflict_propagates(self):
        self.route("DELETE", f"/v1/vms/{VM_ID}",
                   error_reply(409, "conflict", "vm-00000001 has 4 children"))
        with self.assertRaises(forkd.Conflict):
            self.sb.kill()


if __name__ == "__main__":
    unittest.main()


class SandboxNetTest(unittest.TestCase):
    """net= through Sandbox.create against the simulated daemon: the policy
    and address come back, children and restored VMs inherit the policy with
    addresses of their own, and a bad policy is the daemon's 400."""

    def setUp(self):
        import shutil
        import tempfile

        from sim_daemon import SimServer

        d = tempfile.mkdtemp(prefix="forkd-sdk-net-")
        self.addCleanup(shutil.rmtree, d, True)
        self.srv = SimServer(os.path.join(d, "sim.sock"))
        t = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True)
        t.start()
        self.addCleanup(self.srv.server_close)
        self.addCleanup(self.srv.shutdown)
        self.c = Controller(socket=os.path.join(d, "sim.sock"), timeout=10)

    def test_net_policy(self):
        sb = Sandbox.create(controller=self.c, net="host")
        self.assertEqual(sb.vm.net, "host")
        self.assertRegex(sb.vm.net_host_addr, r"^10\.200\.\d+\.\d+$")
        self.assertEqual(sb.info().net_netns, f"forkd-{sb.id}")
        kids = sb.branch(2)
        addrs = {sb.vm.net_host_addr} | {k.info().net_host_addr for k in kids}
        self.assertEqual(len(addrs), 3)
        self.assertEqual({k.vm.net for k in kids}, {"host"})
        self.c.snapshot(sb.id, "n1")
        spawned = self.c.spawn("n1", 1)
        self.assertEqual(spawned[0].net, "host")
        self.assertNotIn(spawned[0].net_host_addr, addrs)
        plain = Sandbox.create(controller=self.c)
        self.assertEqual(plain.vm.net, "none")
        self.assertIsNone(plain.vm.net_host_addr)
        with self.assertRaises(forkd.BadRequest) as cm:
            Sandbox.create(controller=self.c, net="open")
        self.assertIn("net", str(cm.exception))
        self.assertIn("nat", str(cm.exception))


class SandboxLimitsTest(unittest.TestCase):
    """The cgroup limits through Sandbox.create and Sandbox.spawn against the
    simulated daemon: they come back as the VM's limits, BRANCH children share
    their source's cgroup, each spawned VM has its own; a machine without
    cgroup v2 is the daemon's 501."""

    def start(self, **sim_kw):
        import shutil
        import tempfile

        from sim_daemon import Sim, SimServer

        d = tempfile.mkdtemp(prefix="forkd-sdk-limits-")
        self.addCleanup(shutil.rmtree, d, True)
        srv = SimServer(os.path.join(d, "sim.sock"), Sim(**sim_kw))
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True)
        t.start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        return Controller(socket=os.path.join(d, "sim.sock"), timeout=10)

    def test_limits(self):
        c = self.start()
        sb = Sandbox.create(controller=c, memory_max_mib=256, cpu_max="50000", pids_max=64)
        lim = sb.vm.limits
        self.assertEqual((lim.memory_max_mib, lim.cpu_max, lim.pids_max, lim.cgroup),
                         (256, "50000/100000", 64, f"/sys/fs/cgroup/forkd/{sb.id}"))
        self.assertEqual(sb.info().limits, lim)
        kids = sb.branch(2)
        self.assertEqual([k.info().limits for k in kids], [lim, lim])  # one family budget
        self.assertIsNone(Sandbox.create(controller=c).vm.limits)
        sb.snapshot("l1")
        spawned = Sandbox.spawn("l1", 2, controller=c, cpu_max="20000/50000")
        self.assertEqual([(s.vm.limits.cpu_max, s.vm.limits.memory_max_mib) for s in spawned],
                         [("20000/50000", None)] * 2)
        self.assertEqual({s.vm.limits.cgroup for s in spawned},
                         {f"/sys/fs/cgroup/forkd/{s.id}" for s in spawned})
        self.assertEqual(len({s.vm.limits.cgroup for s in spawned}), 2)

    def test_without_cgroup2(self):
        c = self.start(cgroup2=False)
        with self.assertRaises(forkd.Unsupported) as cm:
            Sandbox.create(controller=c, memory_max_mib=64)
        self.assertEqual(cm.exception.status, 501)
        self.assertIn("not a cgroup v2 filesystem", cm.exception.message)
        sb = Sandbox.create(controller=c)  # without limits it still works
        self.assertIsNone(sb.vm.limits)
