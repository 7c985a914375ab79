// Typed errors of the forkd SDK (as sdk/python/forkd/errors.py).
//
// Every error the daemon returns has a status code and a body
// {"error":{"code":CODE,"message":TEXT}} (docs/rest-api.md). The SDK maps CODE
// to a class, falling back to the status code when the body is missing or not
// in that shape.

import type { CommandResult } from "./models";

/** Base class of every error the SDK throws (client-side input errors too). */
export class ForkdError extends Error {
  /** The daemon's error code when its body named none. */
  static readonly defaultCode: string | null = null;
  /** The HTTP status, or null when there was no HTTP answer. */
  readonly status: number | null;
  /** The daemon's error code (e.g. "not_found"), or the class's default. */
  readonly code: string | null;

  constructor(message = "", status: number | null = null, code: string | null = null) {
    // message: the daemon's own text (as Python's ForkdError.message); the
    // name (NotFound, Conflict, ...) and toString() add the status and code.
    super(message);
    const ctor = new.target as unknown as { defaultCode: string | null };
    this.name = new.target.name;
    this.status = status;
    this.code = code !== null ? code : ctor.defaultCode;
  }

  toString(): string {
    const head = [this.status !== null ? String(this.status) : "", this.code ?? ""]
      .filter((s) => s)
      .join(" ");
    const text = head && this.message ? `${head}: ${this.message}` : head || this.message;
    return `${this.name}: ${text}`;
  }
}

/** Input refused before anything was sent (a bad count, an empty id, a bad mode). */
export class InvalidArgument extends ForkdError {
  static readonly defaultCode: string | null = "invalid_argument";
}

/** 400: the request was malformed (bad field, unknown field, range, tag). */
export class BadRequest extends ForkdError {
  static readonly defaultCode: string | null = "bad_request";
}

/** 401: missing or wrong bearer token (TCP). */
export class Unauthorized extends ForkdError {
  static readonly defaultCode: string | null = "unauthorized";
}

/** 403: the Unix socket peer is neither root nor the daemon's uid. */
export class Forbidden extends ForkdError {
  static readonly defaultCode: string | null = "forbidden";
}

/** 404: no such VM, snapshot, file or route. */
export class NotFound extends ForkdError {
  static readonly defaultCode: string | null = "not_found";
}

/** 405: the route exists but not with this method. */
export class MethodNotAllowed extends ForkdError {
  static readonly defaultCode: string | null = "method_not_allowed";
}

/** 409: e.g. deleting a VM with children without cascade, a tag in use. */
export class Conflict extends ForkdError {
  static readonly defaultCode: string | null = "conflict";
}

/** 413: the request body is too large. */
export class PayloadTooLarge extends ForkdError {
  static readonly defaultCode: string | null = "payload_too_large";
}

/** 429: the daemon is out of a resource (VMs, space) or rate-limited. */
export class TooManyRequests extends ForkdError {
  static readonly defaultCode: string | null = "too_many_requests";
}

/** 5xx: the daemon failed. */
export class ServerError extends ForkdError {
  static readonly defaultCode: string | null = "internal";
}

/** 501: the daemon's machine cannot do what was asked (e.g. cgroup limits without cgroup v2;
 * the message says what is mounted at /sys/fs/cgroup). */
export class Unsupported extends ServerError {
  static readonly defaultCode: string | null = "not_implemented";
}

/** 503: the VM or its agent is not reachable (not running, no vsock). */
export class Unavailable extends ServerError {
  static readonly defaultCode: string | null = "unavailable";
}

/** The daemon could not be reached, the connection broke, or the answer is
 * not HTTP / not the contract. */
export class ConnectionFailed extends ForkdError {}

/** The daemon did not answer within the call's timeout. */
export class RequestTimeout extends ForkdError {}

/** A command exceeded its time limit (the agent killed it, or the stream
 * stopped past the client's deadline). stdout/stderr hold the output received
 * until then; result the CommandResult when the daemon reported one. */
export class CommandTimeout extends ForkdError {
  stdout = "";
  stderr = "";
  result: CommandResult | null = null;

  constructor(
    message = "",
    status: number | null = null,
    code: string | null = null,
    extra: { stdout?: string; stderr?: string; result?: CommandResult | null } = {},
  ) {
    super(message, status, code);
    this.stdout = extra.stdout ?? "";
    this.stderr = extra.stderr ?? "";
    this.result = extra.result ?? null;
  }
}

type ErrorClass = new (message?: string, status?: number | null, code?: string | null) => ForkdError;

const BY_CODE: Record<string, ErrorClass> = {
  bad_request: BadRequest,
  unauthorized: Unauthorized,
  forbidden: Forbidden,
  not_found: NotFound,
  method_not_allowed: MethodNotAllowed,
  conflict: Conflict,
  payload_too_large: PayloadTooLarge,
  too_many_requests: TooManyRequests,
  internal: ServerError,
  unavailable: Unavailable,
  not_implemented: Unsupported,
  timeout: CommandTimeout,
  timed_out: CommandTimeout,
};

const BY_STATUS: Record<number, ErrorClass> = {
  400: BadRequest,
  401: Unauthorized,
  403: Forbidden,
  404: NotFound,
  405: MethodNotAllowed,
  409: Conflict,
  413: PayloadTooLarge,
  429: TooManyRequests,
  501: Unsupported,
  503: Unavailable,
};

const CODE_STATUS: Record<string, number> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  payload_too_large: 413,
  too_many_requests: 429,
  internal: 500,
  not_implemented: 501,
  unavailable: 503,
};

function own<T>(table: Record<string, T>, key: string): T | undefined {
  return Object.prototype.hasOwnProperty.call(table, key) ? table[key] : undefined;
}

/** The error class of a daemon error: by code first, then by status. */
export function classFor(status: number | null, code: string | null): ErrorClass {
  const byCode = code ? own(BY_CODE, code) : undefined;
  if (byCode) return byCode;
  const byStatus = status !== null ? own(BY_STATUS, String(status)) : undefined;
  if (byStatus) return byStatus;
  if (status !== null && status >= 500 && status <= 599) return ServerError;
  return ForkdError;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** An error from a decoded {"code":…,"message":…} object (an exec stream's last line). */
export function errorFromObject(obj: unknown, status: number | null = null): ForkdError {
  let code: string | null = null;
  let message: string | null = null;
  if (isRecord(obj)) {
    if (typeof obj.code === "string") code = obj.code;
    if (typeof obj.message === "string") message = obj.message;
  }
  if (status === null && code !== null) status = own(CODE_STATUS, code) ?? null;
  const Cls = classFor(status, code);
  return new Cls(message ?? code ?? "error", status, code);
}

/** An error from an HTTP error answer (status >= 400). */
export function errorFromResponse(status: number, body: Uint8Array, reason = ""): ForkdError {
  let code: string | null = null;
  let message: string | null = null;
  const text = Buffer.from(body).toString("utf8");
  try {
    const doc: unknown = JSON.parse(text);
    const err = isRecord(doc) ? doc.error : undefined;
    if (isRecord(err)) {
      if (typeof err.code === "string") code = err.code;
      if (typeof err.message === "string") message = err.message;
    }
  } catch {
    // Not JSON (a proxy's page, a truncated answer): the text itself is the message.
  }
  if (message === null) {
    const t = text.trim();
    message = t ? t.slice(0, 500) : reason || `HTTP ${status}`;
  }
  const Cls = classFor(status, code);
  return new Cls(message, status, code);
}
