// forkd's TypeScript SDK: a Controller with one method per route of
// `forkd serve` (docs/rest-api.md), an E2B-style Sandbox, typed errors and
// models. Node >= 18, no dependencies.

export * from "./errors";
export * from "./models";
export { Controller, DEFAULT_COMMAND_TIMEOUT_MS, COMMAND_TIMEOUT_GRACE_MS, MAX_COUNT, argvOf } from "./controller";
export type {
  CallOptions,
  CreateVmOptions,
  LimitOptions,
  SpawnOptions,
  BranchOptions,
  ExecOptions,
  WriteFileOptions,
  ControllerOptions,
} from "./controller";
export { Sandbox, Commands, Files, DEFAULT_IMAGE } from "./sandbox";
export type { RunOptions, SandboxOptions, SandboxCreateOptions } from "./sandbox";
export { Transport, DEFAULT_SOCKET, DEFAULT_TIMEOUT_MS } from "./transport";
export type { TransportOptions, TlsOptions, RequestOptions, Response } from "./transport";
export { VERSION } from "./version";
