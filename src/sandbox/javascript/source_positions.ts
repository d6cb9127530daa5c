/**
 * Stack frames of transformed TypeScript, pointed back at the user's code: the `file:line:column`
 * positions a run printed or returned are collected (at most {@link MAX_POSITIONS} distinct
 * ones), looked up through the transform's source map in one request to a syntax process, and
 * replaced. The service's own work is one scan of texts it already holds, whose size the output
 * cap bounds; decoding the map, which grows with the user's code, happens in the syntax process.
 *
 * @module
 */

/** Looks up 1-based `[line, column]` positions; `null` where the code has no source. */
export type PositionLookup = (
  positions: [number, number][],
) => Promise<([number, number] | null)[]>;

/** Distinct positions looked up per run at most; later ones stay as they are. */
export const MAX_POSITIONS = 256;

/** The positions of one piece of transformed code. */
export class SourcePositions {
  #lookup: PositionLookup;

  /** Positions of transformed code, looked up with `lookup`. */
  constructor(lookup: PositionLookup) {
    this.#lookup = lookup;
  }

  /**
   * Rewrites `file:line:column` positions in each of `texts` (stack frames) to the user's; a
   * position without a source, or any failure of the lookup, leaves a text as it is.
   */
  async rewrite(texts: readonly string[], file: string): Promise<string[]> {
    const pattern = new RegExp(`${escapeRegExp(file)}:(\\d+):(\\d+)`, "g");
    const wanted = new Map<string, [number, number]>();
    for (const text of texts) {
      if (!text.includes(file)) continue;
      for (const match of text.matchAll(pattern)) {
        if (wanted.size >= MAX_POSITIONS) break;
        const position: [number, number] = [Number(match[1]), Number(match[2])];
        if (!Number.isSafeInteger(position[0]) || !Number.isSafeInteger(position[1])) continue;
        wanted.set(`${position[0]}:${position[1]}`, position);
      }
    }
    if (wanted.size === 0) return [...texts];
    let found: ([number, number] | null)[];
    try {
      found = await this.#lookup([...wanted.values()]);
    } catch {
      return [...texts];
    }
    const mapped = new Map<string, string>();
    [...wanted.keys()].forEach((key, index) => {
      const source = found[index];
      if (source) mapped.set(key, `${file}:${source[0]}:${source[1]}`);
    });
    return texts.map((text) =>
      text.replace(
        pattern,
        (match, line, column) => mapped.get(`${Number(line)}:${Number(column)}`) ?? match,
      )
    );
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
