import { assertEquals } from "./helpers/assert.ts";
import { resolveRetVal } from "../src/ret_val.ts";

const START = "__COZE_RETURN_VAL_START__";
const END = "__COZE_RETURN_VAL_END__";

function fromStdout(stdout: string) {
  return resolveRetVal({ stdout });
}

Deno.test("marker block: LF output gives the text between the markers", () => {
  assertEquals(fromStdout(`log\n${START}\n{"a":1}\n${END}\n`), {
    retVal: '{"a":1}',
    stdout: "log\n",
  });
});

Deno.test("marker block: CRLF line endings are not part of ret_val nor left in stdout", () => {
  assertEquals(fromStdout(`${START}\r\n{"a":1}\r\n${END}\r\n`), { retVal: '{"a":1}', stdout: "" });
  assertEquals(fromStdout(`log\r\n${START}\r\n{"a":1}\r\n${END}\r\nafter\r\n`), {
    retVal: '{"a":1}',
    stdout: "log\r\nafter\r\n",
  });
  // The block ends stdout without a final line ending: like LF, the line before it loses its
  // line ending, all of it.
  assertEquals(fromStdout(`log\n${START}\n{"a":1}\n${END}`), { retVal: '{"a":1}', stdout: "log" });
  assertEquals(fromStdout(`log\r\n${START}\r\n{"a":1}\r\n${END}`), {
    retVal: '{"a":1}',
    stdout: "log",
  });
});

Deno.test("marker block: CRLF inside a multi-line value is kept, only the last one is dropped", () => {
  assertEquals(fromStdout(`${START}\r\n{\r\n"a": 1\r\n}\r\n${END}\r\n`).retVal, '{\r\n"a": 1\r\n}');
  assertEquals(fromStdout(`${START}\r\n${END}\r\n`), { retVal: "", stdout: "" });
  assertEquals(fromStdout(`${START}\r\n\r\n${END}\r\n`), { retVal: "", stdout: "" });
});

Deno.test("last JSON object line: CRLF endings leave no stray \\r in ret_val or stdout", () => {
  assertEquals(fromStdout('log\r\n{"a":1}\r\n'), { retVal: '{"a":1}', stdout: "log\r\n" });
  assertEquals(fromStdout('log\r\n{"a":1}\r\nafter\r\n'), {
    retVal: '{"a":1}',
    stdout: "log\r\nafter\r\n",
  });
  assertEquals(fromStdout('log\n{"a":1}'), { retVal: '{"a":1}', stdout: "log" });
  assertEquals(fromStdout('log\r\n{"a":1}'), { retVal: '{"a":1}', stdout: "log" });
});

Deno.test("explicit and returned values take precedence and leave stdout as it is", () => {
  const stdout = `${START}\r\n{"a":1}\r\n${END}\r\n`;
  assertEquals(resolveRetVal({ explicit: "x", returned: "1", stdout }), { retVal: "x", stdout });
  assertEquals(resolveRetVal({ returned: "1", stdout }), { retVal: "1", stdout });
  assertEquals(fromStdout("no value\r\n"), { retVal: "", stdout: "no value\r\n" });
});
