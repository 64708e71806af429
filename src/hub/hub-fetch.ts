/**
 * The `fetch` every hub call goes through: it adds the token to requests for the hub itself
 * (never to the storage host a large file redirects to) and turns hub errors into one-line
 * PaliGemmaErrors that name the model and never the token.
 */
import { HubApiError } from '@huggingface/hub';
import { PaliGemmaError } from '../interfaces/errors.js';
import type { HubSettings } from './hub-settings.js';

export interface HubFetch {
  fetch: typeof fetch;
  /** The `X-Error-Code` of the last failed response (`GatedRepo`, `RepoNotFound`, …). */
  lastErrorCode(): string | undefined;
}

export function hubFetch(settings: HubSettings): HubFetch {
  const origin = new URL(settings.endpoint).origin;
  let errorCode: string | undefined;
  const wrapped = (async (input: Parameters<typeof fetch>[0], init: RequestInit = {}) => {
    const url = new URL(input instanceof Request ? input.url : input.toString());
    const headers = new Headers(init.headers);
    if (settings.token && url.origin === origin) headers.set('Authorization', `Bearer ${settings.token}`);
    const response = await fetch(url, { ...init, headers });
    if (!response.ok) errorCode = response.headers.get('X-Error-Code') ?? undefined;
    return response;
  }) as typeof fetch;
  return { fetch: wrapped, lastErrorCode: () => errorCode };
}

/**
 * No answer from the hub, or a server error (it is down): with a complete copy in the cache
 * the caller uses that instead, as Python's client does.
 */
export class HubUnreachableError extends PaliGemmaError {
  constructor(message: string) {
    super(message, 'network');
  }
}

/** A failed hub call as the user should read it. */
export function hubError(e: unknown, repo: string, revision: string, settings: HubSettings, errorCode: string | undefined): unknown {
  const page = `${settings.endpoint}/${repo}`;
  if (e instanceof HubApiError) {
    // The hub answers 401 RepoNotFound for a missing repo to an anonymous caller (it cannot tell
    // missing from private), so the error code decides before the status does.
    if (errorCode === 'GatedRepo' || (errorCode === undefined && e.statusCode === 403)) {
      const how = settings.token
        ? 'your HF_TOKEN has no access to it'
        : 'no HF_TOKEN is set (nor a token file from hf auth login)';
      return new PaliGemmaError(`model ${repo} is gated and ${how}: accept the licence on ${page} and set HF_TOKEN to a token of that account`, 'gated');
    }
    if (errorCode === 'RepoNotFound' || (e.statusCode === 404 && errorCode !== 'RevisionNotFound' && errorCode !== 'EntryNotFound')) {
      return new PaliGemmaError(`model ${repo} not found on ${settings.endpoint}${settings.token ? '' : ' (if it is private or gated, set HF_TOKEN)'}`, 'not_found');
    }
    if (errorCode === 'RevisionNotFound' || e.statusCode === 404) {
      return new PaliGemmaError(`revision ${revision} not found in model ${repo}`, 'not_found');
    }
    if (e.statusCode === 401) {
      return settings.token
        ? new PaliGemmaError(`the hub at ${settings.endpoint} refused HF_TOKEN for model ${repo} (401): set a valid token (HF_TOKEN, or hf auth login)`, 'gated')
        : new PaliGemmaError(`model ${repo} needs a login on ${settings.endpoint}: accept the licence on ${page} if it is gated, and set HF_TOKEN`, 'gated');
    }
    if (e.statusCode >= 500) return new HubUnreachableError(`the hub at ${settings.endpoint} answered ${e.statusCode} for model ${repo}: try again later, or set HF_HUB_OFFLINE=1 to use the cache only`);
    return new PaliGemmaError(`the hub at ${settings.endpoint} answered ${e.statusCode} for model ${repo}`, 'hub_error');
  }
  return e;
}
