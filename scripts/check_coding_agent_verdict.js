// The coding-agent check's verdict (scripts/check_coding_agent.sh), from opencode's events
// and logs in WORK: node check_coding_agent_verdict.js WORK STATUS1 STATUS2 SECONDS
// (a turn's status: its exit status, or "skipped"). Prints what each turn did; exits 1 on a
// failure, with what failed and the logs' tails.
const fs = require("fs");
const [work, status1, status2, seconds] = process.argv.slice(2);
const failures = [];
const read = (file) => (fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "");
const events = (name) =>
  read(`${work}/${name}.jsonl`).split("\n").flatMap((line) => {
    try { return [JSON.parse(line)]; } catch { return []; }
  });
const usage = (steps) => {
  const last = steps.at(-1)?.part?.tokens;
  return last ? `${last.input + (last.cache?.read ?? 0)} prompt + ${last.output} completion tokens` : "no usage";
};

function check(name, label, status) {
  const all = events(name);
  const log = read(`${work}/${name}.log`);
  if (status === "skipped") {
    failures.push(`${label}: not run (no reply reached turn 1)`);
    return { all, steps: [] };
  }
  if (fs.existsSync(`${work}/${name}.stopped`)) failures.push(`${label}: stopped at a second step: the first did not end the run`);
  else if (status === "124") failures.push(`${label}: out of time (--timeout)`);
  else if (status !== "0") failures.push(`${label}: opencode exited with status ${status}`);
  for (const event of all.filter((e) => e.type === "error")) {
    const error = event.error ?? {};
    const http = error.data?.statusCode ? ` (HTTP ${error.data.statusCode})` : "";
    failures.push(`${label}: error event ${error.name}${http}: ${error.data?.message ?? JSON.stringify(error)}`);
  }
  const errors = log.split("\n").filter((l) => /level=ERROR|AI_APICallError/.test(l));
  if (errors.length) {
    failures.push(`${label}: ${errors.length} ERROR line(s) in opencode's log, the first: ${errors[0].slice(0, 300)}`);
  }
  const steps = all.filter((e) => e.type === "step_finish");
  if (steps.length === 0) failures.push(`${label}: no step finished (no reply reached opencode)`);
  for (const { part } of steps) {
    const prompt = (part?.tokens?.input ?? 0) + (part?.tokens?.cache?.read ?? 0);
    if (!(prompt > 0 && part?.tokens?.output > 0)) failures.push(`${label}: a reply without usage`);
  }
  return { all, steps };
}

const one = check("tools", "turn 1 (tools)", status1);
const calls = one.all.filter((e) => e.type === "tool_use").map((e) => e.part);
let called = "no tool call";
if (calls.length === 0) {
  const said = one.all.filter((e) => e.type === "text").map((e) => e.part.text).join(" ");
  failures.push(`turn 1 (tools): no tool call reached opencode` + (said ? ` (the model answered in text: ${JSON.stringify(said.slice(0, 200))})` : ""));
} else {
  const call = calls[0];
  const rejected = /rejected permission/.test(call.state?.error ?? "");
  called = `${call.tool}(${JSON.stringify(call.state?.input ?? {})}), ${rejected ? "rejected at its permission as planned" : call.state?.status}`;
  if (!["glob", "todowrite"].includes(call.tool)) failures.push(`turn 1 (tools): the call named ${call.tool}, not an offered tool (its arguments did not parse?): ${JSON.stringify(call.state)}`);
  if (!rejected) failures.push(`turn 1 (tools): the call was not stopped at its permission: ${JSON.stringify(call.state)}`);
}
if (one.steps.length && one.steps.at(-1).part.reason !== "tool-calls") failures.push(`turn 1 (tools): finish reason ${one.steps.at(-1).part.reason}, not tool-calls`);

const two = check("reply", "turn 2 (reply)", status2);
const text = two.all.filter((e) => e.type === "text").map((e) => e.part.text).join("");
if (status2 !== "skipped" && !text.trim()) failures.push("turn 2 (reply): no text reached opencode");
const reason = two.steps.at(-1)?.part?.reason;
if (two.steps.length && !["stop", "length"].includes(reason)) failures.push(`turn 2 (reply): finish reason ${reason}, not stop or length`);

console.log(`turn 1 (tools): ${called}; finish ${one.steps.at(-1)?.part?.reason ?? "-"}; ${usage(one.steps)}`);
console.log(`turn 2 (reply): ${text.length} characters of text (${JSON.stringify(text.slice(0, 80))}); finish ${reason ?? "-"}; ${usage(two.steps)}`);
if (failures.length === 0) {
  console.log(`coding agent check passed in ${seconds} s`);
  process.exit(0);
}
console.log(`coding agent check FAILED in ${seconds} s:`);
for (const failure of failures) console.log(`  - ${failure}`);
for (const name of ["tools", "reply"]) {
  for (const suffix of ["jsonl", "log"]) {
    const lines = read(`${work}/${name}.${suffix}`).trim().split("\n").slice(-6);
    const tail = lines.map((line) => line.slice(0, 300)).join("\n").trim();
    if (tail) console.log(`--- ${name}.${suffix} (last lines; --keep keeps them all)\n${tail}`);
  }
}
process.exit(1);
