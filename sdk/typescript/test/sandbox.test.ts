// The E2B-style Sandbox against the simulated daemon.

import { after, before, test } from "node:test";
import * as assert from "assert/strict";
import * as fs from "fs";
import * as path from "path";
import { CommandTimeout, Conflict, Controller, InvalidArgument, NotFound, Sandbox } from "../src/index";
import { Sim, startSim } from "./sim";

let sim: Sim;
let controller: Controller;

before(async () => {
  sim = await startSim();
  controller = new Controller({ socket: sim.socket, timeoutMs: 20_000 });
});
after(async () => {
  await sim.stop();
});

test("create, run with callbacks, files, connect, kill", async () => {
  const sb = await Sandbox.create({ controller, memMib: 256, cpus: 2 });
  assert.match(sb.id, /^vm-/);
  assert.equal(sb.vm?.image, "forkd-test-base");
  assert.equal(sb.vm?.memMib, 256);

  const out: string[] = [];
  const err: string[] = [];
  const r = await sb.commands.run("echo hi; echo oops >&2; exit 4", {
    onStdout: (s) => out.push(s),
    onStderr: (s) => err.push(s),
  });
  assert.equal(r.exitCode, 4);
  assert.equal(out.join(""), "hi\n");
  assert.equal(err.join(""), "oops\n");
  const withEnv = await sb.commands.run("cat; echo $X; pwd", { env: { X: "1" }, cwd: sim.dir, stdin: "in\n" });
  assert.equal(withEnv.stdout, `in\n1\n${sim.dir}\n`);
  await assert.rejects(sb.commands.run("sleep 20", { timeoutMs: 300 }), CommandTimeout);

  const p = path.join(sim.dir, "sb.bin");
  const bytes = Buffer.from([0, 1, 2, 0xfe, 0xff, 0x0a, 0x0d]);
  await sb.files.write(p, bytes, { mode: 0o640 });
  assert.ok((await sb.files.read(p)).equals(bytes));
  assert.equal(fs.statSync(p).mode & 0o7777, 0o640);
  await sb.files.write(p, "ünïcode\n");
  assert.equal(await sb.files.readText(p), "ünïcode\n");
  await assert.rejects(sb.files.write(p, "x", { mode: -1 }), InvalidArgument);

  const again = await Sandbox.connect(sb.id, { controller });
  assert.equal(again.id, sb.id);
  assert.equal((await again.info()).id, sb.id);
  assert.deepEqual(await sb.kill(), [sb.id]);
  // Already gone: not an error, nothing removed.
  assert.deepEqual(await sb.kill(), []);
  await assert.rejects(Sandbox.connect(sb.id, { controller }), NotFound);
});

test("user: by name from the guest's /etc/passwd, or a uid", async (): Promise<void> => {
  const sb = await Sandbox.create({ controller });
  try {
    assert.equal(await sb.uidOf("root"), 0);
    assert.equal(await sb.uidOf("1234"), 1234);
    // The simulated guest runs commands on this host, so switching users needs
    // root: as root, "nobody"; otherwise the user this test runs as.
    const uid = process.getuid();
    const passwd = fs.readFileSync("/etc/passwd", "utf8").split("\n").map((l) => l.split(":"));
    const who = passwd.find((f) => f.length >= 3 && (uid === 0 ? f[0] === "nobody" : Number(f[2]) === uid));
    assert.ok(who, `no ${uid === 0 ? "nobody" : `uid ${uid}`} in /etc/passwd`);
    assert.equal((await sb.commands.run("id -u", { user: who[0] })).stdout, `${who[2]}\n`);
    assert.equal((await sb.commands.run("id -u", { user: Number(who[2]) })).stdout, `${who[2]}\n`);
    await assert.rejects(sb.commands.run("true", { user: "no-such-user-x" }), /no user "no-such-user-x"/);
    await assert.rejects(sb.commands.run("true", { user: "root", uid: 0 }), /user or uid, not both/);
  } finally {
    await sb.kill({ cascade: true });
  }
});

test("branch 3, snapshot, spawn, kill with and without cascade", async () => {
  const sb = await Sandbox.create({ controller });
  const kids = await sb.branch(3);
  assert.equal(kids.length, 3);
  for (const k of kids) {
    assert.ok(k instanceof Sandbox);
    assert.equal(k.vm?.parent, sb.id);
    assert.equal((await k.commands.run("echo child")).stdout, "child\n");
  }
  assert.equal(new Set(kids.map((k) => k.id)).size, 3);
  const snap = await sb.snapshot("sb-snap");
  assert.equal(snap.tag, "sb-snap");
  const spawned = await Sandbox.spawn("sb-snap", 2, { controller });
  assert.equal(spawned.length, 2);
  for (const s of spawned) assert.equal((await s.info()).snapshot, "sb-snap");

  await assert.rejects(sb.kill(), Conflict);
  const removed = await sb.kill({ cascade: true });
  assert.deepEqual(new Set(removed), new Set([sb.id, ...kids.map((k) => k.id)]));
  await assert.rejects(controller.deleteSnapshot("sb-snap"), Conflict);
  await controller.deleteSnapshot("sb-snap", { cascade: true });
  for (const s of spawned) await assert.rejects(s.info(), NotFound);
});

test("limits through create and spawn: the VM's, its children's, each spawned VM's own cgroup", async () => {
  const sb = await Sandbox.create({ controller, memoryMaxMib: 512, cpuMax: "25000" });
  try {
    assert.equal(sb.vm?.limits?.memoryMaxMib, 512);
    assert.equal(sb.vm?.limits?.cpuMax, "25000/100000");
    assert.equal(sb.vm?.limits?.pidsMax, null);
    const [kid] = await sb.branch(1);
    assert.deepEqual((await kid.info()).limits, sb.vm?.limits);
    await sb.snapshot("sb-limits");
    const spawned = await Sandbox.spawn("sb-limits", 2, { controller, pidsMax: 32 });
    for (const s of spawned) {
      assert.equal(s.vm?.limits?.pidsMax, 32);
      assert.equal(s.vm?.limits?.cgroup, `/sys/fs/cgroup/forkd/${s.id}`);
    }
    await assert.rejects(Sandbox.spawn("sb-limits", 1, { controller, pidsMax: 0 }), /pidsMax: expected an integer/);
    await controller.deleteSnapshot("sb-limits", { cascade: true });
  } finally {
    await sb.kill({ cascade: true });
  }
});

test("bad input is refused with the argument named", async () => {
  assert.throws(() => new Sandbox("", controller), /Sandbox: expected a VM id/);
  const sb = await Sandbox.create({ controller });
  try {
    await assert.rejects(sb.branch(0), /n: expected an integer in 1..64, got 0/);
    await assert.rejects(sb.branch(100), /n: expected an integer in 1..64, got 100/);
    await assert.rejects(sb.snapshot(""), /tag: expected a tag/);
    await assert.rejects(Sandbox.spawn("x", 65, { controller }), /n: expected an integer in 1..64, got 65/);
    await assert.rejects(Sandbox.create({ controller, image: "nope" }), NotFound);
    await assert.rejects(Sandbox.connect("", { controller }), InvalidArgument);
  } finally {
    await sb.kill({ cascade: true });
  }
});
