import { describeDurability } from "./durability/scenarios.js";

describeDurability("local");
