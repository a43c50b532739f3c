/**
 * The manager's HTTP API (docs/API.md) over a FakeJobService: every route, auth (401/403/404), bad
 * input (400 naming the field, 413, 415, 405, malformed NDJSON lines), SSE resume without repeats,
 * the session cookie and its CSRF defence, OpenAPI, /metrics parsed as Prometheus exposition, a job
 * submitted with plain fetch and with curl, and garbage that must not crash the server. Real
 * sockets on 127.0.0.1 wherever streaming matters; `inject()` elsewhere.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ServiceHttpServer } from '../../../src/service/index.js';
import { FakeJobService } from '../../helpers/fake-job-service.js';

const ADA = { authorization: 'Bearer tok-ada' };
const BOB = { authorization: 'Bearer tok-bob' };
const ROOT = { authorization: 'Bearer tok-root' };
const DOUBLE = { stages: [{ source: 'export default (x) => x * 2' }] };

let svc: FakeJobService;
let http: ServiceHttpServer;
let url: string;

async function start(opts: Partial<Parameters<typeof ServiceHttpServer.create>[0]> = {}): Promise<void> {
  http = await ServiceHttpServer.create({ service: svc, keepaliveMs: 200, ...opts });
  url = (await http.listen('127.0.0.1', 0)).url;
}

beforeEach(async () => {
  svc = new FakeJobService({ autoRun: true });
  svc.addToken('tok-ada', { user: 'ada', admin: false }).addToken('tok-bob', { user: 'bob', admin: false }).addToken('tok-root', { user: 'root', admin: true });
  await start();
});
afterEach(async () => {
  await http.close();
});

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

async function submit(headers = ADA, body: object = { ...DOUBLE, inputs: [1, 2, 3] }): Promise<string> {
  const r = await http.app.inject({ method: 'POST', url: '/api/v1/jobs', headers, payload: body });
  expect(r.statusCode, r.body).toBe(201);
  return r.json<{ ticket: string }>().ticket;
}

async function settled(ticket: string): Promise<void> {
  await until(() => ['done', 'failed'].includes(svc.jobs.get(ticket)?.state ?? ''), 'job settled');
}

describe('auth', () => {
  const routes: [string, string][] = [
    ['GET', '/api/v1/jobs'],
    ['POST', '/api/v1/jobs'],
    ['GET', '/api/v1/jobs/0b1e6f2c-0000-4000-8000-000000000000'],
    ['POST', '/api/v1/jobs/0b1e6f2c-0000-4000-8000-000000000000/cancel'],
    ['DELETE', '/api/v1/jobs/0b1e6f2c-0000-4000-8000-000000000000'],
    ['POST', '/api/v1/bundles/missing'],
    ['PUT', `/api/v1/bundles/${'a'.repeat(64)}`],
    ['GET', '/api/v1/workers'],
    ['GET', '/api/openapi.json'],
    ['GET', '/api/v1/session'],
    ['GET', '/api/v1/nope'],
  ];
  for (const [method, path] of routes) {
    it(`${method} ${path}: 401 with WWW-Authenticate without a token, a wrong one or a malformed header`, async () => {
      for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: 'Basic YWRhOnB3' }, { authorization: 'Bearer' }]) {
        const r = await http.app.inject({ method: method as 'GET', url: path, headers });
        expect(r.statusCode).toBe(401);
        expect(r.headers['www-authenticate']).toBe('Bearer realm="taskfarm"');
        expect(r.json().error.code).toBe('FARM_ERR_UNAUTHENTICATED');
      }
      expect(svc.jobs.size).toBe(0);
    });
  }

  it("another user's ticket answers 404 exactly like an unknown one; an admin sees it", async () => {
    const t = await submit(ADA);
    const bob = await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}`, headers: BOB });
    const unknown = await http.app.inject({ method: 'GET', url: '/api/v1/jobs/0b1e6f2c-0000-4000-8000-000000000000', headers: BOB });
    expect(bob.statusCode).toBe(404);
    expect(bob.json().error.code).toBe('FARM_ERR_JOB_NOT_FOUND');
    expect(unknown.statusCode).toBe(404);
    for (const a of ['cancel', 'hold', 'release', 'resubmit']) {
      expect((await http.app.inject({ method: 'POST', url: `/api/v1/jobs/${t}/${a}`, headers: BOB })).statusCode).toBe(404);
    }
    expect((await http.app.inject({ method: 'DELETE', url: `/api/v1/jobs/${t}`, headers: BOB })).statusCode).toBe(404);
    expect((await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}/results`, headers: BOB })).statusCode).toBe(404);
    expect((await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}/events`, headers: BOB })).statusCode).toBe(404);
    expect(svc.jobs.has(t)).toBe(true);
    expect((await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}`, headers: ROOT })).statusCode).toBe(200);
    expect((await http.app.inject({ method: 'GET', url: '/api/v1/jobs', headers: BOB })).json().jobs).toEqual([]);
  });

  it('all=true is 403 for a user and lists everyone for an admin', async () => {
    await submit(ADA);
    await submit(BOB);
    const r = await http.app.inject({ method: 'GET', url: '/api/v1/jobs?all=true', headers: ADA });
    expect(r.statusCode).toBe(403);
    expect(r.json().error.code).toBe('FARM_ERR_FORBIDDEN');
    const all = await http.app.inject({ method: 'GET', url: '/api/v1/jobs?all=true', headers: ROOT });
    expect(
      all
        .json()
        .jobs.map((j: { owner: string }) => j.owner)
        .sort(),
    ).toEqual(['ada', 'bob']);
  });

  it('/healthz and /metrics need no token', async () => {
    expect((await http.app.inject({ method: 'GET', url: '/healthz' })).json()).toEqual({ status: 'ok' });
    svc.healthyFlag = false;
    expect((await http.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(503);
    expect((await http.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
  });
});

describe('bad input', () => {
  const cases: [string, object, string, RegExp][] = [
    ['a float priority', { ...DOUBLE, inputs: [], priority: 1.5 }, 'priority', /Expected `priority` to be an integer, got `1.5` \(number\)/],
    ['a string priority', { ...DOUBLE, inputs: [], priority: '5' }, 'priority', /an integer/],
    ['a priority out of range', { ...DOUBLE, inputs: [], priority: 1e9 }, 'priority', /≤ 1000000/],
    ['no stages', { inputs: [] }, 'stages', /required/],
    ['empty stages', { stages: [], inputs: [] }, 'stages', /at least 1/],
    ['a stage with both', { stages: [{ source: 'x', bundle: 'a'.repeat(64) }], inputs: [] }, 'stages[0]', /exactly one of `bundle` or `source`/],
    ['a bad bundle hash', { stages: [{ bundle: 'xyz' }], inputs: [] }, 'stages[0].bundle', /match/],
    ['a never uploaded bundle', { stages: [{}, { bundle: 'b'.repeat(64) }].slice(1), inputs: [] }, 'stages[0].bundle', /never uploaded/],
    ['an unknown field', { ...DOUBLE, inputs: [], priorty: 1 }, 'priorty', /Unknown field `priorty`/],
    ['weight 0', { ...DOUBLE, inputs: [], weight: 0 }, 'weight', /> 0/],
    ['a wrong errors value', { ...DOUBLE, inputs: [], errors: 'ignore' }, 'errors', /"fail", "collect"/],
    ['inputs not an array', { ...DOUBLE, inputs: 5 }, 'inputs', /an array/],
    ['a name too long', { ...DOUBLE, inputs: [], name: 'n'.repeat(201) }, 'name', /at most 200/],
  ];
  for (const [what, body, field, message] of cases) {
    it(`POST /api/v1/jobs with ${what}: 400 naming ${field}; no job`, async () => {
      const r = await http.app.inject({ method: 'POST', url: '/api/v1/jobs', headers: ADA, payload: body });
      expect(r.statusCode, r.body).toBe(400);
      expect(r.json().error.field).toBe(field);
      expect(r.json().error.message).toMatch(message);
      expect(svc.jobs.size).toBe(0);
    });
  }

  it('malformed JSON, an empty body, a JSON array: 400', async () => {
    for (const payload of ['{"stages": [', '', '[1,2]', 'null', '"x"']) {
      const r = await http.app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { ...ADA, 'content-type': 'application/json' }, payload });
      expect(r.statusCode, payload).toBe(400);
      expect(r.json().error.code).toBe('FARM_ERR_INVALID_OPTION');
    }
  });

  it('query and path values: 400 naming query.x / path.x', async () => {
    const r1 = await http.app.inject({ method: 'GET', url: '/api/v1/jobs?limit=0', headers: ADA });
    expect([r1.statusCode, r1.json().error.field]).toEqual([400, 'query.limit']);
    const r2 = await http.app.inject({ method: 'GET', url: '/api/v1/jobs?state=bogus', headers: ADA });
    expect([r2.statusCode, r2.json().error.field]).toEqual([400, 'query.state']);
    const r3 = await http.app.inject({ method: 'GET', url: '/api/v1/jobs/not-a-ticket', headers: ADA });
    expect([r3.statusCode, r3.json().error.field]).toEqual([400, 'path.ticket']);
    const r4 = await http.app.inject({ method: 'GET', url: '/api/v1/jobs?colour=red', headers: ADA });
    expect([r4.statusCode, r4.json().error.field]).toEqual([400, 'query.colour']);
  });

  it('an NDJSON submit with a malformed line: 400 with its line and index; no job', async () => {
    const r = await http.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { ...ADA, 'content-type': 'application/x-ndjson' },
      payload: `${JSON.stringify(DOUBLE)}\n1\n\n2\n{"a": }\n4\n`,
    });
    expect(r.statusCode).toBe(400);
    expect(r.json().error).toMatchObject({ code: 'FARM_ERR_INVALID_INPUT', line: 5, index: 2 });
    expect(r.json().error.message).toMatch(/^Line 5 is not JSON/);
    expect(svc.jobs.size).toBe(0);
  });

  it('an NDJSON submit whose description is bad: 400 with line 1 and the field', async () => {
    for (const [first, field] of [
      ['{"stages": 3}', 'stages'],
      ['not json', undefined],
      [`{"stages":[{"source":"x"}],"inputs":[1]}`, 'inputs'],
    ] as const) {
      const r = await http.app.inject({
        method: 'POST',
        url: '/api/v1/jobs',
        headers: { ...ADA, 'content-type': 'application/x-ndjson' },
        payload: `${first}\n1\n`,
      });
      expect(r.statusCode).toBe(400);
      expect(r.json().error.line).toBe(1);
      expect(r.json().error.field).toBe(field);
    }
    const empty = await http.app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { ...ADA, 'content-type': 'application/x-ndjson' }, payload: '\n\n' });
    expect(empty.statusCode).toBe(400);
    expect(svc.jobs.size).toBe(0);
  });

  it('bodies over their limits: 413 (JSON body, NDJSON line, bundle); nothing stored', async () => {
    await http.close();
    await start({ maxBodyBytes: 1000, maxLineBytes: 100, maxBundleBytes: 200 });
    const big = await http.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: ADA,
      payload: { ...DOUBLE, inputs: Array.from({ length: 500 }, (_, i) => i) },
    });
    expect(big.statusCode).toBe(413);
    expect(big.json().error.code).toBe('FARM_ERR_TOO_LARGE');
    const line = await http.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { ...ADA, 'content-type': 'application/x-ndjson' },
      payload: `${JSON.stringify(DOUBLE)}\n1\n"${'x'.repeat(200)}"\n`,
    });
    expect(line.statusCode).toBe(413);
    expect(line.json().error).toMatchObject({ code: 'FARM_ERR_TOO_LARGE', line: 3 });
    const code = '//' + 'x'.repeat(300);
    const hash = createHash('sha256').update(code).digest('hex');
    const bundle = await http.app.inject({
      method: 'PUT',
      url: `/api/v1/bundles/${hash}`,
      headers: { ...ADA, 'content-type': 'text/javascript' },
      payload: code,
    });
    expect(bundle.statusCode).toBe(413);
    expect(svc.jobs.size + svc.bundles.size).toBe(0);
    // A large NDJSON upload has no total limit: only its lines are limited.
    const many = await http.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { ...ADA, 'content-type': 'application/x-ndjson' },
      payload: `${JSON.stringify(DOUBLE)}\n${Array.from({ length: 2000 }, (_, i) => i).join('\n')}\n`,
    });
    expect(many.statusCode).toBe(201);
  });

  it('a content type a route does not take: 415; a wrong method: 405 with Allow; an unknown route: 404', async () => {
    const r = await http.app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { ...ADA, 'content-type': 'text/plain' }, payload: 'hello' });
    expect(r.statusCode).toBe(415);
    const b = await http.app.inject({
      method: 'PUT',
      url: `/api/v1/bundles/${'a'.repeat(64)}`,
      headers: { ...ADA, 'content-type': 'application/json' },
      payload: '{}',
    });
    expect(b.statusCode).toBe(415);
    const m = await http.app.inject({ method: 'PATCH', url: '/api/v1/jobs', headers: ADA });
    expect(m.statusCode).toBe(405);
    expect(m.headers['allow']).toBe('GET, HEAD, POST');
    const n = await http.app.inject({ method: 'GET', url: '/api/v2/whatever', headers: ADA });
    expect([n.statusCode, n.json().error.code]).toEqual([404, 'FARM_ERR_NOT_FOUND']);
  });
});

describe('routes', () => {
  it('bundles: missing, PUT 201 then 204, a wrong hash 400 and nothing stored', async () => {
    const code = 'export default (x) => x + 1;';
    const hash = createHash('sha256').update(code).digest('hex');
    const m1 = await http.app.inject({ method: 'POST', url: '/api/v1/bundles/missing', headers: ADA, payload: { hashes: [hash] } });
    expect(m1.json()).toEqual({ missing: [hash] });
    const put = (h: string, body: string, type = 'text/javascript') =>
      http.app.inject({ method: 'PUT', url: `/api/v1/bundles/${h}`, headers: { ...ADA, 'content-type': type }, payload: body });
    expect((await put(hash, code)).statusCode).toBe(201);
    expect((await put(hash, code, 'application/javascript')).statusCode).toBe(204);
    const wrong = await put('c'.repeat(64), code);
    expect([wrong.statusCode, wrong.json().error.field]).toEqual([400, 'path.sha256']);
    expect((await http.app.inject({ method: 'POST', url: '/api/v1/bundles/missing', headers: ADA, payload: { hashes: [hash] } })).json()).toEqual({
      missing: [],
    });
    const tooMany = await http.app.inject({ method: 'POST', url: '/api/v1/bundles/missing', headers: ADA, payload: { hashes: Array(1001).fill(hash) } });
    expect([tooMany.statusCode, tooMany.json().error.field]).toEqual([400, 'hashes']);
    // a job on the uploaded bundle
    const t = await submit(ADA, { stages: [{ bundle: hash, name: 'inc' }], inputs: [1, 2] });
    await settled(t);
    const res = await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}/results`, headers: ADA });
    expect(res.body).toBe('{"index":0,"output":2}\n{"index":1,"output":3}\n');
  });

  it('status, results (and failed=true, after=i), tasks and failures pages', async () => {
    const t = await submit(ADA, {
      stages: [{ source: 'export default (x) => { if (x % 3 === 0) throw new RangeError("bad " + x); return x * 10; }' }],
      errors: 'collect',
      inputs: [1, 2, 3, 4, 5, 6, 7],
    });
    await settled(t);
    const s = (await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}`, headers: ADA })).json();
    expect(s).toMatchObject({ ticket: t, owner: 'ada', state: 'done', total: 7, counts: { pending: 0, running: 0, done: 5, failed: 2 } });
    expect(s.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(s.failures).toEqual([
      { index: 2, error: { name: 'RangeError', message: 'bad 3' } },
      { index: 5, error: { name: 'RangeError', message: 'bad 6' } },
    ]);
    const res = await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}/results`, headers: ADA });
    expect(res.headers['content-type']).toMatch(/^application\/x-ndjson/);
    expect(
      res.body
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
    ).toEqual([0, 1, 3, 4, 6].map((i) => ({ index: i, output: (i + 1) * 10 })));
    const after = await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}/results?after=3`, headers: ADA });
    expect(
      after.body
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).index),
    ).toEqual([4, 6]);
    const failed = await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}/results?failed=true`, headers: ADA });
    expect(
      failed.body
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
    ).toMatchObject([
      { index: 2, error: { name: 'RangeError', message: 'bad 3' } },
      { index: 5, error: { name: 'RangeError' } },
    ]);
    const tasks = (await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}/tasks?limit=3`, headers: ADA })).json();
    expect(tasks.tasks.map((r: { index: number }) => r.index)).toEqual([0, 1, 2]);
    expect(tasks.tasks[0]).toEqual({ index: 0, state: 'done', input: 1, output: 10, error: null });
    expect(tasks.next).toBe(2);
    const failedTasks = (await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}/tasks?state=failed`, headers: ADA })).json();
    expect(failedTasks.tasks.map((r: { index: number }) => r.index)).toEqual([2, 5]);
    const fails = (await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}/failures?limit=1`, headers: ADA })).json();
    expect(fails).toMatchObject({ failures: [{ index: 2 }], next: 2 });
    const list = (await http.app.inject({ method: 'GET', url: '/api/v1/jobs?state=done,failed', headers: ADA })).json();
    expect(list.jobs.map((j: { ticket: string }) => j.ticket)).toEqual([t]);
    expect((await http.app.inject({ method: 'GET', url: '/api/v1/jobs?state=queued', headers: ADA })).json().jobs).toEqual([]);
  });

  it('list pages with next/after, newest first', async () => {
    const tickets = [];
    for (let i = 0; i < 5; i++) tickets.push(await submit(ADA, { ...DOUBLE, hold: true, inputs: [i] }));
    const p1 = (await http.app.inject({ method: 'GET', url: '/api/v1/jobs?limit=2', headers: ADA })).json();
    expect(p1.jobs.map((j: { ticket: string }) => j.ticket)).toEqual([tickets[4], tickets[3]]);
    const p2 = (await http.app.inject({ method: 'GET', url: `/api/v1/jobs?limit=2&after=${p1.next}`, headers: ADA })).json();
    expect(p2.jobs.map((j: { ticket: string }) => j.ticket)).toEqual([tickets[2], tickets[1]]);
  });

  it('actions: hold, release, cancel, resubmit (body or query failed), 409 naming the state; DELETE 204', async () => {
    const t = await submit(ADA, { ...DOUBLE, hold: true, inputs: [1] });
    const post = (a: string, extra: object = {}) => http.app.inject({ method: 'POST', url: `/api/v1/jobs/${t}/${a}`, headers: ADA, ...extra });
    const released = await post('release');
    expect([released.statusCode, released.json().state]).toEqual([200, 'queued']);
    await settled(t);
    const conflict = await post('hold');
    expect(conflict.statusCode).toBe(409);
    expect(conflict.json().error).toMatchObject({ code: 'FARM_ERR_JOB_STATE', state: 'done' });
    expect((await post('resubmit', { payload: { failed: true } })).json().state).toBe('queued');
    expect((await post('hold')).json().state).toBe('held');
    expect((await post('cancel', { headers: { ...ADA, 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=1' })).json().state).toBe('cancelled');
    const viaQuery = await http.app.inject({ method: 'POST', url: `/api/v1/jobs/${t}/resubmit?failed=true`, headers: ADA });
    expect(viaQuery.json().state).toBe('queued');
    const bad = await post('resubmit', { payload: { failed: 'yes' } });
    expect([bad.statusCode, bad.json().error.field]).toEqual([400, 'failed']);
    const del = await http.app.inject({ method: 'DELETE', url: `/api/v1/jobs/${t}`, headers: ADA });
    expect(del.statusCode).toBe(204);
    expect((await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}`, headers: ADA })).statusCode).toBe(404);
  });

  it('workers, tokens (challenge + create with the farm key; a wrong proof 401)', async () => {
    expect((await http.app.inject({ method: 'GET', url: '/api/v1/workers', headers: ADA })).json().workers[0]).toMatchObject({
      id: 'w1',
      host: 'alpha',
      threads: 2,
    });
    await http.close();
    const key = Buffer.alloc(32, 7);
    svc = new FakeJobService({ key });
    await start();
    const { tokenProof } = await import('../../../src/service/index.js');
    const nonce = (await http.app.inject({ method: 'POST', url: '/api/v1/tokens/challenge' })).json().nonce as string;
    const wrong = await http.app.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      payload: { user: 'ada', nonce, proof: tokenProof(Buffer.alloc(32, 8), { user: 'ada', admin: false, nonce, certFingerprint: '' }) },
    });
    expect(wrong.statusCode).toBe(401);
    const nonce2 = (await http.app.inject({ method: 'POST', url: '/api/v1/tokens/challenge' })).json().nonce as string;
    const ok = await http.app.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      payload: { user: 'ada', admin: true, nonce: nonce2, proof: tokenProof(key, { user: 'ada', admin: true, nonce: nonce2, certFingerprint: '' }) },
    });
    expect(ok.statusCode).toBe(201);
    expect(ok.json()).toMatchObject({ user: 'ada', admin: true });
    const token = ok.json().token as string;
    expect((await http.app.inject({ method: 'GET', url: '/api/v1/jobs?all=true', headers: { authorization: `Bearer ${token}` } })).statusCode).toBe(200);
    const badUser = await http.app.inject({ method: 'POST', url: '/api/v1/tokens', payload: { user: 'a b', nonce: 'x', proof: 'y' } });
    expect([badUser.statusCode, badUser.json().error.field]).toEqual([400, 'user']);
  });

  it('after beginShutdown: new jobs and actions 503, reads go on', async () => {
    const t = await submit();
    http.beginShutdown();
    const r = await http.app.inject({ method: 'POST', url: '/api/v1/jobs', headers: ADA, payload: { ...DOUBLE, inputs: [1] } });
    expect([r.statusCode, r.json().error.code]).toEqual([503, 'FARM_ERR_SHUTTING_DOWN']);
    expect((await http.app.inject({ method: 'POST', url: `/api/v1/jobs/${t}/cancel`, headers: ADA })).statusCode).toBe(503);
    expect((await http.app.inject({ method: 'GET', url: `/api/v1/jobs/${t}`, headers: ADA })).statusCode).toBe(200);
    expect((await http.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(503);
  });
});

describe('streaming over real sockets', () => {
  it('an inline-stage job with plain fetch: NDJSON submit, status, results', async () => {
    const body = `${JSON.stringify({ stages: [{ source: 'export default (x) => x * 2' }], name: 'fetch' })}\n${[1, 2, 3, 4].join('\n')}\n`;
    const r = await fetch(`${url}/api/v1/jobs`, { method: 'POST', headers: { ...ADA, 'content-type': 'application/x-ndjson' }, body });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toMatch(/^\/api\/v1\/jobs\//);
    const { ticket } = (await r.json()) as { ticket: string };
    await settled(ticket);
    const res = await fetch(`${url}/api/v1/jobs/${ticket}/results`, { headers: ADA });
    expect(await res.text()).toBe([2, 4, 6, 8].map((o, i) => `{"index":${i},"output":${o}}\n`).join(''));
  });

  it.skipIf(spawnSync('curl', ['--version']).status !== 0)("the same job with curl, as docs/API.md's example", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tf-curl-'));
    const file = join(dir, 'body.ndjson');
    writeFileSync(file, `{"stages":[{"source":"export default (x) => x * 2"}]}\n${Array.from({ length: 100 }, (_, i) => i + 1).join('\n')}\n`);
    const { spawn } = await import('node:child_process');
    const out = await new Promise<string>((resolve, reject) => {
      const c = spawn('curl', [
        '-sS',
        '-X',
        'POST',
        '-H',
        'Authorization: Bearer tok-ada',
        '-H',
        'Content-Type: application/x-ndjson',
        '--data-binary',
        `@${file}`,
        `${url}/api/v1/jobs`,
      ]);
      let s = '';
      c.stdout.on('data', (d: Buffer) => (s += d.toString()));
      c.on('error', reject);
      c.on('close', (code) => (code === 0 ? resolve(s) : reject(new Error(`curl exited ${code}`))));
    });
    const { ticket } = JSON.parse(out) as { ticket: string };
    await settled(ticket);
    const res = await fetch(`${url}/api/v1/jobs/${ticket}/results`, { headers: ADA });
    const lines = (await res.text()).trim().split('\n');
    expect(lines).toHaveLength(100);
    expect(JSON.parse(lines[99]!)).toEqual({ index: 99, output: 200 });
    expect(readFileSync(file, 'utf8').length).toBeGreaterThan(0);
  });

  it('an NDJSON body streams into submit line by line (the service sees lines before the body ends)', async () => {
    const { request } = await import('node:http');
    const body = new PassThrough();
    const done = new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request(`${url}/api/v1/jobs`, { method: 'POST', headers: { ...ADA, 'content-type': 'application/x-ndjson' } }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      body.pipe(req);
    });
    body.write(JSON.stringify({ ...DOUBLE, hold: true }) + '\n');
    for (let i = 0; i < 1000; i++) body.write(`${i}\n`);
    await until(() => svc.consumedLines >= 1000, 'the first 1000 lines consumed while the body is still open');
    for (let i = 1000; i < 2000; i++) body.write(`${i}\n`);
    body.end();
    const r = await done;
    expect(r.status).toBe(201);
    expect(svc.jobs.get(JSON.parse(r.text).ticket)?.inputs).toHaveLength(2000);
  });

  it('a client that disconnects mid-upload creates no job, and the server goes on', async () => {
    const sock = netConnect(Number(new URL(url).port), '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write(
      `POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-ada\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n`,
    );
    const chunk = `${JSON.stringify(DOUBLE)}\n1\n2\n`;
    sock.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`);
    await until(() => svc.consumedLines >= 2, 'lines consumed');
    sock.destroy();
    await until(async () => (await fetch(`${url}/healthz`)).status === 200, 'server alive');
    expect(svc.jobs.size).toBe(0);
  });

  async function readEvents(ticket: string, headers: Record<string, string>, until: (ids: number[]) => boolean): Promise<{ ids: number[]; raw: string }> {
    const ac = new AbortController();
    const res = await fetch(`${url}/api/v1/jobs/${ticket}/events`, { headers, signal: ac.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const ids: number[] = [];
    let raw = '';
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    try {
      while (!until(ids)) {
        const { value, done } = await reader.read();
        if (done) break;
        raw += dec.decode(value);
        ids.length = 0;
        for (const m of raw.matchAll(/^id: (\d+)$/gm)) ids.push(Number(m[1]));
      }
    } finally {
      ac.abort();
      await reader.cancel().catch(() => {});
    }
    return { ids, raw };
  }

  it('SSE: id: per event, Last-Event-ID and ?after= resume without repeats, keepalive comments, unsubscribed on close', async () => {
    const t = await submit(ADA, { ...DOUBLE, hold: true, inputs: [1, 2, 3] });
    for (let i = 0; i < 3; i++) svc.emit(t, 'progress', { n: i });
    const all = await readEvents(t, ADA, (ids) => ids.length >= 4);
    expect(all.ids).toEqual([1, 2, 3, 4]);
    expect(all.raw).toMatch(/id: 1\nevent: state\ndata: \{"state":"held","from":null\}\n\n/);
    const resumed = await readEvents(t, { ...ADA, 'last-event-id': '2' }, (ids) => ids.length >= 2);
    expect(resumed.ids).toEqual([3, 4]);
    // live events after a resume, then keepalive comments while idle
    const ac = new AbortController();
    const res = await fetch(`${url}/api/v1/jobs/${t}/events?after=4`, { headers: ADA, signal: ac.signal });
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let raw = '';
    await until(() => svc.subscribers(t) === 1, 'subscribed');
    svc.emit(t, 'progress', { n: 9 });
    while (!raw.includes(': keepalive')) raw += dec.decode((await reader.read()).value);
    expect([...raw.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]))).toEqual([5]);
    ac.abort();
    await reader.cancel().catch(() => {});
    await until(() => svc.subscribers(t) === 0, 'unsubscribed after the client left');
    const bad = await fetch(`${url}/api/v1/jobs/${t}/events`, { headers: { ...ADA, 'last-event-id': 'abc' } });
    expect(bad.status).toBe(400);
  });
});

describe('session cookie (dashboard)', () => {
  async function signIn(): Promise<string> {
    const r = await http.app.inject({ method: 'POST', url: '/api/v1/session', headers: { 'x-taskfarm-request': '1' }, payload: { token: 'tok-ada' } });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ user: 'ada', admin: false });
    const set = String(r.headers['set-cookie']);
    expect(set).toMatch(/^taskfarm_session=tok-ada;/);
    expect(set).toMatch(/HttpOnly/);
    expect(set).toMatch(/SameSite=Strict/);
    expect(set).not.toMatch(/Secure/); // plain HTTP on loopback
    return 'taskfarm_session=tok-ada';
  }

  it('signs in, reads with the cookie, and refuses cross-site writes', async () => {
    const cookie = await signIn();
    expect((await http.app.inject({ method: 'GET', url: '/api/v1/session', headers: { cookie } })).json()).toEqual({ user: 'ada', admin: false });
    expect((await http.app.inject({ method: 'GET', url: '/api/v1/jobs', headers: { cookie } })).statusCode).toBe(200);
    const payload = { ...DOUBLE, inputs: [1] };
    const noHeader = await http.app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { cookie }, payload });
    expect([noHeader.statusCode, noHeader.json().error.code]).toEqual([403, 'FARM_ERR_FORBIDDEN']);
    const crossSite = await http.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { cookie, 'x-taskfarm-request': '1', 'sec-fetch-site': 'cross-site' },
      payload,
    });
    expect(crossSite.statusCode).toBe(403);
    const otherOrigin = await http.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { cookie, 'x-taskfarm-request': '1', origin: 'http://evil.example', host: 'localhost:80' },
      payload,
    });
    expect(otherOrigin.statusCode).toBe(403);
    expect(svc.jobs.size).toBe(0);
    const ok = await http.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { cookie, 'x-taskfarm-request': '1', 'sec-fetch-site': 'same-origin', origin: 'http://localhost:80', host: 'localhost:80' },
      payload,
    });
    expect(ok.statusCode).toBe(201);
    const out = await http.app.inject({ method: 'DELETE', url: '/api/v1/session', headers: { cookie, 'x-taskfarm-request': '1' } });
    expect(out.statusCode).toBe(204);
    expect(String(out.headers['set-cookie'])).toMatch(/taskfarm_session=;/);
  });

  it('sign-in needs the CSRF header and a valid token; a revoked token in the cookie is 401', async () => {
    expect((await http.app.inject({ method: 'POST', url: '/api/v1/session', payload: { token: 'tok-ada' } })).statusCode).toBe(403);
    expect(
      (await http.app.inject({ method: 'POST', url: '/api/v1/session', headers: { 'x-taskfarm-request': '1' }, payload: { token: 'nope' } })).statusCode,
    ).toBe(401);
    const cookie = await signIn();
    svc.tokens.delete('tok-ada');
    const r = await http.app.inject({ method: 'GET', url: '/api/v1/jobs', headers: { cookie } });
    expect(r.statusCode).toBe(401);
  });
});

describe('OpenAPI and metrics', () => {
  it('GET /api/openapi.json is OpenAPI 3 with every route, each path of docs/API.md', async () => {
    const doc = (await http.app.inject({ method: 'GET', url: '/api/openapi.json', headers: ADA })).json<{
      openapi: string;
      paths: Record<string, Record<string, unknown>>;
    }>();
    expect(doc.openapi).toMatch(/^3\./);
    for (const r of http.routes) {
      const path = r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
      expect(doc.paths[path], path).toBeDefined();
      expect(doc.paths[path]![r.method.toLowerCase()], `${r.method} ${path}`).toBeDefined();
    }
    const apiMd = readFileSync(new URL('../../../docs/API.md', import.meta.url), 'utf8');
    const documented = new Set([...apiMd.matchAll(/`(GET|POST|PUT|DELETE) (\/[^`\s?]+)`/g)].map((m) => `${m[1]} ${m[2]!.replace(/…/g, '')}`));
    for (const d of documented) {
      const [method, path] = d.split(' ') as [string, string];
      if (path.includes('{cancel|') || path === '/') continue;
      expect(doc.paths[path]?.[method.toLowerCase()], `docs/API.md lists ${d}`).toBeDefined();
    }
    const submit = doc.paths['/api/v1/jobs']!['post'] as { requestBody: { content: Record<string, unknown> } };
    expect(Object.keys(submit.requestBody.content).sort()).toEqual(['application/json', 'application/x-ndjson']);
  });

  it('/metrics parses as Prometheus exposition and carries the registry passed in', async () => {
    await http.close();
    const registry = new Registry();
    const { Gauge } = await import('prom-client');
    new Gauge({ name: 'taskfarm_jobs', help: 'Jobs by state', labelNames: ['state'], registers: [registry] }).set({ state: 'running' }, 2);
    await start({ registry });
    await http.app.inject({ method: 'GET', url: '/api/v1/jobs', headers: ADA });
    const r = await http.app.inject({ method: 'GET', url: '/metrics' });
    expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    const families = parsePrometheusTextFormat(r.body);
    const byName = new Map(families.map((f) => [f.name, f]));
    expect(byName.get('taskfarm_jobs')?.metrics[0]).toMatchObject({ labels: { state: 'running' }, value: '2' });
    expect(byName.get('taskfarm_http_requests_total')?.type).toBe('COUNTER');
    expect(byName.get('taskfarm_http_requests_total')?.metrics).toContainEqual(
      expect.objectContaining({ labels: { method: 'GET', route: '/api/v1/jobs', status: '200' } }),
    );
    expect(byName.get('taskfarm_http_request_duration_seconds')?.type).toBe('HISTOGRAM');
  });
});

describe('nothing a client sends crashes the server', () => {
  it('garbage bodies, request lines, huge headers, a slow body', async () => {
    const port = Number(new URL(url).port);
    const raw = async (text: string | Buffer): Promise<string> =>
      new Promise((resolve) => {
        const s = netConnect(port, '127.0.0.1');
        let out = '';
        s.on('data', (d) => (out += d.toString()));
        s.on('error', () => resolve(out));
        s.on('close', () => resolve(out));
        s.on('connect', () => s.end(text));
      });
    const inputs = [
      'GARBAGE\r\n\r\n',
      'GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-ada\r\nContent-Length: -5\r\n\r\n',
      `GET /${'a'.repeat(100_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
      `GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(100_000)}\r\n\r\n`,
      Buffer.from([0, 255, 1, 254, 13, 10, 13, 10]),
      'POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-ada\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{"a":',
    ];
    for (const input of inputs) await raw(input);
    const big = await raw(`GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(100_000)}\r\n\r\n`);
    expect(big).toMatch(/^HTTP\/1\.1 431/);
    for (let i = 0; i < 30; i++) {
      const body =
        i % 3 === 0
          ? Buffer.from(Array.from({ length: 200 }, (_, j) => (i * 31 + j * 17) % 256))
          : JSON.stringify({ stages: [{ source: i }], inputs: { x: i } });
      const type = ['application/json', 'application/x-ndjson', 'text/javascript'][i % 3]!;
      const r = await fetch(`${url}/api/v1/jobs`, { method: 'POST', headers: { ...ADA, 'content-type': type }, body });
      expect([400, 413, 415]).toContain(r.status);
      const json = (await r.json()) as { error: { code: string } };
      expect(json.error.code).toMatch(/^FARM_ERR_/);
    }
    // a slow body: bytes trickle in; other requests are served meanwhile
    const slow = netConnect(port, '127.0.0.1');
    await new Promise((r) => slow.once('connect', r));
    slow.write(
      'POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-ada\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"stag',
    );
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    slow.destroy();
    expect((await fetch(`${url}/api/v1/jobs`, { headers: ADA })).status).toBe(200);
    expect(svc.jobs.size).toBe(0);
  });

  it('a service method that throws a non-FarmError answers 500 FARM_ERR_INTERNAL and the server goes on', async () => {
    svc.workers = async () => {
      throw new TypeError('boom');
    };
    const r = await fetch(`${url}/api/v1/workers`, { headers: ADA });
    expect(r.status).toBe(500);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('FARM_ERR_INTERNAL');
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
  });
});

describe('static files', () => {
  it('serves the configured folder at / with index.html as the fallback of non-API paths', async () => {
    await http.close();
    const dir = mkdtempSync(join(tmpdir(), 'tf-static-'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>taskfarm</title>');
    writeFileSync(join(dir, 'app.js'), 'console.log(1)');
    await start({ staticDir: dir });
    expect(await (await fetch(`${url}/`)).text()).toMatch(/<title>taskfarm/);
    expect((await fetch(`${url}/app.js`)).headers.get('content-type')).toMatch(/javascript/);
    expect(await (await fetch(`${url}/jobs/123`)).text()).toMatch(/<title>taskfarm/);
    expect((await fetch(`${url}/api/v1/nothing`, { headers: ADA })).status).toBe(404);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
  });
});
