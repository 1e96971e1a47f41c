/**
 * A rolling restart behind HAProxy loses no request (SPEC §6 and §8 together).
 *
 * HAProxy (Debian package `haproxy`) runs `deploy/haproxy.cfg` on free loopback
 * ports in front of two `server.ts` instances with `--admin-port`. Clients
 * pipeline calculator requests through HAProxy without pause, switching
 * between sum and product mode, and check every reply byte for byte. Instance
 * 1 gets SIGTERM, is replaced on the same ports, and once HAProxy sees the
 * replacement UP the same happens to instance 2. A client whose connection ends
 * (`<server shutting down>`, or EOF) reconnects through HAProxy, sets its mode
 * again and re-sends the requests not yet answered. In the end every request
 * has had its one correct reply, in order.
 */
import assert from "node:assert/strict";
import { waitFor, withTimeout } from "./support/deadline.ts";
import { waitForHealth } from "./support/admin_client.ts";
import {
  distinctFreePorts,
  haproxyMissingReason,
  HaproxyProcess,
} from "./support/haproxy.ts";
import { RollingClient } from "./support/rolling_client.ts";
import { ServerProcess } from "./support/server_process.ts";

const missing = await haproxyMissingReason();
if (missing) console.error(`rolling_restart_test.ts: ignoring: ${missing}`);

const CLIENTS = 4;

Deno.test({
  name: missing
    ? `rolling restart behind HAProxy loses no request (ignored: ${missing})`
    : "rolling restart behind HAProxy loses no request",
  ignore: missing !== undefined,
  fn: async () => {
    const [front, stats, ...instancePorts] = distinctFreePorts(6);
    const instances = [0, 1].map((i) => ({
      name: `lineservers/ls${i + 1}`,
      port: instancePorts[2 * i],
      admin: instancePorts[2 * i + 1],
    }));
    const args = (i: number) => [
      "--port",
      String(instances[i].port),
      "--admin-port",
      String(instances[i].admin),
      "--shutdown-timeout",
      "5",
    ];
    const servers: (ServerProcess | undefined)[] = [undefined, undefined];
    let haproxy: HaproxyProcess | undefined;
    const clients: RollingClient[] = [];
    const started = Date.now();
    try {
      [servers[0], servers[1]] = await Promise.all(
        [0, 1].map((i) => ServerProcess.start(args(i))),
      );
      haproxy = await HaproxyProcess.start({
        LINESERVER_FRONTEND: `127.0.0.1:${front}`,
        LINESERVER_1: `127.0.0.1:${instances[0].port}`,
        LINESERVER_1_ADMIN: String(instances[0].admin),
        LINESERVER_2: `127.0.0.1:${instances[1].port}`,
        LINESERVER_2_ADMIN: String(instances[1].admin),
      }, stats);
      for (const { name } of instances) await haproxy.waitForStatus(name, "UP");

      for (let id = 0; id < CLIENTS; id++) {
        clients.push(new RollingClient(id, front));
      }
      const failed = Promise.race(clients.map((c) => c.done)).then(
        () => {
          throw new Error("A client ended early");
        },
      );
      failed.catch(() => {}); // Observed through waitFor below.
      const progress = async (what: string) => {
        const marks = clients.map((c) => c.answered);
        await waitFor(
          `every client gets 20 more replies ${what}`,
          () => clients.every((c, i) => c.answered >= marks[i] + 20),
          10000,
          failed,
        );
      };
      await progress("at the start");

      const reconnectsPerRestart: number[] = [];
      for (let i = 0; i < 2; i++) {
        const before = clients.reduce((sum, c) => sum + c.reconnects, 0);
        const old = servers[i]!;
        old.signal("SIGTERM");
        // The drain turns /healthz to 503 (then the port closes): HAProxy takes it out.
        await haproxy.waitForStatus(instances[i].name, "DOWN", 10000);
        const status = await old.waitForExit(10000);
        assert.equal(status.code, 0, old.stderr);
        servers[i] = undefined;

        servers[i] = await ServerProcess.start(args(i));
        await waitForHealth(instances[i].admin, (r) => r.status === 200, 10000);
        await haproxy.waitForStatus(instances[i].name, "UP", 10000);
        await progress(`after restarting instance ${i + 1}`);
        reconnectsPerRestart.push(
          clients.reduce((sum, c) => sum + c.reconnects, 0) - before,
        );
      }

      for (const client of clients) client.stop();
      await withTimeout(
        Promise.all(clients.map((c) => c.done)),
        15000,
        "clients finishing",
      );

      const total = (key: keyof RollingClient) =>
        clients.reduce((sum, c) => sum + (c[key] as number), 0);
      console.log(
        `rolling restart: ${
          total("answered")
        } requests answered by ${CLIENTS} clients in ${
          Date.now() - started
        } ms; ${
          total("retried")
        } re-sent after a restart; connections ended by ` +
          `notice ${total("notices")}, abruptly ${total("abrupt")}; ` +
          `${
            total("noBackend")
          } got no backend; reconnects per restart ${reconnectsPerRestart}`,
      );
      // Every client finished its sequence: each request answered once, correctly, in order.
      for (const client of clients) {
        assert.ok(client.answered >= 60, `client ${client.id}`);
      }
      // Each restart really moved clients, and the drain told at least one of them.
      for (const n of reconnectsPerRestart) {
        assert.ok(n >= 1, `reconnects ${reconnectsPerRestart}`);
      }
      assert.ok(
        total("notices") >= 1,
        "no client ever saw <server shutting down>",
      );
    } finally {
      for (const client of clients) client.kill();
      await Promise.allSettled(clients.map((c) => c.done));
      await haproxy?.stop();
      await Promise.all(servers.map((s) => s?.stop()));
    }
  },
});
