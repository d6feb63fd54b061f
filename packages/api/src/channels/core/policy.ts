/**
 * What a chat prompt may ask for: the operator replaces this hook (ApiDeps.chat.policy) with
 * their own rules or a classifier. Returns a sentence for the user when it refuses, else null.
 */
export interface ContentPolicy {
  check(input: ContentCheck): Promise<string | null> | string | null;
}

export interface ContentCheck {
  platform: "discord" | "slack";
  prompt: string;
  negativePrompt?: string;
  /** Discord's channel flag; Slack has none, so its channels count as not NSFW. */
  channelNsfw: boolean;
  userId: string;
  guildId?: string;
}

/**
 * The default: prompts naming a word of KILN_CHAT_BLOCKED_WORDS are refused in channels not
 * marked NSFW (whole words, any case). With an empty list everything passes.
 */
export function wordListPolicy(words: readonly string[]): ContentPolicy {
  const blocked = new Set(words.map((w) => w.toLowerCase()));
  return {
    check({ prompt, channelNsfw }) {
      if (channelNsfw || blocked.size === 0) return null;
      const hit = prompt
        .toLowerCase()
        .split(/[^\p{L}\p{N}]+/u)
        .find((w) => blocked.has(w));
      return hit
        ? `This channel is not marked NSFW and the prompt contains a word this server does not allow here ("${hit}"); rephrase it, or use a channel marked NSFW.`
        : null;
    },
  };
}
