/**
 * The output channel between a runner's worker and the runner's main thread: a ring buffer in
 * a SharedArrayBuffer. The worker appends what user code prints without sending a message per
 * line; the main thread takes it all when the run ends, when the worker asks (the ring is
 * full), or when the host stops a run that overstays its timeout. The main thread is never
 * blocked by user code, so what a run printed before it looped forever still reaches the
 * host before the runner is killed.
 *
 * A record is one byte of file descriptor (1 or 2), four bytes of length, then UTF-8 bytes.
 * The writer publishes a record by advancing the write position after its bytes are in place,
 * so the reader never sees half a record.
 *
 * @module
 */

/** Bytes of the ring, records included (a power of two). */
export const OUTPUT_RING_BYTES = 256 * 1024;

const WRITE = 0;
const READ = 1;
const HEADER_BYTES = 8;
const RECORD_HEADER = 5;
/** Longest text put into one record, in UTF-16 units (at most 3 bytes each in UTF-8). */
const RECORD_CHARS = Math.floor((OUTPUT_RING_BYTES / 2 - RECORD_HEADER) / 3);

/** Creates the shared memory of one channel. */
export function createOutputBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER_BYTES + OUTPUT_RING_BYTES);
}

/** One piece of output taken from the channel. */
export interface OutputChunk {
  /** 1 for stdout, 2 for stderr. */
  fd: 1 | 2;
  /** The text. */
  data: string;
}

/** The worker's end: appends output, waiting for the main thread only when the ring is full. */
export class OutputWriter {
  #positions: Int32Array;
  #ring: Uint8Array;
  #encoder = new TextEncoder();
  #scratch = new Uint8Array(RECORD_CHARS * 3);
  #askDrain: () => void;

  /** Writes into `buffer`; `askDrain` asks the main thread to empty the ring. */
  constructor(buffer: SharedArrayBuffer, askDrain: () => void) {
    this.#positions = new Int32Array(buffer, 0, 2);
    this.#ring = new Uint8Array(buffer, HEADER_BYTES);
    this.#askDrain = askDrain;
  }

  /** Appends `text` for `fd`; returns its length in UTF-8 bytes. */
  write(fd: 1 | 2, text: string): number {
    let bytes = 0;
    let offset = 0;
    while (offset < text.length) {
      let end = Math.min(text.length, offset + RECORD_CHARS);
      // Never split a surrogate pair across records.
      if (end < text.length && isHighSurrogate(text.charCodeAt(end - 1))) end--;
      const { written } = this.#encoder.encodeInto(text.slice(offset, end), this.#scratch);
      this.#append(fd, this.#scratch.subarray(0, written!));
      bytes += written!;
      offset = end;
    }
    return bytes;
  }

  #append(fd: 1 | 2, data: Uint8Array): void {
    const size = RECORD_HEADER + data.length;
    let write = Atomics.load(this.#positions, WRITE);
    for (;;) {
      const read = Atomics.load(this.#positions, READ);
      if (OUTPUT_RING_BYTES - ((write - read) | 0) >= size) break;
      this.#askDrain();
      Atomics.wait(this.#positions, READ, read, 1000);
      write = Atomics.load(this.#positions, WRITE);
    }
    // The header byte by byte: no view or array is made per record.
    const ring = this.#ring;
    const length = data.length;
    ring[ringIndex(write)] = fd;
    ring[ringIndex(write + 1)] = length >>> 24;
    ring[ringIndex(write + 2)] = (length >>> 16) & 0xff;
    ring[ringIndex(write + 3)] = (length >>> 8) & 0xff;
    ring[ringIndex(write + 4)] = length & 0xff;
    const start = ringIndex(write + RECORD_HEADER);
    const first = Math.min(length, OUTPUT_RING_BYTES - start);
    ring.set(first === length ? data : data.subarray(0, first), start);
    if (first < length) ring.set(data.subarray(first), 0);
    Atomics.store(this.#positions, WRITE, (write + size) | 0);
  }
}

/** The main thread's end: takes every complete record written so far. */
export class OutputReader {
  #positions: Int32Array;
  #ring: Uint8Array;
  #decoder = new TextDecoder();
  /** Where consecutive records of one descriptor are gathered to be decoded in one go. */
  #gathered = new Uint8Array(OUTPUT_RING_BYTES);

  /** Reads from `buffer`, shared with the worker's {@link OutputWriter}. */
  constructor(buffer: SharedArrayBuffer) {
    this.#positions = new Int32Array(buffer, 0, 2);
    this.#ring = new Uint8Array(buffer, HEADER_BYTES);
  }

  /**
   * Takes what was written, oldest first, and wakes a writer waiting for room. Consecutive
   * records of one descriptor come back as one chunk: a run that prints line by line costs
   * one decode per drain, not one per line.
   */
  drain(): OutputChunk[] {
    const chunks: OutputChunk[] = [];
    const ring = this.#ring;
    const gathered = this.#gathered;
    let read = Atomics.load(this.#positions, READ);
    const write = Atomics.load(this.#positions, WRITE);
    let fd: 1 | 2 | undefined;
    let size = 0;
    const flush = () => {
      if (fd !== undefined && size > 0) {
        chunks.push({ fd, data: this.#decoder.decode(gathered.subarray(0, size)) });
      }
      size = 0;
    };
    while (((write - read) | 0) >= RECORD_HEADER) {
      const next = ring[ringIndex(read)];
      const length = (ring[ringIndex(read + 1)] << 24 | ring[ringIndex(read + 2)] << 16 |
        ring[ringIndex(read + 3)] << 8 | ring[ringIndex(read + 4)]) >>> 0;
      if ((next !== 1 && next !== 2) || length > ((write - read) | 0) - RECORD_HEADER) {
        throw new Error("the output channel holds a damaged record");
      }
      if (next !== fd) {
        flush();
        fd = next;
      }
      const start = ringIndex(read + RECORD_HEADER);
      const first = Math.min(length, OUTPUT_RING_BYTES - start);
      gathered.set(ring.subarray(start, start + first), size);
      if (first < length) gathered.set(ring.subarray(0, length - first), size + first);
      size += length;
      read = (read + RECORD_HEADER + length) | 0;
    }
    flush();
    Atomics.store(this.#positions, READ, read);
    Atomics.notify(this.#positions, READ);
    return chunks;
  }
}

/**
 * Positions are 32-bit counters that wrap; the ring's size divides 2^32, so a position maps to
 * the same index before and after a wrap.
 */
function ringIndex(position: number): number {
  return (position >>> 0) % OUTPUT_RING_BYTES;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
