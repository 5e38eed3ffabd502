// The opencode config of the coding-agent check (scripts/check_coding_agent.sh), written to
// the file its argument names, from CHECK_BASE_URL, CHECK_MODEL, CHECK_CONTEXT, CHECK_OUTPUT
// and CHECK_KEY.
const env = process.env;
const options = { baseURL: env.CHECK_BASE_URL };
if (env.CHECK_KEY) options.apiKey = "{env:PADDLER_CHECK_API_KEY}";
const agent = (description, prompt, permission) =>
  ({ mode: "primary", description, prompt, temperature: 0, permission });
const config = {
  autoupdate: false,
  share: "disabled",
  snapshot: false,
  lsp: false,
  formatter: false,
  compaction: { auto: false, prune: false },
  enabled_providers: ["paddler"],
  provider: {
    paddler: {
      npm: "@ai-sdk/openai-compatible",
      name: "Paddler",
      options,
      models: {
        [env.CHECK_MODEL]: {
          name: env.CHECK_MODEL,
          tool_call: true,
          temperature: true,
          limit: { context: Number(env.CHECK_CONTEXT), output: Number(env.CHECK_OUTPUT) },
        },
      },
    },
  },
  model: `paddler/${env.CHECK_MODEL}`,
  small_model: `paddler/${env.CHECK_MODEL}`,
  agent: {
    "paddler-tools": agent(
      "Offered glob and todowrite, whose calls are asked (so rejected in a run).",
      "You are a coding agent working in the current folder. Use a tool to do what the user asks.",
      { "*": "deny", glob: "ask", todowrite: "ask", external_directory: "ask" },
    ),
    "paddler-reply": agent(
      "No tools: replies in text.",
      "You are a coding agent. Reply to the user in one short sentence.",
      { "*": "deny" },
    ),
  },
};
require("fs").writeFileSync(process.argv[2], JSON.stringify(config, null, 2));

