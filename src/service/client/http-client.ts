/**
 * The low-level client of the manager's HTTP API: requests with the bearer token, error bodies
 * rebuilt into the same FarmError classes the service throws, and HTTPS pinned to the manager's
 * certificate fingerprint (checked on the TLS handshake, before a byte of the request — token
 * included — is sent).
 */
import { request as httpRequest, Agent as HttpAgent, type IncomingMessage, type RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Duplex, Readable } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { AuthenticationError, FarmError, InvalidOptionError, JobNotFoundError, JobStateError, StoreError } from '../../errors.js';
import {
  CertificateMismatchError,
  ForbiddenError,
  InvalidInputError,
  InvalidRequestError,
  NotFoundError,
  ServiceUnreachableError,
  ShuttingDownError,
  TooLargeError,
} from '../errors.js';
import { checkOrPin, defaultKnownManagersPath } from './known-managers.js';

/** Options of {@link ServiceHttpClient}. */
export interface ServiceHttpClientOptions {
  /** Bearer token (`taskfarm token create`). */
  readonly token?: string;
  /** HTTPS: the manager's expected certificate fingerprint (`AB:CD:…`); overrides known_managers. */
  readonly fingerprint?: string;
  /** HTTPS: the pins file, or `false` to pin nothing (then `fingerprint` is required). @default ~/.config/taskfarm/known_managers */
  readonly knownManagers?: string | false;
  /** Called when a manager's certificate is pinned for the first time. */
  readonly onPinned?: (address: string, fingerprint: string) => void;
}

/** An error body of the API. */
interface ErrorBody {
  readonly code?: unknown;
  readonly message?: unknown;
  readonly field?: unknown;
  readonly line?: unknown;
  readonly index?: unknown;
  readonly state?: unknown;
}

/** Rebuilds the error a response carries (docs/API.md error body), by its code. */
export function errorFromBody(status: number, body: unknown, context = ''): FarmError {
  const e = (typeof body === 'object' && body !== null ? (body as { error?: ErrorBody }).error : undefined) ?? {};
  const message = typeof e.message === 'string' ? e.message : `HTTP ${status}${context.length > 0 ? ` from ${context}` : ''}`;
  const field = typeof e.field === 'string' ? e.field : undefined;
  const line = typeof e.line === 'number' ? e.line : undefined;
  const index = typeof e.index === 'number' ? e.index : undefined;
  switch (e.code) {
    case 'FARM_ERR_INVALID_OPTION':
      return new InvalidRequestError(message, { ...(field === undefined ? {} : { field }), ...(line === undefined ? {} : { line }) });
    case 'FARM_ERR_INVALID_INPUT':
      return new InvalidInputError(message, { ...(line === undefined ? {} : { line }), ...(index === undefined ? {} : { index }) });
    case 'FARM_ERR_UNAUTHENTICATED':
      return new AuthenticationError(message);
    case 'FARM_ERR_FORBIDDEN':
      return new ForbiddenError(message);
    case 'FARM_ERR_JOB_NOT_FOUND': {
      const err = new JobNotFoundError(context);
      return Object.assign(err, { message });
    }
    case 'FARM_ERR_NOT_FOUND':
      return new NotFoundError(message);
    case 'FARM_ERR_JOB_STATE':
      return new JobStateError(context, typeof e.state === 'string' ? e.state : '', message);
    case 'FARM_ERR_TOO_LARGE':
      return new TooLargeError(message, { limit: 0, ...(line === undefined ? {} : { line }) });
    case 'FARM_ERR_SHUTTING_DOWN':
      return new ShuttingDownError(message);
    case 'FARM_ERR_STORE':
      return new StoreError(message);
    case 'FARM_ERR_INVALID_STAGE':
    case 'FARM_ERR_INVALID_COST':
      return new InvalidOptionError(message);
    default:
      if (typeof e.code === 'string' && e.code.startsWith('FARM_ERR_')) return new FarmError(e.code as FarmError['code'], message);
      return new ServiceUnreachableError(context, `${message} (not an answer of a taskfarm manager?)`);
  }
}

/** What {@link ServiceHttpClient.request} sends. */
export interface RequestSpec {
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>>;
  /** A JSON body. */
  readonly json?: unknown;
  /** A raw body (string or a stream) with its content type. */
  readonly body?: string | Readable;
  readonly contentType?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
}

/** A pinning HTTPS agent: refuses a manager whose certificate does not match, before the request is written. */
class PinningAgent extends HttpsAgent {
  readonly #verify: (address: string, fingerprint: string) => void;
  constructor(verify: (address: string, fingerprint: string) => void) {
    super({ keepAlive: true, rejectUnauthorized: false });
    this.#verify = verify;
  }
  override createConnection(options: RequestOptions & { servername?: string }, callback?: (err: Error | null, stream: Duplex) => void): Duplex | undefined {
    const host = options.host ?? 'localhost';
    const port = Number(options.port ?? 443);
    const socket: TLSSocket = tlsConnect({
      host,
      port,
      rejectUnauthorized: false,
      ...(options.servername === undefined ? {} : { servername: options.servername }),
    });
    let settled = false;
    const settle = (err: Error | null): void => {
      if (settled) return;
      settled = true;
      if (err !== null) {
        socket.destroy();
        callback?.(err, socket);
      } else callback?.(null, socket);
    };
    socket.once('secureConnect', () => {
      try {
        const cert = socket.getPeerCertificate();
        this.#verify(`${host}:${port}`, cert.fingerprint256);
        settle(null);
      } catch (err) {
        settle(err as Error);
      }
    });
    socket.once('error', (err: Error) => settle(err));
    return undefined;
  }
}

/** See the module comment. */
export class ServiceHttpClient {
  readonly #base: URL;
  readonly #token: string | undefined;
  readonly #agent: HttpAgent | HttpsAgent;
  readonly #https: boolean;
  #fingerprint = '';

  constructor(url: string, options: ServiceHttpClientOptions = {}) {
    let base: URL;
    try {
      base = new URL(url);
    } catch {
      throw new InvalidOptionError(`Expected a manager URL like http://127.0.0.1:7800, got ${JSON.stringify(url)}`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:')
      throw new InvalidOptionError(`Expected an http:// or https:// manager URL, got ${JSON.stringify(url)}`);
    this.#base = base;
    this.#token = options.token;
    this.#https = base.protocol === 'https:';
    if (this.#https) {
      const file = options.knownManagers ?? defaultKnownManagersPath();
      this.#agent = new PinningAgent((address, fp) => {
        const actual = fp.toUpperCase();
        if (options.fingerprint !== undefined) {
          if (options.fingerprint.toUpperCase() !== actual)
            throw new CertificateMismatchError(address, options.fingerprint.toUpperCase(), actual, '--fingerprint');
        } else if (file === false) {
          throw new InvalidOptionError('HTTPS without a pins file needs the manager\'s certificate fingerprint (option "fingerprint")');
        } else if (checkOrPin(file, address, actual)) {
          options.onPinned?.(address, actual);
        }
        this.#fingerprint = actual;
      });
    } else {
      this.#agent = new HttpAgent({ keepAlive: true });
    }
  }

  /** The base URL. */
  get url(): string {
    return this.#base.origin;
  }

  /** The SHA-256 fingerprint of the manager's certificate seen on the last TLS connection ('' over HTTP or before any). */
  get fingerprint(): string {
    return this.#fingerprint;
  }

  /** Sends a request; resolves with the response when its status is 2xx, rejects with the rebuilt error otherwise. */
  async request(method: string, path: string, spec: RequestSpec = {}, context = ''): Promise<IncomingMessage> {
    const url = new URL(path, this.#base);
    for (const [k, v] of Object.entries(spec.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: 'application/json', ...spec.headers };
    if (this.#token !== undefined) headers['authorization'] = `Bearer ${this.#token}`;
    let body: string | Readable | undefined = spec.body;
    if (spec.json !== undefined) {
      body = JSON.stringify(spec.json);
      headers['content-type'] = 'application/json';
    } else if (spec.contentType !== undefined) headers['content-type'] = spec.contentType;
    if (typeof body === 'string') headers['content-length'] = String(Buffer.byteLength(body));
    const send = this.#https ? httpsRequest : httpRequest;
    let bodyError: Error | undefined;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(url, { method, headers, agent: this.#agent, ...(spec.signal === undefined ? {} : { signal: spec.signal }) }, resolve);
      req.on('error', (err: Error & { code?: string }) => {
        if (bodyError !== undefined) reject(bodyError);
        else if (err instanceof FarmError) reject(err);
        else if (err.name === 'AbortError') reject(err);
        else
          reject(
            new ServiceUnreachableError(
              this.url,
              `Cannot reach the manager at ${this.url}: ${err.message} (is \`taskfarm serve\` running? --server / $TASKFARM_SERVER)`,
              { cause: err },
            ),
          );
      });
      if (body === undefined) req.end();
      else if (typeof body === 'string') req.end(body);
      else {
        // The body failing (a malformed input line) aborts the request: the manager then creates no job.
        body.on('error', (err) => {
          bodyError = err;
          req.destroy(err);
        });
        body.pipe(req);
      }
    });
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) return res;
    const text = await readText(res, 1024 * 1024);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (parsed === undefined)
      throw new ServiceUnreachableError(this.url, `HTTP ${status} from ${this.url}${path}: ${text.slice(0, 200)} (not a taskfarm manager?)`);
    throw errorFromBody(status, parsed, context);
  }

  /** A request whose answer is JSON (or nothing: 204 → undefined). */
  async json<T>(method: string, path: string, spec: RequestSpec = {}, context = ''): Promise<T> {
    const res = await this.request(method, path, spec, context);
    if (res.statusCode === 204) {
      res.resume();
      return undefined as T;
    }
    const text = await readText(res, Infinity);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ServiceUnreachableError(this.url, `The answer of ${method} ${path} is not JSON: ${text.slice(0, 200)}`);
    }
  }

  /** Closes kept-alive connections. */
  close(): void {
    this.#agent.destroy();
  }
}

async function readText(res: IncomingMessage, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > max) {
      res.destroy();
      break;
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}
