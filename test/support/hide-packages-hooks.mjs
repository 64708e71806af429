// Resolve hook behind hide-packages.mjs (runs on the loader thread).
let hidden = new Set();

export function initialize(names) {
  hidden = new Set(names);
}

export async function resolve(specifier, context, next) {
  const pkg = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0];
  if (hidden.has(pkg)) {
    const err = new Error(`Cannot find package '${pkg}' imported from ${context.parentURL ?? 'the test'}`);
    err.code = 'ERR_MODULE_NOT_FOUND';
    throw err;
  }
  return next(specifier, context);
}
