/**
 * Reads a source map (version 3) far enough to answer where a generated position came from:
 * the `mappings` are decoded once, then each lookup is a binary search in its line. Runs in the
 * syntax process, on the maps of TypeScript that had to be transformed.
 *
 * @module
 */

/** A 1-based line and 0-based column, as in source maps. */
export interface MapPosition {
  /** 1-based line. */
  line: number;
  /** 0-based column. */
  column: number;
}

/** Segments of one generated line: generated column, source line, source column (all 0-based). */
type Line = Int32Array;

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DIGITS = new Int8Array(128).fill(-1);
for (let i = 0; i < BASE64.length; i++) DIGITS[BASE64.charCodeAt(i)] = i;

/** The decoded mappings of one source map. */
export class SourceMap {
  #lines: Line[];

  /**
   * Decodes `map`, the JSON text of a source map.
   *
   * @throws {Error} when the text is not a version 3 source map.
   */
  constructor(map: string) {
    const parsed: unknown = JSON.parse(map);
    const mappings = (parsed as { mappings?: unknown } | null)?.mappings;
    if (typeof mappings !== "string") throw new Error("expected a source map with mappings");
    this.#lines = decodeMappings(mappings);
  }

  /**
   * The source position of the generated `position`: the last segment of its line that starts
   * at or before its column, as `originalPositionFor` of common source map readers does;
   * `undefined` where nothing maps.
   */
  originalPosition(position: MapPosition): MapPosition | undefined {
    const line = this.#lines[position.line - 1];
    if (!line || line.length === 0) return undefined;
    let low = 0;
    let high = line.length / 3 - 1;
    let found = -1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      if (line[middle * 3] <= position.column) {
        found = middle;
        low = middle + 1;
      } else {
        high = middle - 1;
      }
    }
    if (found === -1 || line[found * 3 + 1] < 0) return undefined;
    return { line: line[found * 3 + 1] + 1, column: line[found * 3 + 2] };
  }
}

/** Decodes VLQ `mappings` into per-line segments; segments without a source get line -1. */
function decodeMappings(mappings: string): Line[] {
  const lines: Line[] = [];
  let segments: number[] = [];
  let sourceLine = 0;
  let sourceColumn = 0;
  let generatedColumn = 0;
  const fields: number[] = [];
  let at = 0;
  const endSegment = () => {
    if (fields.length === 0) return;
    generatedColumn += fields[0];
    if (fields.length >= 4) {
      sourceLine += fields[2];
      sourceColumn += fields[3];
      segments.push(generatedColumn, sourceLine, sourceColumn);
    } else {
      segments.push(generatedColumn, -1, -1);
    }
    fields.length = 0;
  };
  while (at <= mappings.length) {
    const char = at < mappings.length ? mappings[at] : ";";
    if (char === "," || char === ";") {
      endSegment();
      at++;
      if (char === ";") {
        lines.push(sorted(segments));
        segments = [];
        generatedColumn = 0;
      }
      continue;
    }
    let value = 0;
    let shift = 0;
    for (;;) {
      const digit = DIGITS[mappings.charCodeAt(at++)] ?? -1;
      if (digit === -1) throw new Error(`expected base64 VLQ in the mappings at ${at - 1}`);
      value += (digit & 31) * 2 ** shift;
      shift += 5;
      if ((digit & 32) === 0) break;
      if (shift > 35) throw new Error("expected VLQ values of at most 32 bits in the mappings");
    }
    fields.push(value % 2 === 1 ? -(value - 1) / 2 : value / 2);
  }
  // The end of the text ends the last line (an empty one when the text ended with ";").
  return lines;
}

/** Segments of a line ordered by generated column (a map may list them out of order). */
function sorted(segments: number[]): Line {
  let ordered = true;
  for (let i = 3; i < segments.length; i += 3) {
    if (segments[i] < segments[i - 3]) ordered = false;
  }
  if (ordered) return Int32Array.from(segments);
  const triples: number[][] = [];
  for (let i = 0; i < segments.length; i += 3) triples.push(segments.slice(i, i + 3));
  triples.sort((a, b) => a[0] - b[0]);
  return Int32Array.from(triples.flat());
}
