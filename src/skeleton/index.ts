export { seq, farm, pipeline, normalForm, stagesOf, describeSkeleton, stageName } from './skeleton.js';
export type {
  Stage,
  InlineStage,
  ProcessObject,
  ProcessClass,
  StageContext,
  Skeleton,
  SeqSkeleton,
  FarmSkeleton,
  PipelineSkeleton,
  NormalForm,
  Program,
} from './types.js';
