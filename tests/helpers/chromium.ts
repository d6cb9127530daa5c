/**
 * Headless Chromium (Debian's `chromium`) driven over the DevTools protocol from Deno: no
 * browser download, no Playwright. A page is opened in a fresh profile, every request it makes
 * is recorded, and expressions are evaluated in it.
 *
 * Chromium is started as this machine requires (headless, no GPU, no sandbox as root, no
 * background networking, component updates or sync, an empty profile), and with
 * `--host-resolver-rules` that resolve the names the caller maps and nothing else: any other
 * host fails to resolve, so a page that reached for the internet would fail visibly, and its
 * request would still be recorded.
 *
 * @module
 */

import { findExecutable } from "./host.ts";

/** Where Debian installs Chromium; `FAAS_CHROMIUM` names another executable. */
const DEFAULT_CHROMIUM = "/usr/bin/chromium";

/** The Chromium executable to use, or why there is none. */
export function findChromium(): Promise<{ path: string } | { missing: string }> {
  return findExecutable("FAAS_CHROMIUM", DEFAULT_CHROMIUM, "apt-get install chromium");
}

/** A request the page made, as Chromium reported it. */
export interface PageRequest {
  /** The URL requested. */
  url: string;
  /** Its HTTP status, once answered; undefined when it failed. */
  status?: number;
  /** The answer's headers, lower-cased names. */
  headers?: Record<string, string>;
  /** Why it failed, when it did (e.g. `net::ERR_NAME_NOT_RESOLVED`). */
  failure?: string;
  /** True once it finished or failed. */
  done: boolean;
}

/** Something the page logged at error level or threw. */
export interface PageProblem {
  /** `console`, `log` (e.g. a Content-Security-Policy violation) or `exception`. */
  source: string;
  /** What it said. */
  text: string;
}

/** An open page. */
export interface Page {
  /** Every request the page made, in order. */
  readonly requests: PageRequest[];
  /** Errors logged and exceptions thrown in the page. */
  readonly problems: PageProblem[];
  /** Navigates to `url` and resolves once its `load` event fired. */
  goto(url: string, options?: { timeoutMs?: number }): Promise<void>;
  /** Resolves once every request made so far has finished or failed. */
  networkIdle(options?: { timeoutMs?: number }): Promise<void>;
  /**
   * Evaluates `expression` in the page (awaiting it when it is a promise) and returns its value
   * as JSON would carry it.
   */
  evaluate<T>(expression: string, options?: { timeoutMs?: number }): Promise<T>;
}

/** A running browser. */
export interface Browser extends AsyncDisposable {
  /** Opens a blank page and starts recording its requests and problems. */
  newPage(): Promise<Page>;
}

/** How the browser may reach the network. */
export interface LaunchOptions {
  /** Host names resolved to the given address; every other name fails to resolve. */
  hosts: Record<string, string>;
}

/** Starts Chromium at `path`; disposing of it closes the browser and deletes its profile. */
export async function launchChromium(path: string, options: LaunchOptions): Promise<Browser> {
  const profile = await Deno.makeTempDir({ prefix: "faas-chromium-" });
  const rules = [
    ...Object.entries(options.hosts).map(([host, address]) => `MAP ${host} ${address}`),
    "MAP * ~NOTFOUND",
  ].join(", ");
  const child = new Deno.Command(path, {
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--no-default-browser-check",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-default-apps",
      "--disable-extensions",
      // Plain http stays plain http: no attempt at https first.
      "--disable-features=HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
      `--host-resolver-rules=${rules}`,
      `--user-data-dir=${profile}`,
      "--remote-debugging-port=0",
      "about:blank",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let connection: Connection | undefined;
  try {
    const endpoint = await devToolsEndpoint(child.stderr);
    connection = await Connection.open(endpoint);
  } catch (error) {
    await stop(child, profile);
    throw error;
  }
  const cdp = connection;
  return {
    newPage: () => openPage(cdp),
    async [Symbol.asyncDispose]() {
      await cdp.send("Browser.close").catch(() => {});
      cdp.close();
      await stop(child, profile);
    },
  };
}

async function stop(child: Deno.ChildProcess, profile: string): Promise<void> {
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, 5_000);
  try {
    child.kill("SIGTERM");
  } catch {
    // Already gone.
  }
  await child.status;
  clearTimeout(timer);
  await Deno.remove(profile, { recursive: true }).catch(() => {});
}

/** Reads Chromium's stderr until it names its DevTools WebSocket; keeps draining it after. */
async function devToolsEndpoint(stderr: ReadableStream<Uint8Array>): Promise<string> {
  const lines = stderr.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const seen: string[] = [];
  while (true) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`chromium exited before listening:\n${seen.join("\n")}`);
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      seen.push(line);
      const match = /DevTools listening on (ws:\/\/\S+)/.exec(line);
      if (match) {
        // Keep reading so Chromium never blocks on a full pipe.
        (async () => {
          while (!(await lines.read()).done);
        })().catch(() => {});
        return match[1];
      }
    }
  }
}

type Listener = (params: Record<string, unknown>, sessionId?: string) => void;

/** One DevTools WebSocket: commands with ids, events to listeners. */
class Connection {
  #socket: WebSocket;
  #nextId = 1;
  #pending = new Map<number, PromiseWithResolvers<Record<string, unknown>>>();
  #listeners = new Map<string, Set<Listener>>();

  private constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.onmessage = (event) => this.#receive(JSON.parse(String(event.data)));
    socket.onclose = () => {
      for (const pending of this.#pending.values()) {
        pending.reject(new Error("the DevTools connection closed"));
      }
      this.#pending.clear();
    };
  }

  static open(url: string): Promise<Connection> {
    const socket = new WebSocket(url);
    const { promise, resolve, reject } = Promise.withResolvers<Connection>();
    socket.onopen = () => resolve(new Connection(socket));
    socket.onerror = () => reject(new Error(`cannot connect to DevTools at ${url}`));
    return promise;
  }

  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
  ): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    const pending = Promise.withResolvers<Record<string, unknown>>();
    this.#pending.set(id, pending);
    this.#socket.send(JSON.stringify({ id, method, params, sessionId }));
    return pending.promise;
  }

  on(method: string, listener: Listener): void {
    let set = this.#listeners.get(method);
    if (!set) this.#listeners.set(method, set = new Set());
    set.add(listener);
  }

  close(): void {
    this.#socket.close();
  }

  #receive(message: {
    id?: number;
    result?: Record<string, unknown>;
    error?: { message: string };
    method?: string;
    params?: Record<string, unknown>;
    sessionId?: string;
  }): void {
    if (message.id !== undefined) {
      const pending = this.#pending.get(message.id);
      this.#pending.delete(message.id);
      if (message.error) pending?.reject(new Error(`DevTools: ${message.error.message}`));
      else pending?.resolve(message.result ?? {});
      return;
    }
    for (const listener of this.#listeners.get(message.method ?? "") ?? []) {
      listener(message.params ?? {}, message.sessionId);
    }
  }
}

async function openPage(cdp: Connection): Promise<Page> {
  const { targetId } = await cdp.send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await cdp.send("Target.attachToTarget", { targetId, flatten: true }) as {
    sessionId: string;
  };
  const requests = new Map<string, PageRequest>();
  const ordered: PageRequest[] = [];
  const problems: PageProblem[] = [];
  let loaded = Promise.withResolvers<void>();
  const idleWaiters: (() => void)[] = [];
  const settle = (request: PageRequest | undefined) => {
    if (!request) return;
    request.done = true;
    if (ordered.some((pending) => !pending.done)) return;
    for (const resolve of idleWaiters.splice(0)) resolve();
  };
  const mine = (listener: Listener): Listener => (params, session) => {
    if (session === sessionId) listener(params);
  };
  cdp.on(
    "Network.requestWillBeSent",
    mine((params) => {
      // A redirect reuses the request id: the earlier hop is done.
      settle(requests.get(params.requestId as string));
      const request = { url: (params.request as { url: string }).url, done: false };
      requests.set(params.requestId as string, request);
      ordered.push(request);
    }),
  );
  cdp.on(
    "Network.responseReceived",
    mine((params) => {
      const request = requests.get(params.requestId as string);
      const response = params.response as { status: number; headers: Record<string, string> };
      if (!request) return;
      request.status = response.status;
      request.headers = Object.fromEntries(
        Object.entries(response.headers).map(([name, value]) => [name.toLowerCase(), value]),
      );
    }),
  );
  cdp.on(
    "Network.loadingFailed",
    mine((params) => {
      const request = requests.get(params.requestId as string);
      if (request) request.failure = String(params.errorText);
      settle(request);
    }),
  );
  cdp.on(
    "Network.loadingFinished",
    mine((params) => settle(requests.get(params.requestId as string))),
  );
  cdp.on(
    "Runtime.consoleAPICalled",
    mine((params) => {
      if (params.type !== "error") return;
      const args = params.args as { value?: unknown; description?: string }[];
      problems.push({
        source: "console",
        text: args.map((arg) => String(arg.value ?? arg.description)).join(" "),
      });
    }),
  );
  cdp.on(
    "Runtime.exceptionThrown",
    mine((params) => {
      const details = params.exceptionDetails as {
        text: string;
        exception?: { description?: string };
      };
      problems.push({
        source: "exception",
        text: details.exception?.description ?? details.text,
      });
    }),
  );
  cdp.on(
    "Log.entryAdded",
    mine((params) => {
      const entry = params.entry as { level: string; text: string; url?: string };
      if (entry.level === "error") {
        problems.push({ source: "log", text: `${entry.text} ${entry.url ?? ""}`.trim() });
      }
    }),
  );
  cdp.on("Page.loadEventFired", mine(() => loaded.resolve()));
  for (const domain of ["Network", "Page", "Runtime", "Log"]) {
    await cdp.send(`${domain}.enable`, {}, sessionId);
  }
  return {
    requests: ordered,
    problems,
    async goto(url, options = {}) {
      loaded = Promise.withResolvers<void>();
      const navigation = await cdp.send("Page.navigate", { url }, sessionId);
      if (navigation.errorText) throw new Error(`cannot open ${url}: ${navigation.errorText}`);
      await within(loaded.promise, options.timeoutMs ?? 15_000, `the load event of ${url}`);
    },
    async networkIdle(options = {}) {
      if (ordered.every((request) => request.done)) return;
      const { promise, resolve } = Promise.withResolvers<void>();
      idleWaiters.push(resolve);
      await within(promise, options.timeoutMs ?? 15_000, "the page's requests to finish");
    },
    async evaluate<T>(expression: string, options: { timeoutMs?: number } = {}) {
      const evaluated = cdp.send("Runtime.evaluate", {
        expression,
        awaitPromise: true,
        returnByValue: true,
      }, sessionId);
      const result = await within(evaluated, options.timeoutMs ?? 15_000, expression);
      const details = result.exceptionDetails as
        | { text: string; exception?: { description?: string } }
        | undefined;
      if (details) {
        throw new Error(`the page threw: ${details.exception?.description ?? details.text}`);
      }
      return (result.result as { value: T }).value;
    },
  };
}

async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
