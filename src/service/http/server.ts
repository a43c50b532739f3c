/**
 * The manager's HTTP/JSON API (docs/API.md) on Fastify: routes validate (JSON schemas, so a 400
 * names the field), call one {@link JobService} method and map its result. Authentication is a
 * bearer token or, for the dashboard, a session cookie with a CSRF defence; errors of any kind
 * become docs/API.md's error body. Nothing a client sends can crash the process: every failure is
 * a typed error mapped to a status, and unexpected ones are logged and answered with a 500.
 */
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Counter, Histogram, Registry } from 'prom-client';
import { AuthenticationError, FarmError, FarmErrorCode } from '../../errors.js';
import { silentLogger, type Logger } from '../../log.js';
import { PACKAGE_VERSION } from '../../protocol/index.js';
import type { JobState, TaskState } from '../../store/index.js';
import { ForbiddenError, InvalidRequestError, NotFoundError, ShuttingDownError, TooLargeError, httpStatusOf } from '../errors.js';
import type { Caller, InputBatch, InputLine, JobService, JobSpec, JobStatus, ResultLine } from '../types.js';
import { ndjsonBatches, type NdjsonBatch } from './ndjson.js';
import * as S from './schemas.js';

/** Name of the dashboard's session cookie. */
export const SESSION_COOKIE = 'taskfarm_session';
/** The header a cookie-authenticated state-changing request must carry (CSRF defence). */
export const CSRF_HEADER = 'x-taskfarm-request';

/** Options of {@link ServiceHttpServer}. */
export interface ServiceHttpOptions {
  /** What the routes call. */
  readonly service: JobService;
  /** Where `GET /metrics` reads from; the service core registers its series here. @default a new Registry */
  readonly registry?: Registry;
  /** A folder served at `/` (the dashboard's built assets); `index.html` answers unknown non-API paths. */
  readonly staticDir?: string;
  /** Serve HTTPS with this certificate and key (PEM). */
  readonly tls?: { readonly cert: string; readonly key: string };
  /** Largest JSON body, in bytes. @default 67108864 (64 MiB) */
  readonly maxBodyBytes?: number;
  /** Largest NDJSON line, in bytes. @default 1048576 (1 MiB) */
  readonly maxLineBytes?: number;
  /** Largest bundle, in bytes. @default 16777216 (16 MiB) */
  readonly maxBundleBytes?: number;
  /** Interval of the SSE keepalive comment, in ms. @default 15000 */
  readonly keepaliveMs?: number;
  /** Largest request header section, in bytes (Node's `maxHeaderSize`). @default 16384 */
  readonly maxHeaderBytes?: number;
  /** Time a client has to send a request's headers, in ms (slowloris). @default 30000 */
  readonly headersTimeoutMs?: number;
  /** Close a connection on which nothing moved for this long, in ms (a stalled upload; SSE streams send keepalives). @default 120000 */
  readonly idleTimeoutMs?: number;
  /** Session cookie lifetime, in seconds. @default 604800 (7 days) */
  readonly sessionMaxAgeS?: number;
  /** @default silentLogger */
  readonly logger?: Logger;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | null;
  }
  interface FastifyContextConfig {
    /** `none`: no token needed (health, metrics, token minting, sign-in). @default 'token' */
    auth?: 'none' | 'token';
    /** The route takes an `application/x-ndjson` body (a stream). */
    ndjson?: boolean;
    /** The route ignores its body, whatever its type (actions). */
    anyBody?: boolean;
    /** The route takes a JavaScript body of at most `maxBundleBytes`. */
    javascript?: boolean;
  }
}

type Json = Record<string, unknown>;

/** ms since the epoch → ISO 8601, null kept. */
function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** A JobStatus as docs/API.md shows it (times as ISO strings). */
export function statusToJson(s: JobStatus): Json {
  return { ...s, createdAt: iso(s.createdAt), startedAt: iso(s.startedAt), finishedAt: iso(s.finishedAt) };
}

/** docs/API.md's error body for any error. */
export function errorBody(err: unknown): { status: number; body: { error: Json } } {
  if (err instanceof FarmError) {
    const e = err as FarmError & { field?: unknown; line?: unknown; index?: unknown; state?: unknown };
    const error: Json = { code: e.code, message: e.message };
    if (typeof e.field === 'string') error['field'] = e.field;
    if (typeof e.line === 'number') error['line'] = e.line;
    if (typeof e.index === 'number') error['index'] = e.index;
    if (e.code === FarmErrorCode.JOB_STATE && typeof e.state === 'string') error['state'] = e.state;
    return { status: httpStatusOf(e.code), body: { error } };
  }
  return { status: 500, body: { error: { code: FarmErrorCode.INTERNAL, message: 'Internal error in the manager (it is logged); the manager keeps running' } } };
}

/**
 * Fastify, its plugins and the request validators (Ajv), loaded by {@link ServiceHttpServer.create}
 * and not when this module is imported: every `taskfarm` command imports the library, and only
 * `serve` builds a server (they are about a third of the CLI's start-up).
 */
async function loadHttpModules() {
  const [fastify, cookie, statics, swagger, validation] = await Promise.all([
    import('fastify'),
    import('@fastify/cookie'),
    import('@fastify/static'),
    import('@fastify/swagger'),
    import('./validation.js'),
  ]);
  return {
    Fastify: fastify.default,
    fastifyCookie: cookie.default,
    fastifyStatic: statics.default,
    fastifySwagger: swagger.default,
    compileFor: validation.compileFor,
    validateBody: validation.validateBody,
    validationError: validation.validationError,
  };
}
type HttpModules = Awaited<ReturnType<typeof loadHttpModules>>;

/** Fastify's own request errors (bad JSON, body too large, wrong media type) → ours. */
function fromFastifyError(
  err: Error & { code?: string; statusCode?: number },
  limits: { body: number; bundle: number },
  javascript: boolean,
): FarmError | undefined {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      const limit = javascript ? limits.bundle : limits.body;
      return new TooLargeError(`The body is larger than the limit of ${limit} bytes (the manager's ${javascript ? '--max-bundle' : '--max-body'})`, { limit });
    }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return undefined;
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new InvalidRequestError('The body is empty: send a JSON object (or no Content-Type: application/json header)');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new InvalidRequestError('The Content-Length header does not match the body');
    default:
      if (err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY')
        return new InvalidRequestError(`The body is not valid JSON: ${err.message}`);
      if (err.statusCode === 413) return new TooLargeError(err.message, { limit: limits.body });
      if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) return new InvalidRequestError(err.message);
      return undefined;
  }
}

/** Routes as registered: used for 405 (`Allow:`) and by the tests to check the OpenAPI document. */
interface RouteEntry {
  readonly method: string;
  readonly url: string;
  readonly pattern: RegExp;
}

function routePattern(url: string): RegExp {
  return new RegExp('^' + url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:[A-Za-z0-9_]+/g, '[^/]+') + '/?$');
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'DELETE', 'PATCH']);

/**
 * The manager's HTTP server. `create()` builds the Fastify app (usable with `app.inject()` in
 * tests), `listen()` opens the port, `beginShutdown()` makes new jobs and actions answer 503, and
 * `close()` ends event streams and closes the server.
 *
 * @example
 * const http = await ServiceHttpServer.create({ service, registry });
 * const { url } = await http.listen('127.0.0.1', 7800);
 */
export class ServiceHttpServer {
  readonly #app: FastifyInstance;
  readonly #opts: ServiceHttpOptions;
  readonly #routes: RouteEntry[] = [];
  readonly #streams = new Set<AbortController>();
  readonly #logger: Logger;
  #shuttingDown = false;

  private constructor(app: FastifyInstance, opts: ServiceHttpOptions) {
    this.#app = app;
    this.#opts = opts;
    this.#logger = opts.logger ?? silentLogger;
  }

  /** Builds the app with every route of docs/API.md. */
  static async create(options: ServiceHttpOptions): Promise<ServiceHttpServer> {
    const m = await loadHttpModules();
    const { validationError } = m;
    const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024 * 1024;
    const fastifyOptions: Record<string, unknown> = {
      logger: false,
      bodyLimit: maxBodyBytes,
      routerOptions: { maxParamLength: 200 },
      return503OnClosing: true,
      forceCloseConnections: true,
      requestTimeout: 0,
      connectionTimeout: options.idleTimeoutMs ?? 120_000,
      ...(options.tls === undefined ? {} : { https: { cert: options.tls.cert, key: options.tls.key } }),
      http: { maxHeaderSize: options.maxHeaderBytes ?? 16_384, headersTimeout: options.headersTimeoutMs ?? 30_000 },
      schemaErrorFormatter: (errors: Parameters<typeof validationError>[0], dataVar: string) => validationError(errors, dataVar),
    };
    // Fastify's typings pick the server type from literal options; ours are built at run time (HTTP or HTTPS, both HTTP/1.1).
    const app = m.Fastify(fastifyOptions) as unknown as FastifyInstance;
    const server = new ServiceHttpServer(app, options);
    await server.#build(maxBodyBytes, m);
    return server;
  }

  /** The Fastify instance (`inject()` in tests). */
  get app(): FastifyInstance {
    return this.#app;
  }

  /** Method and URL pattern of every API route. */
  get routes(): readonly { readonly method: string; readonly url: string }[] {
    return this.#routes.map(({ method, url }) => ({ method, url }));
  }

  /** Opens the port; resolves with the bound port and the base URL. */
  async listen(host: string, port: number): Promise<{ readonly port: number; readonly url: string }> {
    await this.#app.listen({ host, port });
    const addr = this.#app.server.address();
    const bound = typeof addr === 'object' && addr !== null ? addr.port : port;
    const h = host.includes(':') ? `[${host}]` : host;
    return { port: bound, url: `${this.#opts.tls === undefined ? 'http' : 'https'}://${h}:${bound}` };
  }

  /** From now on new jobs, actions and tokens answer 503 (`FARM_ERR_SHUTTING_DOWN`); reads go on. */
  beginShutdown(): void {
    this.#shuttingDown = true;
  }

  /** Ends every event stream and closes the server (idempotent). */
  async close(): Promise<void> {
    this.#shuttingDown = true;
    for (const ac of this.#streams) ac.abort();
    await this.#app.close();
  }

  async #build(maxBodyBytes: number, m: HttpModules): Promise<void> {
    const { compileFor, validateBody, fastifyCookie, fastifyStatic, fastifySwagger } = m;
    const app = this.#app;
    const o = this.#opts;
    const service = o.service;
    const maxLineBytes = o.maxLineBytes ?? 1024 * 1024;
    const maxBundleBytes = o.maxBundleBytes ?? 16 * 1024 * 1024;
    const limits = { body: maxBodyBytes, bundle: maxBundleBytes };
    const registry = o.registry ?? new Registry();
    const secure = o.tls !== undefined;

    app.setValidatorCompiler(({ schema, httpPart }) => compileFor(httpPart, schema));
    // Responses are serialised with JSON.stringify: the response schemas document, they never strip fields.
    app.setSerializerCompiler(() => (data) => JSON.stringify(data));
    app.decorateRequest('caller', null);

    // ---- metrics of the HTTP layer itself
    const requests =
      (registry.getSingleMetric('taskfarm_http_requests_total') as Counter<'method' | 'route' | 'status'> | undefined) ??
      new Counter({
        name: 'taskfarm_http_requests_total',
        help: 'HTTP requests answered by the manager',
        labelNames: ['method', 'route', 'status'],
        registers: [registry],
      });
    const durations =
      (registry.getSingleMetric('taskfarm_http_request_duration_seconds') as Histogram<'method' | 'route'> | undefined) ??
      new Histogram({
        name: 'taskfarm_http_request_duration_seconds',
        help: 'Time to answer an HTTP request (streams: to the end of the stream)',
        labelNames: ['method', 'route'],
        buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
        registers: [registry],
      });
    app.addHook('onResponse', async (req, reply) => {
      const route = req.routeOptions.url ?? 'unmatched';
      requests.inc({ method: req.method, route, status: String(reply.statusCode) });
      durations.observe({ method: req.method, route }, reply.elapsedTime / 1000);
    });

    // ---- body parsers: JSON (64 MiB), NDJSON as a stream (no total limit), JavaScript bundles (16 MiB)
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
      const text = typeof body === 'string' ? body : body.toString('utf8');
      if (text.trim().length === 0) return done(new InvalidRequestError('The body is empty: send a JSON object'), undefined);
      try {
        done(null, JSON.parse(text));
      } catch (err) {
        done(new InvalidRequestError(`The body is not valid JSON: ${(err as Error).message}`), undefined);
      }
    });
    app.addContentTypeParser('application/x-ndjson', (req, payload, done) => {
      if (req.routeOptions.config.ndjson !== true) return done(unsupported(req), undefined);
      done(null, payload);
    });
    app.addContentTypeParser(['text/javascript', 'application/javascript'], { parseAs: 'string', bodyLimit: maxBundleBytes }, (req, body, done) => {
      if (req.routeOptions.config.javascript !== true) return done(unsupported(req), undefined);
      done(null, body);
    });
    app.addContentTypeParser('*', (req, payload, done) => {
      if (req.routeOptions.config.anyBody !== true) return done(unsupported(req), undefined);
      payload.resume();
      done(null, undefined);
    });
    function unsupported(req: FastifyRequest): FarmError {
      const e = new InvalidRequestError(
        `Content-Type ${JSON.stringify(req.headers['content-type'] ?? '')} is not taken by ${req.method} ${req.url.split('?')[0] ?? ''}`,
      );
      return Object.assign(e, { httpStatus: 415 });
    }

    // ---- errors
    app.setErrorHandler((err: Error & { code?: string; statusCode?: number; httpStatus?: number }, req, reply) => {
      const javascript = req.routeOptions.config.javascript === true;
      let mapped: unknown = err instanceof FarmError ? err : fromFastifyError(err, limits, javascript);
      if (mapped === undefined && err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
        mapped = Object.assign(new InvalidRequestError(`Content-Type ${JSON.stringify(req.headers['content-type'] ?? '')} is not taken by this route`), {
          httpStatus: 415,
        });
      }
      const { status, body } = errorBody(mapped ?? err);
      const finalStatus = (mapped as { httpStatus?: number } | undefined)?.httpStatus ?? status;
      if (finalStatus >= 500 && finalStatus !== 503)
        this.#logger.error('request failed', { method: req.method, url: req.url, error: err.stack ?? err.message });
      if (finalStatus === 401) void reply.header('www-authenticate', 'Bearer realm="taskfarm"');
      if (reply.sent || reply.raw.headersSent) return;
      void reply.code(finalStatus).type('application/json; charset=utf-8').send(body);
    });

    // ---- not found / wrong method / the dashboard's fallback page
    const staticDir = o.staticDir === undefined ? undefined : resolvePath(o.staticDir);
    const indexHtml = staticDir === undefined ? undefined : resolvePath(staticDir, 'index.html');
    app.setNotFoundHandler(async (req, reply) => {
      const path = req.url.split('?')[0] ?? '';
      const allowed = this.#routes.filter((r) => r.pattern.test(path)).map((r) => r.method);
      if (allowed.length > 0) {
        const allow = [...new Set(allowed.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m])))].sort().join(', ');
        return reply
          .code(405)
          .header('allow', allow)
          .send({ error: { code: FarmErrorCode.NOT_FOUND, message: `${req.method} is not a method of ${path}: use ${allow}` } });
      }
      if (indexHtml !== undefined && (req.method === 'GET' || req.method === 'HEAD') && !path.startsWith('/api/') && existsSync(indexHtml)) {
        return reply.type('text/html; charset=utf-8').sendFile('index.html');
      }
      return reply.code(404).send({ error: { code: FarmErrorCode.NOT_FOUND, message: `No route ${req.method} ${path.slice(0, 200)} (see docs/API.md)` } });
    });

    // ---- authentication: bearer token, or the session cookie with a CSRF check (cookies parsed first)
    await app.register(fastifyCookie);
    app.addHook('onRequest', async (req, reply) => {
      const path = req.url.split('?')[0] ?? '';
      if (!path.startsWith('/api/') || req.routeOptions.config.auth === 'none') return;
      const header = req.headers.authorization;
      if (header !== undefined) {
        const m = /^Bearer[ ]+([A-Za-z0-9._~+/=-]+)[ ]*$/i.exec(header);
        if (m === null) throw new AuthenticationError('The Authorization header must be "Bearer <token>" (make a token with `taskfarm token create`)');
        const caller = await service.authenticate(m[1] ?? '');
        if (caller === undefined) throw new AuthenticationError('Unknown or revoked token: make a new one with `taskfarm token create`');
        req.caller = caller;
        return;
      }
      const cookie = req.cookies[SESSION_COOKIE];
      if (cookie !== undefined && cookie.length > 0) {
        const caller = await service.authenticate(cookie);
        if (caller === undefined) {
          void reply.clearCookie(SESSION_COOKIE, { path: '/' });
          throw new AuthenticationError('The session has expired or its token was revoked: sign in again');
        }
        if (STATE_CHANGING.has(req.method)) checkCsrf(req);
        req.caller = caller;
        return;
      }
      throw new AuthenticationError('This route needs a token: send "Authorization: Bearer <token>" (make one with `taskfarm token create`)');
    });

    function checkCsrf(req: FastifyRequest): void {
      if (req.headers[CSRF_HEADER] !== '1') {
        throw new ForbiddenError(`A state-changing request authenticated by the session cookie must carry the header "X-Taskfarm-Request: 1"`);
      }
      const site = req.headers['sec-fetch-site'];
      if (site !== undefined && site !== 'same-origin' && site !== 'none') throw new ForbiddenError(`Cross-site request refused (Sec-Fetch-Site: ${site})`);
      const origin = req.headers.origin;
      if (origin !== undefined && origin !== 'null') {
        const host = req.headers.host ?? '';
        if (origin !== `${secure ? 'https' : 'http'}://${host}`)
          throw new ForbiddenError(`Cross-origin request refused (Origin ${origin} is not this manager's)`);
      } else if (origin === 'null') {
        throw new ForbiddenError('Cross-origin request refused (Origin: null)');
      }
    }

    // eslint-disable-next-line @typescript-eslint/require-await -- a Fastify hook is async or takes a done callback
    const refuseWhileShuttingDown = async (): Promise<void> => {
      if (this.#shuttingDown) throw new ShuttingDownError();
    };

    await app.register(fastifySwagger, {
      openapi: {
        openapi: '3.0.3',
        info: { title: 'taskfarm manager API', version: PACKAGE_VERSION, description: 'The HTTP/JSON API of `taskfarm serve` (docs/API.md).' },
        components: {
          securitySchemes: {
            bearer: { type: 'http', scheme: 'bearer', description: 'A token from `taskfarm token create`' },
            session: {
              type: 'apiKey',
              in: 'cookie',
              name: SESSION_COOKIE,
              description: 'The dashboard session (POST /api/v1/session); state-changing requests also need X-Taskfarm-Request: 1',
            },
          },
        },
        security: [{ bearer: [] }, { session: [] }],
      },
    });
    if (staticDir !== undefined) {
      if (!existsSync(staticDir) || !statSync(staticDir).isDirectory()) throw new InvalidRequestError(`The static folder ${staticDir} does not exist`);
      await app.register(fastifyStatic, { root: staticDir, prefix: '/', wildcard: true, index: ['index.html'] });
    }

    const route = (
      method: 'GET' | 'POST' | 'PUT' | 'DELETE',
      url: string,
      spec: { schema: Json; config?: Record<string, unknown>; write?: boolean },
      handler: (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>,
    ): void => {
      this.#routes.push({ method, url, pattern: routePattern(url) });
      app.route({
        method,
        url,
        schema: spec.schema,
        config: { auth: 'token', ...spec.config },
        ...(spec.write === true ? { preHandler: refuseWhileShuttingDown } : {}),
        handler,
      });
    };
    const callerOf = (req: FastifyRequest): Caller => {
      if (req.caller === null) throw new AuthenticationError('Not authenticated');
      return req.caller;
    };
    const params = (req: FastifyRequest): { ticket: string } => req.params as { ticket: string };
    const status200 = { 200: S.statusSchema, 409: S.errorResponses[400], ...S.errorResponses };

    // ---- health and metrics (no token)
    route(
      'GET',
      '/healthz',
      { schema: { tags: ['health'], summary: 'Liveness: the manager accepts requests and its store answers', security: [] }, config: { auth: 'none' } },
      async (_req, reply) => {
        let ok: boolean;
        try {
          ok = !this.#shuttingDown && (await service.healthy());
        } catch {
          ok = false;
        }
        return reply.code(ok ? 200 : 503).send(ok ? { status: 'ok' } : { status: this.#shuttingDown ? 'shutting-down' : 'unhealthy' });
      },
    );
    route(
      'GET',
      '/metrics',
      { schema: { tags: ['health'], summary: 'Prometheus exposition', security: [] }, config: { auth: 'none' } },
      async (_req, reply) => {
        const text = await registry.metrics();
        return reply.type(registry.contentType).send(text);
      },
    );
    // eslint-disable-next-line @typescript-eslint/require-await -- route handlers return promises (a throw becomes the error reply)
    route('GET', '/api/openapi.json', { schema: { tags: ['health'], summary: 'This API as OpenAPI 3' } }, async () => app.swagger());

    // ---- session cookie (dashboard)
    route(
      'POST',
      '/api/v1/session',
      {
        schema: {
          tags: ['session'],
          summary: 'Sign in: sets the HttpOnly session cookie',
          body: S.sessionBody,
          response: { 200: S.callerSchema },
          security: [],
        },
        config: { auth: 'none' },
      },
      async (req, reply) => {
        checkCsrf(req);
        const { token } = req.body as { token: string };
        const caller = await service.authenticate(token);
        if (caller === undefined) throw new AuthenticationError('Unknown or revoked token');
        void reply.setCookie(SESSION_COOKIE, token, { httpOnly: true, sameSite: 'strict', secure, path: '/', maxAge: o.sessionMaxAgeS ?? 7 * 86_400 });
        return { user: caller.user, admin: caller.admin };
      },
    );
    // eslint-disable-next-line @typescript-eslint/require-await -- route handlers return promises (a throw becomes the error reply)
    route('GET', '/api/v1/session', { schema: { tags: ['session'], summary: 'Who is signed in', response: { 200: S.callerSchema } } }, async (req) => {
      const c = callerOf(req);
      return { user: c.user, admin: c.admin };
    });
    route(
      'DELETE',
      '/api/v1/session',
      { schema: { tags: ['session'], summary: 'Sign out: clears the session cookie', security: [] }, config: { auth: 'none', anyBody: true } },
      async (req, reply) => {
        if (req.cookies[SESSION_COOKIE] !== undefined) checkCsrf(req);
        void reply.clearCookie(SESSION_COOKIE, { path: '/' });
        return reply.code(204).send();
      },
    );

    // ---- tokens (authenticated by the farm key, not by a token)
    route(
      'POST',
      '/api/v1/tokens/challenge',
      { schema: { tags: ['tokens'], summary: 'A nonce to prove the farm key over', security: [] }, config: { auth: 'none', anyBody: true }, write: true },
      async () => ({ nonce: await service.tokenChallenge() }),
    );
    route(
      'POST',
      '/api/v1/tokens',
      { schema: { tags: ['tokens'], summary: 'Mint a token (proof of the farm key)', body: S.tokenBody, security: [] }, config: { auth: 'none' }, write: true },
      async (req, reply) => {
        const b = req.body as { user: string; admin: boolean; label?: string; nonce: string; proof: string };
        const minted = await service.createToken({
          user: b.user,
          admin: b.admin,
          nonce: b.nonce,
          proof: b.proof,
          ...(b.label === undefined ? {} : { label: b.label }),
        });
        return reply.code(201).send(minted);
      },
    );

    // ---- bundles
    route(
      'POST',
      '/api/v1/bundles/missing',
      { schema: { tags: ['bundles'], summary: 'Which bundles the manager lacks', body: S.missingBundlesBody, response: { ...S.errorResponses } } },
      async (req) => ({ missing: await service.missingBundles(callerOf(req), (req.body as { hashes: string[] }).hashes) }),
    );
    route(
      'PUT',
      '/api/v1/bundles/:sha256',
      {
        schema: { tags: ['bundles'], summary: 'Upload a bundle (ES module text)', params: S.bundleParams, response: { ...S.errorResponses } },
        config: { javascript: true },
        write: true,
      },
      async (req, reply) => {
        if (typeof req.body !== 'string') {
          throw Object.assign(new InvalidRequestError('A bundle is sent as Content-Type: text/javascript (the module text)'), { httpStatus: 415 });
        }
        const { sha256 } = req.params as { sha256: string };
        const actual = createHash('sha256').update(req.body, 'utf8').digest('hex');
        if (actual !== sha256) throw new InvalidRequestError(`The body's sha256 is ${actual}, not ${sha256}: nothing stored`, { field: 'path.sha256' });
        const stored = await service.putBundle(callerOf(req), sha256, req.body);
        return reply.code(stored ? 201 : 204).send();
      },
    );

    // ---- jobs
    const validateSpec = compileFor('body', S.jobSpecSchema);
    route(
      'POST',
      '/api/v1/jobs',
      {
        schema: {
          tags: ['jobs'],
          summary: 'Submit a job: JSON with inline inputs, or NDJSON (first line the description, then one input per line)',
          body: { content: { 'application/json': { schema: S.jobSubmitSchema }, 'application/x-ndjson': { schema: S.ndjsonSubmitSchema } } },
          response: { 201: { type: 'object', properties: { ticket: { type: 'string' } } }, ...S.errorResponses },
        },
        config: { ndjson: true },
        write: true,
      },
      async (req, reply) => {
        const caller = callerOf(req);
        let ticket: string;
        if (req.body instanceof Readable) {
          ticket = await submitNdjson(caller, req.body, maxLineBytes);
        } else {
          if (typeof req.body !== 'object' || req.body === null) throw new InvalidRequestError('The body must be a JSON object (the job description)');
          const { inputs, ...spec } = req.body as JobSpec & { inputs: unknown[] };
          ticket = await service.submit(caller, spec, inlineInputs(inputs));
        }
        return reply.code(201).header('location', `/api/v1/jobs/${ticket}`).send({ ticket });
      },
    );
    const submitNdjson = async (caller: Caller, body: Readable, maxLine: number): Promise<string> => {
      // Line 1 is the description; the service checks every later line (400 naming its line and input index).
      const batches = ndjsonBatches(body, maxLine);
      try {
        let first: NdjsonBatch | undefined;
        let at = 0;
        // The description is the first non-blank line.
        while (first === undefined) {
          const next = await batches.next();
          if (next.done === true) throw new InvalidRequestError('The body is empty: its first line must be the job description', { line: 1 });
          at = next.value.texts.findIndex((t) => t.trim().length > 0);
          if (at >= 0) first = next.value;
        }
        const line = first.line + at;
        let description: unknown;
        try {
          description = JSON.parse(first.texts[at]!);
        } catch (err) {
          throw new InvalidRequestError(`Line ${line} (the job description) is not JSON: ${(err as Error).message}`, { line });
        }
        let spec: JobSpec;
        try {
          spec = validateBody<JobSpec>(validateSpec, description);
        } catch (err) {
          const e = err as InvalidRequestError;
          throw new InvalidRequestError(`Line ${line} (the job description): ${e.message}`, {
            ...(e.field === undefined ? {} : { field: e.field }),
            line,
          });
        }
        const rest: InputBatch = { texts: first.texts.slice(at + 1), line: line + 1 };
        async function* inputs(): AsyncGenerator<InputBatch> {
          yield rest;
          yield* batches;
        }
        return await service.submit(caller, spec, inputs());
      } finally {
        await batches.return(undefined);
      }
    };

    route(
      'GET',
      '/api/v1/jobs',
      {
        schema: {
          tags: ['jobs'],
          summary: "The caller's jobs (all=true: everyone's, admins only), newest first",
          querystring: S.listQuery,
          response: {
            200: { type: 'object', properties: { jobs: { type: 'array', items: S.statusSchema }, next: { type: ['string', 'null'] } } },
            ...S.errorResponses,
          },
        },
      },
      async (req) => {
        const q = req.query as { all: boolean; state?: string; limit: number; after?: string };
        const page = await service.list(callerOf(req), {
          all: q.all,
          limit: q.limit,
          ...(q.state === undefined ? {} : { states: q.state.split(',') as JobState[] }),
          ...(q.after === undefined ? {} : { after: q.after }),
        });
        return { jobs: page.items.map(statusToJson), next: page.next };
      },
    );
    route(
      'GET',
      '/api/v1/jobs/:ticket',
      {
        schema: {
          tags: ['jobs'],
          summary: "A job's status (counters: never a task scan)",
          params: S.ticketParams,
          response: { 200: S.statusSchema, ...S.errorResponses },
        },
      },
      async (req) => statusToJson(await service.status(callerOf(req), params(req).ticket)),
    );
    route(
      'GET',
      '/api/v1/jobs/:ticket/results',
      {
        schema: {
          tags: ['jobs'],
          summary: 'Outputs (or failures) in input order, NDJSON, streamed',
          params: S.ticketParams,
          querystring: S.resultsQuery,
          produces: ['application/x-ndjson'],
          response: { ...S.errorResponses },
        },
      },
      async (req, reply) => {
        const q = req.query as { failed: boolean; after?: number };
        const results = service.results(callerOf(req), params(req).ticket, { failedOnly: q.failed, ...(q.after === undefined ? {} : { after: q.after }) });
        const iterator = results[Symbol.asyncIterator]();
        // The first step before the headers: an unknown ticket is a 404, not a broken stream.
        const first = await iterator.next();
        return reply.type('application/x-ndjson').send(Readable.from(resultChunks(first, iterator), { objectMode: false }));
      },
    );
    route(
      'GET',
      '/api/v1/jobs/:ticket/tasks',
      {
        schema: {
          tags: ['jobs'],
          summary: 'A page of the task table (keyset by index)',
          params: S.ticketParams,
          querystring: S.tasksQuery,
          response: {
            200: { type: 'object', properties: { tasks: { type: 'array', items: S.taskRowSchema }, next: { type: ['integer', 'null'] } } },
            ...S.errorResponses,
          },
        },
      },
      async (req) => {
        const q = req.query as { state?: TaskState; after?: number; limit: number };
        const page = await service.tasks(callerOf(req), params(req).ticket, {
          limit: q.limit,
          ...(q.state === undefined ? {} : { state: q.state }),
          ...(q.after === undefined ? {} : { after: q.after }),
        });
        return {
          tasks: page.items.map((t) => ({
            index: t.index,
            state: t.state,
            input: parseJson(t.input),
            output: t.output === null ? null : parseJson(t.output),
            error: t.error,
          })),
          next: page.next,
        };
      },
    );
    route(
      'GET',
      '/api/v1/jobs/:ticket/stats',
      {
        schema: {
          tags: ['jobs'],
          summary: 'What the job page plots: task-duration histogram, throughput per interval, per-worker figures (kept as results arrive: never a task scan)',
          params: S.ticketParams,
          response: { 200: S.jobStatsSchema, ...S.errorResponses },
        },
      },
      async (req) => {
        if (service.jobStats === undefined) throw new NotFoundError('This manager keeps no job statistics (GET /api/v1/jobs/{ticket}/stats)');
        const st = await service.jobStats(callerOf(req), params(req).ticket);
        return { ...st, throughput: { ...st.throughput, start: iso(st.throughput.start) } };
      },
    );
    route(
      'GET',
      '/api/v1/jobs/:ticket/failures',
      {
        schema: {
          tags: ['jobs'],
          summary: 'A page of failures (keyset by index)',
          params: S.ticketParams,
          querystring: S.failuresQuery,
          response: {
            200: { type: 'object', properties: { failures: { type: 'array', items: S.failureRowSchema }, next: { type: ['integer', 'null'] } } },
            ...S.errorResponses,
          },
        },
      },
      async (req) => {
        const q = req.query as { after?: number; limit: number };
        const page = await service.failures(callerOf(req), params(req).ticket, { limit: q.limit, ...(q.after === undefined ? {} : { after: q.after }) });
        return { failures: page.items, next: page.next };
      },
    );
    route(
      'GET',
      '/api/v1/jobs/:ticket/events',
      {
        schema: {
          tags: ['jobs'],
          summary: 'Server-Sent Events (id: per-job sequence; resume with Last-Event-ID or ?after=)',
          params: S.ticketParams,
          querystring: S.eventsQuery,
          produces: ['text/event-stream'],
          response: { ...S.errorResponses },
        },
      },
      async (req, reply) => this.#events(req, reply, callerOf(req), params(req).ticket),
    );
    for (const action of ['cancel', 'hold', 'release', 'resubmit'] as const) {
      route(
        'POST',
        `/api/v1/jobs/:ticket/${action}`,
        {
          schema: {
            tags: ['jobs'],
            summary: {
              cancel: 'Cancel the job',
              hold: 'Hold: no new dispatch',
              release: 'Release a held job',
              resubmit: 'Run a finished job again (failed=true: only its failed tasks)',
            }[action],
            params: S.ticketParams,
            ...(action === 'resubmit' ? { querystring: S.resubmitQuery } : {}),
            response: status200,
          },
          config: { anyBody: action !== 'resubmit' },
          write: true,
        },
        async (req) => {
          const caller = callerOf(req);
          const { ticket } = params(req);
          switch (action) {
            case 'cancel':
              return statusToJson(await service.cancel(caller, ticket));
            case 'hold':
              return statusToJson(await service.hold(caller, ticket));
            case 'release':
              return statusToJson(await service.release(caller, ticket));
            case 'resubmit': {
              const body = req.body;
              let failedOnly = (req.query as { failed?: boolean }).failed ?? false;
              if (body !== undefined && body !== null) {
                if (typeof body !== 'object' || Array.isArray(body)) throw new InvalidRequestError('The body must be a JSON object like {"failed": true}');
                const extra = Object.keys(body).find((k) => k !== 'failed');
                if (extra !== undefined) throw new InvalidRequestError(`Unknown field \`${extra}\`: remove it`, { field: extra });
                const f = (body as { failed?: unknown }).failed;
                if (f !== undefined && typeof f !== 'boolean')
                  throw new InvalidRequestError(`Expected \`failed\` to be a boolean, got \`${JSON.stringify(f)}\``, { field: 'failed' });
                if (f === true) failedOnly = true;
              }
              return statusToJson(await service.resubmit(caller, ticket, { failedOnly }));
            }
          }
        },
      );
    }
    route(
      'DELETE',
      '/api/v1/jobs/:ticket',
      {
        schema: {
          tags: ['jobs'],
          summary: 'Remove the job and all of it (cancelled first if running)',
          params: S.ticketParams,
          response: { ...S.errorResponses },
        },
        config: { anyBody: true },
        write: true,
      },
      async (req, reply) => {
        await service.remove(callerOf(req), params(req).ticket);
        return reply.code(204).send();
      },
    );

    // ---- workers
    route(
      'GET',
      '/api/v1/workers',
      {
        schema: {
          tags: ['farm'],
          summary: "The farm's workers",
          response: { 200: { type: 'object', properties: { workers: { type: 'array', items: S.workerSchema } } }, ...S.errorResponses },
        },
      },
      async (req) => ({ workers: await service.workers(callerOf(req)) }),
    );
    route(
      'GET',
      '/api/v1/workers/:id',
      {
        schema: {
          tags: ['farm'],
          summary: 'One worker: what it ran (your jobs; an admin: all), its task times, its losses and their reasons',
          params: S.workerParams,
          response: { 200: S.workerDetailSchema, ...S.errorResponses },
        },
      },
      async (req) => {
        if (service.worker === undefined) throw new NotFoundError('This manager keeps no worker details (GET /api/v1/workers/{id})');
        const d = await service.worker(callerOf(req), (req.params as { id: string }).id);
        return { ...d, losses: d.losses.map((l) => ({ ...l, at: iso(l.at) })) };
      },
    );
  }

  async #events(req: FastifyRequest, reply: FastifyReply, caller: Caller, ticket: string): Promise<void> {
    const q = req.query as { after?: number };
    let after = q.after;
    const header = req.headers['last-event-id'];
    if (after === undefined && typeof header === 'string' && header.trim().length > 0) {
      const n = Number(header.trim());
      if (!Number.isSafeInteger(n) || n < 0)
        throw new InvalidRequestError(`Expected the Last-Event-ID header to be an event id (an integer ≥ 0), got ${JSON.stringify(header.slice(0, 40))}`, {
          field: 'headers.last-event-id',
        });
      after = n;
    }
    await this.#opts.service.status(caller, ticket); // 404 before the stream starts
    const ac = new AbortController();
    this.#streams.add(ac);
    const raw = reply.raw;
    reply.hijack();
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    raw.write(': taskfarm events\nretry: 2000\n\n');
    const onClose = (): void => ac.abort();
    raw.on('close', onClose);
    const keepalive = setInterval(() => {
      if (!raw.writableEnded) raw.write(': keepalive\n\n');
    }, this.#opts.keepaliveMs ?? 15_000);
    keepalive.unref();
    try {
      for await (const ev of this.#opts.service.events(caller, ticket, { signal: ac.signal, ...(after === undefined ? {} : { after }) })) {
        if (ac.signal.aborted) break;
        const ok = raw.write(`id: ${ev.seq}\nevent: ${ev.type}\ndata: ${JSON.stringify(ev.data)}\n\n`);
        if (!ok)
          await new Promise<void>((resolve) => {
            const done = (): void => {
              raw.off('drain', done);
              ac.signal.removeEventListener('abort', done);
              resolve();
            };
            raw.once('drain', done);
            ac.signal.addEventListener('abort', done, { once: true });
          });
      }
    } catch (err) {
      if (!ac.signal.aborted && !raw.writableEnded) {
        const { body } = errorBody(err);
        raw.write(`event: error\ndata: ${JSON.stringify(body.error)}\n\n`);
        if (!(err instanceof FarmError)) this.#logger.error('event stream failed', { ticket, error: (err as Error).stack ?? String(err) });
      }
    } finally {
      clearInterval(keepalive);
      raw.off('close', onClose);
      this.#streams.delete(ac);
      if (!raw.writableEnded) raw.end();
    }
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** Inline inputs of a JSON submit, as the lines of an NDJSON one would be (line 0: not from a body line). */
function* inlineInputs(inputs: readonly unknown[]): Generator<InputLine> {
  for (const value of inputs) yield { text: JSON.stringify(value) ?? 'null', line: 0 };
}

/** NDJSON result lines, packed into chunks of about 64 KiB (one write per chunk, not per line). */
async function* resultChunks(first: IteratorResult<ResultLine>, rest: AsyncIterator<ResultLine>): AsyncGenerator<string> {
  let chunk = '';
  let next = first;
  while (next.done !== true) {
    const r = next.value;
    chunk += 'output' in r ? `{"index":${r.index},"output":${r.output}}\n` : `{"index":${r.index},"error":${JSON.stringify(r.error)}}\n`;
    if (chunk.length >= 65_536) {
      yield chunk;
      chunk = '';
    }
    next = await rest.next();
  }
  if (chunk.length > 0) yield chunk;
}
