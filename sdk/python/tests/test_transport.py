"""Transport: missing or refused sockets, broken answers, TCP with a bearer
token, TLS."""

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import unittest
from unittest import mock

from fake_daemon import FakeDaemon, Reply, vm_json

import forkd
from forkd import Controller

TOKEN = "s3cret-token-0123456789"


class UnixTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="forkd-sdk-test-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_missing_socket(self):
        path = os.path.join(self.dir, "nope.sock")
        with self.assertRaises(forkd.ConnectionFailed) as cm:
            Controller(socket=path).health()
        self.assertIn(path, str(cm.exception))
        self.assertIn("no such socket", str(cm.exception))
        self.assertIsNone(cm.exception.status)
        with self.assertRaises(ConnectionError):  # also a builtin ConnectionError
            forkd.Sandbox("vm-1", Controller(socket=path)).commands.run("true")

    def test_refused(self):
        path = os.path.join(self.dir, "dead.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)  # bound, never listening: ECONNREFUSED
        self.addCleanup(s.close)
        with self.assertRaises(forkd.ConnectionFailed) as cm:
            Controller(socket=path).vms()
        self.assertIn("refused", str(cm.exception))

    def test_connection_dropped_without_answer(self):
        with FakeDaemon() as fake:
            def drop(req):
                raise ConnectionResetError("dropped by the test")
            fake.routes[("GET", "/healthz")] = drop
            with self.assertRaises(forkd.ConnectionFailed):
                Controller(socket=fake.socket).health()

    def test_token_never_sent_on_unix(self):
        with FakeDaemon() as fake:
            fake.routes[("GET", "/healthz")] = Reply(obj={"ok": True, "vms": 0})
            Controller(socket=fake.socket, token=TOKEN).health()
            self.assertNotIn("authorization", fake.last.headers)
            self.assertTrue(fake.last.headers["user-agent"].startswith("forkd-python/"))

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            Controller(socket="/a", url="http://b")
        with self.assertRaises(ValueError):
            Controller(url="ftp://x")
        with self.assertRaises(ValueError):
            Controller(url="http://")


class TCPTest(unittest.TestCase):
    def test_token_header(self):
        with FakeDaemon(tcp=True, token=TOKEN) as fake:
            fake.routes[("GET", "/v1/vms/vm-1")] = Reply(obj=vm_json("vm-1"))
            c = Controller(url=fake.url, token=TOKEN)
            self.assertEqual(c.vm("vm-1").id, "vm-1")
            r = fake.last
            self.assertEqual(r.headers["authorization"], f"Bearer {TOKEN}")
            self.assertEqual(r.headers["host"], fake.url.split("//")[1])
            # From the environment.
            with mock.patch.dict(os.environ, {"FORKD_TOKEN": TOKEN}):
                self.assertEqual(Controller(url=fake.url).vm("vm-1").id, "vm-1")
            # Wrong and missing tokens.
            with self.assertRaises(forkd.Unauthorized) as cm:
                Controller(url=fake.url, token="wrong-token-xxxxxxxx").vm("vm-1")
            self.assertEqual(cm.exception.status, 401)
            with mock.patch.dict(os.environ, {}, clear=True):
                with self.assertRaises(forkd.Unauthorized):
                    Controller(url=fake.url).vm("vm-1")

    def test_streams_and_files_over_tcp(self):
        with FakeDaemon(tcp=True, token=TOKEN) as fake:
            data = os.urandom(1 << 20)
            fake.routes[("PUT", "/v1/vms/vm-1/files")] = Reply(204)
            fake.routes[("GET", "/v1/vms/vm-1/files")] = Reply(body=data)
            fake.routes[("POST", "/v1/vms/vm-1/exec")] = Reply(
                lines=[{"stdout": "aGk="}, {"exit": 0}])
            sb = forkd.Sandbox("vm-1", Controller(url=fake.url, token=TOKEN))
            sb.files.write("/d", data)
            self.assertEqual(fake.last.body, data)
            self.assertEqual(sb.files.read("/d"), data)
            self.assertEqual(sb.commands.run("echo hi").stdout, "hi")
            self.assertTrue(all(r.headers.get("authorization") == f"Bearer {TOKEN}"
                                for r in fake.requests))

    def test_path_prefix(self):
        with FakeDaemon(tcp=True) as fake:
            fake.routes[("GET", "/forkd/healthz")] = Reply(obj={"ok": True, "vms": 1})
            self.assertEqual(Controller(url=fake.url + "/forkd/").health()["vms"], 1)

    def test_refused_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(forkd.ConnectionFailed):
            Controller(url=f"http://127.0.0.1:{port}", token=TOKEN, timeout=2).health()


@unittest.skipUnless(shutil.which("openssl"), "needs the openssl command to make a certificate")
class TLSTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="forkd-sdk-tls-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", self.key, "-out", self.cert],
                       check=True, capture_output=True)

    def test_https_with_token(self):
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(self.cert, self.key)
        with FakeDaemon(tcp=True, token=TOKEN, ssl_context=sctx) as fake:
            self.assertTrue(fake.url.startswith("https://"))
            fake.routes[("GET", "/healthz")] = Reply(obj={"ok": True, "vms": 2})
            cctx = ssl.create_default_context(cafile=self.cert)
            c = Controller(url=fake.url, token=TOKEN, ssl_context=cctx)
            self.assertEqual(c.health(), {"ok": True, "vms": 2})
            self.assertEqual(fake.last.headers["authorization"], f"Bearer {TOKEN}")
            # Without trusting the certificate: refused, with the reason.
            with self.assertRaises(forkd.ConnectionFailed) as cm:
                Controller(url=fake.url, token=TOKEN, timeout=3).health()
            self.assertIn("TLS", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
