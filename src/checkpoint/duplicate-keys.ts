/**
 * Duplicate object keys in JSON text. `JSON.parse` keeps the last of two equal keys without a
 * word, so a safetensors header or shard index that names a tensor twice would load one of them
 * silently; the format's own reader refuses such a header. This scan runs on text that
 * `JSON.parse` has already accepted, so it only needs to follow strings and nesting.
 *
 * ```ts
 * findDuplicateKey('{"a": {"x": 1, "x": 2}}');   // → { key: 'x', path: ['a'] }
 * ```
 */

export interface DuplicateKey {
  /** The key written twice (decoded). */
  key: string;
  /** Keys of the objects that enclose it, outermost first (array positions as numbers). */
  path: (string | number)[];
}

interface Frame {
  keys?: Set<string>;          // objects only
  expectKey: boolean;          // objects: the next string is a key
  index: number;               // arrays: position of the current element
  /** The key (or index) under which this container sits in its parent. */
  name: string | number | undefined;
}

/** The first duplicate key of valid JSON `text`, or undefined when every object's keys are unique. */
export function findDuplicateKey(text: string): DuplicateKey | undefined {
  const stack: Frame[] = [];
  let lastKey: string | undefined;
  const path = () => stack.slice(1).map((f) => f.name!);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {                                                // '"'
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return { key, path: path() };
        top.keys.add(key);
        top.expectKey = false;
        lastKey = key;
      }
      i = j;
    } else if (c === 0x7b || c === 0x5b) {                            // '{' '['
      const parent = stack[stack.length - 1];
      const name = parent === undefined ? undefined : parent.keys ? lastKey : parent.index;
      stack.push({ keys: c === 0x7b ? new Set() : undefined, expectKey: c === 0x7b, index: 0, name });
    } else if (c === 0x7d || c === 0x5d) {                            // '}' ']'
      stack.pop();
    } else if (c === 0x2c) {                                         // ','
      const top = stack[stack.length - 1];
      if (top?.keys) top.expectKey = true;
      else if (top) top.index++;
    }
  }
  return undefined;
}
