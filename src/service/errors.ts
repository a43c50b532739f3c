/**
 * Errors of the job service (docs/API.md status table). Each is a {@link FarmError} with a stable
 * code, so the HTTP layer maps classes (or codes) to statuses without reading messages:
 * {@link InvalidFieldError} and {@link InvalidInputError} → 400, {@link ForbiddenError} → 403,
 * {@link TooLargeError} → 413, {@link ShuttingDownError} → 503. The store's `JobNotFoundError` (404),
 * `JobStateError` (409), `StoreError` (500) and the farm's `AuthenticationError` (401) complete the set.
 */
import { FarmErrorCode, InvalidOptionError, FarmError, type FarmErrorOptions } from '../errors.js';

/** A field of a request is missing, of the wrong type or out of range (400). `field` is a JSON path such as `stages[1].source`. */
export class InvalidFieldError extends InvalidOptionError {
  override name = 'InvalidFieldError';
  /** The offending field, as a JSON path (`priority`, `stages[0].bundle`). */
  readonly field: string;
  constructor(field: string, message: string, options?: FarmErrorOptions) {
    super(message, options);
    this.field = field;
  }
}

/** A streamed input line is not JSON (400). Nothing was created: the submit was rolled back. */
export class InvalidInputError extends FarmError {
  override name = 'InvalidInputError';
  /** The line of the request (1-based, as the caller numbered it). */
  readonly line: number;
  /** The input's index (0-based, blank lines not counted). */
  readonly index: number;
  constructor(line: number, index: number, message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.INVALID_INPUT, message, options);
    this.line = line;
    this.index = index;
  }
}

/** The caller may not do this: an admin-only request by a user who is not an admin (403). */
export class ForbiddenError extends FarmError {
  override name = 'ForbiddenError';
  constructor(message: string, options?: FarmErrorOptions) {
    super(FarmErrorCode.FORBIDDEN, message, options);
  }
}

/** Something the caller sent is over its limit: an input line, a bundle (413). */
export class TooLargeError extends FarmError {
  override name = 'TooLargeError';
  /** The limit, in bytes. */
  readonly limit: number;
  /** The offending line, for an input line. */
  readonly line: number | undefined;
  constructor(message: string, limit: number, options: FarmErrorOptions & { line?: number } = {}) {
    super(FarmErrorCode.TOO_LARGE, message, options);
    this.limit = limit;
    this.line = options.line;
  }
}

/** The service is shutting down (SIGTERM): it takes no new jobs or actions (503). Retryable: try again once it is back. */
export class ShuttingDownError extends FarmError {
  override name = 'ShuttingDownError';
  constructor(message = 'The job service is shutting down: it takes no new jobs or actions. Try again once it is back.', options?: FarmErrorOptions) {
    super(FarmErrorCode.SHUTTING_DOWN, message, { retryable: true, ...options });
  }
}
