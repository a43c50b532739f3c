export { Minimization, minimizeWith } from './minimize.js';
export {
  FarmMinimization,
  minimize,
  type FarmObjective,
  type FarmMinimizeOptions,
  type MinimizeJobOptions,
  type FarmMinimizeResult,
  type FarmSummary,
  type EvaluatedEvent,
  type FarmMinimizationEvents,
} from './farm-minimization.js';
export type {
  MinimizeOptions,
  MinimizeResult,
  MinimizeCheckpoint,
  MinimizationEvents,
  GenerationEvent,
  HistoryEntry,
  BestPoint,
  StopReason,
  ToleranceOptions,
} from './minimize.js';
export { DifferentialEvolution, DeStrategy, type DifferentialEvolutionOptions } from './de.js';
export { Bfgs, type BfgsOptions } from './bfgs.js';
export { localEvaluator, type Objective, type ObjectiveModule, type LocalEvaluatorOptions } from './local-evaluator.js';
export { resolveSpace } from './space.js';
export type { Optimizer, OptimizerConfig, OptimizerDone, CurrentPopulation, Population, Space, ResolvedSpace, Evaluator, EvaluationContext } from './types.js';
