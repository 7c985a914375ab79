"""Each error code and status of docs/rest-api.md becomes its exception type."""

import unittest

from fake_daemon import FakeDaemon, Reply, error_reply

import forkd
from forkd import Controller, Sandbox
from forkd.errors import error_from_response

CASES = [
    (400, "bad_request", forkd.BadRequest),
    (401, "unauthorized", forkd.Unauthorized),
    (403, "forbidden", forkd.Forbidden),
    (404, "not_found", forkd.NotFound),
    (405, "method_not_allowed", forkd.MethodNotAllowed),
    (409, "conflict", forkd.Conflict),
    (413, "payload_too_large", forkd.PayloadTooLarge),
    (429, "too_many_requests", forkd.TooManyRequests),
    (500, "internal", forkd.ServerError),
    (501, "not_implemented", forkd.Unsupported),
    (503, "unavailable", forkd.Unavailable),
]


class ErrorMappingTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeDaemon().__enter__()
        self.addCleanup(self.fake.__exit__, None, None, None)
        self.c = Controller(socket=self.fake.socket, timeout=5)

    def test_every_code(self):
        for status, code, cls in CASES:
            with self.subTest(code=code):
                self.fake.routes[("GET", "/v1/vms/vm-1")] = error_reply(status, code,
                                                                        f"msg {code}")
                with self.assertRaises(cls) as cm:
                    self.c.vm("vm-1")
                e = cm.exception
                self.assertIs(type(e), cls)
                self.assertIsInstance(e, forkd.ForkdError)
                self.assertEqual((e.status, e.code, e.message), (status, code, f"msg {code}"))
                self.assertEqual(str(e), f"{status} {code}: msg {code}")

    def test_every_code_on_a_post_and_a_put(self):
        for status, code, cls in CASES:
            with self.subTest(code=code):
                self.fake.routes[("POST", "/v1/vms/vm-1/branch")] = error_reply(status, code, "x")
                self.fake.routes[("PUT", "/v1/vms/vm-1/files")] = error_reply(status, code, "y")
                with self.assertRaises(cls):
                    self.c.branch("vm-1", 2)
                with self.assertRaises(cls):
                    Sandbox("vm-1", self.c).files.write("/f", b"z" * 1000)

    def test_fallback_to_status(self):
        for status, _code, cls in CASES:
            with self.subTest(status=status):
                self.fake.routes[("GET", "/healthz")] = Reply(status, body=b"<html>oops</html>",
                                                              content_type="text/html")
                with self.assertRaises(cls) as cm:
                    self.c.health()
                self.assertEqual(cm.exception.status, status)
                self.assertEqual(cm.exception.code, _code)  # inferred from the status
                self.assertEqual(cm.exception.message, "<html>oops</html>")

    def test_status_only_edge_cases(self):
        e = error_from_response(502, b"", "Bad Gateway")
        self.assertIs(type(e), forkd.ServerError)
        self.assertEqual((e.status, e.message), (502, "Bad Gateway"))
        e = error_from_response(418, b'{"error":{"code":"teapot","message":"short"}}')
        self.assertIs(type(e), forkd.ForkdError)
        self.assertEqual((e.status, e.code, e.message), (418, "teapot", "short"))
        # An unknown code falls back to the status.
        e = error_from_response(404, b'{"error":{"code":"no_such_vm","message":"m"}}')
        self.assertIs(type(e), forkd.NotFound)
        self.assertEqual(e.code, "no_such_vm")
        # The code wins over the status.
        e = error_from_response(500, b'{"error":{"code":"conflict","message":"m"}}')
        self.assertIs(type(e), forkd.Conflict)
        # A JSON body without the error shape.
        e = error_from_response(400, b'{"detail":"x"}')
        self.assertIs(type(e), forkd.BadRequest)
        self.assertEqual(e.message, '{"detail":"x"}')

    def test_hierarchy(self):
        self.assertTrue(issubclass(forkd.Unavailable, forkd.ServerError))
        self.assertTrue(issubclass(forkd.ConnectionFailed, ConnectionError))
        self.assertTrue(issubclass(forkd.CommandTimeout, TimeoutError))
        self.assertTrue(issubclass(forkd.RequestTimeout, TimeoutError))
        for _s, _c, cls in CASES:
            self.assertTrue(issubclass(cls, forkd.ForkdError))


if __name__ == "__main__":
    unittest.main()
