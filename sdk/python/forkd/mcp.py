"""An MCP (Model Context Protocol) server for forkd: lets an AI agent create
sandboxes, run commands in them, move files, BRANCH them and spawn from
snapshots, through a running ``forkd serve``.

    python3 -m forkd.mcp [--socket PATH | --url URL --token T] [--image NAME]

Transport: MCP's stdio transport — JSON-RPC 2.0, one message per line on
stdin/stdout; logs go to stderr. Methods: ``initialize``, ``ping``,
``tools/list``, ``tools/call`` (and the ``notifications/*`` a client sends,
which need no answer). Every tool is a thin call of :class:`Controller`; a
failure of the daemon or of the tool's arguments is a tool result with
``isError: true`` whose text names the input and what was expected (what
MCP asks of tool errors), while a malformed message gets a JSON-RPC error
(-32700 parse error, -32600 invalid request, -32601 unknown method, -32602
unknown tool). Standard library only, like the rest of the SDK.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, TextIO

from . import __version__
from .controller import Controller
from .errors import ForkdError
from .models import VM
from .sandbox import DEFAULT_IMAGE

#: The protocol revisions this server speaks, newest first.
PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")

#: Each of a command's stdout and stderr is cut to this many characters in a
#: tool result (an agent's context is the scarce resource; the cut is said).
OUTPUT_LIMIT = 64 * 1024
#: A file read returns at most this many bytes as text.
READ_LIMIT = 1024 * 1024
#: The most children one branch or spawn call may ask for (the daemon's own limit may be lower).
MAX_FANOUT = 64

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


class ToolInputError(ValueError):
    """A tool's arguments do not match its input schema."""


def _prop(kind: str, description: str, **extra: Any) -> Dict[str, Any]:
    return {"type": kind, "description": description, **extra}


_ID = _prop("string", "A VM id, as sandbox_create, sandbox_list or sandbox_branch return it.")
_TAG = _prop("string", "A snapshot tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,63}.")


def _schema(props: Dict[str, Any], required: List[str]) -> Dict[str, Any]:
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}


TOOLS: List[Dict[str, Any]] = [
    {"name": "sandbox_create",
     "description": "Boots a new Linux sandbox (a microVM) from an image and returns its id once "
                    "commands can run in it.",
     "inputSchema": _schema({
         "image": _prop("string", "Root image name (default: the server's --image)."),
         "mem_mib": _prop("integer", "Guest memory in MiB.", minimum=64, maximum=65536),
         "cpus": _prop("integer", "vCPUs.", minimum=1, maximum=64),
         "tag": _prop("string", "A label shown in sandbox_list."),
         "net": _prop("string", "Network: none (default, no network device), host (the host "
                      "reaches it at net_host_addr, it reaches only the host) or nat (also "
                      "the outside).", enum=["none", "host", "nat"]),
         "memory_max_mib": _prop("integer", "Memory limit of the sandbox's cgroup in MiB (no "
                                 "swap): past it the sandbox is killed (state exited, "
                                 "exit_status 137).", minimum=16, maximum=1 << 20),
         "cpu_max": _prop("string", "CPU limit: QUOTA[/PERIOD] in microseconds, e.g. "
                          "\"50000\" for half a CPU (period 100000 unless given).",
                          minLength=1),
         "pids_max": _prop("integer", "Most tasks (threads) of the sandbox and of what is "
                           "branched from it.", minimum=1, maximum=4194304)}, [])},
    {"name": "sandbox_list",
     "description": "Lists the VMs the daemon owns: id, state, parent, image.",
     "inputSchema": _schema({}, [])},
    {"name": "sandbox_exec",
     "description": "Runs a command in a sandbox and returns its exit code, stdout and stderr. "
                    "A string runs with /bin/sh -c; a list is the argv.",
     "inputSchema": _schema({
         "id": _ID,
         "command": {"description": "Shell command line, or an argv list.",
                     "anyOf": [{"type": "string", "minLength": 1},
                               {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
         "cwd": _prop("string", "Working directory in the guest."),
         "env": {"type": "object", "additionalProperties": {"type": "string"},
                 "description": "Extra environment variables."},
         "timeout_s": _prop("number", "Time limit in seconds (default 60; 0: none).",
                            minimum=0)}, ["id", "command"])},
    {"name": "sandbox_read_file",
     "description": "Reads a file inside a sandbox, as UTF-8 text (invalid bytes replaced).",
     "inputSchema": _schema({"id": _ID, "path": _prop("string", "Absolute path in the guest.")},
                            ["id", "path"])},
    {"name": "sandbox_write_file",
     "description": "Creates or replaces a file inside a sandbox with the given text.",
     "inputSchema": _schema({
         "id": _ID, "path": _prop("string", "Absolute path in the guest."),
         "content": _prop("string", "The file's text (written as UTF-8)."),
         "mode": _prop("integer", "Permission bits, e.g. 420 for 0644.", minimum=0,
                       maximum=0o7777)}, ["id", "path", "content"])},
    {"name": "sandbox_branch",
     "description": "BRANCHes a running sandbox: n children continue from this exact instant "
                    "(processes, memory, files), each an isolated VM; the source runs on.",
     "inputSchema": _schema({
         "id": _ID, "n": _prop("integer", "How many children.", minimum=1, maximum=MAX_FANOUT)},
         ["id", "n"])},
    {"name": "sandbox_snapshot",
     "description": "Saves a sandbox's complete state as a named snapshot.",
     "inputSchema": _schema({"id": _ID, "tag": _TAG}, ["id", "tag"])},
    {"name": "snapshot_spawn",
     "description": "Starts n new sandboxes from a snapshot.",
     "inputSchema": _schema({
         "tag": _TAG, "n": _prop("integer", "How many.", minimum=1, maximum=MAX_FANOUT)},
         ["tag", "n"])},
    {"name": "sandbox_delete",
     "description": "Stops and removes a sandbox (with cascade, every VM branched from it too).",
     "inputSchema": _schema({
         "id": _ID, "cascade": _prop("boolean", "Also remove its descendants.")}, ["id"])},
    {"name": "lineage_tree",
     "description": "The lineage of every VM: which branched from which, with pause times.",
     "inputSchema": _schema({}, [])},
]

_TOOLS_BY_NAME = {t["name"]: t for t in TOOLS}
_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
               "object": dict, "array": list}


def _check_value(name: str, value: Any, spec: Dict[str, Any]) -> None:
    if "anyOf" in spec:
        errors = []
        for alt in spec["anyOf"]:
            try:
                _check_value(name, value, alt)
                return
            except ToolInputError as e:
                errors.append(str(e))
        raise ToolInputError(f"{name}: expected {spec.get('description', 'one of the forms')} "
                             f"({'; '.join(errors)})")
    kind = spec["type"]
    # bool is an int in Python; JSON keeps them apart.
    if isinstance(value, bool) and kind in ("integer", "number"):
        ok = False
    else:
        ok = isinstance(value, _JSON_TYPES[kind])
    if not ok:
        raise ToolInputError(f"{name}: expected a JSON {kind}, got {json.dumps(value)[:80]}")
    if kind in ("integer", "number"):
        if "minimum" in spec and value < spec["minimum"]:
            raise ToolInputError(f"{name}: {value} is below the minimum {spec['minimum']}")
        if "maximum" in spec and value > spec["maximum"]:
            raise ToolInputError(f"{name}: {value} is above the maximum {spec['maximum']}")
    if kind == "string" and len(value) < spec.get("minLength", 0):
        raise ToolInputError(f"{name}: expected a non-empty string")
    if "enum" in spec and value not in spec["enum"]:
        raise ToolInputError(f"{name}: expected one of {', '.join(spec['enum'])}, "
                             f"got {json.dumps(value)[:80]}")
    if kind == "array":
        if len(value) < spec.get("minItems", 0):
            raise ToolInputError(f"{name}: expected at least {spec['minItems']} item(s)")
        for i, item in enumerate(value):
            _check_value(f"{name}[{i}]", item, spec["items"])
    if kind == "object" and isinstance(spec.get("additionalProperties"), dict):
        for k, v in value.items():
            _check_value(f"{name}.{k}", v, spec["additionalProperties"])


def check_arguments(tool: Dict[str, Any], args: Any) -> Dict[str, Any]:
    """Validates ``args`` against the tool's input schema (the subset of JSON
    Schema the tools use); raises ToolInputError naming the argument."""
    schema = tool["inputSchema"]
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ToolInputError(f"arguments: expected an object, got {json.dumps(args)[:80]}")
    unknown = sorted(set(args) - set(schema["properties"]))
    if unknown:
        raise ToolInputError(f"unknown argument(s) {', '.join(unknown)} (expected "
                             f"{', '.join(sorted(schema['properties'])) or 'none'})")
    for req in schema["required"]:
        if req not in args:
            raise ToolInputError(f"{req}: required")
    for k, v in args.items():
        _check_value(k, v, schema["properties"][k])
    return args


def _vm_summary(vm: VM) -> Dict[str, Any]:
    out = {k: v for k, v in (("id", vm.id), ("state", vm.state), ("parent", vm.parent),
                             ("image", vm.image), ("tag", vm.tag), ("pause_us", vm.pause_us),
                             ("net_host_addr", vm.net_host_addr),
                             ("exit_status", vm.exit_status))
           if v is not None}
    if vm.limits is not None:
        # what bounds it (an agent that sees exit_status 137 can tell why)
        out["limits"] = {k: v for k, v in (("memory_max_mib", vm.limits.memory_max_mib),
                                           ("cpu_max", vm.limits.cpu_max),
                                           ("pids_max", vm.limits.pids_max))
                         if v is not None}
    return out


def _cut(text: str) -> str:
    if len(text) <= OUTPUT_LIMIT:
        return text
    return text[:OUTPUT_LIMIT] + f"\n[... {len(text) - OUTPUT_LIMIT} more characters cut]"


class Server:
    """The protocol state machine, separate from stdio so tests can drive it."""

    def __init__(self, controller: Controller, default_image: str = DEFAULT_IMAGE):
        self.controller = controller
        self.default_image = default_image
        self.initialized = False
        self._handlers: Dict[str, Callable[[Dict[str, Any]], Any]] = {
            "sandbox_create": self._create, "sandbox_list": self._list,
            "sandbox_exec": self._exec, "sandbox_read_file": self._read,
            "sandbox_write_file": self._write, "sandbox_branch": self._branch,
            "sandbox_snapshot": self._snapshot, "snapshot_spawn": self._spawn,
            "sandbox_delete": self._delete, "lineage_tree": self._tree,
        }

    # -- tools ----------------------------------------------------------------

    def _create(self, a):
        vm = self.controller.create_vm(a.get("image", self.default_image),
                                       mem_mib=a.get("mem_mib"), cpus=a.get("cpus"),
                                       tag=a.get("tag"), net=a.get("net"),
                                       memory_max_mib=a.get("memory_max_mib"),
                                       cpu_max=a.get("cpu_max"), pids_max=a.get("pids_max"))
        return _vm_summary(vm)

    def _list(self, a):
        return {"vms": [_vm_summary(v) for v in self.controller.vms()]}

    def _exec(self, a):
        r = self.controller.exec(a["id"], a["command"], cwd=a.get("cwd"), env=a.get("env"),
                                 timeout=a.get("timeout_s"))
        out = {"exit_code": r.exit_code, "stdout": _cut(r.stdout), "stderr": _cut(r.stderr)}
        if r.signal is not None:
            out["signal"] = r.signal
        return out

    def _read(self, a):
        data = self.controller.read_file(a["id"], a["path"])
        text = data[:READ_LIMIT].decode("utf-8", errors="replace")
        out = {"path": a["path"], "size": len(data), "content": text}
        if len(data) > READ_LIMIT:
            out["truncated_at"] = READ_LIMIT
        return out

    def _write(self, a):
        data = a["content"].encode("utf-8")
        self.controller.write_file(a["id"], a["path"], data, mode=a.get("mode", 0o644))
        return {"path": a["path"], "size": len(data)}

    def _branch(self, a):
        res = self.controller.branch(a["id"], a["n"])
        return {"source": a["id"], "pause_us": res.pause_us,
                "children": [c.id for c in res.children]}

    def _snapshot(self, a):
        s = self.controller.snapshot(a["id"], a["tag"])
        return {"tag": s.tag, "state": s.state, "pause_us": s.pause_us}

    def _spawn(self, a):
        return {"tag": a["tag"], "vms": [v.id for v in self.controller.spawn(a["tag"], a["n"])]}

    def _delete(self, a):
        return {"removed": self.controller.delete_vm(a["id"], cascade=a.get("cascade", False))}

    def _tree(self, a):
        return {"tree": [{"depth": t.depth, **_vm_summary(t.vm)} for t in self.controller.tree()]}

    def call_tool(self, name: str, args: Any) -> Dict[str, Any]:
        tool = _TOOLS_BY_NAME[name]
        try:
            result = self._handlers[name](check_arguments(tool, args))
        except ToolInputError as e:
            return _tool_error(f"{name}: bad arguments: {e}")
        except ForkdError as e:
            return _tool_error(f"{name}: the daemon refused: {e}")
        except (OSError, ValueError) as e:
            return _tool_error(f"{name}: {type(e).__name__}: {e}")
        return {"content": [{"type": "text", "text": json.dumps(result, indent=1)}],
                "structuredContent": result, "isError": False}

    # -- JSON-RPC ---------------------------------------------------------------

    def handle_line(self, line: str) -> Optional[Dict[str, Any]]:
        """One line in; the answer to send (None for a notification)."""
        try:
            msg = json.loads(line)
        except ValueError as e:
            return _rpc_error(None, PARSE_ERROR, f"parse error: {e}")
        if isinstance(msg, list):
            return _rpc_error(None, INVALID_REQUEST,
                              "invalid request: batches are not supported (MCP 2025-06-18 "
                              "removed them); send one message per line")
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" \
                or not isinstance(msg.get("method"), str):
            return _rpc_error(msg.get("id") if isinstance(msg, dict) else None, INVALID_REQUEST,
                              'invalid request: expected {"jsonrpc":"2.0","method":STRING,...}')
        has_id = "id" in msg
        msg_id = msg.get("id")
        if has_id and (isinstance(msg_id, bool) or not isinstance(msg_id, (str, int))):
            return _rpc_error(None, INVALID_REQUEST, "invalid request: id must be a string "
                                                     "or an integer")
        params = msg.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return _rpc_error(msg_id, INVALID_PARAMS, "invalid params: expected an object")
        method = msg["method"]
        if not has_id:
            # A notification (notifications/initialized, notifications/cancelled...):
            # nothing to answer, even when unknown.
            if method == "notifications/initialized":
                self.initialized = True
            return None
        if method == "initialize":
            asked = params.get("protocolVersion")
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
            return _rpc_result(msg_id, {
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "forkd", "version": __version__},
                "instructions": "Sandboxes are microVMs run by forkd serve. Create one, run "
                                "commands in it, and BRANCH it to explore several paths from "
                                "one warm state; delete what you no longer need."})
        if method == "ping":
            return _rpc_result(msg_id, {})
        if method == "tools/list":
            return _rpc_result(msg_id, {"tools": TOOLS})
        if method == "tools/call":
            name = params.get("name")
            if name not in _TOOLS_BY_NAME:
                return _rpc_error(msg_id, INVALID_PARAMS,
                                  f"unknown tool {json.dumps(name)[:80]} (expected one of "
                                  f"{', '.join(sorted(_TOOLS_BY_NAME))})")
            return _rpc_result(msg_id, self.call_tool(name, params.get("arguments")))
        return _rpc_error(msg_id, METHOD_NOT_FOUND, f"method not found: {method[:80]}")

    def serve(self, rfile: TextIO, wfile: TextIO) -> None:
        for line in rfile:
            if not line.strip():
                continue
            answer = self.handle_line(line)
            if answer is not None:
                wfile.write(json.dumps(answer, separators=(",", ":")) + "\n")
                wfile.flush()


def _rpc_result(msg_id: Any, result: Any) -> Dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _rpc_error(msg_id: Any, code: int, message: str) -> Dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}


def _tool_error(text: str) -> Dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m forkd.mcp",
                                description="forkd's MCP server (stdio transport).")
    p.add_argument("--socket", help="the daemon's Unix socket (default $FORKD_SOCKET, "
                                    "else /var/lib/forkd/forkd.sock)")
    p.add_argument("--url", help="the daemon over TCP, e.g. https://host:8443")
    p.add_argument("--token", help="bearer token for --url (default $FORKD_TOKEN)")
    p.add_argument("--image", default=os.environ.get("FORKD_MCP_IMAGE", DEFAULT_IMAGE),
                   help=f"image sandbox_create boots by default ({DEFAULT_IMAGE})")
    args = p.parse_args(argv)
    if args.socket and args.url:
        p.error("give --socket or --url, not both")
    controller = Controller(socket=args.socket, url=args.url, token=args.token)
    print(f"forkd-mcp {__version__}: serving MCP on stdio for {controller!r}",
          file=sys.stderr, flush=True)
    Server(controller, default_image=args.image).serve(sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
