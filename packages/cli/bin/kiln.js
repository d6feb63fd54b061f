#!/usr/bin/env node
// The `kiln` command. Kiln's packages ship their TypeScript sources; tsx compiles them on load.
import { register } from "tsx/esm/api";

register();
await import("../src/main");
