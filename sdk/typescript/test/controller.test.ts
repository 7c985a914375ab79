// The Controller against the simulated daemon: every route, exec streaming,
// files, lineage, and the errors the daemon answers with.

import { after, before, describe, test } from "node:test";
import * as assert from "assert/strict";
import * as fs from "fs";
import * as path from "path";
import {
  BadRequest,
  CommandTimeout,
  Conflict,
  ConnectionFailed,
  Controller,
  ForkdError,
  InvalidArgument,
  MethodNotAllowed,
  NotFound,
  ServerError,
  Unsupported,
} from "../src/index";
import { Sim, startSim } from "./sim";

let sim: Sim;
let c: Controller;

before(async () => {
  sim = await startSim();
  c = new Controller({ socket: sim.socket, timeoutMs: 20_000 });
});
after(async () => {
  await sim.stop();
});

async function requestCount(): Promise<number> {
  const m = /forkd_http_requests_total\{[^}]*\} (\d+)/.exec(await c.metrics());
  assert.ok(m, "metrics without forkd_http_requests_total");
  return Number(m[1]);
}

describe("health and VMs", () => {
  test("health and metrics", async () => {
    const h = await c.health();
    assert.equal(h.ok, true);
    assert.equal(typeof h.vms, "number");
    const m = await c.metrics();
    for (const name of ["forkd_branch_pause_seconds", "forkd_spawn_seconds", "forkd_exec_seconds"]) {
      assert.match(m, new RegExp(`# TYPE ${name} histogram`));
    }
  });

  test("create, list, get, delete", async () => {
    const vm = await c.createVm({ image: "forkd-test-base", memMib: 256, cpus: 2, tag: "web" });
    assert.match(vm.id, /^vm-/);
    assert.equal(vm.state, "running");
    assert.equal(vm.memMib, 256);
    assert.equal(vm.cpus, 2);
    assert.equal(vm.tag, "web");
    assert.equal(vm.parent, null);
    assert.equal(typeof vm.controlSocket, "string");
    const k = await c.createVm({ kernel: "/boot/vmlinuz-probe", append: "work=idle" });
    assert.equal(k.kernel, "/boot/vmlinuz-probe");
    assert.equal(k.image, null);
    const ids = (await c.vms()).map((v) => v.id);
    assert.ok(ids.includes(vm.id) && ids.includes(k.id), `${vm.id}, ${k.id} not in ${ids}`);
    assert.equal((await c.vm(vm.id)).id, vm.id);
    assert.deepEqual(await c.deleteVm(vm.id), [vm.id]);
    assert.deepEqual(await c.deleteVm(k.id), [k.id]);
    await assert.rejects(c.vm(vm.id), (e: unknown) => e instanceof NotFound && e.status === 404 && e.code === "not_found");
  });

  test("net: the policy, a namespace and an address of its own, inherited by children", async () => {
    const vm = await c.createVm({ kernel: "/boot/vmlinuz-probe", net: "host" });
    assert.equal(vm.net, "host");
    assert.equal(vm.netNetns, `forkd-${vm.id}`);
    assert.match(vm.netHostAddr ?? "", /^10\.200\.\d+\.\d+$/);
    const r = await c.branch(vm.id, { n: 2 });
    const addrs = new Set([vm.netHostAddr, ...r.children.map((k) => k.netHostAddr)]);
    assert.equal(addrs.size, 3);
    for (const k of r.children) assert.equal(k.net, "host");
    const plain = await c.createVm({ kernel: "/boot/vmlinuz-probe" });
    assert.equal(plain.net, "none");
    assert.equal(plain.netHostAddr, null);
    assert.deepEqual((await c.deleteVm(vm.id, { cascade: true })).length, 3);
    await c.deleteVm(plain.id);
    const before = (await c.vms()).length;
    await assert.rejects(c.createVm({ kernel: "/k", net: "open" as never }), /net: expected "none", "host" or "nat"/);
    assert.equal((await c.vms()).length, before);
  });

  test("limits: sent as asked, echoed as the VM's, shared by BRANCH children, own per spawned VM", async () => {
    const vm = await c.createVm({ kernel: "/boot/vmlinuz-probe", memoryMaxMib: 256, cpuMax: "50000", pidsMax: 64 });
    assert.deepEqual(vm.limits, {
      memoryMaxMib: 256,
      cpuMax: "50000/100000",
      pidsMax: 64,
      cgroup: `/sys/fs/cgroup/forkd/${vm.id}`,
      raw: {},
    });
    assert.deepEqual(vm.raw, {});
    assert.deepEqual((await c.vm(vm.id)).limits, vm.limits);
    const kids = await c.branch(vm.id, { n: 2 });
    for (const k of kids.children) assert.deepEqual(k.limits, vm.limits);
    const one = await c.createVm({ kernel: "/boot/vmlinuz-probe", cpuMax: "20000/50000" });
    assert.equal(one.limits?.cpuMax, "20000/50000");
    assert.equal(one.limits?.memoryMaxMib, null);
    assert.equal(one.limits?.pidsMax, null);
    const plain = await c.createVm({ kernel: "/boot/vmlinuz-probe" });
    assert.equal(plain.limits, null);
    await c.snapshot(plain.id, "tssdk-limits");
    const spawned = await c.spawn("tssdk-limits", 2, { memoryMaxMib: 1024, pidsMax: 16 });
    assert.deepEqual(
      spawned.map((v) => [v.limits?.memoryMaxMib, v.limits?.pidsMax, v.limits?.cpuMax, v.limits?.cgroup]),
      spawned.map((v) => [1024, 16, null, `/sys/fs/cgroup/forkd/${v.id}`]),
    );
    assert.equal((await c.spawn("tssdk-limits", 1))[0].limits, null);
    await c.deleteSnapshot("tssdk-limits", { cascade: true });
    for (const v of [vm, one, plain]) await c.deleteVm(v.id, { cascade: true });
  });

  test("limits are checked before sending, with the option named", async () => {
    const before = await requestCount();
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ memoryMaxMib: 15 }, /memoryMaxMib: expected an integer in 16..1048576, got 15/],
      [{ memoryMaxMib: 1048577 }, /memoryMaxMib: expected an integer in 16..1048576/],
      [{ memoryMaxMib: 256.5 }, /memoryMaxMib/],
      [{ memoryMaxMib: "256M" }, /memoryMaxMib: expected an integer/],
      [{ cpuMax: "500" }, /cpuMax: expected "QUOTA\[\/PERIOD\]" in microseconds.*got "500"/],
      [{ cpuMax: 50000 }, /cpuMax: expected "QUOTA/],
      [{ cpuMax: "50000/999" }, /period 1000 to 1000000/],
      [{ cpuMax: "50000/2000000" }, /got "50000\/2000000"/],
      [{ cpuMax: "50000/" }, /cpuMax/],
      [{ cpuMax: "max" }, /cpuMax/],
      [{ pidsMax: 0 }, /pidsMax: expected an integer in 1..4194304, got 0/],
      [{ pidsMax: 4194305 }, /pidsMax: expected an integer in 1..4194304/],
    ];
    for (const [o, re] of bad) {
      await assert.rejects(c.createVm({ kernel: "/k", ...o }), (e: unknown) => e instanceof InvalidArgument && re.test(e.message));
      await assert.rejects(c.spawn("t", 1, o), (e: unknown) => e instanceof InvalidArgument && re.test(e.message));
    }
    assert.equal(await requestCount(), before + 1);
  });

  test("limits on a machine without cgroup v2: Unsupported (501) with the daemon's reason", async () => {
    const nocg = await startSim({ noCgroup2: true });
    try {
      const c2 = new Controller({ socket: nocg.socket, timeoutMs: 20_000 });
      await assert.rejects(c2.createVm({ kernel: "/k", pidsMax: 8 }), (e: unknown) => {
        assert.ok(e instanceof Unsupported && e instanceof ServerError, String(e));
        assert.equal(e.status, 501);
        assert.equal(e.code, "not_implemented");
        assert.match(e.message, /\/sys\/fs\/cgroup is not a cgroup v2 filesystem/);
        return true;
      });
      assert.equal((await c2.createVm({ kernel: "/k" })).limits, null);
    } finally {
      await nocg.stop();
    }
  });

  test("createVm refuses bad input before sending anything", async () => {
    const before = await requestCount();
    await assert.rejects(c.createVm({}), InvalidArgument);
    await assert.rejects(c.createVm({ image: "a", kernel: "/k" }), /exactly one of image or kernel/);
    await assert.rejects(c.createVm({ image: "a", append: "x" }), /initrd and append go with kernel/);
    await assert.rejects(c.createVm({ kernel: "vmlinuz" }), /kernel: expected an absolute path/);
    await assert.rejects(c.createVm({ image: "forkd-test-base", cpus: 0 }), /cpus: expected an integer in 1..254, got 0/);
    await assert.rejects(c.createVm({ image: "forkd-test-base", memMib: 1.5 }), /memMib/);
    await assert.rejects(c.createVm({ image: "forkd-test-base", tag: "-x" }), /tag: expected a tag/);
    await assert.rejects(c.vm(""), /vmId: expected a non-empty string/);
    await assert.rejects(c.deleteVm(""), InvalidArgument);
    // Only the metrics call itself reached the daemon.
    assert.equal(await requestCount(), before + 1);
  });

  test("daemon errors surface typed", async () => {
    await assert.rejects(c.createVm({ image: "no-such-image" }), (e: unknown) => {
      assert.ok(e instanceof NotFound);
      assert.match(e.message, /no-such-image/);
      return true;
    });
    // The simulated daemon's floor is 64 MiB: client-side 32 passes, the daemon refuses.
    await assert.rejects(c.createVm({ kernel: "/k", memMib: 32 }), (e: unknown) => {
      assert.ok(e instanceof BadRequest && e instanceof ForkdError);
      assert.equal(e.status, 400);
      assert.equal(e.code, "bad_request");
      assert.match(e.message, /mem_mib/);
      assert.match(String(e), /^BadRequest: 400 bad_request: mem_mib/);
      return true;
    });
    await assert.rejects(c.transport.json("POST", "/v1/vms", { json: { image: "forkd-test-base", colour: "red" } }), /unknown field 'colour'/);
    await assert.rejects(c.transport.json("PATCH", "/v1/vms"), MethodNotAllowed);
    await assert.rejects(c.transport.json("GET", "/v1/nothing"), NotFound);
  });

  test("no daemon: ConnectionFailed naming the socket", async () => {
    const gone = path.join(sim.dir, "missing.sock");
    await assert.rejects(new Controller({ socket: gone }).health(), (e: unknown) => {
      assert.ok(e instanceof ConnectionFailed);
      assert.equal(e.status, null);
      assert.ok(e.message.includes(gone) && e.message.includes("no such socket"), e.message);
      return true;
    });
  });
});

describe("exec", () => {
  let vm: string;
  before(async () => {
    vm = (await c.createVm({ image: "forkd-test-base" })).id;
  });
  after(async () => {
    await c.deleteVm(vm, { cascade: true });
  });

  test("output streams to the callbacks as it arrives", async () => {
    const chunks: Array<[number, string]> = [];
    const t0 = Date.now();
    const r = await c.exec(vm, "printf first; sleep 0.6; printf second", {
      onStdout: (s) => chunks.push([Date.now() - t0, s]),
    });
    const end = Date.now() - t0;
    assert.equal(r.exitCode, 0);
    assert.equal(r.ok, true);
    assert.equal(r.stdout, "firstsecond");
    assert.equal(chunks.map((x) => x[1]).join(""), "firstsecond");
    assert.ok(chunks.length >= 2, `one chunk only: ${JSON.stringify(chunks)}`);
    assert.equal(chunks[0][1], "first");
    // "first" reached the callback before the command ended, not with the result.
    assert.ok(end - chunks[0][0] >= 400, `first chunk at ${chunks[0][0]} ms, end at ${end} ms`);
  });

  test("stderr, exit codes, argv form", async () => {
    const err: string[] = [];
    const r = await c.exec(vm, "echo out; echo err >&2; exit 3", { onStderr: (s) => err.push(s) });
    assert.equal(r.exitCode, 3);
    assert.equal(r.signal, null);
    assert.equal(r.ok, false);
    assert.equal(r.stdout, "out\n");
    assert.equal(r.stderr, "err\n");
    assert.equal(err.join(""), "err\n");
    const a = await c.exec(vm, ["/bin/echo", "a b", "$HOME"]);
    assert.equal(a.stdout, "a b $HOME\n");
    const missing = await c.exec(vm, ["/bin/sh", "-c", "exit 127"]);
    assert.equal(missing.exitCode, 127);
  });

  test("a signal ends it: signal set, no exit code", async () => {
    const r = await c.exec(vm, "echo before; kill -TERM $$; echo after");
    assert.equal(r.signal, 15);
    assert.equal(r.exitCode, null);
    assert.equal(r.ok, false);
    assert.equal(r.stdout, "before\n");
  });

  test("a time limit: CommandTimeout with the output so far", async () => {
    const t0 = Date.now();
    await assert.rejects(c.exec(vm, "echo started; sleep 20", { timeoutMs: 400 }), (e: unknown) => {
      assert.ok(e instanceof CommandTimeout, String(e));
      assert.equal(e.stdout, "started\n");
      assert.ok(e.result !== null);
      assert.equal(e.result.signal, 9);
      assert.equal(e.result.timedOut, true);
      return true;
    });
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  });

  test("UTF-8 split across chunks decodes whole; bad bytes are replaced", async () => {
    const chunks: string[] = [];
    const r = await c.exec(vm, "printf '\\303'; sleep 0.3; printf '\\251t\\342\\202'; sleep 0.3; printf '\\254\\n'", {
      onStdout: (s) => chunks.push(s),
    });
    assert.equal(r.stdout, "ét€\n");
    assert.equal(chunks.join(""), "ét€\n");
    assert.ok(chunks.every((s) => !s.includes("\ufffd")), JSON.stringify(chunks));
    assert.ok(chunks.length >= 2, JSON.stringify(chunks));
    const bad = await c.exec(vm, "printf 'a\\377b'");
    assert.equal(bad.stdout, "a\ufffdb");
    assert.deepEqual([...bad.stdoutBytes], [0x61, 0xff, 0x62]);
  });

  test("stdin, env and cwd reach the command", async () => {
    const r = await c.exec(vm, 'cat; echo "$GREETING"; pwd', {
      stdin: Buffer.from([0x68, 0x69, 0x0a, 0x00, 0x0a]),
      env: { GREETING: "héllo" },
      cwd: sim.dir,
    });
    assert.equal(r.exitCode, 0);
    assert.deepEqual([...r.stdoutBytes.subarray(0, 5)], [0x68, 0x69, 0x0a, 0x00, 0x0a]);
    assert.equal(r.stdout.slice(5), `héllo\n${sim.dir}\n`);
  });

  test("exec refuses bad input", async () => {
    await assert.rejects(c.exec(vm, []), /cmd: expected a string or a non-empty array/);
    await assert.rejects(c.exec(vm, ""), /cmd: expected a non-empty command/);
    await assert.rejects(c.exec(vm, "true", { timeoutMs: -1 }), /timeoutMs: expected a number of milliseconds >= 0/);
    await assert.rejects(c.exec(vm, "true", { cwd: "tmp" }), /cwd: expected an absolute path/);
    await assert.rejects(c.exec(vm, "true", { env: { "A=B": "x" } }), /env: expected NAME/);
    await assert.rejects(c.exec(vm, "true", { uid: -1 }), /uid: expected an integer/);
    await assert.rejects(c.exec("vm-00000000", "true"), NotFound);
  });
});

describe("files", () => {
  let vm: string;
  before(async () => {
    vm = (await c.createVm({ image: "forkd-test-base" })).id;
  });
  after(async () => {
    await c.deleteVm(vm, { cascade: true });
  });

  test("binary round trip with a mode, checked on the host", async () => {
    const data = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7 + (i >> 8)) & 0xff));
    const p = path.join(sim.dir, "blob.bin");
    await c.writeFile(vm, p, data, { mode: 0o600 });
    assert.ok((await c.readFile(vm, p)).equals(data));
    // Outside: the simulated guest shares this host's filesystem.
    assert.ok(fs.readFileSync(p).equals(data));
    assert.equal(fs.statSync(p).mode & 0o7777, 0o600);
    await c.writeFile(vm, p, "text é", { mode: 0o755 });
    assert.equal((await c.readFile(vm, p)).toString("utf8"), "text é");
    assert.equal(fs.statSync(p).mode & 0o7777, 0o755);
    const empty = path.join(sim.dir, "empty");
    await c.writeFile(vm, empty, new Uint8Array(0));
    assert.equal((await c.readFile(vm, empty)).length, 0);
    assert.equal(fs.statSync(empty).mode & 0o7777, 0o644);
  });

  test("missing file, bad path, bad mode", async () => {
    await assert.rejects(c.readFile(vm, path.join(sim.dir, "nope")), NotFound);
    await assert.rejects(c.readFile(vm, "relative/path"), /path: expected an absolute path/);
    await assert.rejects(c.writeFile(vm, "/tmp/x", "x", { mode: 0o10000 }), /mode: expected an integer in 0..4095, got 4096/);
    await assert.rejects(c.writeFile(vm, "/tmp/x", "x", { mode: 420.5 }), InvalidArgument);
    await assert.rejects(c.writeFile(vm, "/tmp/x", 5 as unknown as string), /data: expected a string or bytes/);
  });
});

describe("lineage", () => {
  test("branch 3, tree, snapshot, spawn, deletes with and without cascade", async () => {
    const root = await c.createVm({ image: "forkd-test-base", memMib: 128 });
    const b = await c.branch(root.id, { n: 3 });
    assert.equal(b.children.length, 3);
    assert.match(b.zygote ?? "", /^zy-/);
    assert.equal(typeof b.pauseUs, "number");
    assert.equal(b.snapshot, null);
    for (const ch of b.children) {
      assert.equal(ch.parent, root.id);
      assert.equal(ch.zygote, b.zygote);
      assert.equal(ch.memMib, 128);
      assert.equal(typeof ch.branchedAt, "string");
    }
    const grand = await c.branch(b.children[0].id, { n: 1 });

    const tree = await c.tree();
    const at = tree.findIndex((t) => t.vm.id === root.id);
    assert.ok(at >= 0);
    assert.equal(tree[at].depth, 0);
    const sub = tree.slice(at + 1, at + 5);
    assert.deepEqual(
      sub.map((t) => [t.vm.id, t.depth]),
      [
        [b.children[0].id, 1],
        [grand.children[0].id, 2],
        [b.children[1].id, 1],
        [b.children[2].id, 1],
      ],
    );
    assert.equal(sub[3].lastSibling, true);
    assert.equal(sub[2].lastSibling, false);

    const persisted = await c.branch(root.id, { n: 0, persist: true, tag: "at-branch" });
    assert.equal(persisted.children.length, 0);
    assert.equal(persisted.snapshot?.tag, "at-branch");
    assert.equal(persisted.snapshot?.parentVm, root.id);

    const snap = await c.snapshot(root.id, "tssdk-snap");
    assert.equal(snap.tag, "tssdk-snap");
    assert.equal(snap.state, "ready");
    assert.ok((await c.snapshots()).some((s) => s.tag === "tssdk-snap"));
    assert.equal((await c.getSnapshot("tssdk-snap")).parentVm, root.id);
    await assert.rejects(c.snapshot(root.id, "tssdk-snap"), Conflict);
    const spawned = await c.spawn("tssdk-snap", 2);
    assert.equal(spawned.length, 2);
    for (const v of spawned) assert.equal(v.snapshot, "tssdk-snap");
    await assert.rejects(c.spawn("no-such-tag", 1), NotFound);

    await assert.rejects(c.deleteSnapshot("tssdk-snap"), (e: unknown) => e instanceof Conflict && e.status === 409);
    const removedSnap = await c.deleteSnapshot("tssdk-snap", { cascade: true });
    assert.deepEqual(new Set(removedSnap), new Set([...spawned.map((v) => v.id), "tssdk-snap"]));
    await assert.rejects(c.getSnapshot("tssdk-snap"), NotFound);
    assert.deepEqual(await c.deleteSnapshot("at-branch"), ["at-branch"]);

    await assert.rejects(c.deleteVm(root.id), (e: unknown) => {
      assert.ok(e instanceof Conflict);
      assert.match(e.message, /children/);
      return true;
    });
    const removed = await c.deleteVm(root.id, { cascade: true });
    assert.deepEqual(
      new Set(removed),
      new Set([root.id, grand.children[0].id, ...b.children.map((x) => x.id)]),
    );
    await assert.rejects(c.vm(b.children[1].id), NotFound);
  });

  test("branch and spawn refuse bad counts and tags client-side", async () => {
    const before = await requestCount();
    await assert.rejects(c.branch("vm-x", { n: 0 }), /n: expected an integer in 1..64, got 0/);
    await assert.rejects(c.branch("vm-x", { n: 65 }), /n: expected an integer in 1..64, got 65/);
    await assert.rejects(c.branch("vm-x", { n: 2.5 }), InvalidArgument);
    await assert.rejects(c.branch("vm-x", { persist: true }), /persist needs a tag/);
    await assert.rejects(c.branch("vm-x", { tag: "t" }), /tag goes with persist/);
    await assert.rejects(c.branch("vm-x", { n: 1, persist: true, tag: ".hidden" }), /tag: expected a tag/);
    await assert.rejects(c.branch("", { n: 1 }), /vmId/);
    await assert.rejects(c.spawn("t", 0), /n: expected an integer in 1..64/);
    await assert.rejects(c.spawn("", 1), /tag: expected a non-empty string/);
    await assert.rejects(c.snapshot("vm-x", "a/b"), /tag: expected a tag/);
    await assert.rejects(c.deleteSnapshot(""), InvalidArgument);
    assert.equal(await requestCount(), before + 1);
  });
});
