/**
 * Resolution of `ret_val` from what a sandbox reports, shared by every language.
 *
 * @module
 */

/** Marker line the platform's evaluator templates print before the return value. */
export const RET_VAL_START = "__COZE_RETURN_VAL_START__";
/** Marker line the platform's evaluator templates print after the return value. */
export const RET_VAL_END = "__COZE_RETURN_VAL_END__";

/** What a sandbox observed about the return value of a run. */
export interface ReturnSources {
  /** The last `return_val(v)` argument: `v` when a string, else its JSON. */
  explicit?: string;
  /** The returned value (JS/TS) or last expression value (Python), serialized. */
  returned?: string;
  /** The run's stdout. */
  stdout: string;
}

/** The resolved return value and the stdout left once it was taken out. */
export interface ResolvedReturn {
  /** Value of `output.ret_val`. */
  retVal: string;
  /** Stdout without the extracted return value (and its markers). */
  stdout: string;
}

/**
 * Applies the contract's precedence: `return_val(v)`, then the returned value, then the
 * marker block or the last stdout line that is a JSON object (removed from stdout), else "".
 */
export function resolveRetVal(sources: ReturnSources): ResolvedReturn {
  const { explicit, returned, stdout } = sources;
  if (explicit !== undefined) return { retVal: explicit, stdout };
  if (returned !== undefined) return { retVal: returned, stdout };
  return extractFromStdout(stdout);
}

/**
 * A line ending is LF or CRLF: stdout is split at each LF, and a line's trailing CR belongs to
 * its line ending, never to the line's text (so never to the return value).
 *
 * A marker is a marker wherever the line it ends starts: text printed without a line ending may
 * precede it (`print("progress: 100%", end="")` then the block). Before the start marker, that
 * text stays in stdout; before the end marker, it is the value's last line.
 */
function extractFromStdout(stdout: string): ResolvedReturn {
  const lines = stdout.split("\n");
  const end = lastIndexOfMarker(lines, RET_VAL_END, lines.length - 1);
  const start = end > 0 ? lastIndexOfMarker(lines, RET_VAL_START, end - 1) : -1;
  if (start >= 0) {
    const between = lines.slice(start + 1, end);
    const last = beforeMarker(lines[end], RET_VAL_END);
    // The value's own line endings stay as printed; the one before the end marker goes.
    const retVal = last === "" ? withoutCr(between.join("\n")) : [...between, last].join("\n");
    return { retVal, stdout: removeBlock(lines, start, end) };
  }
  for (let i = lines.length - 1; i >= 0; i--) {
    if (isJsonObject(lines[i])) {
      return { retVal: lines[i].trim(), stdout: removeLines(lines, i, i) };
    }
  }
  return { retVal: "", stdout };
}

/** Index of the last line at or before `from` that ends with `marker` (blanks after it aside). */
function lastIndexOfMarker(lines: string[], marker: string, from: number): number {
  for (let i = from; i >= 0; i--) {
    if (lines[i].trimEnd().endsWith(marker)) return i;
  }
  return -1;
}

/** What a marker line holds before its marker. */
function beforeMarker(line: string, marker: string): string {
  return line.trimEnd().slice(0, -marker.length);
}

/**
 * Removes the marker block: from the start marker (text before it on its line stays) to the end
 * of the end marker's line. When the block ends stdout and nothing precedes the start marker on
 * its line, the line before it loses its whole line ending, as {@link removeLines} does.
 */
function removeBlock(lines: string[], start: number, end: number): string {
  const prefix = beforeMarker(lines[start], RET_VAL_START);
  if (prefix === "") return removeLines(lines, start, end);
  const kept = [...lines.slice(0, start), prefix + lines.slice(end + 1).join("\n")];
  return kept.join("\n");
}

/**
 * Removes lines `first..last` with their line endings. When they end stdout, the line before
 * them loses its whole line ending (LF or CRLF), not just the LF.
 */
function removeLines(lines: string[], first: number, last: number): string {
  const kept = [...lines.slice(0, first), ...lines.slice(last + 1)];
  if (last === lines.length - 1 && first > 0) kept[first - 1] = withoutCr(kept[first - 1]);
  return kept.join("\n");
}

/** The line without the CR of a CRLF line ending. */
function withoutCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}

function isJsonObject(line: string): boolean {
  const text = line.trim();
  if (!text.startsWith("{") || !text.endsWith("}")) return false;
  try {
    const value = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value);
  } catch {
    return false;
  }
}
