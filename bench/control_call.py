"""One request on a forkd-vmm control socket (docs/control.md), for the Python benches."""
import json
import socket


def call(sock_path, req, timeout=120):
    """Sends req (a dict) as one JSON line; returns the reply, raising unless it says ok."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise RuntimeError(f"{req}: {reply.get('error')}")
    return reply
