"use strict";
// The admin panel's pools: every pool live (from the cluster snapshots), and which pool the
// desired-state form edits. Uses `$` and `cell` from panel.js.

function poolRollout(pool) {
  const rollout = pool.rollout;
  if (rollout.failure) return `stopped: ${rollout.failure}`;
  if (pool.desiredState.version === "0") return "";
  return `${rollout.applied}/${rollout.agents} applied`;
}

function showPools(pools) {
  const rows = pools.map((pool) => {
    const tr = document.createElement("tr");
    tr.dataset.pool = pool.name;
    const version = pool.desiredState.version;
    tr.append(
      cell(pool.name), cell(pool.aliases.join(", ")), cell(pool.models.join(", ")),
      cell(`${pool.serving}/${pool.agents}`), cell(`${pool.slotsFree}/${pool.slotsTotal}`),
      cell(String(pool.buffered)), cell(version === "0" ? "none set" : `v${version}`),
      cell(poolRollout(pool)),
    );
    return tr;
  });
  $("pools").replaceChildren(...rows);
  const known = new Set([...$("pool-names").options].map((option) => option.value));
  for (const pool of pools) {
    if (known.has(pool.name)) continue;
    const option = document.createElement("option");
    option.value = pool.name;
    $("pool-names").append(option);
  }
}

// The pool the state form edits ("default" when the field is empty).
function statePool() {
  return $("state-pool").value.trim() || "default";
}

// The state's URL: the pool unless it is "default", and the aliases when they are to change.
function statePath(aliases) {
  const query = new URLSearchParams();
  if (statePool() !== "default") query.set("pool", statePool());
  if (aliases !== undefined) query.set("aliases", aliases);
  const text = query.toString();
  return text ? `/api/state?${text}` : "/api/state";
}
