// An E2B-style sandbox over a forkd VM: commands, files, branch (as
// sdk/python/forkd/sandbox.py).

import { Controller, CreateVmOptions, ExecOptions, LimitOptions } from "./controller";
import { InvalidArgument, NotFound } from "./errors";
import type { CommandResult, Snapshot, VM } from "./models";

export const DEFAULT_IMAGE = "forkd-test-base";

export interface RunOptions extends ExecOptions {
  /** A user name (looked up in the guest's /etc/passwd) or a uid. */
  user?: string | number;
}

/** `sandbox.commands`: run commands inside the VM (through its agent). */
export class Commands {
  constructor(private readonly sb: Sandbox) {}

  /** Runs cmd (a string runs as /bin/sh -c cmd) and resolves to its
   * CommandResult whatever its exit code; onStdout/onStderr get the output as
   * it arrives. timeoutMs (default 60 000, 0: none) throws CommandTimeout. */
  async run(cmd: string | readonly string[], o: RunOptions = {}): Promise<CommandResult> {
    const { user, ...exec } = o;
    if (user !== undefined && exec.uid !== undefined) throw new InvalidArgument("run: give user or uid, not both");
    if (user !== undefined) exec.uid = await this.sb.uidOf(user);
    return this.sb.controller.exec(this.sb.id, cmd, exec);
  }
}

/** `sandbox.files`: read and write files inside the VM. */
export class Files {
  constructor(private readonly sb: Sandbox) {}

  /** The file's exact bytes. */
  read(path: string): Promise<Buffer> {
    return this.sb.controller.readFile(this.sb.id, path);
  }

  /** The file as UTF-8 text (invalid bytes replaced). */
  async readText(path: string): Promise<string> {
    return (await this.read(path)).toString("utf8");
  }

  /** Writes (creates or replaces) the file; a string is written as UTF-8. */
  write(path: string, data: string | Uint8Array, o: { mode?: number } = {}): Promise<void> {
    return this.sb.controller.writeFile(this.sb.id, path, data, o);
  }
}

export interface SandboxOptions {
  controller?: Controller;
}

export interface SandboxCreateOptions extends Omit<CreateVmOptions, "image">, SandboxOptions {
  /** Default forkd-test-base (unless kernel is given). */
  image?: string;
}

/** A running VM seen as a sandbox. `Sandbox.create()` boots one,
 * `Sandbox.connect(id)` attaches to an existing one. */
export class Sandbox {
  readonly id: string;
  readonly controller: Controller;
  /** The VM as last reported by the daemon. */
  vm: VM | null;
  readonly commands: Commands;
  readonly files: Files;
  private uids: Map<string, number> | null = null;

  constructor(vmId: string, controller?: Controller, vm: VM | null = null) {
    if (typeof vmId !== "string" || !vmId) {
      throw new InvalidArgument(`Sandbox: expected a VM id, got ${JSON.stringify(vmId) ?? String(vmId)}`);
    }
    this.id = vmId;
    this.controller = controller ?? new Controller();
    this.vm = vm;
    this.commands = new Commands(this);
    this.files = new Files(this);
  }

  /** Boots a VM (image, memMib, cpus, tag, vsock, net, the cgroup limits memoryMaxMib,
   * cpuMax and pidsMax, or kernel/initrd/append instead of an image) and resolves to its
   * sandbox. */
  static async create(o: SandboxCreateOptions = {}): Promise<Sandbox> {
    const { controller: given, ...vmOpts } = o;
    const controller = given ?? new Controller();
    if (vmOpts.kernel === undefined && vmOpts.image === undefined) vmOpts.image = DEFAULT_IMAGE;
    const vm = await controller.createVm(vmOpts);
    return new Sandbox(vm.id, controller, vm);
  }

  /** Attaches to an existing VM (checked: NotFound if there is none). */
  static async connect(vmId: string, o: SandboxOptions = {}): Promise<Sandbox> {
    const controller = o.controller ?? new Controller();
    const vm = await controller.vm(vmId);
    return new Sandbox(vm.id, controller, vm);
  }

  /** n sandboxes (1..64) restored from snapshot `tag`; with the cgroup limits of create,
   * each in a cgroup of its own. */
  static async spawn(tag: string, n = 1, o: SandboxOptions & LimitOptions = {}): Promise<Sandbox[]> {
    const { controller: given, ...limits } = o;
    const controller = given ?? new Controller();
    return (await controller.spawn(tag, n, limits)).map((vm) => new Sandbox(vm.id, controller, vm));
  }

  toString(): string {
    return `Sandbox(${this.id})`;
  }

  /** The VM as the daemon reports it now. */
  async info(): Promise<VM> {
    this.vm = await this.controller.vm(this.id);
    return this.vm;
  }

  /** BRANCHes this VM into n children (1..64) that continue from this instant. */
  async branch(n = 1): Promise<Sandbox[]> {
    const res = await this.controller.branch(this.id, { n });
    return res.children.map((c) => new Sandbox(c.id, this.controller, c));
  }

  /** Writes the VM's state as snapshot `tag` (spawn it later). */
  snapshot(tag: string): Promise<Snapshot> {
    return this.controller.snapshot(this.id, tag);
  }

  /** Stops the VM (with cascade its descendants too); an already gone VM is
   * not an error. Resolves to the removed ids. */
  async kill(o: { cascade?: boolean } = {}): Promise<string[]> {
    try {
      return await this.controller.deleteVm(this.id, { cascade: o.cascade ?? false });
    } catch (e) {
      if (e instanceof NotFound) return [];
      throw e;
    }
  }

  /** The uid of a user name in the guest's /etc/passwd (or a uid as is). */
  async uidOf(user: string | number): Promise<number> {
    if (typeof user === "number") return user;
    if (typeof user !== "string" || !user) throw new InvalidArgument(`user: expected a name or a uid, got ${String(user)}`);
    if (user === "root") return 0;
    if (/^[0-9]+$/.test(user)) return Number(user);
    if (this.uids === null) {
      const uids = new Map<string, number>();
      for (const line of (await this.files.readText("/etc/passwd")).split("\n")) {
        const f = line.split(":");
        if (f.length >= 3 && /^[0-9]+$/.test(f[2]) && !uids.has(f[0])) uids.set(f[0], Number(f[2]));
      }
      this.uids = uids;
    }
    const uid = this.uids.get(user);
    if (uid === undefined) throw new InvalidArgument(`user: no user ${JSON.stringify(user)} in the sandbox's /etc/passwd`);
    return uid;
  }
}
