/**
 * The runtime registry: which factory builds the runtime of each language, and the set of
 * runtimes built for the enabled languages. Each registration takes what its runtime alone
 * needs from the configuration and hands it to the factory as that factory's own options.
 *
 * @module
 */

import { type Config, runtimeSettings } from "./config.ts";
import type { Language, PoolStats, Runtime, RuntimeSettings } from "./runtime.ts";
import { createJavaScriptRuntime } from "./sandbox/javascript/mod.ts";
import { createPythonRuntime } from "./sandbox/python/mod.ts";

/** A factory and the languages the runtime it builds serves. */
export interface RuntimeRegistration {
  /** Languages served by the runtime the factory builds. */
  languages: readonly Language[];
  /**
   * Builds the runtime (does not start it) from the settings every runtime shares and the
   * configuration, from which it takes its own options.
   */
  create: (settings: RuntimeSettings, config: Config) => Runtime;
}

/**
 * The runtimes this build ships. A language sandbox joins the service by adding its
 * registration here.
 */
export const DEFAULT_REGISTRATIONS: readonly RuntimeRegistration[] = [
  {
    languages: ["javascript", "typescript"],
    create: (settings, config) =>
      createJavaScriptRuntime(settings, {
        python: config.pythonPath,
        launch: config.runnerMode,
      }),
  },
  {
    languages: ["python"],
    create: (settings, config) =>
      createPythonRuntime(settings, { python: config.pythonPath, preload: config.pythonPreload }),
  },
];

/** No registered factory serves an enabled language. */
export class MissingRuntimeError extends Error {
  /** The enabled languages nothing serves. */
  readonly languages: Language[];

  /** Creates the error for the languages nothing serves. */
  constructor(languages: Language[]) {
    super(
      `no runtime is built into this service for ${languages.join(", ")}; ` +
        `set FAAS_LANGUAGES to languages it serves`,
    );
    this.name = "MissingRuntimeError";
    this.languages = languages;
  }
}

/** The runtimes of the enabled languages. */
export class RuntimeSet {
  #byLanguage = new Map<Language, Runtime>();
  #runtimes: Runtime[] = [];
  #languages: Language[];

  /**
   * Builds one runtime per registration that serves an enabled language (first registration
   * wins for a language).
   *
   * @throws {MissingRuntimeError} when an enabled language has no registration.
   */
  constructor(
    languages: readonly Language[],
    options: {
      registrations: readonly RuntimeRegistration[];
      config: Config;
      onSandboxBoot?: RuntimeSettings["onSandboxBoot"];
    },
  ) {
    const settings = runtimeSettings(options.config, { onSandboxBoot: options.onSandboxBoot });
    this.#languages = [...languages];
    const missing = languages.filter((language) =>
      !options.registrations.some((registration) => registration.languages.includes(language))
    );
    if (missing.length > 0) throw new MissingRuntimeError(missing);
    for (const registration of options.registrations) {
      const wanted = registration.languages.filter((language) =>
        languages.includes(language) && !this.#byLanguage.has(language)
      );
      if (wanted.length === 0) continue;
      const runtime = registration.create(settings, options.config);
      this.#runtimes.push(runtime);
      for (const language of wanted) this.#byLanguage.set(language, runtime);
    }
  }

  /** Enabled languages, in configuration order. */
  get languages(): readonly Language[] {
    return this.#languages;
  }

  /** Every runtime built. */
  get runtimes(): readonly Runtime[] {
    return this.#runtimes;
  }

  /** The runtime serving `language`, if enabled. */
  get(language: Language): Runtime | undefined {
    return this.#byLanguage.get(language);
  }

  /** Starts every runtime; on failure shuts down the ones started and rethrows. */
  async start(): Promise<void> {
    const results = await Promise.allSettled(this.#runtimes.map((runtime) => runtime.start()));
    const failure = results.find((result) => result.status === "rejected");
    if (failure) {
      await this.shutdown();
      throw failure.reason;
    }
  }

  /** Shuts every runtime down (their sandbox processes are killed). */
  async shutdown(): Promise<void> {
    await Promise.allSettled(this.#runtimes.map((runtime) => runtime.shutdown()));
  }

  /** Instance counts of each enabled language (a shared runtime reports its whole pool). */
  poolStats(): [Language, PoolStats][] {
    return this.#languages.map((language) => {
      const stats = this.#byLanguage.get(language)!.stats();
      return [language, {
        totalInstances: stats.totalInstances,
        idleInstances: stats.idleInstances,
        activeInstances: stats.activeInstances,
      }];
    });
  }
}
