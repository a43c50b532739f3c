/**
 * Errors of the job service's HTTP layer, its client and the CLI (docs/API.md's status table). Each
 * has a stable `code`; {@link httpStatusOf} maps any FarmError to its HTTP status, and the client
 * rebuilds the same classes from an error body (`errorFromBody`), so a caller branches on the same
 * class whether it talks to the service in process or over HTTP.
 */
import { FarmError, FarmErrorCode, type FarmErrorOptions } from '../errors.js';

/** Where in a request the problem is: a field (JSON path like `stages[1].source`), an NDJSON line, an input index. */
export interface RequestErrorContext {
  /** A JSON path into the request (`priority`, `stages[1].bundle`, `query.limit`). */
  readonly field?: string;
  /** 1-based line of an NDJSON body (the description line included). */
  readonly line?: number;
  /** Index of the input concerned. */
  readonly index?: number;
}

/** A request's field is missing, of the wrong type or out of range (HTTP 400, `FARM_ERR_INVALID_OPTION`). */
export class InvalidRequestError extends FarmError {
  override name = 'InvalidRequestError';
  /** The offending field, as a JSON path. */
  readonly field: string | undefined;
  /** The NDJSON line it is on (the description line of a streamed submit is line 1). */
  readonly line: number | undefined;
  constructor(message: string, context: { readonly field?: string; readonly line?: number } = {}, options?: FarmErrorOptions) {
    super(FarmErrorCode.INVALID_OPTION, message, options);
    this.field = context.field;
    this.line = context.line;
  }
}

/** A line of inputs is not JSON, or not acceptable as an input (HTTP 400, `FARM_ERR_INVALID_INPUT`). */
export class InvalidInputError extends FarmError {
  override name = 'InvalidInputError';
  /** 1-based line of the body (or file) that is wrong. */
  readonly line: number | undefined;
  /** Index of the input on that line. */
  readonly index: number | undefined;
  constructor(message: string, context: RequestErrorContext = {}, options?: FarmErrorOptions) {
    super(FarmErrorCode.INVALID_INPUT, message, options);
    this.line = context.line;
    this.index = context.index;
  }
}

/** The caller is authenticated but may not do this (an admin-only request; HTTP 403). */
export class ForbiddenError extends FarmError {
  override name = 'ForbiddenError';
  constructor(message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.FORBIDDEN, message, options);
  }
}

/** No such route, bundle or resource (HTTP 404, or 405 for a known path with the wrong method). */
export class NotFoundError extends FarmError {
  override name = 'NotFoundError';
  constructor(message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.NOT_FOUND, message, options);
  }
}

/** A body, a bundle or one NDJSON line is over its limit (HTTP 413). */
export class TooLargeError extends FarmError {
  override name = 'TooLargeError';
  /** The limit, in bytes. */
  readonly limit: number;
  /** The line concerned, for an NDJSON line over its limit. */
  readonly line: number | undefined;
  constructor(message: string, context: { readonly limit: number; readonly line?: number }, options?: FarmErrorOptions) {
    super(FarmErrorCode.TOO_LARGE, message, options);
    this.limit = context.limit;
    this.line = context.line;
  }
}

/** The service is shutting down (after SIGTERM): no new jobs or actions (HTTP 503). Retryable: ask again after the restart. */
export class ShuttingDownError extends FarmError {
  override name = 'ShuttingDownError';
  constructor(message = 'The manager is shutting down: try again once it has restarted', options?: FarmErrorOptions) {
    super(FarmErrorCode.SHUTTING_DOWN, message, { retryable: true, ...options });
  }
}

/**
 * The manager's TLS certificate is not the one pinned for its address in `known_managers` (a
 * different machine answers at that address, or the manager's state folder was recreated).
 * Nothing was sent to it.
 */
export class CertificateMismatchError extends FarmError {
  override name = 'CertificateMismatchError';
  /** The address (`host:port`) whose pin did not match. */
  readonly address: string;
  /** The fingerprint pinned before. */
  readonly expected: string;
  /** The fingerprint the manager presented now. */
  readonly actual: string;
  constructor(address: string, expected: string, actual: string, knownManagersFile: string) {
    super(
      FarmErrorCode.CERT_MISMATCH,
      `The manager at ${address} presented a TLS certificate with SHA-256 fingerprint ${actual}, but ${knownManagersFile} pins ${expected} for it. ` +
        `Someone may be impersonating the manager; nothing was sent. If the manager's certificate really changed (its state folder was recreated), ` +
        `check the fingerprint it prints at start and remove the line for ${address} from ${knownManagersFile}.`,
    );
    this.address = address;
    this.expected = expected;
    this.actual = actual;
  }
}

/** The manager cannot be reached (connection refused, DNS, TLS failure, a reply that is not the API's). Retryable. */
export class ServiceUnreachableError extends FarmError {
  override name = 'ServiceUnreachableError';
  /** The server URL tried. */
  readonly url: string;
  constructor(url: string, message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.SERVICE_UNREACHABLE, message, { retryable: true, ...options });
    this.url = url;
  }
}

/** The HTTP status docs/API.md gives an error of this code (500 for anything not listed). */
export function httpStatusOf(code: string): number {
  switch (code) {
    case FarmErrorCode.INVALID_OPTION:
    case FarmErrorCode.INVALID_INPUT:
    case FarmErrorCode.INVALID_STAGE:
    case FarmErrorCode.UNSENDABLE_INPUT:
      return 400;
    case FarmErrorCode.UNAUTHENTICATED:
      return 401;
    case FarmErrorCode.FORBIDDEN:
      return 403;
    case FarmErrorCode.JOB_NOT_FOUND:
    case FarmErrorCode.NOT_FOUND:
      return 404;
    case FarmErrorCode.JOB_STATE:
      return 409;
    case FarmErrorCode.TOO_LARGE:
      return 413;
    case FarmErrorCode.SHUTTING_DOWN:
      return 503;
    case FarmErrorCode.SERVICE_UNREACHABLE:
      return 502;
    default:
      return 500;
  }
}
