import { RENDER_MODES } from "@kiln/shared";
import {
  ApplicationCommandOptionType,
  ApplicationCommandType,
  type RESTPutAPIApplicationCommandsJSONBody,
} from "discord-api-types/v10";

/** `/imagine`, as `kiln discord register-commands` publishes it (bulk overwrite). */
export const DISCORD_COMMANDS: RESTPutAPIApplicationCommandsJSONBody = [
  {
    type: ApplicationCommandType.ChatInput,
    name: "imagine",
    description: "Render a picture with Kiln (SDXL)",
    options: [
      {
        type: ApplicationCommandOptionType.String,
        name: "prompt",
        description: "What to draw",
        required: true,
        max_length: 4000,
      },
      {
        type: ApplicationCommandOptionType.String,
        name: "negative",
        description: "What to keep out of the picture",
        max_length: 4000,
      },
      {
        type: ApplicationCommandOptionType.String,
        name: "mode",
        description: "base, ensemble (default) or sdedit",
        choices: RENDER_MODES.map((m) => ({ name: m, value: m })),
      },
      {
        type: ApplicationCommandOptionType.String,
        name: "size",
        description: "WIDTHxHEIGHT, multiples of 8 (default 1024x1024)",
      },
      {
        type: ApplicationCommandOptionType.Integer,
        name: "seed",
        description: "For a repeatable picture",
        min_value: 0,
        max_value: 4294967295,
      },
      {
        type: ApplicationCommandOptionType.Integer,
        name: "steps",
        description: "Denoising steps (default 30)",
        min_value: 1,
        max_value: 150,
      },
    ],
  },
];
