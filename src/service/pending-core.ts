/**
 * TODO(merge svc): placeholder for the service core's factory (branch `svc`). At the merge, delete
 * this file and point the imports of `createJobService` (src/service/index.ts,
 * src/service/client/connect.ts) at the core's export. Until then an in-process `connect()` and
 * `taskfarm serve` fail with this error; everything above the JobService contract is tested
 * against test/helpers/fake-job-service.ts.
 */
import { FarmError } from '../errors.js';
import type { Logger } from '../log.js';
import type { JobService } from './types.js';

/** What `taskfarm serve` and `connect()` pass the core's factory (the core may take more). */
export interface JobServiceFactoryOptions {
  /** SQLite path or postgres:// URL. @default the embedded default store */
  readonly store?: string;
  /** Static peers `host:port` (mDNS when absent). */
  readonly peers?: readonly string[];
  readonly farm?: string;
  readonly keyFile?: string;
  readonly key?: Uint8Array;
  readonly insecure?: boolean;
  /** The manager's TLS certificate fingerprint ('' over plain HTTP): token proofs cover it. */
  readonly certFingerprint?: string;
  /** prom-client Registry the core registers its series in. */
  readonly registry?: unknown;
  readonly logger?: Logger;
  readonly [option: string]: unknown;
}

/** TODO(merge svc): the core's `createJobService`. */
export async function createJobService(options: JobServiceFactoryOptions = {}): Promise<JobService> {
  void options;
  throw new FarmError('FARM_ERR_INTERNAL', 'The job service core is not part of this build yet (branch svc): TODO(merge svc) in src/service/pending-core.ts');
}
