import { AuthenticationError, FarmAbortError, ProtocolError, WorkerBusyError, WorkerLostError, type FarmError } from '../errors.js';
import { grpc, isServiceError } from './grpc.js';

/** The call that failed, for {@link fromServiceError}. */
export type WorkerOperation = 'describe' | 'recruit' | 'install' | 'compute' | 'release';

/**
 * The single mapping from a gRPC failure to a {@link FarmError}. gRPC status is about the
 * infrastructure only; a task's own failure travels in-band as a RemoteError.
 */
export function fromServiceError(err: unknown, workerId: string, operation: WorkerOperation, signal?: AbortSignal): FarmError {
  if (signal?.aborted === true) return new FarmAbortError('The run was aborted', { cause: signal.reason });
  if (!isServiceError(err)) {
    return new WorkerLostError(workerId, `${operation} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const details = err.details || err.message;
  switch (err.code) {
    case grpc.status.RESOURCE_EXHAUSTED:
      if (operation === 'recruit') return new WorkerBusyError(`Worker ${workerId} is busy: ${details}`, { cause: err });
      return new ProtocolError(`Worker ${workerId} refused ${operation}: ${details}`, { cause: err });
    case grpc.status.UNAUTHENTICATED:
      return new AuthenticationError(`Worker ${workerId} refused ${operation}: ${details}`, { cause: err });
    case grpc.status.FAILED_PRECONDITION:
    case grpc.status.INVALID_ARGUMENT:
    case grpc.status.UNIMPLEMENTED:
    case grpc.status.PERMISSION_DENIED:
      return new ProtocolError(`Worker ${workerId} refused ${operation}: ${details}`, { cause: err });
    case grpc.status.UNAVAILABLE:
      return new WorkerLostError(workerId, `${operation}: unreachable (${details})`, { cause: err });
    case grpc.status.CANCELLED:
      return new WorkerLostError(workerId, `${operation}: call cancelled (${details})`, { cause: err });
    case grpc.status.DEADLINE_EXCEEDED:
      return new WorkerLostError(workerId, `${operation}: no answer before the deadline`, { cause: err });
    default:
      return new WorkerLostError(workerId, `${operation}: ${grpc.status[err.code] ?? err.code}: ${details}`, { cause: err });
  }
}
