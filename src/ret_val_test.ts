import { assertEquals } from "../tests/helpers/assert.ts";
import { resolveRetVal } from "./ret_val.ts";

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

Deno.test("marker block: text printed without a line ending may precede the start marker", () => {
  assertEquals(fromStdout(`progress: 100%${START}\n{"a":1}\n${END}\n`), {
    retVal: '{"a":1}',
    stdout: "progress: 100%",
  });
  assertEquals(fromStdout(`progress: 100%${START}\r\n{"a":1}\r\n${END}\r\n`), {
    retVal: '{"a":1}',
    stdout: "progress: 100%",
  });
  // Earlier lines and later output stay around the text before the marker, as printed.
  assertEquals(fromStdout(`log\r\nstep 3/3${START}\r\n{"a":1}\r\n${END}\r\nafter\r\n`), {
    retVal: '{"a":1}',
    stdout: "log\r\nstep 3/3after\r\n",
  });
  assertEquals(fromStdout(`log\nprogress${START}\n{"a":1}\n${END}`), {
    retVal: '{"a":1}',
    stdout: "log\nprogress",
  });
});

Deno.test("marker block: text printed without a line ending may precede the end marker", () => {
  assertEquals(fromStdout(`${START}\n{"a":1}${END}\n`), { retVal: '{"a":1}', stdout: "" });
  assertEquals(fromStdout(`log\r\n${START}\r\n{\r\n"a": 1}${END}\r\n`), {
    retVal: '{\r\n"a": 1}',
    stdout: "log\r\n",
  });
  assertEquals(fromStdout(`p${START}\n{"a":1}${END}`), { retVal: '{"a":1}', stdout: "p" });
});

Deno.test("a marker followed by more text on its line is no marker", () => {
  assertEquals(fromStdout(`${START} and more\n{"a":1}\n${END}\n`), {
    retVal: '{"a":1}',
    stdout: `${START} and more\n${END}\n`,
  });
});
