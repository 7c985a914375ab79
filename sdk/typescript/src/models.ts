// The daemon's objects (docs/rest-api.md) as typed, camelCase interfaces.
//
// Each parser checks the fields it needs and keeps the ones this SDK does not
// know in `raw`, so a newer daemon's additions are not lost. An answer that is
// not the contract's shape is a ConnectionFailed naming what was missing.

import { ConnectionFailed } from "./errors";

export type VMState = "starting" | "running" | "paused" | "exited" | "failed";
export type SnapshotState = "writing" | "ready" | "failed";

/** A VM as the daemon reports it. */
/** A VM's network policy (docs/networking.md). */
export type NetPolicy = "none" | "host" | "nat";

/** A VM's cgroup v2 limits (docs/rest-api.md); each null when not limited. BRANCH
 * children share their source's cgroup: the same limits and cgroup, one budget. */
export interface Limits {
  /** memory.max in MiB (no swap): past it the OOM killer ends the VM (exited, 137). */
  memoryMaxMib: number | null;
  /** cpu.max, "QUOTA/PERIOD" in microseconds. */
  cpuMax: string | null;
  /** pids.max: tasks (threads) of the VM and its BRANCH children. */
  pidsMax: number | null;
  /** The cgroup's path, /sys/fs/cgroup/forkd/vm-…. */
  cgroup: string | null;
  raw: Record<string, unknown>;
}

export interface VM {
  id: string;
  state: VMState | string | null;
  pid: number | null;
  /** The VM it was BRANCHed from. */
  parent: string | null;
  /** The zygote process that holds the branch instant. */
  zygote: string | null;
  /** The snapshot tag it was spawned from. */
  snapshot: string | null;
  tag: string | null;
  image: string | null;
  kernel: string | null;
  memMib: number | null;
  cpus: number | null;
  /** ISO 8601 UTC with milliseconds. */
  created: string | null;
  branchedAt: string | null;
  /** How long the source was paused for the branch that made this VM. */
  pauseUs: number | null;
  /** Create and spawn answers only: ms from starting its VMM to its control socket answering. */
  startMs: number | null;
  controlSocket: string | null;
  vsockSocket: string | null;
  exitStatus: number | null;
  /** Its network policy: "none" (no network device), "host" or "nat" (docs/networking.md). */
  net: NetPolicy | string | null;
  /** Its network namespace, forkd-...; null without a network. */
  netNetns: string | null;
  /** Where the host reaches it (10.200.S.2); null without a network. */
  netHostAddr: string | null;
  /** Its cgroup limits; null when it has no cgroup of its own (no limit was asked). */
  limits: Limits | null;
  /** The fields this SDK does not know, as the daemon sent them. */
  raw: Record<string, unknown>;
}

/** A snapshot, by tag. */
export interface Snapshot {
  tag: string;
  state: SnapshotState | string | null;
  path: string | null;
  parentVm: string | null;
  created: string | null;
  pauseUs: number | null;
  raw: Record<string, unknown>;
}

/** The answer to a BRANCH: the zygote holding the instant, the source's
 * pause, the children and, with persist, the snapshot. */
export interface BranchResult {
  zygote: string | null;
  pauseUs: number | null;
  /** ms of the source VMM's branch call. */
  vmmMs: number | null;
  children: VM[];
  snapshot: Snapshot | null;
  raw: Record<string, unknown>;
}

/** One line of the lineage tree, depth-first (roots have depth 0). */
export interface TreeNode {
  vm: VM;
  depth: number;
  lastSibling: boolean;
  raw: Record<string, unknown>;
}

/** The outcome of a command. */
export interface CommandResult {
  /** null when a signal ended it. */
  exitCode: number | null;
  /** null unless a signal ended it. */
  signal: number | null;
  /** UTF-8 text, invalid bytes replaced. */
  stdout: string;
  stderr: string;
  /** The exact bytes. */
  stdoutBytes: Buffer;
  stderrBytes: Buffer;
  timedOut: boolean;
  /** exit code 0 and no signal. */
  ok: boolean;
  /** The last line's other fields. */
  raw: Record<string, unknown>;
}

type Json = Record<string, unknown>;
type Kind = "string" | "number" | "boolean";

function record(what: string, obj: unknown): Json {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new ConnectionFailed(`expected a JSON object for ${what}, got ${preview(obj)}`);
  }
  return obj as Json;
}

export function preview(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

// A field that may be absent or null; a present value of another type is the
// daemon breaking the contract, said with the object and the field.
function opt<T>(what: string, obj: Json, key: string, kind: Kind): T | null {
  const v = obj[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== kind) {
    throw new ConnectionFailed(`${what}.${key}: expected a ${kind} from the daemon, got ${preview(v)}`);
  }
  return v as T;
}

function req<T>(what: string, obj: Json, key: string, kind: Kind): T {
  const v = opt<T>(what, obj, key, kind);
  if (v === null) {
    throw new ConnectionFailed(`${what} without its "${key}" field in the daemon's answer: ${preview(obj)}`);
  }
  return v;
}

function rest(obj: Json, known: readonly string[]): Json {
  const raw: Json = {};
  for (const k of Object.keys(obj)) if (!known.includes(k)) raw[k] = obj[k];
  return raw;
}

const VM_FIELDS = [
  "id", "state", "pid", "parent", "zygote", "snapshot", "tag", "image", "kernel", "mem_mib",
  "cpus", "created", "branched_at", "pause_us", "start_ms", "control_socket", "vsock_socket", "exit_status",
  "net", "net_netns", "net_host_addr", "limits",
] as const;

const LIMITS_FIELDS = ["memory_max_mib", "cpu_max", "pids_max", "cgroup"] as const;

export function limitsFromJson(obj: unknown): Limits {
  const o = record("VM.limits", obj);
  return {
    memoryMaxMib: opt<number>("VM.limits", o, "memory_max_mib", "number"),
    cpuMax: opt<string>("VM.limits", o, "cpu_max", "string"),
    pidsMax: opt<number>("VM.limits", o, "pids_max", "number"),
    cgroup: opt<string>("VM.limits", o, "cgroup", "string"),
    raw: rest(o, LIMITS_FIELDS),
  };
}

export function vmFromJson(obj: unknown): VM {
  const o = record("VM", obj);
  const s = (k: string) => opt<string>("VM", o, k, "string");
  const n = (k: string) => opt<number>("VM", o, k, "number");
  return {
    id: req<string>("VM", o, "id", "string"),
    state: s("state"),
    pid: n("pid"),
    parent: s("parent"),
    zygote: s("zygote"),
    snapshot: s("snapshot"),
    tag: s("tag"),
    image: s("image"),
    kernel: s("kernel"),
    memMib: n("mem_mib"),
    cpus: n("cpus"),
    created: s("created"),
    branchedAt: s("branched_at"),
    pauseUs: n("pause_us"),
    startMs: n("start_ms"),
    controlSocket: s("control_socket"),
    vsockSocket: s("vsock_socket"),
    exitStatus: n("exit_status"),
    net: s("net"),
    netNetns: s("net_netns"),
    netHostAddr: s("net_host_addr"),
    limits: o.limits === undefined || o.limits === null ? null : limitsFromJson(o.limits),
    raw: rest(o, VM_FIELDS),
  };
}

const SNAPSHOT_FIELDS = ["tag", "state", "path", "parent_vm", "created", "pause_us"] as const;

export function snapshotFromJson(obj: unknown): Snapshot {
  const o = record("Snapshot", obj);
  const s = (k: string) => opt<string>("Snapshot", o, k, "string");
  return {
    tag: req<string>("Snapshot", o, "tag", "string"),
    state: s("state"),
    path: s("path"),
    parentVm: s("parent_vm"),
    created: s("created"),
    pauseUs: opt<number>("Snapshot", o, "pause_us", "number"),
    raw: rest(o, SNAPSHOT_FIELDS),
  };
}

export function branchResultFromJson(obj: unknown): BranchResult {
  const o = record("BranchResult", obj);
  const children = o.children ?? [];
  if (!Array.isArray(children)) {
    throw new ConnectionFailed(`BranchResult.children: expected a list, got ${preview(children)}`);
  }
  return {
    zygote: opt<string>("BranchResult", o, "zygote", "string"),
    pauseUs: opt<number>("BranchResult", o, "pause_us", "number"),
    vmmMs: opt<number>("BranchResult", o, "vmm_ms", "number"),
    children: children.map(vmFromJson),
    snapshot: o.snapshot === undefined || o.snapshot === null ? null : snapshotFromJson(o.snapshot),
    raw: rest(o, ["zygote", "pause_us", "vmm_ms", "children", "snapshot"]),
  };
}

export function treeNodeFromJson(obj: unknown): TreeNode {
  const o = record("TreeNode", obj);
  return {
    vm: vmFromJson(o.vm),
    depth: opt<number>("TreeNode", o, "depth", "number") ?? 0,
    lastSibling: opt<boolean>("TreeNode", o, "last_sibling", "boolean") ?? false,
    raw: rest(o, ["vm", "depth", "last_sibling"]),
  };
}

/** The list under `key` of a {key: [...]} answer. */
export function listOf(doc: unknown, key: string): unknown[] {
  if (typeof doc === "object" && doc !== null && !Array.isArray(doc)) {
    const v = (doc as Json)[key];
    if (Array.isArray(v)) return v;
  }
  throw new ConnectionFailed(`expected {"${key}": [...]} from the daemon, got ${preview(doc)}`);
}
