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

/** The function each kind of contribution must have. */
const FACTORY: Record<ContributionKind, 'create' | 'load'> = {
  backend: 'create', attention: 'create', kvCache: 'create',
  sampler: 'create', tokenizer: 'load', imageProcessor: 'load',
};

export class PartRegistry {
  readonly container = new Container();
  private readonly parts: RegisteredPart[] = [];
  private readonly plugins: PaliGemmaPlugin[] = [];

  /**
   * Loads a plugin's module; refuses a contribution whose name is already taken, has none, or
   * lacks its factory. A refused plugin leaves the registry as it was.
   */
  load(plugin: PaliGemmaPlugin): void {
    const source = plugin.source ?? 'built-in';
    const fail = (problem: string): never => {
      throw new PaliGemmaError(`plugin ${plugin.name} (${source}): ${problem}`);
    };
    if (this.plugins.some((p) => p.name === plugin.name)) fail('a plugin of that name is already loaded');
    const twin = this.plugins.find((p) => p.module === plugin.module);
    if (twin) fail(`its module is already loaded, as plugin ${twin.name}`);
    const before = this.counts();
    const added: RegisteredPart[] = [];
    try {
      try {
        this.container.load(plugin.module);
      } catch (e) {
        fail(`its module failed to load: ${firstLine(e)}`);
      }
      for (const kind of Object.keys(CONTRIBUTION_KINDS) as ContributionKind[]) {
        let contributions: ContributionByKind[typeof kind][] = [];
        try {
          contributions = this.all(kind).slice(before[kind]);
        } catch (e) {
          fail(`a ${KIND_WORDS[kind]} contribution failed to resolve: ${firstLine(e)}`);
        }
        for (const c of contributions) {
          const taken = [...this.parts, ...added].find((p) => p.kind === kind && p.name === c?.name);
          const factory = FACTORY[kind];
          if (typeof c?.name !== 'string' || c.name === '') fail(`a ${KIND_WORDS[kind]} contribution has no name`);
          if (taken) fail(`${KIND_WORDS[kind]} '${c.name}' is already registered by plugin ${taken.plugin}`);
          if (typeof (c as unknown as Record<string, unknown>)[factory] !== 'function') {
            fail(`${KIND_WORDS[kind]} '${c.name}' has no ${factory}() function`);
          }
          added.push({ kind, name: c.name, description: c.description ?? '', plugin: plugin.name, source });
        }
      }
    } catch (e) {
      try { this.container.unload(plugin.module); } catch { /* the refusal matters more */ }
      throw e;
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

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0];
}
