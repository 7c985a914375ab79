// The part of Node's API (>= 18) that this SDK and its tests use, declared here.
//
// Why not @types/node: Debian 12 ships it only inside its own nodejs 18 package
// (which this project's machines replace with a newer nodejs), and the build must
// not download from npm. So the SDK compiles with Debian's `tsc` alone. Each
// declaration below mirrors Node's documented signature, narrowed to what is used;
// add to it when the SDK needs more.

type BufferEncoding = "utf8" | "utf-8" | "base64" | "hex" | "latin1" | "ascii" | "binary";

interface Buffer extends Uint8Array {
  toString(encoding?: BufferEncoding, start?: number, end?: number): string;
  equals(other: Uint8Array): boolean;
  subarray(start?: number, end?: number): Buffer;
  indexOf(value: number | string | Uint8Array, byteOffset?: number): number;
}
interface BufferConstructor {
  from(data: string, encoding?: BufferEncoding): Buffer;
  from(data: Uint8Array | readonly number[] | ArrayBuffer): Buffer;
  alloc(size: number, fill?: number): Buffer;
  concat(list: readonly Uint8Array[], totalLength?: number): Buffer;
  isBuffer(obj: unknown): obj is Buffer;
  byteLength(s: string, encoding?: BufferEncoding): number;
}
declare var Buffer: BufferConstructor;

declare namespace NodeJS {
  interface ErrnoException extends Error {
    code?: string;
    errno?: number;
    syscall?: string;
  }
  interface ProcessEnv {
    [key: string]: string | undefined;
  }
  interface Timeout {
    unref(): Timeout;
  }
}

interface WritableStdio {
  write(s: string | Uint8Array): boolean;
}
declare var process: {
  env: NodeJS.ProcessEnv;
  argv: string[];
  pid: number;
  exitCode: number | undefined;
  exit(code?: number): never;
  kill(pid: number, signal?: string | number): boolean;
  getuid(): number;
  stdout: WritableStdio;
  stderr: WritableStdio;
  on(event: "SIGINT" | "SIGTERM" | "exit", listener: () => void): void;
};
declare function setTimeout(cb: () => void, ms?: number): NodeJS.Timeout;
declare function clearTimeout(t: NodeJS.Timeout | undefined): void;
declare var console: {
  log(...args: unknown[]): void;
  error(...args: unknown[]): void;
};
declare var __dirname: string;

declare module "events" {
  class EventEmitter {
    on(event: string, listener: (...args: any[]) => void): this;
    once(event: string, listener: (...args: any[]) => void): this;
    removeListener(event: string, listener: (...args: any[]) => void): this;
  }
}

declare module "net" {
  import { EventEmitter } from "events";
  class Socket extends EventEmitter {
    setTimeout(ms: number, cb?: () => void): this;
    destroy(err?: Error): this;
    end(): this;
    write(data: string | Uint8Array): boolean;
    readonly connecting: boolean;
  }
  interface AddressInfo {
    address: string;
    family: string;
    port: number;
  }
  class Server extends EventEmitter {
    listen(port: number, host: string, cb?: () => void): this;
    listen(path: string, cb?: () => void): this;
    close(cb?: (err?: Error) => void): this;
    address(): AddressInfo | string | null;
  }
  function createServer(onConnection?: (s: Socket) => void): Server;
}

declare module "stream" {
  import { EventEmitter } from "events";
  class Readable extends EventEmitter {
    destroy(err?: Error): this;
    setEncoding(enc: BufferEncoding): this;
    resume(): this;
  }
  class Writable extends EventEmitter {
    write(data: string | Uint8Array): boolean;
    end(data?: string | Uint8Array): this;
  }
}

declare module "http" {
  import { Readable, Writable } from "stream";
  import { Socket, Server as NetServer } from "net";
  type OutgoingHttpHeaders = Record<string, string | number | string[]>;
  type IncomingHttpHeaders = Record<string, string | string[] | undefined>;
  interface RequestOptions {
    method?: string;
    path?: string;
    host?: string;
    hostname?: string;
    port?: number;
    socketPath?: string;
    headers?: OutgoingHttpHeaders;
    agent?: boolean;
    timeout?: number;
  }
  class IncomingMessage extends Readable {
    statusCode?: number;
    statusMessage?: string;
    headers: IncomingHttpHeaders;
    method?: string;
    url?: string;
    socket: Socket;
  }
  class ClientRequest extends Writable {
    setTimeout(ms: number, cb?: () => void): this;
    destroy(err?: Error): this;
  }
  class ServerResponse extends Writable {
    statusCode: number;
    setHeader(name: string, value: string | number): this;
    writeHead(status: number, headers?: OutgoingHttpHeaders): this;
    flushHeaders(): void;
  }
  class Server extends NetServer {}
  function request(options: RequestOptions, cb?: (res: IncomingMessage) => void): ClientRequest;
  function createServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Server;
}

declare module "https" {
  import { RequestOptions as HttpRequestOptions, ClientRequest, IncomingMessage, ServerResponse, Server } from "http";
  interface RequestOptions extends HttpRequestOptions {
    ca?: string | Buffer | Array<string | Buffer>;
    cert?: string | Buffer;
    key?: string | Buffer;
    rejectUnauthorized?: boolean;
    servername?: string;
  }
  function request(options: RequestOptions, cb?: (res: IncomingMessage) => void): ClientRequest;
  function createServer(
    options: { cert: string | Buffer; key: string | Buffer },
    handler: (req: IncomingMessage, res: ServerResponse) => void,
  ): Server;
}

declare module "string_decoder" {
  class StringDecoder {
    constructor(encoding?: BufferEncoding);
    write(buf: Uint8Array): string;
    end(buf?: Uint8Array): string;
  }
}

declare module "child_process" {
  import { Readable, Writable } from "stream";
  import { EventEmitter } from "events";
  interface SpawnOptions {
    cwd?: string;
    env?: NodeJS.ProcessEnv;
    stdio?: Array<"pipe" | "ignore" | "inherit"> | "pipe" | "ignore" | "inherit";
    detached?: boolean;
  }
  class ChildProcess extends EventEmitter {
    pid?: number;
    stdout: Readable | null;
    stderr: Readable | null;
    stdin: Writable | null;
    exitCode: number | null;
    signalCode: string | null;
    kill(signal?: string | number): boolean;
  }
  function spawn(cmd: string, args: readonly string[], options?: SpawnOptions): ChildProcess;
  function execFileSync(
    cmd: string,
    args: readonly string[],
    options?: { stdio?: Array<"pipe" | "ignore" | "inherit"> | "pipe" | "ignore"; encoding?: BufferEncoding; timeout?: number },
  ): Buffer | string;
}

declare module "fs" {
  function mkdtempSync(prefix: string): string;
  function rmSync(path: string, options?: { recursive?: boolean; force?: boolean }): void;
  function readFileSync(path: string): Buffer;
  function readFileSync(path: string, encoding: BufferEncoding): string;
  function writeFileSync(path: string, data: string | Uint8Array, options?: { mode?: number }): void;
  function existsSync(path: string): boolean;
  function statSync(path: string): { mode: number; size: number; isFile(): boolean };
  function mkdirSync(path: string, options?: { recursive?: boolean }): void;
}

declare module "os" {
  function tmpdir(): string;
}

declare module "path" {
  function join(...parts: string[]): string;
  function resolve(...parts: string[]): string;
  function dirname(p: string): string;
}

declare module "assert/strict" {
  function ok(value: unknown, message?: string): asserts value;
  function equal<T>(actual: unknown, expected: T, message?: string): asserts actual is T;
  function notEqual(actual: unknown, expected: unknown, message?: string): void;
  function deepEqual<T>(actual: unknown, expected: T, message?: string): asserts actual is T;
  function match(value: string, re: RegExp, message?: string): void;
  function throws(fn: () => unknown, expected?: unknown, message?: string): void;
  function rejects(p: Promise<unknown> | (() => Promise<unknown>), expected?: unknown, message?: string): Promise<void>;
  function fail(message?: string): never;
}

declare module "node:test" {
  type Fn = () => void | Promise<void>;
  function test(name: string, fn: Fn): Promise<void>;
  function test(name: string, options: { timeout?: number }, fn: Fn): Promise<void>;
  function describe(name: string, fn: () => void): void;
  function before(fn: Fn): void;
  function after(fn: Fn): void;
}

// WHATWG URL, a global since Node 10.
declare class URL {
  constructor(input: string, base?: string);
  readonly protocol: string;
  readonly hostname: string;
  readonly port: string;
  readonly pathname: string;
  readonly host: string;
  readonly search: string;
}

declare module "crypto" {
  interface Hash {
    update(data: string | Uint8Array): Hash;
    digest(encoding: "hex" | "base64"): string;
  }
  function createHash(algorithm: string): Hash;
  function randomBytes(size: number): Buffer;
}
