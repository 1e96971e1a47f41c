/** Unit tests of the log helpers in `src/logging.ts`. */
import assert from "node:assert/strict";
import { plural } from "../src/logging.ts";

Deno.test("logging: plural() is singular for exactly 1", () => {
  assert.equal(plural(1, "line"), "1 line");
  assert.equal(plural(1, "connection"), "1 connection");
  for (const n of [0, 2, 59, 1_000_000]) {
    assert.equal(plural(n, "line"), `${n} lines`);
  }
});
