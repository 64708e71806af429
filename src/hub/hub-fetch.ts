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
  /** The `X-Error-Code` of the last failed response (`GatedRepo`, `RepositoryNotFound`, …). */
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

/** A failed hub call as the user should read it. */
export function hubError(e: unknown, repo: string, revision: string, settings: HubSettings, errorCode: string | undefined): unknown {
  const page = `${settings.endpoint}/${repo}`;
  if (e instanceof HubApiError) {
    if (errorCode === 'RepositoryNotFound' || (e.statusCode === 404 && errorCode !== 'RevisionNotFound' && errorCode !== 'EntryNotFound')) {
      return new PaliGemmaError(`model ${repo} not found on ${settings.endpoint}${settings.token ? '' : ' (if it is private or gated, set HF_TOKEN)'}`, 'not_found');
    }
    if (errorCode === 'RevisionNotFound' || e.statusCode === 404) {
      return new PaliGemmaError(`revision ${revision} not found in model ${repo}`, 'not_found');
    }
    if (e.statusCode === 401 || e.statusCode === 403) {
      const how = settings.token
        ? 'your HF_TOKEN has no access to it'
        : 'no HF_TOKEN is set (nor a token file from hf auth login)';
      return new PaliGemmaError(`model ${repo} is gated and ${how}: accept the licence on ${page} and set HF_TOKEN to a token of that account`, 'gated');
    }
    return new PaliGemmaError(`the hub at ${settings.endpoint} answered ${e.statusCode} for model ${repo}`, 'hub_error');
  }
  return e;
}
