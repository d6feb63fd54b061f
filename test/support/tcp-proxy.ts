import net from "node:net";

export interface TcpProxy {
  /** `http://127.0.0.1:<port>`: point a client here instead of at the target. */
  url: string;
  port: number;
  /** Refuses service: stops listening (new connections get ECONNREFUSED) and cuts every open connection. */
  pause(): Promise<void>;
  /** Listens again on the same port. */
  resume(): Promise<void>;
  close(): Promise<void>;
}

/**
 * A loopback TCP proxy in front of a stand-in, so a test can make a store or queue refuse
 * requests for a while — the network failing, not a mock of the client.
 */
export async function startTcpProxy(target: string): Promise<TcpProxy> {
  const { hostname, port: targetPort } = new URL(target);
  const sockets = new Set<net.Socket>();
  const serve = (client: net.Socket) => {
    const upstream = net.connect(Number(targetPort), hostname);
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  };
  let server = net.createServer(serve);
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port));
    });
  const port = await listen(0);
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      sockets.clear();
      if (!server.listening) return resolve();
      server.close(() => resolve());
    });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pause: stop,
    async resume() {
      server = net.createServer(serve);
      await listen(port);
    },
    close: stop,
  };
}
