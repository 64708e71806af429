/** Models by hub id: the Hugging Face cache shared with Python, downloads into it, the environment it reads. */
export { resolveModel, cachedSnapshot, modelDisplayName, type ResolveModelOptions } from './resolve-model.js';
export { downloadSnapshot, type DownloadPlan, type DownloadProgress, type DownloadSnapshotParams } from './download-snapshot.js';
export { cachedPaliGemmaModels, type CachedModel } from './cached-models.js';
export { hubSettings, hubCacheDir, hfHome, hubToken, type HubSettings } from './hub-settings.js';
export { parseModelReference, revisionOf, type ModelReference } from './model-reference.js';
export { HubUnreachableError } from './hub-fetch.js';
