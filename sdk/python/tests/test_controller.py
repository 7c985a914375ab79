"""Every Controller method against the fake daemon: the request it sends
(method, path, query, body) and what it makes of the canned answer."""

import unittest

from fake_daemon import FakeDaemon, Reply, error_reply, limits_json, snap_json, vm_json

import forkd
from forkd import VM, BranchResult, Controller, Limits, Snapshot, TreeNode


class ControllerTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeDaemon().__enter__()
        self.addCleanup(self.fake.__exit__, None, None, None)
        self.c = Controller(socket=self.fake.socket, timeout=5)

    def route(self, method, path, reply):
        self.fake.routes[(method, path)] = reply

    def check(self, method, path, body=None, query=None):
        r = self.fake.last
        self.assertEqual(r.method, method)
        self.assertEqual(r.path, path)
        self.assertEqual(r.query, query or {})
        if body is None:
            self.assertIn(r.body, (b"",))
        else:
            self.assertEqual(r.headers.get("content-type"), "application/json")
            self.assertEqual(r.json(), body)
        self.assertEqual(r.headers.get("host"), "localhost")
        self.assertNotIn("authorization", r.headers)  # no token on the Unix socket
        return r

    def test_health(self):
        self.route("GET", "/healthz", Reply(obj={"ok": True, "vms": 3}))
        self.assertEqual(self.c.health(), {"ok": True, "vms": 3})
        self.check("GET", "/healthz")

    def test_metrics_text(self):
        text = ("# TYPE forkd_branch_pause_seconds histogram\n"
                'forkd_http_requests_total{method="GET",code="200"} 7\n')
        self.route("GET", "/metrics", Reply(body=text.encode(), content_type="text/plain"))
        self.assertEqual(self.c.metrics(), text)
        self.check("GET", "/metrics")

    def test_create_vm_image(self):
        self.route("POST", "/v1/vms", Reply(201, obj=vm_json("vm-1a2b3c4d", tag="web",
                                                                future_field={"x": 1})))
        vm = self.c.create_vm(image="forkd-test-base", mem_mib=1024, cpus=2, tag="web")
        self.check("POST", "/v1/vms",
                   {"image": "forkd-test-base", "mem_mib": 1024, "cpus": 2, "tag": "web"})
        self.assertIsInstance(vm, VM)
        self.assertEqual(vm.id, "vm-1a2b3c4d")
        self.assertEqual(vm.state, "running")
        self.assertEqual(vm.mem_mib, 512)
        self.assertEqual(vm.tag, "web")
        self.assertEqual(vm.vsock_socket, "/var/lib/forkd/vms/vm-1a2b3c4d/vsock.sock")
        self.assertEqual(vm.raw, {"future_field": {"x": 1}})  # unknown fields kept

    def test_create_vm_kernel(self):
        self.route("POST", "/v1/vms", Reply(201, obj=vm_json(image=None, kernel="/k")))
        vm = self.c.create_vm(kernel="/k", initrd="/i", append="console=ttyS0")
        self.check("POST", "/v1/vms", {"kernel": "/k", "initrd": "/i", "append": "console=ttyS0"})
        self.assertEqual(vm.kernel, "/k")
        self.assertIsNone(vm.image)

    def test_create_vm_net(self):
        self.route("POST", "/v1/vms", Reply(201, obj=vm_json(
            "vm-1a2b3c4d", net="nat", net_netns="forkd-vm-1a2b3c4d",
            net_host_addr="10.200.0.6")))
        vm = self.c.create_vm(image="forkd-test-base", net="nat")
        self.check("POST", "/v1/vms", {"image": "forkd-test-base", "net": "nat"})
        self.assertEqual(vm.net, "nat")
        self.assertEqual(vm.net_netns, "forkd-vm-1a2b3c4d")
        self.assertEqual(vm.net_host_addr, "10.200.0.6")
        self.assertEqual(vm.raw, {})  # known fields, not left in raw

    def test_create_vm_limits(self):
        lim = limits_json("vm-1a2b3c4d", memory_max_mib=256, cpu_max="50000/100000",
                          pids_max=64)
        self.route("POST", "/v1/vms", Reply(201, obj=vm_json("vm-1a2b3c4d", limits=lim)))
        vm = self.c.create_vm(kernel="/k", memory_max_mib=256, cpu_max="50000", pids_max=64)
        self.check("POST", "/v1/vms", {"kernel": "/k", "memory_max_mib": 256,
                                       "cpu_max": "50000", "pids_max": 64})
        self.assertIsInstance(vm.limits, Limits)
        self.assertEqual((vm.limits.memory_max_mib, vm.limits.cpu_max, vm.limits.pids_max,
                          vm.limits.cgroup),
                         (256, "50000/100000", 64, "/sys/fs/cgroup/forkd/vm-1a2b3c4d"))
        self.assertEqual((vm.raw, vm.limits.raw), ({}, {}))
        # only what is asked is sent; a limit left unset is null in the answer
        self.route("POST", "/v1/vms", Reply(201, obj=vm_json(
            "vm-1a2b3c4d", limits=limits_json("vm-1a2b3c4d", cpu_max="20000/50000"))))
        vm = self.c.create_vm(image="forkd-test-base", cpu_max="20000/50000")
        self.check("POST", "/v1/vms", {"image": "forkd-test-base", "cpu_max": "20000/50000"})
        self.assertIsNone(vm.limits.memory_max_mib)
        self.assertIsNone(vm.limits.pids_max)
        # no limits: the VM has no cgroup, limits is None
        self.route("POST", "/v1/vms", Reply(201, obj=vm_json("vm-1a2b3c4d")))
        self.assertIsNone(self.c.create_vm(image="forkd-test-base").limits)

    def test_limits_checked_before_sending(self):
        bad = [
            ({"memory_max_mib": 15}, "memory_max_mib: expected an integer from 16 to 1048576"),
            ({"memory_max_mib": 1048577}, "memory_max_mib: expected an integer from 16"),
            ({"memory_max_mib": "256M"}, "memory_max_mib: expected an integer"),
            ({"memory_max_mib": True}, "memory_max_mib: expected an integer"),
            ({"memory_max_mib": 256.0}, "memory_max_mib: expected an integer"),
            ({"cpu_max": "500"}, "cpu_max: expected a string QUOTA[/PERIOD]"),
            ({"cpu_max": 50000}, "cpu_max: expected a string"),
            ({"cpu_max": "50000/999"}, "period 1000 to 1000000"),
            ({"cpu_max": "50000/2000000"}, "period 1000 to 1000000"),
            ({"cpu_max": "50000/"}, "got '50000/'"),
            ({"cpu_max": "max"}, "got 'max'"),
            ({"cpu_max": " 50000"}, "cpu_max"),
            ({"pids_max": 0}, "pids_max: expected an integer from 1 to 4194304"),
            ({"pids_max": 4194305}, "pids_max: expected an integer from 1 to 4194304"),
            ({"pids_max": "64"}, "pids_max: expected an integer"),
        ]
        for kw, msg in bad:
            with self.subTest(**kw):
                with self.assertRaises(ValueError) as cm:
                    self.c.create_vm(kernel="/k", **kw)
                self.assertIn(msg, str(cm.exception))
                with self.assertRaises(ValueError) as cm:
                    self.c.spawn("t1", 1, **kw)
                self.assertIn(msg, str(cm.exception))
        self.assertEqual(self.fake.requests, [])

    def test_limits_without_cgroup2(self):
        self.route("POST", "/v1/vms", error_reply(
            501, "not_implemented", "cgroup limits: /sys/fs/cgroup is not cgroup v2 (tmpfs)"))
        with self.assertRaises(forkd.Unsupported) as cm:
            self.c.create_vm(kernel="/k", pids_max=8)
        self.assertEqual((cm.exception.status, cm.exception.code), (501, "not_implemented"))
        self.assertIn("/sys/fs/cgroup", cm.exception.message)
        self.assertIsInstance(cm.exception, forkd.ServerError)

    def test_create_vm_net_refused_by_the_daemon(self):
        self.route("POST", "/v1/vms", Reply(400, obj={
            "error": {"code": "bad_request",
                      "message": 'POST /v1/vms: "net" \'open\': expected "none", "host" or '
                                 '"nat"'}}))
        with self.assertRaises(forkd.BadRequest) as cm:
            self.c.create_vm(image="forkd-test-base", net="open")
        self.check("POST", "/v1/vms", {"image": "forkd-test-base", "net": "open"})
        self.assertEqual(cm.exception.status, 400)
        self.assertIn('"net"', str(cm.exception))

    def test_create_vm_argument_checks(self):
        with self.assertRaises(ValueError):
            self.c.create_vm()
        with self.assertRaises(ValueError):
            self.c.create_vm(image="a", kernel="/k")
        with self.assertRaises(ValueError):
            self.c.create_vm(image="a", append="x")
        self.assertEqual(self.fake.requests, [])

    def test_vms(self):
        self.route("GET", "/v1/vms", Reply(obj={"vms": [vm_json("vm-1"), vm_json("vm-2")]}))
        vms = self.c.vms()
        self.check("GET", "/v1/vms")
        self.assertEqual([v.id for v in vms], ["vm-1", "vm-2"])
        self.assertTrue(all(isinstance(v, VM) for v in vms))

    def test_vm(self):
        self.route("GET", "/v1/vms/vm-1", Reply(obj=vm_json("vm-1", state="paused", pid=7)))
        vm = self.c.vm("vm-1")
        self.check("GET", "/v1/vms/vm-1")
        self.assertEqual((vm.id, vm.state, vm.pid), ("vm-1", "paused", 7))

    def test_ids_are_path_encoded(self):
        self.route("GET", "/v1/vms/a%2Fb", Reply(obj=vm_json("a/b")))
        with self.assertRaises(forkd.NotFound):  # never a path traversal
            self.c.vm("../healthz")
        with self.assertRaises(ValueError):
            self.c.vm("")

    def test_delete_vm(self):
        self.route("DELETE", "/v1/vms/vm-1", Reply(obj={"removed": ["vm-1"]}))
        self.assertEqual(self.c.delete_vm("vm-1"), ["vm-1"])
        self.check("DELETE", "/v1/vms/vm-1")

    def test_delete_vm_cascade(self):
        self.route("DELETE", "/v1/vms/vm-1", Reply(obj={"removed": ["vm-1", "vm-2", "vm-3"]}))
        self.assertEqual(self.c.delete_vm("vm-1", cascade=True), ["vm-1", "vm-2", "vm-3"])
        self.check("DELETE", "/v1/vms/vm-1", query={"cascade": "true"})

    def test_branch(self):
        kids = [vm_json(f"vm-c{i}", parent="vm-1", zygote="zy-1", pause_us=812,
                        branched_at="2026-12-04T17:22:00Z") for i in range(4)]
        self.route("POST", "/v1/vms/vm-1/branch",
                   Reply(201, obj={"zygote": "zy-1", "pause_us": 812, "children": kids}))
        res = self.c.branch("vm-1", 4)
        self.check("POST", "/v1/vms/vm-1/branch", {"n": 4, "persist": False, "wait": True})
        self.assertIsInstance(res, BranchResult)
        self.assertEqual(res.zygote, "zy-1")
        self.assertEqual(res.pause_us, 812)
        self.assertEqual([k.id for k in res.children], [f"vm-c{i}" for i in range(4)])
        self.assertTrue(all(isinstance(k, VM) and k.parent == "vm-1" for k in res.children))
        self.assertIsNone(res.snapshot)

    def test_branch_persist(self):
        self.route("POST", "/v1/vms/vm-1/branch",
                   Reply(201, obj={"zygote": "zy-2", "pause_us": 900, "children": [],
                                   "snapshot": snap_json("keep", state="writing")}))
        res = self.c.branch("vm-1", 0, persist=True, tag="keep", wait=False)
        self.check("POST", "/v1/vms/vm-1/branch",
                   {"n": 0, "persist": True, "tag": "keep", "wait": False})
        self.assertIsInstance(res.snapshot, Snapshot)
        self.assertEqual((res.snapshot.tag, res.snapshot.state), ("keep", "writing"))
        self.assertEqual(res.children, [])
        with self.assertRaises(ValueError):
            self.c.branch("vm-1", 1, persist=True)

    def test_snapshot(self):
        self.route("POST", "/v1/vms/vm-1/snapshot", Reply(201, obj=snap_json("t1")))
        s = self.c.snapshot("vm-1", "t1")
        self.check("POST", "/v1/vms/vm-1/snapshot", {"tag": "t1"})
        self.assertEqual((s.tag, s.state, s.parent_vm, s.pause_us),
                         ("t1", "ready", "vm-00000001", 1500))

    def test_snapshots(self):
        self.route("GET", "/v1/snapshots",
                   Reply(obj={"snapshots": [snap_json("a"), snap_json("b", state="writing")]}))
        ss = self.c.snapshots()
        self.check("GET", "/v1/snapshots")
        self.assertEqual([(s.tag, s.state) for s in ss], [("a", "ready"), ("b", "writing")])

    def test_get_snapshot(self):
        self.route("GET", "/v1/snapshots/a", Reply(obj=snap_json("a")))
        self.assertEqual(self.c.get_snapshot("a").tag, "a")
        self.check("GET", "/v1/snapshots/a")

    def test_spawn(self):
        self.route("POST", "/v1/snapshots/t1/spawn",
                   Reply(201, obj={"vms": [vm_json(f"vm-s{i}", snapshot="t1") for i in range(3)]}))
        vms = self.c.spawn("t1", 3)
        self.check("POST", "/v1/snapshots/t1/spawn", {"n": 3})
        self.assertEqual([v.id for v in vms], ["vm-s0", "vm-s1", "vm-s2"])
        self.assertEqual({v.snapshot for v in vms}, {"t1"})

    def test_spawn_limits(self):
        # each VM of a spawn in its own cgroup, with the same limits
        self.route("POST", "/v1/snapshots/t1/spawn", Reply(201, obj={"vms": [
            vm_json(f"vm-s{i}", snapshot="t1",
                    limits=limits_json(f"vm-s{i}", memory_max_mib=512, pids_max=32))
            for i in range(2)]}))
        vms = self.c.spawn("t1", 2, memory_max_mib=512, pids_max=32)
        self.check("POST", "/v1/snapshots/t1/spawn",
                   {"n": 2, "memory_max_mib": 512, "pids_max": 32})
        self.assertEqual([(v.limits.memory_max_mib, v.limits.pids_max, v.limits.cpu_max)
                          for v in vms], [(512, 32, None)] * 2)
        self.assertEqual([v.limits.cgroup for v in vms],
                         ["/sys/fs/cgroup/forkd/vm-s0", "/sys/fs/cgroup/forkd/vm-s1"])

    def test_delete_snapshot(self):
        self.route("DELETE", "/v1/snapshots/t1", Reply(obj={"removed": ["t1"]}))
        self.assertEqual(self.c.delete_snapshot("t1"), ["t1"])
        self.check("DELETE", "/v1/snapshots/t1")
        self.route("DELETE", "/v1/snapshots/t1", Reply(obj={"removed": ["vm-s0", "t1"]}))
        self.assertEqual(self.c.delete_snapshot("t1", cascade=True), ["vm-s0", "t1"])
        self.check("DELETE", "/v1/snapshots/t1", query={"cascade": "true"})

    def test_images(self):
        img = {"name": "py", "path": "/c/py/rootfs.ext4", "size": 4096,
               "created": "2026-12-04T10:00:00Z", "packages": ["python3"], "vms": ["vm-1"],
               "snapshots": ["t1"], "in_use": True, "extra": 1}
        self.route("GET", "/v1/images", Reply(obj={"images": [img]}))
        imgs = self.c.images()
        self.check("GET", "/v1/images")
        self.assertEqual([(i.name, i.size, i.vms, i.snapshots, i.in_use) for i in imgs],
                         [("py", 4096, ["vm-1"], ["t1"], True)])
        self.assertEqual(imgs[0].raw["extra"], 1)
        self.route("GET", "/v1/images/py", Reply(obj=img))
        self.assertEqual(self.c.image("py").packages, ["python3"])
        self.check("GET", "/v1/images/py")
        self.route("DELETE", "/v1/images/py", Reply(obj={"removed": ["py"]}))
        self.assertEqual(self.c.delete_image("py"), ["py"])
        self.check("DELETE", "/v1/images/py")
        self.route("DELETE", "/v1/images/py",
                   Reply(409, obj={"error": {"code": "conflict",
                                             "message": "image py is in use by VMs vm-1"}}))
        with self.assertRaises(forkd.Conflict):
            self.c.delete_image("py")

    def test_tree(self):
        tree = [{"vm": vm_json("vm-1"), "depth": 0, "last_sibling": True},
                {"vm": vm_json("vm-2", parent="vm-1"), "depth": 1, "last_sibling": False},
                {"vm": vm_json("vm-3", parent="vm-1"), "depth": 1, "last_sibling": True,
                 "extra": 1}]
        self.route("GET", "/v1/tree", Reply(obj={"tree": tree}))
        nodes = self.c.tree()
        self.check("GET", "/v1/tree")
        self.assertTrue(all(isinstance(n, TreeNode) for n in nodes))
        self.assertEqual([(n.vm.id, n.depth, n.last_sibling) for n in nodes],
                         [("vm-1", 0, True), ("vm-2", 1, False), ("vm-3", 1, True)])
        self.assertEqual(nodes[2].raw, {"extra": 1})

    def test_malformed_answers_are_connection_failed(self):
        self.route("GET", "/v1/vms", Reply(obj={"nope": []}))
        with self.assertRaises(forkd.ConnectionFailed):
            self.c.vms()
        self.route("GET", "/v1/vms/vm-1", Reply(obj={"state": "running"}))  # no id
        with self.assertRaises(forkd.ConnectionFailed):
            self.c.vm("vm-1")
        self.route("GET", "/healthz", Reply(body=b"<html>", content_type="text/html"))
        with self.assertRaises(forkd.ConnectionFailed):
            self.c.health()

    def test_timeout_on_every_call(self):
        c = Controller(socket=self.fake.socket, timeout=0.3)
        self.route("GET", "/healthz", Reply(obj={"ok": True, "vms": 0}, sleep=1.0))
        with self.assertRaises(forkd.RequestTimeout):
            c.health()
        with self.assertRaises(forkd.RequestTimeout):  # per-call override
            self.c.health(timeout=0.2)
        self.assertEqual(self.c.health(timeout=3), {"ok": True, "vms": 0})

    def test_default_socket_from_env(self):
        import os
        from unittest import mock
        with mock.patch.dict(os.environ, {"FORKD_SOCKET": self.fake.socket}):
            c = Controller()
        self.assertEqual(c.transport.socket_path, self.fake.socket)
        self.route("GET", "/healthz", Reply(obj={"ok": True, "vms": 0}))
        self.assertTrue(c.health()["ok"])
        with mock.patch.dict(os.environ, {}, clear=True):
            self.assertEqual(Controller().transport.socket_path, "/var/lib/forkd/forkd.sock")
        c = Controller(url="unix://" + self.fake.socket)
        self.assertTrue(c.health()["ok"])


if __name__ == "__main__":
    unittest.main()
