export {
  generateFarmKey,
  parseFarmKey,
  resolveFarmKey,
  writeNewKeyFile,
  defaultKeyPath,
  keyFileTooOpen,
  NO_KEY_HELP,
  FARM_KEY_BYTES,
  type ResolvedFarmKey,
} from './farm-key.js';
export { workerProof, clientProof, proofsEqual, newClientNonce, WorkerNonces } from './handshake.js';
export { loadOrCreateTlsIdentity, certFingerprint, type TlsIdentity } from './tls.js';
