/**
 * Model names as people write them: `ORG/NAME`, optionally pinned with `@REV` (a branch, tag or
 * commit). The same rule as Python's `huggingface_hub.validate_repo_id` for the two parts.
 */
import { PaliGemmaError } from '../interfaces/errors.js';

export interface ModelReference {
  /** `ORG/NAME`. */
  repo: string;
  /** Branch, tag or 40-hex commit; undefined means the default branch (`main`). */
  revision?: string;
}

const PART = /^[\w.-]+$/;
const MAX_REPO_ID = 96;

/**
 * `ORG/NAME[@REV]` as a hub reference, or undefined when the text cannot be one (an absolute or
 * `./` path, more than one slash, a single name), so the caller treats it as a folder path.
 */
export function parseModelReference(text: string): ModelReference | undefined {
  const at = text.indexOf('@');
  const id = at < 0 ? text : text.slice(0, at);
  const revision = at < 0 ? undefined : text.slice(at + 1);
  const parts = id.split('/');
  if (parts.length !== 2 || !parts.every((p) => PART.test(p) && !/^[.-]|[.-]$/.test(p))) return undefined;
  if (id.length > MAX_REPO_ID || id.includes('--') || id.includes('..')) return undefined;
  if (revision !== undefined && (revision === '' || /\s/.test(revision))) {
    throw new PaliGemmaError(`invalid model reference ${text}: expected ORG/NAME@REVISION with a non-empty revision`);
  }
  return { repo: id, revision };
}

/** The revision to use: `--revision` and `@REV` must agree when both are given. */
export function revisionOf(ref: ModelReference, revision: string | undefined): string {
  if (revision !== undefined && ref.revision !== undefined && revision !== ref.revision) {
    throw new PaliGemmaError(`model ${ref.repo}@${ref.revision} and revision ${revision} disagree: give the revision once`);
  }
  return revision ?? ref.revision ?? 'main';
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;
