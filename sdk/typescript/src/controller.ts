// Controller: one method per route of forkd serve's REST API (docs/rest-api.md),
// as sdk/python/forkd/controller.py.

import { StringDecoder } from "string_decoder";
import { CommandTimeout, ConnectionFailed, ForkdError, InvalidArgument, RequestTimeout, errorFromObject } from "./errors";
import {
  BranchResult,
  CommandResult,
  NetPolicy,
  Snapshot,
  TreeNode,
  VM,
  branchResultFromJson,
  listOf,
  preview,
  snapshotFromJson,
  treeNodeFromJson,
  vmFromJson,
} from "./models";
import { Exchange, Transport, TransportOptions, checkTimeout } from "./transport";

/** Default time limit of a command (ms), as in E2B; 0 means none. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;
/** How long past a command's time limit the client waits for the daemon's verdict. */
export const COMMAND_TIMEOUT_GRACE_MS = 10_000;
/** The daemon's bound on n for branch and spawn. */
export const MAX_COUNT = 64;

const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export interface CallOptions {
  /** This call's timeout in ms (idle); null: none once connected. */
  timeoutMs?: number | null;
}

/** The cgroup v2 limits of a created or spawned VM (docs/rest-api.md): any of them puts
 * the VM in a cgroup of its own (each VM of a spawn in its own), which its BRANCH children
 * share. Checked before sending (InvalidArgument); a daemon without cgroup v2 answers
 * Unsupported (501). */
export interface LimitOptions {
  /** memory.max in MiB, 16..1048576 (no swap): past it the VM is killed (exited, 137). */
  memoryMaxMib?: number;
  /** cpu.max, "QUOTA[/PERIOD]" in microseconds: "50000" is half a CPU (period 100000). */
  cpuMax?: string;
  /** pids.max, 1..4194304 tasks (threads) of the VM and its BRANCH children. */
  pidsMax?: number;
}

export interface SpawnOptions extends CallOptions, LimitOptions {}

export interface CreateVmOptions extends CallOptions, LimitOptions {
  /** An image name (forkd image build); give this or kernel. */
  image?: string;
  /** An absolute path of a kernel (e.g. the probe guest); give this or image. */
  kernel?: string;
  initrd?: string;
  append?: string;
  memMib?: number;
  cpus?: number;
  tag?: string;
  vsock?: boolean;
  /** "none" (default: no network device), "host" or "nat"; the VM's netHostAddr is where
   * the host reaches it. */
  net?: NetPolicy;
}

export interface BranchOptions extends CallOptions {
  /** Children, 1..64 (0 allowed with persist). Default 1. */
  n?: number;
  /** Also write the instant as snapshot `tag`. */
  persist?: boolean;
  tag?: string;
  /** With persist: answer once the snapshot is written (default true). */
  wait?: boolean;
}

export interface ExecOptions {
  env?: Record<string, string>;
  cwd?: string;
  uid?: number;
  stdin?: string | Uint8Array;
  /** Time limit in ms (default 60 000; 0: none): the agent kills the command then and CommandTimeout is thrown. */
  timeoutMs?: number;
  /** Each piece of stdout as it arrives, decoded as UTF-8 across chunk boundaries. */
  onStdout?: (text: string) => void;
  onStderr?: (text: string) => void;
}

export interface WriteFileOptions extends CallOptions {
  /** Permission bits, 0..0o7777 (default 0o644). */
  mode?: number;
}

export interface ControllerOptions extends TransportOptions {}

/** One path segment: a non-empty id or tag, percent-encoded. */
function seg(what: string, s: unknown): string {
  return encodeURIComponent(nonEmpty(what, s));
}

function nonEmpty(what: string, s: unknown): string {
  if (typeof s !== "string" || !s) {
    throw new InvalidArgument(`${what}: expected a non-empty string, got ${JSON.stringify(s) ?? String(s)}`);
  }
  return s;
}

function checkTag(what: string, tag: unknown): string {
  if (typeof tag !== "string" || !TAG_RE.test(tag)) {
    throw new InvalidArgument(
      `${what}: expected a tag of 1..64 characters [A-Za-z0-9._-] not starting with . or -, got ${JSON.stringify(tag) ?? String(tag)}`,
    );
  }
  return tag;
}

function checkInt(what: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) {
    throw new InvalidArgument(`${what}: expected an integer in ${lo}..${hi}, got ${String(v)}`);
  }
  return v;
}

function checkBool(what: string, v: unknown): boolean {
  if (typeof v !== "boolean") throw new InvalidArgument(`${what}: expected true or false, got ${String(v)}`);
  return v;
}

function checkAbsPath(what: string, p: unknown): string {
  if (typeof p !== "string" || !p.startsWith("/") || p.includes("\0")) {
    throw new InvalidArgument(`${what}: expected an absolute path, got ${JSON.stringify(p) ?? String(p)}`);
  }
  return p;
}

const CPU_MAX_RE = /^([0-9]+)(?:\/([0-9]+))?$/;

/** Adds the limits asked in o to a create or spawn body, checked as the daemon checks them. */
function setLimits(body: Record<string, unknown>, o: LimitOptions): void {
  if (o.memoryMaxMib !== undefined) body.memory_max_mib = checkInt("memoryMaxMib", o.memoryMaxMib, 16, 1 << 20);
  if (o.cpuMax !== undefined) {
    const m = typeof o.cpuMax === "string" ? CPU_MAX_RE.exec(o.cpuMax) : null;
    const period = m && m[2] !== undefined ? Number(m[2]) : 100_000;
    if (!m || Number(m[1]) < 1000 || period < 1000 || period > 1_000_000) {
      throw new InvalidArgument(
        `cpuMax: expected "QUOTA[/PERIOD]" in microseconds, e.g. "50000" for half a CPU (quota at least 1000, period 1000 to 1000000, default 100000), got ${JSON.stringify(o.cpuMax) ?? String(o.cpuMax)}`,
      );
    }
    body.cpu_max = o.cpuMax;
  }
  if (o.pidsMax !== undefined) body.pids_max = checkInt("pidsMax", o.pidsMax, 1, 4_194_304);
}

/** The argv of a command: a string runs with /bin/sh -c. */
export function argvOf(cmd: string | readonly string[]): string[] {
  if (typeof cmd === "string") {
    if (!cmd) throw new InvalidArgument("cmd: expected a non-empty command");
    return ["/bin/sh", "-c", cmd];
  }
  if (!Array.isArray(cmd) || cmd.length === 0 || !cmd.every((a) => typeof a === "string")) {
    throw new InvalidArgument(`cmd: expected a string or a non-empty array of strings, got ${preview(cmd)}`);
  }
  return [...cmd];
}

function callTimeout(o: CallOptions | undefined): { timeoutMs?: number | null } {
  return o && o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {};
}

/** A client of `forkd serve`.
 *
 * `new Controller()` talks to the Unix socket $FORKD_SOCKET (else
 * /var/lib/forkd/forkd.sock); `{socket: PATH}` to another one;
 * `{url: "https://host:8443", token, tls: {ca}}` over TCP/TLS with a bearer
 * token (default $FORKD_TOKEN). `timeoutMs` bounds each call's connect and
 * every wait for bytes; each method also takes `{timeoutMs}`. */
export class Controller {
  readonly transport: Transport;

  constructor(opts: ControllerOptions = {}) {
    this.transport = new Transport(opts);
  }

  toString(): string {
    return `Controller(${this.transport.describe()})`;
  }

  // -- health ------------------------------------------------------------------

  /** GET /healthz: {ok: true, vms: N}. */
  async health(o?: CallOptions): Promise<{ ok: boolean; vms: number; [k: string]: unknown }> {
    const doc = await this.transport.json("GET", "/healthz", callTimeout(o));
    if (typeof doc !== "object" || doc === null || typeof (doc as { ok?: unknown }).ok !== "boolean") {
      throw new ConnectionFailed(`GET /healthz: expected {"ok":…,"vms":…}, got ${preview(doc)}`);
    }
    return doc as { ok: boolean; vms: number };
  }

  /** GET /metrics: the Prometheus text. */
  async metrics(o?: CallOptions): Promise<string> {
    const r = await this.transport.request("GET", "/metrics", { headers: { Accept: "text/plain" }, ...callTimeout(o) });
    return r.body.toString("utf8");
  }

  // -- VMs -----------------------------------------------------------------------

  /** POST /v1/vms: boots a VM from an image name or a kernel (with an optional
   * initrd and command line); resolves once it answers (with an image, once its
   * guest agent does). */
  async createVm(o: CreateVmOptions): Promise<VM> {
    if (typeof o !== "object" || o === null) throw new InvalidArgument("createVm: expected {image} or {kernel}");
    if ((o.image === undefined) === (o.kernel === undefined)) {
      throw new InvalidArgument("createVm: give exactly one of image or kernel");
    }
    if (o.image !== undefined && (o.initrd !== undefined || o.append !== undefined)) {
      throw new InvalidArgument("createVm: initrd and append go with kernel, not image");
    }
    const body: Record<string, unknown> = {};
    if (o.image !== undefined) body.image = nonEmpty("image", o.image);
    if (o.kernel !== undefined) body.kernel = checkAbsPath("kernel", o.kernel);
    if (o.initrd !== undefined) body.initrd = checkAbsPath("initrd", o.initrd);
    if (o.append !== undefined) {
      if (typeof o.append !== "string") throw new InvalidArgument(`append: expected a string, got ${String(o.append)}`);
      body.append = o.append;
    }
    if (o.memMib !== undefined) body.mem_mib = checkInt("memMib", o.memMib, 1, 1 << 20);
    if (o.cpus !== undefined) body.cpus = checkInt("cpus", o.cpus, 1, 254);
    if (o.tag !== undefined) body.tag = checkTag("tag", o.tag);
    if (o.vsock !== undefined) body.vsock = checkBool("vsock", o.vsock);
    if (o.net !== undefined) {
      if (o.net !== "none" && o.net !== "host" && o.net !== "nat") {
        throw new InvalidArgument(`net: expected "none", "host" or "nat", got ${JSON.stringify(o.net) ?? String(o.net)}`);
      }
      body.net = o.net;
    }
    setLimits(body, o);
    return vmFromJson(await this.transport.json("POST", "/v1/vms", { json: body, ...callTimeout(o) }));
  }

  /** GET /v1/vms. */
  async vms(o?: CallOptions): Promise<VM[]> {
    return listOf(await this.transport.json("GET", "/v1/vms", callTimeout(o)), "vms").map(vmFromJson);
  }

  /** GET /v1/vms/{id}. */
  async vm(vmId: string, o?: CallOptions): Promise<VM> {
    return vmFromJson(await this.transport.json("GET", `/v1/vms/${seg("vmId", vmId)}`, callTimeout(o)));
  }

  /** DELETE /v1/vms/{id}: stops the VM (with cascade, its descendants too);
   * resolves to the removed ids. Conflict if it has children and no cascade. */
  async deleteVm(vmId: string, o: { cascade?: boolean } & CallOptions = {}): Promise<string[]> {
    const cascade = o.cascade === undefined ? false : checkBool("cascade", o.cascade);
    const doc = await this.transport.json("DELETE", `/v1/vms/${seg("vmId", vmId)}`, {
      query: { cascade: cascade ? "true" : undefined },
      ...callTimeout(o),
    });
    return strings("removed", listOf(doc, "removed"));
  }

  /** POST /v1/vms/{id}/branch: n children continue from this instant; with
   * persist (needs tag) the instant is also written as a snapshot. */
  async branch(vmId: string, o: BranchOptions = {}): Promise<BranchResult> {
    const persist = o.persist === undefined ? false : checkBool("persist", o.persist);
    const wait = o.wait === undefined ? true : checkBool("wait", o.wait);
    const n = checkInt("n", o.n ?? 1, persist ? 0 : 1, MAX_COUNT);
    if (persist && o.tag === undefined) throw new InvalidArgument("branch: persist needs a tag");
    if (!persist && o.tag !== undefined) throw new InvalidArgument("branch: tag goes with persist: true");
    const body: Record<string, unknown> = { n, persist, wait };
    if (o.tag !== undefined) body.tag = checkTag("tag", o.tag);
    const doc = await this.transport.json("POST", `/v1/vms/${seg("vmId", vmId)}/branch`, { json: body, ...callTimeout(o) });
    return branchResultFromJson(doc);
  }

  /** POST /v1/vms/{id}/snapshot: written while the VM is paused. */
  async snapshot(vmId: string, tag: string, o?: CallOptions): Promise<Snapshot> {
    const path = `/v1/vms/${seg("vmId", vmId)}/snapshot`;
    const doc = await this.transport.json("POST", path, { json: { tag: checkTag("tag", tag) }, ...callTimeout(o) });
    return snapshotFromJson(doc);
  }

  // -- snapshots -------------------------------------------------------------------

  /** GET /v1/snapshots (those still being written too). */
  async snapshots(o?: CallOptions): Promise<Snapshot[]> {
    return listOf(await this.transport.json("GET", "/v1/snapshots", callTimeout(o)), "snapshots").map(snapshotFromJson);
  }

  /** GET /v1/snapshots/{tag}. */
  async getSnapshot(tag: string, o?: CallOptions): Promise<Snapshot> {
    return snapshotFromJson(await this.transport.json("GET", `/v1/snapshots/${seg("tag", tag)}`, callTimeout(o)));
  }

  /** POST /v1/snapshots/{tag}/spawn: n VMs (1..64) restored from the snapshot; with limits,
   * each in a cgroup of its own with the same limits. */
  async spawn(tag: string, n = 1, o: SpawnOptions = {}): Promise<VM[]> {
    const body: Record<string, unknown> = { n: checkInt("n", n, 1, MAX_COUNT) };
    setLimits(body, o);
    const doc = await this.transport.json("POST", `/v1/snapshots/${seg("tag", tag)}/spawn`, { json: body, ...callTimeout(o) });
    return listOf(doc, "vms").map(vmFromJson);
  }

  /** DELETE /v1/snapshots/{tag}; resolves to the removed ids and tags. Conflict
   * with VMs spawned from it and no cascade. */
  async deleteSnapshot(tag: string, o: { cascade?: boolean } & CallOptions = {}): Promise<string[]> {
    const cascade = o.cascade === undefined ? false : checkBool("cascade", o.cascade);
    const doc = await this.transport.json("DELETE", `/v1/snapshots/${seg("tag", tag)}`, {
      query: { cascade: cascade ? "true" : undefined },
      ...callTimeout(o),
    });
    return strings("removed", listOf(doc, "removed"));
  }

  /** GET /v1/tree: the lineage, depth-first. */
  async tree(o?: CallOptions): Promise<TreeNode[]> {
    return listOf(await this.transport.json("GET", "/v1/tree", callTimeout(o)), "tree").map(treeNodeFromJson);
  }

  // -- inside a VM -------------------------------------------------------------------

  /** POST /v1/vms/{id}/exec, streamed: onStdout/onStderr get each piece of
   * output as it arrives. A string cmd runs with /bin/sh -c. Resolves to the
   * CommandResult whatever the exit code; throws CommandTimeout past timeoutMs. */
  async exec(vmId: string, cmd: string | readonly string[], o: ExecOptions = {}): Promise<CommandResult> {
    const argv = argvOf(cmd);
    const path = `/v1/vms/${seg("vmId", vmId)}/exec`;
    const body: Record<string, unknown> = { argv };
    if (o.env !== undefined) {
      if (typeof o.env !== "object" || o.env === null) throw new InvalidArgument("env: expected an object of strings");
      const env: Record<string, string> = {};
      for (const [k, v] of Object.entries(o.env)) {
        if (!k || k.includes("=") || typeof v !== "string") {
          throw new InvalidArgument(`env: expected NAME (no '=') to string, got ${JSON.stringify(k)}: ${preview(v)}`);
        }
        env[k] = v;
      }
      body.env = env;
    }
    if (o.cwd !== undefined) body.cwd = checkAbsPath("cwd", o.cwd);
    if (o.uid !== undefined) body.uid = checkInt("uid", o.uid, 0, 0x7fffffff);
    if (o.stdin !== undefined) {
      if (typeof o.stdin !== "string" && !(o.stdin instanceof Uint8Array)) {
        throw new InvalidArgument("stdin: expected a string or bytes");
      }
      body.stdin = (typeof o.stdin === "string" ? Buffer.from(o.stdin, "utf8") : Buffer.from(o.stdin)).toString("base64");
    }
    for (const [name, cb] of [["onStdout", o.onStdout], ["onStderr", o.onStderr]] as const) {
      if (cb !== undefined && typeof cb !== "function") throw new InvalidArgument(`${name}: expected a function`);
    }
    const limit = checkTimeout("timeoutMs", o.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, false) ?? 0;
    let ioTimeout: number | null = null;
    if (limit > 0) {
      body.timeout_ms = Math.max(1, Math.round(limit));
      ioTimeout = limit + COMMAND_TIMEOUT_GRACE_MS;
    }
    const what = JSON.stringify(argv);
    const stream = new ExecStream(o.onStdout, o.onStderr);
    const started = Date.now();
    let ex: Exchange;
    try {
      ex = await this.transport.open("POST", path, {
        json: body,
        timeoutMs: ioTimeout,
        headers: { Accept: "application/x-ndjson" },
      });
    } catch (e) {
      if (e instanceof RequestTimeout) {
        throw new CommandTimeout(`${what}: no answer within ${ioTimeout} ms`);
      }
      throw e;
    }
    ex.bodyTimeout = () =>
      new CommandTimeout(`${what}: no output nor exit status for ${ioTimeout} ms`, null, null, {
        stdout: stream.text(1),
        stderr: stream.text(2),
      });
    try {
      await new Promise<void>((resolve, reject) => {
        let settled = false;
        const finish = (err: unknown) => {
          if (settled) return;
          settled = true;
          if (err) reject(err);
          else resolve();
        };
        ex.res.on("data", (chunk: Buffer) => {
          if (settled) return;
          try {
            stream.feed(chunk);
            if (stream.done) finish(null);
          } catch (e) {
            finish(e);
          }
        });
        ex.res.on("end", () => finish(null));
        ex.res.on("error", (e: unknown) => finish(errorOf(ex, vmId, e)));
        ex.res.on("close", () => finish(ex.failure ?? (stream.done ? null : errorOf(ex, vmId, new Error("closed")))));
      });
      stream.finish();
    } finally {
      ex.close();
    }
    return stream.result(argv, limit > 0 ? limit : null, Date.now() - started);
  }

  /** GET /v1/vms/{id}/files?path=P: the file's exact bytes. */
  async readFile(vmId: string, path: string, o?: CallOptions): Promise<Buffer> {
    const r = await this.transport.request("GET", `/v1/vms/${seg("vmId", vmId)}/files`, {
      query: { path: checkAbsPath("path", path) },
      headers: { Accept: "application/octet-stream" },
      ...callTimeout(o),
    });
    return r.body;
  }

  /** PUT /v1/vms/{id}/files?path=P&mode=0644 with the raw bytes (a string as UTF-8). */
  async writeFile(vmId: string, path: string, data: string | Uint8Array, o: WriteFileOptions = {}): Promise<void> {
    if (typeof data !== "string" && !(data instanceof Uint8Array)) {
      throw new InvalidArgument("data: expected a string or bytes (Uint8Array/Buffer)");
    }
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
    const mode = checkInt("mode", o.mode ?? 0o644, 0, 0o7777);
    await this.transport.request("PUT", `/v1/vms/${seg("vmId", vmId)}/files`, {
      query: { path: checkAbsPath("path", path), mode: mode.toString(8).padStart(4, "0") },
      body: bytes,
      headers: { "Content-Type": "application/octet-stream" },
      ...callTimeout(o),
    });
  }
}

function strings(what: string, list: unknown[]): string[] {
  for (const s of list) {
    if (typeof s !== "string") throw new ConnectionFailed(`${what}: expected strings from the daemon, got ${preview(list)}`);
  }
  return list as string[];
}

function errorOf(ex: Exchange, vmId: string, e: unknown): ForkdError {
  if (ex.failure) return ex.failure;
  if (e instanceof ForkdError) return e;
  const err = e as { code?: string; message?: string };
  return new ConnectionFailed(`exec stream of ${vmId} broke: ${err?.code ? err.code + ": " : ""}${err?.message ?? String(e)}`);
}

/** Parses the NDJSON of an exec as it arrives. */
class ExecStream {
  private buf: Buffer = Buffer.alloc(0);
  private readonly out: Buffer[] = [];
  private readonly err: Buffer[] = [];
  private readonly dec = { 1: new StringDecoder("utf8"), 2: new StringDecoder("utf8") };
  private readonly cb: { 1?: (s: string) => void; 2?: (s: string) => void };
  done = false;
  final: Record<string, unknown> | null = null;

  constructor(onStdout?: (s: string) => void, onStderr?: (s: string) => void) {
    this.cb = { 1: onStdout, 2: onStderr };
  }

  bytes(fd: 1 | 2): Buffer {
    return Buffer.concat(fd === 1 ? this.out : this.err);
  }

  text(fd: 1 | 2): string {
    return this.bytes(fd).toString("utf8");
  }

  feed(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (!this.done) {
      const i = this.buf.indexOf(0x0a);
      if (i < 0) break;
      const line = this.buf.subarray(0, i);
      this.buf = this.buf.subarray(i + 1);
      this.line(line);
    }
  }

  finish(): void {
    if (!this.done && this.buf.toString("utf8").trim()) {
      const line = this.buf;
      this.buf = Buffer.alloc(0);
      this.line(line);
    }
    for (const fd of [1, 2] as const) {
      const tail = this.dec[fd].end();
      const cb = this.cb[fd];
      if (tail && cb) cb(tail);
    }
  }

  private output(fd: 1 | 2, value: unknown): void {
    const name = fd === 1 ? "stdout" : "stderr";
    if (typeof value !== "string" || !BASE64_RE.test(value)) {
      throw new ConnectionFailed(`exec stream: bad base64 in ${name}: ${preview(value)}`);
    }
    const data = Buffer.from(value, "base64");
    (fd === 1 ? this.out : this.err).push(data);
    const cb = this.cb[fd];
    if (cb && data.length) {
      const text = this.dec[fd].write(data);
      if (text) cb(text);
    }
  }

  private line(raw: Buffer): void {
    const text = raw.toString("utf8").trim();
    if (!text) return;
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch {
      throw new ConnectionFailed(`exec stream: not a JSON line: ${JSON.stringify(text.slice(0, 200))}`);
    }
    if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
      throw new ConnectionFailed(`exec stream: not a JSON object: ${JSON.stringify(text.slice(0, 200))}`);
    }
    const o = obj as Record<string, unknown>;
    if ("stdout" in o) this.output(1, o.stdout);
    if ("stderr" in o) this.output(2, o.stderr);
    if ("exit" in o || "signal" in o || "error" in o) {
      this.done = true;
      this.final = o;
    }
  }

  result(argv: string[], limitMs: number | null, elapsedMs: number): CommandResult {
    const o = this.final;
    if (o === null) throw new ConnectionFailed(`exec stream of ${JSON.stringify(argv)} ended without an exit status`);
    const stdout = this.text(1);
    const stderr = this.text(2);
    if ("error" in o) {
      const err = errorFromObject(o.error);
      if (err instanceof CommandTimeout) {
        err.stdout = stdout;
        err.stderr = stderr;
      }
      throw err;
    }
    const num = (k: string): number | null => {
      const v = o[k];
      if (v === undefined || v === null) return null;
      if (typeof v !== "number" || !Number.isInteger(v)) {
        throw new ConnectionFailed(`exec stream: "${k}" is not an integer: ${preview(v)}`);
      }
      return v;
    };
    const sig = num("signal");
    const exit = num("exit");
    const raw: Record<string, unknown> = {};
    for (const k of Object.keys(o)) if (k !== "exit" && k !== "signal" && k !== "timed_out") raw[k] = o[k];
    const exitCode = sig === null ? exit : null;
    const res: CommandResult = {
      exitCode,
      signal: sig,
      stdout,
      stderr,
      stdoutBytes: this.bytes(1),
      stderrBytes: this.bytes(2),
      timedOut: o.timed_out === true,
      ok: exitCode === 0 && sig === null,
      raw,
    };
    // A SIGKILL at the time limit is the agent's timeout even if the last line
    // does not say "timed_out".
    if (!("timed_out" in o) && sig === 9 && limitMs !== null && elapsedMs >= limitMs) res.timedOut = true;
    if (res.timedOut) {
      throw new CommandTimeout(`${JSON.stringify(argv)} timed out after ${limitMs} ms (killed by signal ${sig})`, null, null, {
        stdout,
        stderr,
        result: res,
      });
    }
    return res;
  }
}
