// The SDK's flows against a real `forkd serve`. Not a node --test suite: run
// by test/e2e_serve.sh, which starts the daemon, or by hand:
//
//   FORKD_SOCKET=/path/forkd.sock FORKD_PROBE=build/guest/probe.elf \
//     [FORKD_E2E_IMAGE=forkd-test-base] node build/sdk/typescript/test/e2e_daemon.js
//
// With FORKD_PROBE: the lineage flows on probe guests (no Linux, so natively on
// KVM-PVM). With FORKD_E2E_IMAGE: a Linux image's sandbox too (exec streamed,
// exit codes, signals, time limits, files, branch with fresh entropy), which
// needs the nested test host here. Each step prints PASS or FAIL with the
// reason, then one closing line "e2e_daemon: N passed, N failed"; exit status 0
// only if every step passed. Without FORKD_SOCKET, or with neither FORKD_PROBE
// nor FORKD_E2E_IMAGE, it fails (exit 2) and says so. Every VM and snapshot it
// made is removed at the end, and their VMM processes are checked gone from
// outside (by pid).

import * as assert from "assert/strict";
import { createHash, randomBytes } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { BadRequest, CommandTimeout, Conflict, Controller, NotFound, Sandbox, Unavailable, VM } from "../src/index";

const socket = process.env.FORKD_SOCKET;
const probe = process.env.FORKD_PROBE;
const image = process.env.FORKD_E2E_IMAGE;
if (!socket || (!probe && !image)) {
  console.error(
    "e2e_daemon: FAIL: needs FORKD_SOCKET (a running forkd serve) and FORKD_PROBE (build/guest/probe.elf) " +
      "and/or FORKD_E2E_IMAGE (a Linux image, e.g. forkd-test-base)",
  );
  console.log("e2e_daemon: 0 passed, 1 failed");
  process.exit(2);
}
const kernel = path.resolve(probe ?? "/nonexistent");
const c = new Controller({ socket, timeoutMs: 120_000 });
const tag = `tssdk-e2e-${process.pid}`;
const persistTag = `${tag}-persist`;
const probeVm = { kernel, memMib: 64, append: "work=idle" };

let passed = 0;
const failed: string[] = [];
const roots = new Set<string>();
const tags = new Set<string>();
const pids = new Map<string, number>();
const numbers: string[] = [];

function remember(...vms: VM[]): void {
  for (const v of vms) if (v.pid !== null) pids.set(v.id, v.pid);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function step(name: string, fn: () => Promise<void>): Promise<boolean> {
  const t0 = Date.now();
  try {
    await fn();
  } catch (e) {
    failed.push(name);
    console.log(`FAIL ${name} (${Date.now() - t0} ms): ${String(e)}`);
    return false;
  }
  passed++;
  console.log(`PASS ${name} (${Date.now() - t0} ms)`);
  return true;
}

async function main(): Promise<void> {
  if (probe) await probeFlows();
  if (image) await linuxFlows(image);
}

async function probeFlows(): Promise<void> {
  let baseline = 0;
  let root: VM | null = null;
  let kids: VM[] = [];
  let grand: VM[] = [];
  let spawned: VM[] = [];

  await step("health", async () => {
    const h = await c.health();
    assert.equal(h.ok, true);
    baseline = h.vms;
  });

  if (!(await step("create a probe VM", async () => {
    const t0 = Date.now();
    root = await c.createVm(probeVm);
    numbers.push(`create (probe, 64 MiB): ${Date.now() - t0} ms`);
    roots.add(root.id);
    remember(root);
    assert.equal(root.state, "running");
    assert.equal(root.kernel, kernel);
    assert.equal(root.memMib, 64);
    assert.ok(root.pid !== null && alive(root.pid), `VMM pid ${root.pid} not alive`);
    assert.equal((await c.vm(root.id)).id, root.id);
    assert.ok((await c.vms()).some((v) => v.id === root?.id));
  }))) return;
  const r = root as unknown as VM;

  await step("exec and files on a VM without vsock: Unavailable", async () => {
    await assert.rejects(c.exec(r.id, "true"), (e: unknown) => e instanceof Unavailable && e.status === 503 && /vsock/.test(e.message));
    await assert.rejects(c.readFile(r.id, "/etc/hostname"), Unavailable);
    await assert.rejects(c.writeFile(r.id, "/tmp/x", "x"), Unavailable);
  });

  await step("branch 3, then 2 below the first child", async () => {
    const t0 = Date.now();
    const b = await c.branch(r.id, { n: 3 });
    numbers.push(`branch n=3: ${Date.now() - t0} ms round trip, source paused ${b.pauseUs} us`);
    kids = b.children;
    remember(...kids);
    assert.equal(kids.length, 3);
    assert.match(b.zygote ?? "", /^zy-/);
    assert.equal(typeof b.pauseUs, "number");
    for (const k of kids) {
      assert.equal(k.parent, r.id);
      assert.equal(k.zygote, b.zygote);
      assert.equal((await c.vm(k.id)).state, "running");
      assert.ok(k.pid !== null && alive(k.pid), `child ${k.id} pid ${k.pid} not alive`);
    }
    const g = await c.branch(kids[0].id, { n: 2 });
    grand = g.children;
    remember(...grand);
    assert.equal(grand.length, 2);
    for (const k of grand) assert.equal(k.parent, kids[0].id);
  });

  await step("tree: depth-first lineage", async () => {
    const tree = await c.tree();
    const at = tree.findIndex((t) => t.vm.id === r.id);
    assert.ok(at >= 0, "root not in the tree");
    assert.equal(tree[at].depth, 0);
    const below = tree.slice(at + 1, at + 1 + kids.length + grand.length);
    assert.deepEqual(
      below.map((t) => [t.vm.id, t.depth]),
      [[kids[0].id, 1], [grand[0].id, 2], [grand[1].id, 2], [kids[1].id, 1], [kids[2].id, 1]],
    );
    assert.equal(below[2].lastSibling, true);
    assert.equal(below[4].lastSibling, true);
    assert.equal(below[3].lastSibling, false);
  });

  await step("snapshot, get, list, spawn 4", async () => {
    const s = await c.snapshot(r.id, tag);
    tags.add(tag);
    assert.equal(s.tag, tag);
    assert.equal(s.state, "ready");
    assert.equal(s.parentVm, r.id);
    assert.ok(s.path !== null && fs.existsSync(s.path), `snapshot path ${s.path} missing on the host`);
    numbers.push(`snapshot pause: ${s.pauseUs} us`);
    assert.equal((await c.getSnapshot(tag)).state, "ready");
    assert.ok((await c.snapshots()).some((x) => x.tag === tag));
    const t0 = Date.now();
    spawned = await c.spawn(tag, 4);
    numbers.push(`spawn n=4: ${Date.now() - t0} ms`);
    remember(...spawned);
    assert.equal(spawned.length, 4);
    for (const v of spawned) {
      assert.equal(v.snapshot, tag);
      assert.equal((await c.vm(v.id)).state, "running");
    }
  });

  await step("persisted branch with n=0 writes a snapshot", async () => {
    const b = await c.branch(r.id, { n: 0, persist: true, tag: persistTag });
    tags.add(persistTag);
    assert.equal(b.children.length, 0);
    assert.equal(b.snapshot?.tag, persistTag);
    assert.equal((await c.getSnapshot(persistTag)).state, "ready");
    assert.deepEqual(await c.deleteSnapshot(persistTag), [persistTag]);
    tags.delete(persistTag);
    await assert.rejects(c.getSnapshot(persistTag), NotFound);
  });

  await step("deletes without cascade are Conflict", async () => {
    await assert.rejects(c.deleteVm(r.id), (e: unknown) => e instanceof Conflict && e.status === 409);
    await assert.rejects(c.deleteSnapshot(tag), Conflict);
    assert.equal((await c.vm(r.id)).state, "running");
  });

  await step("daemon errors: NotFound, BadRequest", async () => {
    await assert.rejects(c.vm("vm-00000000"), NotFound);
    await assert.rejects(c.spawn("no-such-tag-tssdk", 1), NotFound);
    await assert.rejects(c.createVm({ kernel: "/nonexistent/tssdk/kernel" }), (e: unknown) => {
      assert.ok(e instanceof BadRequest, String(e));
      assert.match(e.message, /nonexistent/);
      return true;
    });
    await assert.rejects(c.transport.json("POST", "/v1/vms", { json: { kernel, colour: "red" } }), (e: unknown) => {
      assert.ok(e instanceof BadRequest, String(e));
      assert.match(e.message, /colour/);
      return true;
    });
  });

  await step("Sandbox: create, connect, branch 2, kill", async () => {
    const sb = await Sandbox.create({ controller: c, ...probeVm });
    roots.add(sb.id);
    if (sb.vm) remember(sb.vm);
    assert.equal((await Sandbox.connect(sb.id, { controller: c })).vm?.kernel, kernel);
    const children = await sb.branch(2);
    for (const ch of children) if (ch.vm) remember(ch.vm);
    assert.equal(children.length, 2);
    for (const ch of children) assert.equal((await ch.info()).parent, sb.id);
    await assert.rejects(sb.kill(), Conflict);
    const removed = await sb.kill({ cascade: true });
    assert.deepEqual(new Set(removed), new Set([sb.id, ...children.map((x) => x.id)]));
    roots.delete(sb.id);
    assert.deepEqual(await sb.kill(), []);
  });

  await step("cascades remove everything", async () => {
    const rs = await c.deleteSnapshot(tag, { cascade: true });
    tags.delete(tag);
    assert.deepEqual(new Set(rs), new Set([...spawned.map((v) => v.id), tag]));
    const rv = await c.deleteVm(r.id, { cascade: true });
    roots.delete(r.id);
    assert.deepEqual(new Set(rv), new Set([r.id, ...kids.map((k) => k.id), ...grand.map((k) => k.id)]));
    await assert.rejects(c.vm(kids[2].id), NotFound);
    assert.equal((await c.health()).vms, baseline);
  });

  await step("metrics count the branches", async () => {
    const m = await c.metrics();
    const n = /^forkd_branch_pause_seconds_count (\d+)/m.exec(m);
    assert.ok(n, "no forkd_branch_pause_seconds_count");
    assert.ok(Number(n[1]) >= 3, `forkd_branch_pause_seconds_count ${n[1]}`);
  });
}

// A Linux image's sandbox: what the probe guest cannot do (it has no agent).
async function linuxFlows(img: string): Promise<void> {
  const w = "/tmp/forkd-tssdk-e2e";
  let sb: Sandbox | null = null;
  if (!(await step(`Linux: create a sandbox of ${img}`, async () => {
    const t0 = Date.now();
    sb = await Sandbox.create({ controller: c, image: img, memMib: 512 });
    numbers.push(`create (${img}, 512 MiB, agent answering): ${Date.now() - t0} ms`);
    roots.add(sb.id);
    if (sb.vm) remember(sb.vm);
    assert.equal(sb.vm?.image, img);
    assert.equal((await sb.commands.run(["mkdir", "-p", w])).exitCode, 0);
  }))) return;
  const s = sb as unknown as Sandbox;

  await step("Linux: exit codes, stderr, argv, stdin, env, cwd, signal", async () => {
    const r = await s.commands.run("echo hello; echo oops >&2; exit 3");
    assert.deepEqual([r.exitCode, r.stdout, r.stderr, r.ok], [3, "hello\n", "oops\n", false]);
    assert.equal((await s.commands.run(["/bin/echo", "a b", "$HOME"])).stdout, "a b $HOME\n");
    const io = await s.commands.run('cat; echo " $V"; pwd', { stdin: "in", env: { V: "vé" }, cwd: w });
    assert.equal(io.stdout, `in vé\n${w}\n`);
    const k = await s.commands.run("echo before; kill -TERM $$; echo after");
    assert.deepEqual([k.signal, k.exitCode, k.stdout], [15, null, "before\n"]);
    const nobody = await s.commands.run("id -u", { user: "nobody" });
    assert.ok(!["", "0"].includes(nobody.stdout.trim()), `user nobody ran as ${nobody.stdout}`);
  });

  await step("Linux: output streams to the callbacks as it arrives", async () => {
    const got: Array<[number, string]> = [];
    const t0 = Date.now();
    const r = await s.commands.run("for i in 1 2 3 4; do echo $i; sleep 1; done", {
      onStdout: (t) => got.push([Date.now() - t0, t]),
    });
    const end = Date.now() - t0;
    assert.equal(r.stdout, "1\n2\n3\n4\n");
    assert.equal(got.map((g) => g[1]).join(""), r.stdout);
    assert.ok(got.length >= 2 && got[0][0] < end - 1000, `first output at ${got[0]?.[0]} ms, end at ${end} ms`);
    const parts: string[] = [];
    const u = await s.commands.run("printf '\\303'; sleep 0.5; printf '\\251\\n'", { onStdout: (t) => parts.push(t) });
    assert.equal(u.stdout, "é\n");
    assert.ok(parts.every((p) => !p.includes("\ufffd")), JSON.stringify(parts));
  });

  await step("Linux: a time limit kills the command: CommandTimeout", async () => {
    const t0 = Date.now();
    await assert.rejects(s.commands.run("echo before; sleep 60", { timeoutMs: 3000 }), (e: unknown) => {
      assert.ok(e instanceof CommandTimeout, String(e));
      assert.equal(e.stdout, "before\n");
      return true;
    });
    assert.ok(Date.now() - t0 < 30_000, `took ${Date.now() - t0} ms`);
    assert.equal((await s.commands.run("true")).exitCode, 0);
  });

  await step("Linux: files round trip, checked inside the guest", async () => {
    const data = randomBytes(256 * 1024);
    await s.files.write(`${w}/data.bin`, data, { mode: 0o600 });
    assert.ok((await s.files.read(`${w}/data.bin`)).equals(data), "read back differs");
    const inside = await s.commands.run(`sha256sum ${w}/data.bin | cut -d' ' -f1; stat -c %a ${w}/data.bin`);
    assert.equal(inside.stdout, `${createHash("sha256").update(data).digest("hex")}\n600\n`);
    await s.commands.run(`printf 'héllo\\n' > ${w}/text.txt`);
    assert.equal(await s.files.readText(`${w}/text.txt`), "héllo\n");
    await assert.rejects(s.files.read(`${w}/missing`), NotFound);
  });

  await step("Linux: branch 3: the same instant, fresh entropy, separate disks", async () => {
    await s.files.write(`${w}/mark`, "before-branch\n");
    const t0 = Date.now();
    const kids = await s.branch(3);
    numbers.push(`branch n=3 of a Linux sandbox: ${Date.now() - t0} ms round trip, source paused ${kids[0]?.vm?.pauseUs} us`);
    for (const k of kids) if (k.vm) remember(k.vm);
    assert.equal(kids.length, 3);
    const rnd = new Set<string>();
    for (const k of kids) {
      assert.equal(k.vm?.parent, s.id);
      assert.equal(await k.files.readText(`${w}/mark`), "before-branch\n");
      rnd.add((await k.commands.run("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'")).stdout);
      await k.files.write(`${w}/only-${k.id}`, k.id);
    }
    assert.equal(rnd.size, 3, `children share /dev/urandom: ${[...rnd]}`);
    await assert.rejects(s.files.read(`${w}/only-${kids[0].id}`), NotFound);
    await assert.rejects(kids[1].files.read(`${w}/only-${kids[0].id}`), NotFound);
    assert.equal((await s.commands.run("true")).exitCode, 0, "the source does not run on");
    await assert.rejects(s.kill(), Conflict);
    assert.deepEqual(new Set(await s.kill({ cascade: true })), new Set([s.id, ...kids.map((k) => k.id)]));
    roots.delete(s.id);
  });
}

async function cleanup(): Promise<void> {
  for (const t of tags) await c.deleteSnapshot(t, { cascade: true }).catch(() => undefined);
  for (const id of roots) await c.deleteVm(id, { cascade: true }).catch(() => undefined);
  // Outside: every VMM (and BRANCH child) this run saw is gone within 10 s.
  await step("no VMM process left (checked by pid)", async () => {
    const end = Date.now() + 10_000;
    let left = [...pids].filter(([, pid]) => alive(pid));
    while (left.length && Date.now() < end) {
      await new Promise((res) => setTimeout(() => res(null), 100));
      left = left.filter(([, pid]) => alive(pid));
    }
    assert.deepEqual(left, [], `still running: ${left.map(([id, pid]) => `${id}=${pid}`).join(", ")}`);
    // Probe: root, 3 children, 2 grandchildren, 4 spawned, the sandbox and its 2
    // children; Linux: the sandbox and its 3 children.
    const expected = (probe ? 13 : 0) + (image ? 4 : 0);
    assert.equal(pids.size, expected, `${pids.size} VM pids seen, expected ${expected}`);
  });
}

main()
  .catch((e) => {
    failed.push("main");
    console.log(`FAIL main: ${String(e)}`);
  })
  .then(cleanup)
  .then(() => {
    for (const n of numbers) console.log(`number: ${n}`);
    if (failed.length) console.log(`failed: ${failed.join(", ")}`);
    console.log(`e2e_daemon: ${passed} passed, ${failed.length} failed`);
    process.exitCode = failed.length ? 1 : 0;
  });
