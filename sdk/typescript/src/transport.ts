// HTTP/1.1 to forkd serve: over its Unix socket, or over TCP/TLS with a bearer
// token (as sdk/python/forkd/_transport.py).
//
// One connection per call (agent: false): the daemon is local or near, and it
// keeps a Controller safe to share between concurrent calls. Every call has a
// timeout: connecting always has one, and each call's applies to every wait for
// bytes (an idle timeout, like a Python socket timeout).

import * as http from "http";
import * as https from "https";
import type { Socket } from "net";
import { ConnectionFailed, ForkdError, InvalidArgument, RequestTimeout, errorFromResponse } from "./errors";
import { VERSION } from "./version";

export const DEFAULT_SOCKET = "/var/lib/forkd/forkd.sock";
export const DEFAULT_TIMEOUT_MS = 60_000;
/** Bytes of an error answer kept for its message (an error body is small JSON). */
const ERROR_BODY_LIMIT = 64 * 1024;

export interface TlsOptions {
  /** CA certificate(s) (PEM) to verify the daemon with, e.g. a private CA. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** false accepts any certificate: only for tests. Default true. */
  rejectUnauthorized?: boolean;
  /** The name to verify the certificate against, when not the URL's host. */
  servername?: string;
}

export interface TransportOptions {
  /** The daemon's Unix socket (default $FORKD_SOCKET, else /var/lib/forkd/forkd.sock). */
  socket?: string;
  /** http://HOST:PORT, https://HOST:PORT (optionally with a path prefix) or unix:///path. */
  url?: string;
  /** Bearer token for TCP (default $FORKD_TOKEN when a URL is given). */
  token?: string;
  /** Every call's default timeout in ms (idle: connect, then each wait for bytes); null: none once connected. */
  timeoutMs?: number | null;
  tls?: TlsOptions;
}

export interface RequestOptions {
  query?: Record<string, string | undefined>;
  body?: Uint8Array;
  json?: unknown;
  headers?: Record<string, string>;
  /** This call's timeout in ms; undefined: the transport's; null: none once connected. */
  timeoutMs?: number | null;
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** A timeout in ms as given by a caller: a finite number >= 0, or null (none). */
export function checkTimeout(what: string, ms: unknown, allowNull: boolean): number | null | undefined {
  if (ms === undefined) return undefined;
  if (ms === null && allowNull) return null;
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
    throw new InvalidArgument(`${what}: expected a number of milliseconds >= 0${allowNull ? " or null" : ""}, got ${String(ms)}`);
  }
  return ms;
}

type Phase = "connect" | "answer" | "body";

/** One request on its own connection: the answer's headers are in, its body
 * not yet read. `failure` is set when the exchange was cut short on purpose
 * (a timeout): readers report it rather than the socket's own error. */
export class Exchange {
  failure: ForkdError | null = null;
  /** What a timeout while the body streams is reported as (exec overrides it). */
  bodyTimeout: () => ForkdError;

  constructor(
    readonly res: http.IncomingMessage,
    private readonly req: http.ClientRequest,
    readonly where: string,
    readonly timeoutMs: number | null,
  ) {
    this.bodyTimeout = () => new RequestTimeout(`${where}: the answer stalled for ${timeoutMs} ms`);
  }

  fail(err: ForkdError): void {
    if (!this.failure) this.failure = err;
    this.req.destroy(err);
  }

  close(): void {
    this.req.destroy();
  }

  /** The error to report for a stream error `e` seen while reading the body. */
  readError(e: unknown): ForkdError {
    if (this.failure) return this.failure;
    if (e instanceof ForkdError) return e;
    return new ConnectionFailed(`${this.where}: reading the answer failed: ${describeError(e)}`);
  }
}

function describeError(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err === "object" && typeof err.message === "string") {
    return err.code ? `${err.code}: ${err.message}` : err.message;
  }
  return String(e);
}

function userAgent(): string {
  return `forkd-typescript/${VERSION}`;
}

export class Transport {
  readonly scheme: "unix" | "http" | "https";
  readonly socketPath: string | null = null;
  readonly host: string | null = null;
  readonly port: number | null = null;
  readonly prefix: string = "";
  readonly token: string | null;
  readonly timeoutMs: number | null;
  readonly tls: TlsOptions;

  constructor(opts: TransportOptions = {}) {
    if (opts.socket !== undefined && opts.url !== undefined) {
      throw new InvalidArgument("give either socket or url, not both");
    }
    const t = checkTimeout("timeoutMs", opts.timeoutMs, true);
    this.timeoutMs = t === undefined ? DEFAULT_TIMEOUT_MS : t;
    this.tls = opts.tls ?? {};
    this.token = opts.token ?? null;
    let socketPath = opts.socket;
    if (socketPath !== undefined && (typeof socketPath !== "string" || !socketPath)) {
      throw new InvalidArgument(`socket: expected a non-empty path, got ${JSON.stringify(socketPath)}`);
    }
    this.scheme = "unix";
    if (opts.url !== undefined) {
      let u: URL;
      try {
        u = new URL(opts.url);
      } catch {
        throw new InvalidArgument(`url: expected http://HOST:PORT, https://HOST:PORT or unix:///PATH, got ${JSON.stringify(opts.url)}`);
      }
      const scheme = u.protocol.replace(/:$/, "").toLowerCase();
      if (scheme === "unix") {
        socketPath = decodeURIComponent(u.pathname);
        if (!socketPath) throw new InvalidArgument(`url: unix URL without a path: ${JSON.stringify(opts.url)}`);
      } else if (scheme === "http" || scheme === "https") {
        if (!u.hostname) throw new InvalidArgument(`url: URL without a host: ${JSON.stringify(opts.url)}`);
        this.scheme = scheme;
        this.host = u.hostname.replace(/^\[(.*)\]$/, "$1");
        this.port = u.port ? Number(u.port) : scheme === "https" ? 443 : 80;
        this.prefix = u.pathname.replace(/\/+$/, "");
        if (this.token === null) this.token = process.env.FORKD_TOKEN || null;
      } else {
        throw new InvalidArgument(`url: unsupported scheme "${scheme}" in ${JSON.stringify(opts.url)} (http, https or unix)`);
      }
    }
    if (this.scheme === "unix") {
      this.socketPath = socketPath || process.env.FORKD_SOCKET || DEFAULT_SOCKET;
    }
  }

  describe(): string {
    if (this.scheme === "unix") return `unix:${this.socketPath}`;
    const host = this.host !== null && this.host.includes(":") ? `[${this.host}]` : this.host;
    return `${this.scheme}://${host}:${this.port}${this.prefix}`;
  }

  target(path: string, query?: Record<string, string | undefined>): string {
    let t = this.prefix + path;
    const items = Object.entries(query ?? {}).filter((kv): kv is [string, string] => kv[1] !== undefined);
    if (items.length) {
      t += "?" + items.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&");
    }
    return t;
  }

  private headers(extra?: Record<string, string>): Record<string, string | number> {
    const h: Record<string, string | number> = { "User-Agent": userAgent(), Accept: "application/json" };
    if (this.token && this.scheme !== "unix") h.Authorization = `Bearer ${this.token}`;
    Object.assign(h, extra ?? {});
    return h;
  }

  private connectError(e: unknown, tcpConnected: boolean): ForkdError {
    const err = e as NodeJS.ErrnoException;
    const at = `cannot connect to forkd at ${this.describe()}`;
    if (e instanceof ForkdError) return e;
    if (this.scheme === "https" && tcpConnected) {
      return new ConnectionFailed(`TLS handshake with ${this.describe()} failed: ${describeError(e)}`);
    }
    switch (err?.code) {
      case "ENOENT":
        return new ConnectionFailed(`${at}: no such socket (is \`forkd serve\` running? set FORKD_SOCKET)`);
      case "ECONNREFUSED":
        return new ConnectionFailed(`${at}: connection refused (is \`forkd serve\` running?)`);
      case "EACCES":
      case "EPERM":
        return new ConnectionFailed(`${at}: permission denied (the socket is for root or the daemon's user)`);
      default:
        return new ConnectionFailed(`${at}: ${describeError(e)}`);
    }
  }

  /** Sends a request and resolves once the answer's headers are in, its body
   * unread, or rejects with the mapped error for a status >= 400. The caller
   * closes the exchange. */
  open(method: string, path: string, o: RequestOptions = {}): Promise<Exchange> {
    const t = checkTimeout("timeoutMs", o.timeoutMs, true);
    const timeoutMs = t === undefined ? this.timeoutMs : t;
    const headers = this.headers(o.headers);
    let body: Buffer | undefined;
    if (o.json !== undefined) {
      body = Buffer.from(JSON.stringify(o.json), "utf8");
      headers["Content-Type"] ??= "application/json";
    } else if (o.body !== undefined) {
      body = Buffer.from(o.body);
      headers["Content-Type"] ??= "application/octet-stream";
    }
    if (body === undefined && (method === "POST" || method === "PUT" || method === "PATCH")) body = Buffer.alloc(0);
    if (body !== undefined) headers["Content-Length"] = body.length;
    const where = `${method} ${path}`;
    const options: https.RequestOptions = { method, path: this.target(path, o.query), headers, agent: false };
    if (this.scheme === "unix") {
      options.socketPath = this.socketPath ?? DEFAULT_SOCKET;
    } else {
      options.host = this.host ?? undefined;
      options.port = this.port ?? undefined;
    }
    if (this.scheme === "https") {
      if (this.tls.ca !== undefined) options.ca = this.tls.ca;
      if (this.tls.rejectUnauthorized !== undefined) options.rejectUnauthorized = this.tls.rejectUnauthorized;
      if (this.tls.servername !== undefined) options.servername = this.tls.servername;
    }
    // Connecting always has a deadline: the transport's own when the call has none.
    const connectMs = timeoutMs ?? this.timeoutMs ?? DEFAULT_TIMEOUT_MS;

    return new Promise<Exchange>((resolve, reject) => {
      let phase: Phase = "connect";
      let tcpConnected = false;
      let exchange: Exchange | null = null;
      let failure: ForkdError | null = null;
      const req = this.scheme === "https" ? https.request(options) : http.request(options);

      const onTimeout = () => {
        let err: ForkdError;
        if (exchange) err = exchange.bodyTimeout();
        else if (phase === "connect") err = new ConnectionFailed(`cannot connect to forkd at ${this.describe()}: timed out after ${connectMs} ms`);
        else err = new RequestTimeout(`${where}: no answer from ${this.describe()} within ${timeoutMs} ms`);
        if (exchange) exchange.fail(err);
        else {
          failure = err;
          req.destroy(err);
        }
      };
      req.on("socket", (sock: Socket) => {
        sock.setTimeout(connectMs);
        sock.on("timeout", onTimeout);
        sock.once("connect", () => {
          tcpConnected = true;
          if (this.scheme !== "https") connected(sock);
        });
        if (this.scheme === "https") sock.once("secureConnect", () => connected(sock));
      });
      const connected = (sock: Socket) => {
        phase = "answer";
        sock.setTimeout(timeoutMs ?? 0);
      };
      req.on("error", (e: unknown) => {
        if (exchange) return; // the body reader reports it
        if (failure) reject(failure);
        else if (phase === "connect") reject(this.connectError(e, tcpConnected));
        else reject(new ConnectionFailed(`${where}: connection to ${this.describe()} failed: ${describeError(e)}`));
      });
      req.on("response", (res: http.IncomingMessage) => {
        phase = "body";
        const status = res.statusCode ?? 0;
        const ex = new Exchange(res, req, where, timeoutMs);
        exchange = ex;
        if (status < 400) {
          resolve(ex);
          return;
        }
        // An error answer: its (small) body is the message.
        readBody(ex, ERROR_BODY_LIMIT).then(
          (data) => {
            ex.close();
            reject(errorFromResponse(status, data, res.statusMessage ?? ""));
          },
          (e: unknown) => {
            ex.close();
            reject(errorFromResponse(status, Buffer.alloc(0), res.statusMessage ?? describeError(e)));
          },
        );
      });
      req.end(body);
    });
  }

  /** Sends a request and reads the whole answer. */
  async request(method: string, path: string, o: RequestOptions = {}): Promise<Response> {
    const ex = await this.open(method, path, o);
    try {
      const body = await readBody(ex, Infinity);
      return { status: ex.res.statusCode ?? 0, headers: ex.res.headers, body };
    } finally {
      ex.close();
    }
  }

  /** Sends a request and decodes its JSON answer. */
  async json(method: string, path: string, o: RequestOptions = {}): Promise<unknown> {
    const r = await this.request(method, path, o);
    const text = r.body.toString("utf8");
    try {
      return JSON.parse(text);
    } catch {
      throw new ConnectionFailed(`${method} ${path}: expected JSON from the daemon, got ${JSON.stringify(text.slice(0, 200))}`);
    }
  }
}

/** The body of an answer (at most `limit` bytes kept), or the exchange's error. */
export function readBody(ex: Exchange, limit: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    let ended = false;
    ex.res.on("data", (chunk: Buffer) => {
      if (size < limit) {
        parts.push(chunk);
        size += chunk.length;
      }
    });
    ex.res.on("end", () => {
      ended = true;
      resolve(Buffer.concat(parts));
    });
    ex.res.on("error", (e: unknown) => reject(ex.readError(e)));
    ex.res.on("close", () => {
      if (!ended) reject(ex.readError(new Error("the connection closed before the answer's end")));
    });
  });
}
