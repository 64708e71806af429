/** Cross-backend conformance: op, sampler and model cases judged against an oracle backend. */
export { runConformance, ConformanceSession, caseMatcher, type ConformanceOptions, type BackendFactory } from './run-conformance.js';
export { describeConformance, type DescribeConformanceOptions } from './mocha.js';
export { opCases } from './op-cases.js';
export { THRESHOLDS, type OpCase, type KernelSlot } from './op-case.js';
export { MODEL_THRESHOLDS, modelThresholds } from './model-cases.js';
export { LOSSY_THRESHOLDS, opThreshold, type LossyThresholds } from './lossy-weights.js';
export { compare, type Comparison } from './compare.js';
export { formatReport, type ConformanceReport, type OpResult, type ModelResult, type ModelCheck, type CaseStatus } from './report.js';
