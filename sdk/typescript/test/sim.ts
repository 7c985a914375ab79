// Starts sdk/python/tests/sim_daemon.py (the simulated forkd serve: an
// in-memory registry, commands and files served by this host) on a socket in
// a fresh temporary directory, for the tests to drive the SDK against.

import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

/** The checkout's root: the first directory above this file holding the simulated daemon. */
export function repoRoot(): string {
  if (process.env.FORKD_REPO) return process.env.FORKD_REPO;
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, "sdk/python/tests/sim_daemon.py"))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`sim: no sdk/python/tests/sim_daemon.py above ${__dirname} (set FORKD_REPO)`);
    dir = up;
  }
}

export interface Sim {
  dir: string;
  socket: string;
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

function exited(p: ChildProcess, ms: number): Promise<boolean> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    p.once("exit", () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

export interface SimOptions {
  /** A machine without cgroup v2: asking for limits is answered 501. */
  noCgroup2?: boolean;
}

export async function startSim(o: SimOptions = {}): Promise<Sim> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "forkd-tssdk-"));
  const socket = path.join(dir, "sim.sock");
  const script = path.join(repoRoot(), "sdk/python/tests/sim_daemon.py");
  const args = [script, "--socket", socket, ...(o.noCgroup2 ? ["--no-cgroup2"] : [])];
  const p = spawn("python3", args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  p.stderr?.on("data", (d: Buffer) => (err += d.toString("utf8")));
  const ready = await new Promise<boolean>((resolve) => {
    const t = setTimeout(() => resolve(false), START_TIMEOUT_MS);
    p.stdout?.on("data", (d: Buffer) => {
      out += d.toString("utf8");
      if (out.includes("serving on")) {
        clearTimeout(t);
        resolve(true);
      }
    });
    p.once("exit", () => {
      clearTimeout(t);
      resolve(false);
    });
    p.once("error", () => {
      clearTimeout(t);
      resolve(false);
    });
  });
  const stop = async () => {
    p.kill("SIGTERM");
    if (!(await exited(p, STOP_TIMEOUT_MS))) {
      p.kill("SIGKILL");
      await exited(p, STOP_TIMEOUT_MS);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  if (!ready) {
    await stop();
    throw new Error(`sim_daemon.py did not start on ${socket} within ${START_TIMEOUT_MS} ms: ${out}${err}`);
  }
  return { dir, socket, stop };
}
