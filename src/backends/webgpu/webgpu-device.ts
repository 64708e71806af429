/// <reference types="@webgpu/types" />
/**
 * Opens a WebGPU device through Dawn (the `webgpu` package).
 *
 * Without a GPU, Dawn needs a software Vulkan driver; SwiftShader (shipped in Debian's
 * chromium-common) is one it accepts. The Vulkan loader reads VK_ICD_FILENAMES when Dawn creates
 * its instance, so when no hardware adapter shows up (or no Vulkan driver is installed at all)
 * and the variable is unset, we point it at SwiftShader and create a second Dawn instance.
 *
 * The object `create()` returns must stay strongly referenced while the device is used (Dawn
 * crashes the process when it is collected), and must be dropped at the end so that the
 * process can exit: WebGpuBackend holds it and lets go in close().
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PaliGemmaError } from '../../interfaces/errors.js';
import { PackageNotInstalledError, isPackageNotFound } from '../optional-package.js';

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

export const INSTALL_HINT =
  'install a GPU driver with Vulkan support, or the SwiftShader software driver: ' +
  'apt-get install libvulkan1 chromium-common';

export interface OpenedDevice {
  /** The object returned by the package's create(); keep it alive with the device. */
  gpu: GPU;
  adapter: GPUAdapter;
  device: GPUDevice;
  /** e.g. 'google/swiftshader' or 'nvidia/ampere'. */
  adapterName: string;
  /** A CPU implementation (SwiftShader or another fallback adapter). */
  software: boolean;
  /** We set VK_ICD_FILENAMES to SwiftShader ourselves. */
  selectedSwiftShader: boolean;
  /** The `globals` of the package (GPUBufferUsage, GPUMapMode, ...). */
  globals: WebGpuGlobals;
}

export interface WebGpuGlobals {
  GPUBufferUsage: { STORAGE: number; COPY_SRC: number; COPY_DST: number; MAP_READ: number; UNIFORM: number };
  GPUMapMode: { READ: number };
}

interface WebGpuModule {
  create(options: string[]): GPU;
  globals: unknown;
}

/** Vulkan drivers Dawn can use, judged from the loader's manifest folders. */
function hasSystemVulkanDriver(): boolean {
  const dirs = [
    '/etc/vulkan/icd.d', '/usr/share/vulkan/icd.d', '/usr/local/share/vulkan/icd.d',
    '/usr/local/etc/vulkan/icd.d', join(homedir(), '.local/share/vulkan/icd.d'),
    ...(process.env.XDG_DATA_DIRS ?? '').split(':').filter(Boolean).map((d) => join(d, 'vulkan/icd.d')),
  ];
  for (const dir of dirs) {
    let files: string[];
    try { files = readdirSync(dir); } catch { continue; }
    // lavapipe (Mesa's CPU driver) is rejected by Dawn; it does not count.
    if (files.some((f) => f.endsWith('.json') && !/lvp|lavapipe/i.test(f))) return true;
  }
  return false;
}

/**
 * Vulkan drivers may look for a Wayland display while Dawn lists adapters, and libwayland then
 * prints "error: XDG_RUNTIME_DIR is invalid or not set in the environment." to stderr when that
 * variable is unset: a line that reads as a failure of a run that succeeded. Compute needs no
 * display, so an unset variable gets a private empty folder (mkdtemp makes it 0700, as the XDG
 * spec asks); with no Wayland socket in it the probe fails without a word. The folder goes at exit.
 * Returns the folder it set, or undefined when the environment already had one (or a display).
 */
export function quietDisplayProbe(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.XDG_RUNTIME_DIR || env.WAYLAND_DISPLAY) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'paligemma-runtime-'));
  env.XDG_RUNTIME_DIR = dir;
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function loadModule(): Promise<WebGpuModule> {
  try {
    return (await import('webgpu')) as unknown as WebGpuModule;
  } catch (e) {
    if (isPackageNotFound(e, 'webgpu')) {
      // The lean install: webgpu is an optional peer dependency.
      throw new PackageNotInstalledError('the webgpu backend needs the webgpu package, which is not installed: npm install webgpu');
    }
    throw new PaliGemmaError(
      `webgpu backend: the 'webgpu' package failed to load (npm install webgpu): ${(e as Error).message.split('\n')[0]}`,
      'missing_dependency',
    );
  }
}

async function tryAdapter(mod: WebGpuModule, options: string[]): Promise<{ gpu: GPU; adapter: GPUAdapter | null }> {
  const gpu = mod.create(options);
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch {
    adapter = null;
  }
  return { gpu, adapter };
}

export async function openDevice(options: { dawnOptions?: string[] } = {}): Promise<OpenedDevice> {
  const mod = await loadModule();
  quietDisplayProbe();
  const dawnOptions = options.dawnOptions ?? [];
  // A driver list the user chose (either loader variable) is left alone.
  const canSelectSwiftShader = !process.env.VK_ICD_FILENAMES && !process.env.VK_DRIVER_FILES && existsSync(SWIFTSHADER_ICD);

  let attempt: { gpu: GPU; adapter: GPUAdapter | null } | undefined;
  // Without any Vulkan driver the first try would only print loader warnings: skip it.
  if (!canSelectSwiftShader || hasSystemVulkanDriver()) attempt = await tryAdapter(mod, dawnOptions);
  let selectedSwiftShader = false;
  if (!attempt?.adapter && canSelectSwiftShader) {
    process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
    selectedSwiftShader = true;
    attempt = await tryAdapter(mod, dawnOptions);
  }
  if (!attempt?.adapter) {
    const tried = process.env.VK_ICD_FILENAMES && !selectedSwiftShader ? ` (with VK_ICD_FILENAMES=${process.env.VK_ICD_FILENAMES})` : '';
    throw new PaliGemmaError(`webgpu backend: no WebGPU adapter found${tried}; ${INSTALL_HINT}`, 'missing_dependency');
  }
  const { gpu, adapter } = attempt;

  // Ask for the adapter's own buffer limits: the defaults (128 MiB bindings) are too small for
  // real checkpoints' embedding tables.
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxBufferSize: limits.maxBufferSize,
      maxStorageBuffersPerShaderStage: Math.min(limits.maxStorageBuffersPerShaderStage, 8),
    },
  });
  const info = adapter.info;
  const vendor = info.vendor || 'unknown';
  const arch = info.architecture || info.device || info.description || 'adapter';
  const software = info.isFallbackAdapter === true || (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter === true || /swiftshader|llvmpipe|lavapipe/i.test(`${arch} ${info.description}`);
  return {
    gpu, adapter, device,
    adapterName: `${vendor}/${arch}`,
    software,
    selectedSwiftShader,
    globals: mod.globals as WebGpuGlobals,
  };
}
