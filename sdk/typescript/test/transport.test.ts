// The transport against in-process servers: TCP with a bearer token, TLS with a
// private CA, a path prefix, defaults from the environment, timeouts, and exec
// streams that are cut oddly or break the contract.

import { after, before, describe, test } from "node:test";
import * as assert from "assert/strict";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as https from "https";
import type { AddressInfo } from "net";
import * as os from "os";
import * as path from "path";
import {
  ConnectionFailed,
  Controller,
  DEFAULT_SOCKET,
  InvalidArgument,
  NotFound,
  RequestTimeout,
  Unauthorized,
  Unavailable,
} from "../src/index";

const TOKEN = "0123456789abcdef-secret";

interface Seen {
  method?: string;
  url?: string;
  auth?: string;
  body?: string;
}

// A daemon double: /healthz needs the token; /stall never answers; /slow-body
// sends headers then stalls; exec answers with the NDJSON chunks queued in `script`.
function handler(seen: Seen[], script: { chunks: Array<string | Buffer>; gapMs: number }) {
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString("utf8")));
    req.on("end", (): void => {
      const auth = req.headers.authorization;
      seen.push({ method: req.method, url: req.url, auth: typeof auth === "string" ? auth : undefined, body });
      const url = req.url ?? "";
      if (url.endsWith("/stall")) return; // never answers
      if (url.endsWith("/slow-body")) {
        res.writeHead(200, { "Content-Type": "application/json", "Content-Length": 100 });
        res.write("{");
        return;
      }
      if (url.includes("/exec")) {
        res.writeHead(200, { "Content-Type": "application/x-ndjson" });
        const chunks = [...script.chunks];
        const next = (): void => {
          const c = chunks.shift();
          if (c === undefined) {
            res.end();
            return;
          }
          res.write(c);
          setTimeout(next, script.gapMs);
        };
        next();
        return;
      }
      if (req.headers.authorization !== `Bearer ${TOKEN}` && !url.includes("open")) {
        res.writeHead(401, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ error: { code: "unauthorized", message: "bad or missing token" } }));
        return;
      }
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ ok: true, vms: 7 }));
    });
  };
}

function listen(server: http.Server, where: string | 0): Promise<number> {
  return new Promise((resolve) => {
    if (typeof where === "string") server.listen(where, () => resolve(0));
    else server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port));
  });
}

function close(server: http.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

let dir: string;
const seen: Seen[] = [];
const script = { chunks: [] as Array<string | Buffer>, gapMs: 0 };
let plain: http.Server;
let tls: http.Server;
let unix: http.Server;
let port = 0;
let tlsPort = 0;
let unixPath = "";
let caPem: Buffer;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "forkd-tssdk-tr-"));
  // A self-signed certificate for 127.0.0.1: the client trusts it as its CA.
  const key = path.join(dir, "key.pem");
  const cert = path.join(dir, "cert.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
    "-subj", "/CN=forkd-test", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
  ], { stdio: "ignore", timeout: 30_000 });
  caPem = fs.readFileSync(cert);
  plain = http.createServer(handler(seen, script));
  tls = https.createServer({ key: fs.readFileSync(key), cert: caPem }, handler(seen, script));
  unix = http.createServer(handler(seen, script));
  unixPath = path.join(dir, "fake.sock");
  port = await listen(plain, 0);
  tlsPort = await listen(tls, 0);
  await listen(unix, unixPath);
});

after(async () => {
  // Stalled requests keep connections open: destroy them by closing with a bound.
  await Promise.race([Promise.all([close(plain), close(tls), close(unix)]), new Promise((r) => setTimeout(() => r(null), 2000).unref())]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("TCP, token, TLS", () => {
  test("bearer token over TCP, under a path prefix", async () => {
    const c = new Controller({ url: `http://127.0.0.1:${port}/forkd/`, token: TOKEN });
    assert.deepEqual(await c.health(), { ok: true, vms: 7 });
    const last = seen[seen.length - 1];
    assert.equal(last.url, "/forkd/healthz");
    assert.equal(last.auth, `Bearer ${TOKEN}`);
  });

  test("a wrong or missing token is Unauthorized", async () => {
    await assert.rejects(new Controller({ url: `http://127.0.0.1:${port}`, token: "wrong-token-0000" }).health(), (e: unknown) => {
      assert.ok(e instanceof Unauthorized);
      assert.equal(e.status, 401);
      assert.equal(e.message, "bad or missing token");
      return true;
    });
  });

  test("$FORKD_TOKEN is the default token for a URL, never sent over the Unix socket", async () => {
    const saved = process.env.FORKD_TOKEN;
    process.env.FORKD_TOKEN = TOKEN;
    try {
      assert.equal((await new Controller({ url: `http://127.0.0.1:${port}` }).health()).vms, 7);
      await new Controller({ socket: unixPath }).transport.json("GET", "/open/healthz");
      assert.equal(seen[seen.length - 1].auth, undefined);
    } finally {
      if (saved === undefined) delete process.env.FORKD_TOKEN;
      else process.env.FORKD_TOKEN = saved;
    }
  });

  test("TLS verified against a private CA; an unknown CA fails the handshake", async () => {
    const c = new Controller({ url: `https://127.0.0.1:${tlsPort}`, token: TOKEN, tls: { ca: caPem } });
    assert.equal((await c.health()).vms, 7);
    await assert.rejects(new Controller({ url: `https://127.0.0.1:${tlsPort}`, token: TOKEN }).health(), (e: unknown) => {
      assert.ok(e instanceof ConnectionFailed);
      assert.match(e.message, /TLS handshake with https:\/\/127\.0\.0\.1:\d+ failed/);
      return true;
    });
  });

  test("defaults: $FORKD_SOCKET, else the system socket", () => {
    const saved = process.env.FORKD_SOCKET;
    try {
      delete process.env.FORKD_SOCKET;
      assert.equal(new Controller().transport.socketPath, DEFAULT_SOCKET);
      assert.equal(DEFAULT_SOCKET, "/var/lib/forkd/forkd.sock");
      process.env.FORKD_SOCKET = "/run/x/forkd.sock";
      assert.equal(new Controller().transport.socketPath, "/run/x/forkd.sock");
      assert.equal(new Controller({ url: "unix:///tmp/y.sock" }).transport.socketPath, "/tmp/y.sock");
      assert.equal(new Controller({ url: "https://h.example" }).transport.describe(), "https://h.example:443");
    } finally {
      if (saved === undefined) delete process.env.FORKD_SOCKET;
      else process.env.FORKD_SOCKET = saved;
    }
  });

  test("bad transport options are refused", () => {
    assert.throws(() => new Controller({ socket: "/a", url: "http://b" }), /either socket or url/);
    assert.throws(() => new Controller({ url: "ftp://host" }), /unsupported scheme "ftp"/);
    assert.throws(() => new Controller({ url: "not a url" }), InvalidArgument);
    assert.throws(() => new Controller({ timeoutMs: -5 }), /timeoutMs: expected a number of milliseconds/);
    assert.throws(() => new Controller({ socket: "" }), /socket: expected a non-empty path/);
  });

  test("refused TCP connection names the daemon", async () => {
    const spare = http.createServer(() => undefined);
    const p = await listen(spare, 0);
    await close(spare);
    await assert.rejects(new Controller({ url: `http://127.0.0.1:${p}` }).health(), /connection refused/);
  });
});

describe("what goes on the wire", () => {
  test("ids and query values are percent-encoded; mode is octal", async () => {
    const c = new Controller({ socket: unixPath });
    await assert.rejects(c.vm("a/b?c"), Unauthorized);
    assert.equal(seen[seen.length - 1].url, "/v1/vms/a%2Fb%3Fc");
    await assert.rejects(c.readFile("vm-1", "/tmp/a b/é&x=1"), Unauthorized);
    assert.equal(seen[seen.length - 1].url, "/v1/vms/vm-1/files?path=%2Ftmp%2Fa%20b%2F%C3%A9%26x%3D1");
    await assert.rejects(c.writeFile("vm-1", "/f", "data", { mode: 0o640 }), Unauthorized);
    const put = seen[seen.length - 1];
    assert.deepEqual([put.method, put.url, put.body], ["PUT", "/v1/vms/vm-1/files?path=%2Ff&mode=0640", "data"]);
    await assert.rejects(c.deleteVm("vm-1", { cascade: true }), Unauthorized);
    assert.equal(seen[seen.length - 1].url, "/v1/vms/vm-1?cascade=true");
    await assert.rejects(c.branch("vm-1", { n: 0, persist: true, tag: "t1", wait: false }), Unauthorized);
    assert.deepEqual(JSON.parse(seen[seen.length - 1].body ?? ""), { n: 0, persist: true, wait: false, tag: "t1" });
    await assert.rejects(c.createVm({ kernel: "/k", initrd: "/i", append: "a=1", memMib: 64, cpus: 2, tag: "x", vsock: false }), Unauthorized);
    assert.deepEqual(JSON.parse(seen[seen.length - 1].body ?? ""), {
      kernel: "/k", initrd: "/i", append: "a=1", mem_mib: 64, cpus: 2, tag: "x", vsock: false,
    });
  });
});

describe("timeouts", () => {
  test("no answer within the call's timeout: RequestTimeout", async () => {
    const c = new Controller({ socket: unixPath });
    const t0 = Date.now();
    await assert.rejects(c.transport.json("GET", "/stall", { timeoutMs: 300 }), (e: unknown) => {
      assert.ok(e instanceof RequestTimeout);
      assert.match(e.message, /GET \/stall: no answer from unix:.* within 300 ms/);
      return true;
    });
    assert.ok(Date.now() - t0 < 3000);
  });

  test("an answer that stalls mid-body: RequestTimeout", async () => {
    const c = new Controller({ socket: unixPath, timeoutMs: 300 });
    await assert.rejects(c.transport.json("GET", "/slow-body"), /the answer stalled for 300 ms/);
  });
});

describe("exec streams", () => {
  const c = () => new Controller({ socket: unixPath });
  const b64 = (s: string | Buffer) => (typeof s === "string" ? Buffer.from(s, "utf8") : s).toString("base64");

  test("lines split anywhere, UTF-8 split across lines", async () => {
    const euro = Buffer.from("€", "utf8");
    const lines =
      JSON.stringify({ stdout: b64(Buffer.concat([Buffer.from("a"), euro.subarray(0, 1)])) }) + "\n" +
      JSON.stringify({ stdout: b64(euro.subarray(1)) }) + "\n" +
      JSON.stringify({ stderr: b64("e") }) + "\n" +
      JSON.stringify({ exit: 2, extra: "kept" }) + "\n";
    // Cut into 5-byte pieces, each sent on its own.
    script.chunks = [];
    for (let i = 0; i < lines.length; i += 5) script.chunks.push(lines.slice(i, i + 5));
    script.gapMs = 2;
    const out: string[] = [];
    const r = await c().exec("vm-x", "whatever", { onStdout: (s) => out.push(s) });
    assert.equal(r.exitCode, 2);
    assert.equal(r.stdout, "a€");
    assert.equal(r.stderr, "e");
    assert.deepEqual(out, ["a", "€"]);
    assert.deepEqual(r.raw, { extra: "kept" });
    const req = JSON.parse(seen[seen.length - 1].body ?? "{}");
    assert.deepEqual(req, { argv: ["/bin/sh", "-c", "whatever"], timeout_ms: 60000 });
  });

  test("a final error line is the typed error", async () => {
    script.chunks = [JSON.stringify({ stdout: b64("x") }) + "\n" + JSON.stringify({ error: { code: "unavailable", message: "agent gone" } }) + "\n"];
    await assert.rejects(c().exec("vm-x", ["true"]), (e: unknown) => e instanceof Unavailable && e.message === "agent gone");
    script.chunks = [JSON.stringify({ error: { code: "not_found", message: "ARGV0: no such file" } })];
    await assert.rejects(c().exec("vm-x", ["/nope"]), NotFound);
  });

  test("streams that break the contract are ConnectionFailed", async () => {
    script.chunks = [JSON.stringify({ stdout: b64("partial") }) + "\n"];
    await assert.rejects(c().exec("vm-x", "x"), /ended without an exit status/);
    script.chunks = ['{"stdout":"%%%"}\n{"exit":0}\n'];
    await assert.rejects(c().exec("vm-x", "x"), /bad base64 in stdout/);
    script.chunks = ["not json\n"];
    await assert.rejects(c().exec("vm-x", "x"), /not a JSON line: "not json"/);
    script.chunks = ['{"exit":"zero"}\n'];
    await assert.rejects(c().exec("vm-x", "x"), /"exit" is not an integer/);
  });

  test("timeoutMs: 0 sends no limit; a SIGKILL past the limit is a timeout", async () => {
    script.chunks = [JSON.stringify({ exit: 0 }) + "\n"];
    await c().exec("vm-x", "x", { timeoutMs: 0 });
    assert.deepEqual(JSON.parse(seen[seen.length - 1].body ?? "{}"), { argv: ["/bin/sh", "-c", "x"] });
    script.chunks = [JSON.stringify({ stdout: b64("so far") }) + "\n", JSON.stringify({ signal: 9 }) + "\n"];
    script.gapMs = 150;
    await assert.rejects(c().exec("vm-x", "x", { timeoutMs: 100 }), (e: unknown) => {
      assert.equal((e as Error).name, "CommandTimeout");
      assert.equal((e as { stdout: string }).stdout, "so far");
      return true;
    });
    script.gapMs = 0;
  });
});
