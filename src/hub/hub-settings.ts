/**
 * Where the cache is, which hub to ask and with which token: the environment variables Python's
 * `huggingface_hub` reads, with the same defaults, so both clients share one cache and one login.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { HUB_URL } from '@huggingface/hub';

export interface HubSettings {
  /** The hub cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
  cacheDir: string;
  /** `HF_ENDPOINT` without a trailing slash, else the public hub. */
  endpoint: string;
  /** `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`), else the file `hf auth login` writes (`HF_TOKEN_PATH`, else `$HF_HOME/token`). Never print it. */
  token?: string;
  /** `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) set to 1/ON/YES/TRUE: no request at all. */
  offline: boolean;
}

type Env = Record<string, string | undefined>;

function expandUser(path: string): string {
  return path === '~' || path.startsWith('~/') ? join(homedir(), path.slice(1)) : path;
}

const TRUE_VALUES = new Set(['1', 'ON', 'YES', 'TRUE']);

export function isTrue(value: string | undefined): boolean {
  return value !== undefined && TRUE_VALUES.has(value.trim().toUpperCase());
}

export function hfHome(env: Env = process.env): string {
  return expandUser(env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface'));
}

export function hubCacheDir(env: Env = process.env): string {
  return expandUser(env.HF_HUB_CACHE ?? env.HUGGINGFACE_HUB_CACHE ?? join(hfHome(env), 'hub'));
}

export function hubToken(env: Env = process.env): string | undefined {
  // HUGGING_FACE_HUB_TOKEN is the older name Python still reads.
  const fromEnv = (env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN)?.trim();
  if (fromEnv) return fromEnv;
  try {
    const stored = readFileSync(expandUser(env.HF_TOKEN_PATH ?? join(hfHome(env), 'token')), 'utf8').trim();
    return stored || undefined;
  } catch {
    return undefined;
  }
}

export function hubSettings(env: Env = process.env): HubSettings {
  return {
    cacheDir: hubCacheDir(env),
    endpoint: (env.HF_ENDPOINT?.trim() || HUB_URL).replace(/\/+$/, ''),
    token: hubToken(env),
    offline: isTrue(env.HF_HUB_OFFLINE || env.TRANSFORMERS_OFFLINE),
  };
}
