/**
 * Collects the parts every loaded plugin contributes (multi-bindings of the contribution
 * tokens) and hands them out by kind and name. Built-in parts arrive through the same door.
 */
import 'reflect-metadata';
import { Container } from 'inversify';
import { PaliGemmaError } from '../interfaces/errors.js';
import {
  CONTRIBUTION_KINDS, type ContributionKind,
  type AttentionKernelContribution, type BackendContribution, type ImageProcessorContribution,
  type KVCacheStoreContribution, type SamplerContribution, type TokenizerContribution,
} from '../interfaces/contributions.js';
import type { PaliGemmaPlugin } from './define-plugin.js';

interface ContributionByKind {
  backend: BackendContribution;
  attention: AttentionKernelContribution;
  kvCache: KVCacheStoreContribution;
  sampler: SamplerContribution;
  tokenizer: TokenizerContribution;
  imageProcessor: ImageProcessorContribution;
}

export interface RegisteredPart {
  kind: ContributionKind;
  name: string;
  description: string;
  plugin: string;
  source: string;
}

const KIND_WORDS: Record<ContributionKind, string> = {
  backend: 'backend', attention: 'attention kernel', kvCache: 'KV cache store',
  sampler: 'sampler', tokenizer: 'tokenizer', imageProcessor: 'image processor',
};

export class PartRegistry {
  readonly container = new Container();
  private readonly parts: RegisteredPart[] = [];
  private readonly plugins: PaliGemmaPlugin[] = [];

  /** Loads a plugin's module; refuses a contribution whose name is already taken. */
  load(plugin: PaliGemmaPlugin): void {
    const source = plugin.source ?? 'built-in';
    if (this.plugins.some((p) => p.name === plugin.name)) {
      throw new PaliGemmaError(`plugin ${plugin.name} (${source}): a plugin of that name is already loaded`);
    }
    const before = this.counts();
    try {
      this.container.load(plugin.module);
    } catch (e) {
      throw new PaliGemmaError(`plugin ${plugin.name} (${source}): its module failed to load: ${(e as Error).message}`);
    }
    const added: RegisteredPart[] = [];
    for (const kind of Object.keys(CONTRIBUTION_KINDS) as ContributionKind[]) {
      for (const c of this.all(kind).slice(before[kind])) {
        const taken = [...this.parts, ...added].find((p) => p.kind === kind && p.name === c.name);
        if (taken || typeof c.name !== 'string' || c.name === '') {
          this.container.unload(plugin.module);
          throw new PaliGemmaError(taken
            ? `plugin ${plugin.name} (${source}): ${KIND_WORDS[kind]} '${c.name}' is already registered by plugin ${taken.plugin}`
            : `plugin ${plugin.name} (${source}): a ${KIND_WORDS[kind]} contribution has no name`);
        }
        added.push({ kind, name: c.name, description: c.description ?? '', plugin: plugin.name, source });
      }
    }
    this.parts.push(...added);
    this.plugins.push(plugin);
  }

  /** Every registered part, in load order. */
  list(): readonly RegisteredPart[] {
    return this.parts;
  }

  names(kind: ContributionKind): string[] {
    return this.parts.filter((p) => p.kind === kind).map((p) => p.name);
  }

  /** The contribution named `name`; a user-facing error lists the available ones otherwise. */
  get<K extends ContributionKind>(kind: K, name: string): ContributionByKind[K] {
    const found = this.all(kind).find((c) => c.name === name);
    if (!found) {
      throw new PaliGemmaError(`unknown ${KIND_WORDS[kind]} '${name}' (available: ${this.names(kind).join(', ') || 'none'})`);
    }
    return found;
  }

  private all<K extends ContributionKind>(kind: K): ContributionByKind[K][] {
    const token = CONTRIBUTION_KINDS[kind];
    return this.container.isBound(token) ? this.container.getAll<ContributionByKind[K]>(token) : [];
  }

  private counts(): Record<ContributionKind, number> {
    const out = {} as Record<ContributionKind, number>;
    for (const kind of Object.keys(CONTRIBUTION_KINDS) as ContributionKind[]) out[kind] = this.all(kind).length;
    return out;
  }
}
