"""forkd.mcp: the MCP server as a process on stdio (python3 -m forkd.mcp),
driven through a whole agent session against the simulated daemon, and its
answers to malformed messages and bad tool arguments."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest

import fake_daemon  # noqa: F401 - puts the source tree on sys.path
from sim_daemon import SimServer

from forkd.mcp import TOOLS, Server, check_arguments, ToolInputError
from forkd import Controller

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class McpProcess:
    """python3 -m forkd.mcp talking to the simulated daemon on SOCK."""

    def __init__(self, sock):
        env = {**os.environ, "PYTHONPATH": SDK}
        self.p = subprocess.Popen([sys.executable, "-m", "forkd.mcp", "--socket", sock,
                                   "--image", "forkd-test-base"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
        self.next_id = 0

    def send_raw(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError("the MCP server closed stdout; stderr: " + self.p.stderr.read())
        return json.loads(line)

    def request(self, method, params=None):
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send_raw(json.dumps(msg))
        answer = self.read()
        assert answer.get("id") == self.next_id, answer
        return answer

    def call(self, tool, **arguments):
        answer = self.request("tools/call", {"name": tool, "arguments": arguments})
        return answer["result"]

    def close(self):
        self.p.stdin.close()
        rc = self.p.wait(timeout=10)
        self.p.stdout.close()
        self.p.stderr.close()
        return rc


class McpSessionTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="forkd-mcp-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        sock = os.path.join(self.dir, "sim.sock")
        self.srv = SimServer(sock)
        t = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                             daemon=True)
        t.start()
        self.addCleanup(self.srv.server_close)
        self.addCleanup(self.srv.shutdown)
        self.mcp = McpProcess(sock)
        self.addCleanup(lambda: self.mcp.p.poll() is None and self.mcp.p.kill())

    def ok(self, result):
        self.assertFalse(result["isError"], result)
        self.assertEqual(json.loads(result["content"][0]["text"]), result["structuredContent"])
        return result["structuredContent"]

    def test_agent_session(self):
        init = self.mcp.request("initialize", {"protocolVersion": "2025-03-26",
                                               "capabilities": {},
                                               "clientInfo": {"name": "t", "version": "0"}})
        self.assertEqual(init["result"]["protocolVersion"], "2025-03-26")
        self.assertEqual(init["result"]["serverInfo"]["name"], "forkd")
        self.assertIn("tools", init["result"]["capabilities"])
        self.mcp.send_raw(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        self.assertEqual(self.mcp.request("ping")["result"], {})

        names = {t["name"] for t in self.mcp.request("tools/list")["result"]["tools"]}
        self.assertEqual(names, {t["name"] for t in TOOLS})

        vm = self.ok(self.mcp.call("sandbox_create", mem_mib=256))
        vm_id = vm["id"]
        self.assertEqual(vm["image"], "forkd-test-base")
        self.assertNotIn("net_host_addr", vm)
        netvm = self.ok(self.mcp.call("sandbox_create", net="host"))
        self.assertEqual(self.srv.sim.vms[netvm["id"]]["net"], "host")
        self.assertEqual(netvm["net_host_addr"], self.srv.sim.vms[netvm["id"]]["net_host_addr"])
        self.ok(self.mcp.call("sandbox_delete", id=netvm["id"]))
        limvm = self.ok(self.mcp.call("sandbox_create", memory_max_mib=128, cpu_max="25000",
                                      pids_max=32))
        self.assertEqual(limvm["limits"], {"memory_max_mib": 128, "cpu_max": "25000/100000",
                                           "pids_max": 32})
        self.assertEqual(self.srv.sim.vms[limvm["id"]]["limits"]["cgroup"],
                         f"/sys/fs/cgroup/forkd/{limvm['id']}")
        self.assertNotIn("limits", vm)
        self.ok(self.mcp.call("sandbox_delete", id=limvm["id"]))
        self.assertEqual(self.srv.sim.vms[vm_id]["image"], "forkd-test-base")

        r = self.ok(self.mcp.call("sandbox_exec", id=vm_id, command="echo hi; echo err >&2; "
                                  "exit 3"))
        self.assertEqual((r["exit_code"], r["stdout"], r["stderr"]), (3, "hi\n", "err\n"))
        r = self.ok(self.mcp.call("sandbox_exec", id=vm_id, command=["printf", "%s", "x y"]))
        self.assertEqual(r["stdout"], "x y")

        path = os.path.join(self.dir, "note.txt")  # the simulated guest is this host
        self.ok(self.mcp.call("sandbox_write_file", id=vm_id, path=path, content="héllo\n"))
        with open(path, encoding="utf-8") as f:
            self.assertEqual(f.read(), "héllo\n")
        r = self.ok(self.mcp.call("sandbox_read_file", id=vm_id, path=path))
        self.assertEqual((r["content"], r["size"]), ("héllo\n", len("héllo\n".encode())))

        b = self.ok(self.mcp.call("sandbox_branch", id=vm_id, n=3))
        self.assertEqual(len(b["children"]), 3)
        for child in b["children"]:
            self.assertEqual(self.srv.sim.vms[child]["parent"], vm_id)
        tree = self.ok(self.mcp.call("lineage_tree"))["tree"]
        self.assertEqual([n["id"] for n in tree if n["depth"] == 1], b["children"])

        snap = self.ok(self.mcp.call("sandbox_snapshot", id=b["children"][0], tag="mcp-snap"))
        self.assertEqual(snap["tag"], "mcp-snap")
        spawned = self.ok(self.mcp.call("snapshot_spawn", tag="mcp-snap", n=2))["vms"]
        self.assertEqual(len(spawned), 2)
        listed = {v["id"] for v in self.ok(self.mcp.call("sandbox_list"))["vms"]}
        self.assertTrue({vm_id, *b["children"], *spawned} <= listed)

        # A daemon refusal is a tool error with the daemon's words, not a crash.
        r = self.mcp.call("sandbox_delete", id=vm_id)
        self.assertTrue(r["isError"])
        self.assertIn("sandbox_delete: the daemon refused", r["content"][0]["text"])
        removed = self.ok(self.mcp.call("sandbox_delete", id=vm_id, cascade=True))["removed"]
        self.assertIn(vm_id, removed)
        for v in spawned:
            self.ok(self.mcp.call("sandbox_delete", id=v))
        self.assertEqual(self.mcp.close(), 0)
        self.assertNotIn(vm_id, self.srv.sim.vms)

    def test_malformed_messages(self):
        self.mcp.send_raw("{not json")
        a = self.mcp.read()
        self.assertEqual((a["id"], a["error"]["code"]), (None, -32700))
        self.mcp.send_raw(json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]))
        a = self.mcp.read()
        self.assertEqual(a["error"]["code"], -32600)
        self.assertIn("batches", a["error"]["message"])
        self.mcp.send_raw(json.dumps({"jsonrpc": "1.0", "id": 7, "method": "ping"}))
        a = self.mcp.read()
        self.assertEqual((a["id"], a["error"]["code"]), (7, -32600))
        self.mcp.send_raw(json.dumps({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}))
        self.assertEqual(self.mcp.read()["error"]["code"], -32600)
        a = self.mcp.request("resources/list")
        self.assertEqual(a["error"]["code"], -32601)
        a = self.mcp.request("tools/call", {"name": "rm_rf", "arguments": {}})
        self.assertEqual(a["error"]["code"], -32602)
        self.assertIn("sandbox_exec", a["error"]["message"])
        a = self.mcp.request("tools/call", ["not", "an", "object"])
        self.assertEqual(a["error"]["code"], -32602)
        # A notification is never answered, even an unknown one: the next
        # answer is the ping's.
        self.mcp.send_raw(json.dumps({"jsonrpc": "2.0", "method": "notifications/whatever"}))
        self.assertEqual(self.mcp.request("ping")["result"], {})
        self.assertEqual(self.mcp.close(), 0)

    def test_bad_tool_arguments(self):
        cases = [
            ("sandbox_exec", {"id": "vm-1"}, "command: required"),
            ("sandbox_exec", {"id": "vm-1", "command": ""}, "command:"),
            ("sandbox_exec", {"id": "vm-1", "command": [1]}, "command"),
            ("sandbox_exec", {"id": "vm-1", "command": "true", "shell": True},
             "unknown argument(s) shell"),
            ("sandbox_exec", {"id": "vm-1", "command": "true", "timeout_s": -1},
             "below the minimum"),
            ("sandbox_branch", {"id": "vm-1", "n": 0}, "below the minimum 1"),
            ("sandbox_branch", {"id": "vm-1", "n": 1000}, "above the maximum"),
            ("sandbox_branch", {"id": "vm-1", "n": True}, "n: expected a JSON integer"),
            ("sandbox_write_file", {"id": "vm-1", "path": "/x", "content": 5},
             "content: expected a JSON string"),
            ("sandbox_create", {"net": "open"}, "net: expected one of none, host, nat"),
            ("sandbox_create", {"memory_max_mib": 8}, "memory_max_mib: 8 is below the minimum"),
            ("sandbox_create", {"pids_max": "64"}, "pids_max: expected a JSON integer"),
            ("sandbox_create", {"cpu_max": 50000}, "cpu_max: expected a JSON string"),
            ("sandbox_create", {"cpu_max": "50"}, "cpu_max: expected a string QUOTA[/PERIOD]"),
            ("sandbox_delete", {"id": "no-such-vm"}, "the daemon refused"),
            ("snapshot_spawn", {"tag": "../etc", "n": 1}, "the daemon refused"),
        ]
        for tool, args, want in cases:
            with self.subTest(tool=tool, args=args):
                r = self.mcp.call(tool, **args)
                self.assertTrue(r["isError"], r)
                self.assertIn(want, r["content"][0]["text"])
        self.assertEqual(self.srv.sim.vms, {})
        self.assertEqual(self.mcp.close(), 0)


class SchemaTest(unittest.TestCase):
    def test_every_tool_schema_is_closed_and_checkable(self):
        for tool in TOOLS:
            schema = tool["inputSchema"]
            self.assertEqual(schema["type"], "object")
            self.assertFalse(schema["additionalProperties"])
            self.assertTrue(set(schema["required"]) <= set(schema["properties"]))
            with self.assertRaises(ToolInputError):
                check_arguments(tool, {"no_such_argument": 1})

    def test_handler_for_every_tool(self):
        server = Server(Controller(socket="/nonexistent/forkd.sock"))
        for tool in TOOLS:
            self.assertIn(tool["name"], server._handlers)


if __name__ == "__main__":
    unittest.main()
