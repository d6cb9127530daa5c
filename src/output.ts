/**
 * Capture of one output stream of a run (stdout or stderr), bounded whatever the code prints.
 *
 * Up to the cap the stream is kept whole. Past it the run goes on and the capture keeps the
 * stream's head and its tail (half the cap each: the tail is where result markers and a final
 * JSON line live), and the middle becomes one line saying how many bytes were dropped. With the
 * `stop` policy the runtime stops the run at the cap instead (see {@link OutputCapture.exceeded}).
 *
 * @module
 */

/** What can happen when a run prints past the cap; the first is the default. */
export const OUTPUT_POLICIES = ["truncate", "stop"] as const;

/** What happens when a run prints past the cap. */
export type OutputPolicy = typeof OUTPUT_POLICIES[number];

/** The line that replaces the middle of a stream past its cap. */
export function droppedLine(bytes: number): string {
  return `\n[… ${bytes} bytes of output dropped …]\n`;
}

/** One stream's capture; see the module doc. */
export class OutputCapture {
  #limit: number;
  #headRoom: number;
  #tailRoom: number;
  #head: string[] = [];
  #headBytes = 0;
  #tail: string[] = [];
  #tailBytes = 0;
  #total = 0;

  /** Captures up to `limitBytes` of UTF-8 whole, head and tail past it. */
  constructor(limitBytes: number) {
    this.#limit = limitBytes;
    this.#headRoom = Math.floor(limitBytes / 2);
    this.#tailRoom = limitBytes - this.#headRoom;
  }

  /** Bytes written so far, kept or not. */
  get bytes(): number {
    return this.#total;
  }

  /** True once more than the cap was written. */
  get exceeded(): boolean {
    return this.#total > this.#limit;
  }

  /** Appends text the run wrote. */
  push(text: string): void {
    if (text.length === 0) return;
    const size = utf8Length(text);
    this.#total += size;
    if (this.#headBytes < this.#headRoom) {
      const room = this.#headRoom - this.#headBytes;
      if (size <= room) {
        this.#head.push(text);
        this.#headBytes += size;
        return;
      }
      const kept = prefixWithin(text, room);
      this.#head.push(kept);
      this.#headBytes += utf8Length(kept);
      text = text.slice(kept.length);
    }
    this.#tail.push(text);
    this.#tailBytes += utf8Length(text);
    this.#trimTail();
  }

  /** The captured text: whole, or head, the dropped-bytes line and tail. */
  text(): string {
    const head = this.#head.join("");
    if (!this.exceeded) return head + this.#tail.join("");
    const tail = this.#tail.join("");
    const dropped = this.#total - this.#headBytes - this.#tailBytes;
    return head + droppedLine(dropped) + tail;
  }

  /** Keeps the tail within its room, dropping whole chunks, then characters, from its front. */
  #trimTail(): void {
    // Past the cap, the tail keeps only what fits beside the head.
    const room = this.#total > this.#limit ? this.#tailRoom : this.#limit - this.#headBytes;
    while (this.#tailBytes > room && this.#tail.length > 0) {
      const first = this.#tail[0];
      const size = utf8Length(first);
      if (this.#tailBytes - size >= room) {
        this.#tail.shift();
        this.#tailBytes -= size;
        continue;
      }
      const kept = suffixWithin(first, size - (this.#tailBytes - room));
      this.#tail[0] = kept;
      this.#tailBytes -= size - utf8Length(kept);
      break;
    }
  }
}

/** UTF-8 length of `text` without encoding it. */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

/** The longest prefix of `text` within `maxBytes` of UTF-8, cut between characters. */
function prefixWithin(text: string, maxBytes: number): string {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    const pair = code >= 0xd800 && code <= 0xdbff && i + 1 < text.length;
    const size = code < 0x80 ? 1 : code < 0x800 ? 2 : pair ? 4 : 3;
    if (bytes + size > maxBytes) return text.slice(0, i);
    bytes += size;
    if (pair) i++;
  }
  return text;
}

/** The longest suffix of `text` within `maxBytes` of UTF-8, cut between characters. */
function suffixWithin(text: string, maxBytes: number): string {
  let bytes = 0;
  for (let i = text.length - 1; i >= 0; i--) {
    const code = text.charCodeAt(i);
    const pair = code >= 0xdc00 && code <= 0xdfff && i > 0 &&
      text.charCodeAt(i - 1) >= 0xd800 && text.charCodeAt(i - 1) <= 0xdbff;
    const size = code < 0x80 ? 1 : code < 0x800 ? 2 : pair ? 4 : 3;
    if (bytes + size > maxBytes) return text.slice(i + 1);
    bytes += size;
    if (pair) i--;
  }
  return text;
}
