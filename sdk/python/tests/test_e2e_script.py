"""e2e_daemon.py itself: it fails (never skips) without FORKD_SOCKET, reports
an unreachable daemon, and passes every step against the simulated daemon
(sim_daemon.py), leaving nothing behind."""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

import fake_daemon  # noqa: F401 - puts the source tree on sys.path
from sim_daemon import SimServer

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "e2e_daemon.py")


def run(env, *args, timeout=120):
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


class E2EScriptTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="forkd-sdk-e2e-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.env = {k: v for k, v in os.environ.items() if k != "FORKD_SOCKET"}

    def test_fails_without_forkd_socket(self):
        r = run(self.env)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("FORKD_SOCKET is not set", r.stderr)
        self.assertIn("Not skipping", r.stderr)

    def test_unreachable_daemon(self):
        r = run({**self.env, "FORKD_SOCKET": os.path.join(self.dir, "none.sock")})
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("FAIL health", r.stdout)
        self.assertIn("no such socket", r.stdout)

    @unittest.skipUnless(os.geteuid() == 0, "the simulated daemon runs user=nobody commands")
    def test_every_step_against_the_simulated_daemon(self):
        sock = os.path.join(self.dir, "sim.sock")
        srv = SimServer(sock)
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True)
        t.start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        work = os.path.join(self.dir, "work")
        r = run({**self.env, "FORKD_SOCKET": sock}, "--workdir", work)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(" 0 failed", r.stdout)
        for step in ("health", "create", "run_basic", "run_streaming", "run_timeout", "files",
                     "branch", "tree", "snapshot_spawn", "branch_persist", "errors", "metrics",
                     "mcp", "cleanup"):
            self.assertIn(f"PASS {step} ", r.stdout)
        self.assertEqual(srv.sim.vms, {})
        self.assertEqual(srv.sim.snaps, {})

    @unittest.skipUnless(os.geteuid() == 0, "like the e2e test")
    def test_readme_quick_start(self):
        """The README's quick start runs as written (its guest file path
        moved to a temporary directory, since the simulated guest is this
        host)."""
        with open(os.path.join(os.path.dirname(HERE), "README.md")) as f:
            readme = f.read()
        code = readme.split("```python\n", 1)[1].split("```", 1)[0]
        self.assertIn("sb.branch(4)", code)
        code = code.replace("/root/data.bin", os.path.join(self.dir, "data.bin"))
        sock = os.path.join(self.dir, "sim.sock")
        srv = SimServer(sock)
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True)
        t.start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        env = {**self.env, "FORKD_SOCKET": sock,
               "PYTHONPATH": os.path.dirname(HERE)}
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("hello from", r.stdout)
        self.assertIn("out: 3", r.stdout)
        self.assertEqual(srv.sim.vms, {})  # the with block removed the VM and its children


if __name__ == "__main__":
    unittest.main()
