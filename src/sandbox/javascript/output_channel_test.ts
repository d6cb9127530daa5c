import { assertEquals } from "../../../tests/helpers/assert.ts";
import {
  createOutputBuffer,
  OUTPUT_RING_BYTES,
  type OutputChunk,
  OutputReader,
  OutputWriter,
} from "./output_channel.ts";

/** A writer and a reader on one ring; the writer drains into `taken` when the ring is full. */
function channel() {
  const buffer = createOutputBuffer();
  const reader = new OutputReader(buffer);
  const taken: OutputChunk[] = [];
  const writer = new OutputWriter(buffer, () => taken.push(...reader.drain()));
  return { reader, writer, taken };
}

/** The text of each descriptor, in order, and the order in which descriptors alternated. */
function streams(chunks: OutputChunk[]) {
  const text = { 1: "", 2: "" };
  const order: number[] = [];
  for (const { fd, data } of chunks) {
    text[fd] += data;
    if (order.at(-1) !== fd) order.push(fd);
  }
  return { text, order };
}

Deno.test("output channel: many small writes round the ring many times, in order, unchanged", () => {
  const { reader, writer, taken } = channel();
  let expected = "";
  for (let i = 0; i < 50_000; i++) {
    const line = `line ${i} é 😀 ${"x".repeat(i % 37)}\n`;
    writer.write(1, line);
    expected += line;
  }
  taken.push(...reader.drain());
  assertEquals(streams(taken).text[1], expected);
  assertEquals(reader.drain(), []);
});

Deno.test("output channel: stdout and stderr keep their interleaving; runs of one are merged", () => {
  const { reader, writer } = channel();
  writer.write(1, "a");
  writer.write(1, "b");
  writer.write(2, "c");
  writer.write(1, "d");
  writer.write(2, "e");
  writer.write(2, "f");
  assertEquals(reader.drain(), [
    { fd: 1, data: "ab" },
    { fd: 2, data: "c" },
    { fd: 1, data: "d" },
    { fd: 2, data: "ef" },
  ]);
});

Deno.test("output channel: a write larger than the ring arrives whole, characters intact", () => {
  const { reader, writer, taken } = channel();
  writer.write(2, "start\n");
  // Wraps mid-record more than once; 3-byte and 4-byte characters straddle the record ends.
  const big = "€😀".repeat(OUTPUT_RING_BYTES / 2) + "end";
  writer.write(1, big);
  taken.push(...reader.drain());
  const { text, order } = streams(taken);
  assertEquals(text[1], big);
  assertEquals(text[2], "start\n");
  assertEquals(order, [2, 1]);
});
