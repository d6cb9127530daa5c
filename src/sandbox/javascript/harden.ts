/**
 * Hardening of a kept runner's realm: every object reachable from what its runs can touch is
 * frozen, so nothing one run leaves there can change what a later run sees or does. Before
 * freezing, data properties of prototypes become accessors that define an own property on
 * assignment: otherwise `error.name = …` in the platform's own code would throw once
 * `Error.prototype.name` is frozen (the "override mistake").
 *
 * @module
 */

// deno-lint-ignore no-explicit-any
type AnyRecord = Record<string | symbol, any>;

/**
 * Freezes everything reachable from `roots` through own properties (accessors' functions
 * included) and prototypes, except the objects in `skip` (e.g. the global, which the platform
 * itself keeps defining properties on). Returns how many objects it froze.
 */
export function harden(
  roots: readonly unknown[],
  options: { skip?: readonly object[] } = {},
): number {
  const seen = new Set<object>(options.skip);
  const stack: unknown[] = [...roots];
  while (stack.length > 0) {
    const value = stack.pop();
    if ((typeof value !== "object" && typeof value !== "function") || value === null) continue;
    if (seen.has(value)) continue;
    seen.add(value);
    for (const key of Reflect.ownKeys(value)) {
      const descriptor = Reflect.getOwnPropertyDescriptor(value, key);
      if (!descriptor) continue;
      if ("value" in descriptor) stack.push(descriptor.value);
      else stack.push(descriptor.get, descriptor.set);
    }
    stack.push(Reflect.getPrototypeOf(value));
  }
  for (const object of options.skip ?? []) seen.delete(object);
  for (const object of seen) {
    if (isPrototype(object)) enableOverrides(object);
  }
  let frozen = 0;
  for (const object of seen) {
    try {
      Object.freeze(object);
      frozen++;
    } catch {
      // a module namespace cannot be frozen; its bindings are read-only from outside anyway
    }
  }
  return frozen;
}

function isPrototype(object: object): boolean {
  if (typeof object === "function") return false;
  const constructor = Reflect.getOwnPropertyDescriptor(object, "constructor")?.value;
  return typeof constructor === "function" && constructor.prototype === object;
}

/** Turns the writable data properties of `prototype` into accessors (see the module doc). */
function enableOverrides(prototype: object): void {
  for (const key of Reflect.ownKeys(prototype)) {
    const descriptor = Reflect.getOwnPropertyDescriptor(prototype, key);
    if (!descriptor || !("value" in descriptor) || !descriptor.writable) continue;
    if (!descriptor.configurable) continue;
    const value = descriptor.value;
    const get = function () {
      return value;
    };
    const set = function (this: AnyRecord, replacement: unknown) {
      if (this === prototype) throw new TypeError(`${String(key)} is read-only here`);
      Reflect.defineProperty(this, key, {
        value: replacement,
        writable: true,
        enumerable: true,
        configurable: true,
      });
    };
    Object.freeze(get);
    Object.freeze(set);
    Reflect.defineProperty(prototype, key, {
      get,
      set,
      enumerable: descriptor.enumerable,
      configurable: false,
    });
  }
}
