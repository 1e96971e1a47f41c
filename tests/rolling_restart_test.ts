/**
 * A rolling restart behind HAProxy loses no request, and the instances see
 * the real clients.
 *
 * HAProxy (Debian package `haproxy`) runs `deploy/haproxy.cfg` on free loopback
 * ports in front of two `server.ts` instances with `--proxy-protocol`
 * (HAProxy sends a PROXY v2 header on every connection and a v2 LOCAL header
 * on its health checks). Clients
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
    const [front, stats, ...instancePorts] = distinctFreePorts(4);
    const instances = [0, 1].map((i) => ({
      name: `lineservers/ls${i + 1}`,
      port: instancePorts[i],
    }));
    const args = (i: number) => [
      "--port",
      String(instances[i].port),
      "--proxy-protocol",
      "--shutdown-timeout",
      "5",
    ];
    const servers: (ServerProcess | undefined)[] = [undefined, undefined];
    /** Every instance ever started, for its log. */
    const started: ServerProcess[] = [];
    let haproxy: HaproxyProcess | undefined;
    const clients: RollingClient[] = [];
    const startedAt = Date.now();
    try {
      [servers[0], servers[1]] = await Promise.all(
        [0, 1].map((i) => ServerProcess.start(args(i))),
      );
      started.push(servers[0]!, servers[1]!);
      haproxy = await HaproxyProcess.start({
        LINESERVER_FRONTEND: `127.0.0.1:${front}`,
        LINESERVER_1: `127.0.0.1:${instances[0].port}`,
        LINESERVER_2: `127.0.0.1:${instances[1].port}`,
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
        // The drain closes the listener at once: the health check fails.
        await haproxy.waitForStatus(instances[i].name, "DOWN", 10000);
        const status = await old.waitForExit(10000);
        assert.equal(status.code, 0, old.stderr);
        servers[i] = undefined;

        servers[i] = await ServerProcess.start(args(i));
        started.push(servers[i]!);
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
          Date.now() - startedAt
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
      // The instances logged the clients' own addresses (from the PROXY
      // header), not HAProxy's: every client connection is there by its port.
      const logged = new Set(
        started.flatMap((server) =>
          [...server.stderr.matchAll(/connection opened 127\.0\.0\.1:(\d+)/g)]
            .map((match) => Number(match[1]))
        ),
      );
      const clientPorts = clients.flatMap((c) => c.localPorts);
      const seen = clientPorts.filter((port) => logged.has(port)).length;
      console.log(
        `client addresses in the instances' logs: ${seen} of ${clientPorts.length} client connections`,
      );
      assert.ok(
        seen >= clientPorts.length - total("noBackend"),
        `${seen} of ${clientPorts.length} client ports logged`,
      );
    } finally {
      for (const client of clients) client.kill();
      await Promise.allSettled(clients.map((c) => c.done));
      await haproxy?.stop();
      await Promise.all(servers.map((s) => s?.stop()));
    }
  },
});
