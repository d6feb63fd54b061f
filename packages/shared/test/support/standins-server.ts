/**
 * The AWS stand-ins as a process of their own (`node --import tsx standins-server.ts`): prints one
 * JSON line with the endpoints, then serves until SIGTERM. For measurements where the servers must
 * not share an event loop with the clients measured (`kiln bench handoff`).
 */
import { startAwsStandins } from "./aws-standins.js";

const standins = await startAwsStandins();
const { stop, ...endpoints } = standins;
process.stdout.write(`${JSON.stringify(endpoints)}\n`);
process.on("SIGTERM", () => void stop().then(() => process.exit(0)));
