import { describeDurability } from "./durability/scenarios.js";

describeDurability("aws");
