/**
 * JSON schemas of the manager's HTTP API (docs/API.md). The routes validate requests against them
 * (so a 400 names the field) and the OpenAPI document at `GET /api/openapi.json` is generated from
 * the same objects, so the two cannot drift apart.
 */
import { JOB_STATES, TASK_STATES } from '../../store/index.js';

/** sha256 hex of a bundle. */
export const SHA256_PATTERN = '^[0-9a-f]{64}$';
/** A ticket: UUID text. */
export const TICKET_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';

/** The largest priority magnitude the API accepts. */
export const MAX_PRIORITY = 1_000_000;

const errorBody = {
  type: 'object',
  description: 'Every error, whatever the route',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string', description: 'Stable code (README error table)' },
        message: { type: 'string' },
        field: { type: 'string', description: 'The offending field, as a JSON path' },
        line: { type: 'integer', description: '1-based line of an NDJSON body' },
        index: { type: 'integer', description: 'Index of the input concerned' },
        state: { type: 'string', description: "The job's state (409)" },
      },
    },
  },
} as const;

/** Error responses every authenticated route can give. */
export const errorResponses = {
  400: errorBody,
  401: errorBody,
  403: errorBody,
  404: errorBody,
  413: errorBody,
  500: errorBody,
  503: errorBody,
} as const;

const stage = {
  type: 'object',
  description: 'An uploaded bundle by hash, or inline ES module source the manager bundles',
  additionalProperties: false,
  properties: {
    bundle: { type: 'string', pattern: SHA256_PATTERN, description: 'sha256 hex of a bundle uploaded with PUT /api/v1/bundles/{sha256}' },
    source: { type: 'string', minLength: 1, maxLength: 1_048_576, description: 'ES module source with a default export (a function or a process object)' },
    name: { type: 'string', maxLength: 200 },
  },
  oneOf: [{ required: ['bundle'] }, { required: ['source'] }],
} as const;

const jobSpecProperties = {
  name: { type: 'string', maxLength: 200, default: '' },
  stages: { type: 'array', minItems: 1, maxItems: 64, items: stage },
  priority: { type: 'integer', minimum: -MAX_PRIORITY, maximum: MAX_PRIORITY, description: 'Higher first', default: 0 },
  weight: { type: 'number', exclusiveMinimum: 0, maximum: 1_000_000, default: 1 },
  retries: { type: 'integer', minimum: 0, maximum: 1_000_000 },
  maxAttempts: { type: 'integer', minimum: 1, maximum: 1_000_000 },
  taskTimeoutMs: { type: 'integer', minimum: 0, maximum: 2_147_483_647 },
  errors: { type: 'string', enum: ['fail', 'collect'], default: 'fail' },
  hold: { type: 'boolean', default: false },
  kind: { type: 'string', enum: ['map', 'optimize'], default: 'map' },
  params: { description: 'Optimisation settings (issue 13)' },
} as const;

/** The job description: the first line of an NDJSON submit (no `inputs`). */
export const jobSpecSchema = {
  $id: 'JobSpec',
  type: 'object',
  additionalProperties: false,
  required: ['stages'],
  properties: jobSpecProperties,
} as const;

/** A JSON submit: the job description with its inputs inline. */
export const jobSubmitSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['stages', 'inputs'],
  properties: { ...jobSpecProperties, inputs: { type: 'array', description: 'The inputs, one JSON value each' } },
} as const;

/** An NDJSON submit as OpenAPI shows it: the description line, then one input per line (validated line by line, not as a whole). */
export const ndjsonSubmitSchema = {
  description: 'Line 1: the job description (JobSpec without inputs); every following line: one input (JSON). Streamed: no total limit.',
} as const;

const counts = {
  type: 'object',
  properties: { pending: { type: 'integer' }, running: { type: 'integer' }, done: { type: 'integer' }, failed: { type: 'integer' } },
} as const;

const taskFailure = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    message: { type: 'string' },
    stack: { type: 'string' },
    code: { type: 'string' },
    attempts: { type: 'integer' },
  },
} as const;

/** A job's status. */
export const statusSchema = {
  type: 'object',
  properties: {
    ticket: { type: 'string' },
    name: { type: 'string' },
    owner: { type: 'string' },
    kind: { type: 'string', enum: ['map', 'optimize'] },
    state: { type: 'string', enum: [...JOB_STATES] },
    total: { type: 'integer' },
    counts,
    rate: { type: ['number', 'null'], description: 'Tasks per second over the last 10 s' },
    etaSeconds: { type: ['number', 'null'] },
    failures: {
      type: 'array',
      items: {
        type: 'object',
        properties: { index: { type: 'integer' }, error: { type: 'object', properties: { name: { type: 'string' }, message: { type: 'string' } } } },
      },
    },
    options: { type: 'object', additionalProperties: true },
    createdAt: { type: 'string', format: 'date-time' },
    startedAt: { type: ['string', 'null'], format: 'date-time' },
    finishedAt: { type: ['string', 'null'], format: 'date-time' },
    error: { type: ['object', 'null'], properties: { code: { type: 'string' }, message: { type: 'string' }, index: { type: 'integer' } } },
    result: { description: "An optimisation's best so far, or null" },
    generation: { type: ['integer', 'null'] },
    lastEventSeq: {
      type: 'integer',
      minimum: 0,
      description: "Sequence number of the job's last event: open the event stream with ?after= it to get only what happens next",
    },
  },
} as const;

/** `{ticket}` path parameter. */
export const ticketParams = {
  type: 'object',
  required: ['ticket'],
  properties: { ticket: { type: 'string', pattern: TICKET_PATTERN, description: "The job's ticket (UUID)" } },
} as const;

/** `{sha256}` path parameter. */
export const bundleParams = {
  type: 'object',
  required: ['sha256'],
  properties: { sha256: { type: 'string', pattern: SHA256_PATTERN } },
} as const;

export const missingBundlesBody = {
  type: 'object',
  additionalProperties: false,
  required: ['hashes'],
  properties: { hashes: { type: 'array', maxItems: 1000, items: { type: 'string', pattern: SHA256_PATTERN } } },
} as const;

export const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    all: { type: 'boolean', default: false, description: "Every user's jobs (admins only)" },
    state: { type: 'string', pattern: `^(${JOB_STATES.join('|')})(,(${JOB_STATES.join('|')}))*$`, description: 'A comma list of job states' },
    limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
    after: { type: 'string', maxLength: 1000, description: "The previous page's `next`" },
  },
} as const;

export const resultsQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    failed: { type: 'boolean', default: false, description: 'Failures instead of outputs' },
    after: { type: 'integer', minimum: -1, description: 'Resume after this input index' },
  },
} as const;

export const tasksQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    state: { type: 'string', enum: [...TASK_STATES] },
    after: { type: 'integer', minimum: -1 },
    limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
  },
} as const;

export const failuresQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { after: { type: 'integer', minimum: -1 }, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
} as const;

export const eventsQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { after: { type: 'integer', minimum: 0, description: 'Resume after this sequence number (or send Last-Event-ID)' } },
} as const;

export const resubmitQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { failed: { type: 'boolean', description: 'Only the failed tasks run again' } },
} as const;

export const tokenBody = {
  type: 'object',
  additionalProperties: false,
  required: ['user', 'nonce', 'proof'],
  properties: {
    user: { type: 'string', minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9._@-]+$' },
    admin: { type: 'boolean', default: false },
    label: { type: 'string', maxLength: 200 },
    nonce: { type: 'string', minLength: 1, maxLength: 200 },
    proof: { type: 'string', minLength: 1, maxLength: 200 },
  },
} as const;

export const sessionBody = {
  type: 'object',
  additionalProperties: false,
  required: ['token'],
  properties: { token: { type: 'string', minLength: 1, maxLength: 1000 } },
} as const;

export const callerSchema = {
  type: 'object',
  properties: { user: { type: 'string' }, admin: { type: 'boolean' } },
} as const;

export const workerSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    host: { type: 'string' },
    address: { type: 'string' },
    threads: { type: 'integer' },
    local: { type: 'boolean' },
    state: { type: 'string', enum: ['idle', 'busy', 'draining', 'lost'] },
    inFlight: { type: 'integer' },
    completed: { type: 'integer' },
    avgTaskMs: { type: 'number' },
    jobs: { type: 'array', items: { type: 'string' } },
    lost: { type: 'string' },
  },
} as const;

export const taskRowSchema = {
  type: 'object',
  properties: {
    index: { type: 'integer' },
    state: { type: 'string', enum: [...TASK_STATES] },
    input: { description: 'The input, as JSON' },
    output: { description: 'The output (done tasks), or null' },
    error: { oneOf: [taskFailure, { type: 'null' }] },
  },
} as const;

export const failureRowSchema = { type: 'object', properties: { index: { type: 'integer' }, error: taskFailure } } as const;

/** `{id}` path parameter of a worker. */
export const workerParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 200, description: "The worker's id (GET /api/v1/workers)" } },
} as const;

/** A histogram of task durations in seconds. */
export const histogramSchema = {
  type: 'object',
  properties: {
    bounds: { type: 'array', items: { type: 'number' }, description: 'Upper bounds of the buckets, seconds (those of taskfarm_task_duration_seconds)' },
    counts: {
      type: 'array',
      items: { type: 'integer' },
      description: 'Tasks per bucket: counts[i] took more than bounds[i-1] and at most bounds[i]; the last one is above the last bound',
    },
    count: { type: 'integer' },
    sum: { type: 'number', description: 'Sum of the durations, seconds' },
  },
} as const;

/** `GET /api/v1/jobs/{ticket}/stats`. */
export const jobStatsSchema = {
  type: 'object',
  properties: {
    durations: histogramSchema,
    throughput: {
      type: 'object',
      properties: {
        intervalSeconds: { type: 'number' },
        start: { type: 'string', format: 'date-time' },
        done: { type: 'array', items: { type: 'integer' }, description: 'Tasks done per interval from start, oldest first (at most 720)' },
        failed: { type: 'array', items: { type: 'integer' } },
      },
    },
    workers: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          id: { type: 'string' },
          host: { type: 'string' },
          done: { type: 'integer' },
          failed: { type: 'integer' },
          avgTaskMs: { type: 'number', description: 'Mean run time of its done tasks of this job, ms (-1: none yet)' },
        },
      },
    },
  },
} as const;

/** `GET /api/v1/workers/{id}`. */
export const workerDetailSchema = {
  type: 'object',
  properties: {
    worker: workerSchema,
    jobs: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          ticket: { type: 'string' },
          name: { type: 'string' },
          done: { type: 'integer' },
          failed: { type: 'integer' },
          avgTaskMs: { type: 'number' },
        },
      },
    },
    durations: histogramSchema,
    losses: {
      type: 'array',
      items: {
        type: 'object',
        properties: { at: { type: 'string', format: 'date-time' }, reason: { type: 'string' }, requeued: { type: 'integer' } },
      },
    },
  },
} as const;
