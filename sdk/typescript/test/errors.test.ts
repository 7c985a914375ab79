// The error mapping: by code, then by status; bodies that are not the contract.

import { test } from "node:test";
import * as assert from "assert/strict";
import {
  BadRequest,
  CommandTimeout,
  Conflict,
  ConnectionFailed,
  ForkdError,
  Forbidden,
  InvalidArgument,
  MethodNotAllowed,
  NotFound,
  PayloadTooLarge,
  RequestTimeout,
  ServerError,
  TooManyRequests,
  Unauthorized,
  Unavailable,
  Unsupported,
  classFor,
  errorFromObject,
  errorFromResponse,
} from "../src/index";

const body = (code: string, message: string) => Buffer.from(JSON.stringify({ error: { code, message } }));

test("every documented code maps to its class, with status, code and message", () => {
  const table: Array<[number, string, Function]> = [
    [400, "bad_request", BadRequest],
    [401, "unauthorized", Unauthorized],
    [403, "forbidden", Forbidden],
    [404, "not_found", NotFound],
    [405, "method_not_allowed", MethodNotAllowed],
    [409, "conflict", Conflict],
    [413, "payload_too_large", PayloadTooLarge],
    [429, "too_many_requests", TooManyRequests],
    [500, "internal", ServerError],
    [501, "not_implemented", Unsupported],
    [503, "unavailable", Unavailable],
  ];
  for (const [status, code, cls] of table) {
    const e = errorFromResponse(status, body(code, `text of ${code}`));
    assert.ok(e instanceof cls, `${code} -> ${e.name}`);
    assert.ok(e instanceof ForkdError && e instanceof Error);
    assert.equal(e.name, cls.name);
    assert.equal(e.status, status);
    assert.equal(e.code, code);
    assert.equal(e.message, `text of ${code}`);
    assert.equal(String(e), `${cls.name}: ${status} ${code}: text of ${code}`);
  }
  assert.ok(errorFromResponse(503, body("unavailable", "x")) instanceof ServerError);
});

test("the code wins over the status; the status is the fallback", () => {
  assert.ok(errorFromResponse(400, body("conflict", "odd")) instanceof Conflict);
  const noBody = errorFromResponse(404, Buffer.alloc(0), "Not Found");
  assert.ok(noBody instanceof NotFound);
  assert.equal(noBody.code, "not_found");
  assert.equal(noBody.message, "Not Found");
  const html = errorFromResponse(502, Buffer.from("<html>bad gateway</html>"));
  assert.ok(html instanceof ServerError);
  assert.equal(html.message, "<html>bad gateway</html>");
  const teapot = errorFromResponse(418, body("brewing", "short and stout"));
  assert.equal(teapot.constructor, ForkdError);
  assert.equal(teapot.code, "brewing");
  assert.equal(errorFromResponse(418, Buffer.alloc(0)).message, "HTTP 418");
  assert.ok(errorFromResponse(400, Buffer.from('{"error":"flat"}')) instanceof BadRequest);
  assert.equal(classFor(null, "__proto__"), ForkdError);
  assert.equal(classFor(599, null), ServerError);
});

test("an exec stream's error object: status from the code", () => {
  const e = errorFromObject({ code: "unavailable", message: "agent gone" });
  assert.ok(e instanceof Unavailable);
  assert.equal(e.status, 503);
  const t = errorFromObject({ code: "timed_out", message: "killed" });
  assert.ok(t instanceof CommandTimeout);
  assert.equal(t.status, null);
  const junk = errorFromObject("nonsense");
  assert.equal(junk.constructor, ForkdError);
  assert.equal(junk.message, "error");
});

test("client-side errors have no status and their own classes", () => {
  for (const e of [new InvalidArgument("n"), new ConnectionFailed("c"), new RequestTimeout("r")]) {
    assert.ok(e instanceof ForkdError);
    assert.equal(e.status, null);
  }
  assert.equal(new InvalidArgument("n: bad").code, "invalid_argument");
  assert.equal(String(new ConnectionFailed("no socket")), "ConnectionFailed: no socket");
  const ct = new CommandTimeout("late", null, null, { stdout: "o", stderr: "e" });
  assert.equal(ct.stdout, "o");
  assert.equal(ct.stderr, "e");
  assert.equal(ct.result, null);
});
