/* keel's own browser code: review keyboard shortcuts, lease renewal, the live dashboard. */
(function () {
  "use strict";
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  async function api(method, url, body) {
    const resp = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = resp.status === 204 ? null : await resp.json().catch(() => null);
    if (!resp.ok) {
      const err = (data && data.error) || { code: "keel.http." + resp.status, message: resp.statusText };
      throw Object.assign(new Error(err.message), { code: err.code, status: resp.status, problems: err.problems || [] });
    }
    return data;
  }

  function when(ts) {
    const d = new Date(ts * 1000), secs = ts - Date.now() / 1000;
    const abs = Math.abs(secs), unit = abs > 7200 ? [3600, "h"] : abs > 120 ? [60, "min"] : [1, "s"];
    const n = Math.round(abs / unit[0]) + " " + unit[1];
    return (secs < 0 ? n + " ago" : "in " + n) + " (" + d.toLocaleTimeString() + ")";
  }
  function dueTimes() {
    document.querySelectorAll("[data-due]").forEach((el) => {
      const ts = parseFloat(el.dataset.due);
      el.textContent = when(ts);
      if (ts < Date.now() / 1000) el.classList.add("bad");
    });
  }
  const typing = (e) => ["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName);

  function inbox() {
    dueTimes();
    document.addEventListener("keydown", (e) => {
      const start = document.getElementById("start");
      if (e.key === "Enter" && start && !typing(e)) { e.preventDefault(); location.href = start.href; }
    });
  }

  function task() {
    dueTimes();
    const root = document.getElementById("task");
    if (!root || root.dataset.status !== "open") return;
    const id = root.dataset.task, leaseS = parseFloat(root.dataset.lease);
    const step = root.dataset.step;  // a multi-step workflow: the decision is on this step
    const problem = document.getElementById("problem");
    const correctForm = document.getElementById("correct-form");
    const rejectForm = document.getElementById("reject-form");
    let busy = false, leaseUntil = Date.now() + leaseS * 1000;

    const show = (msg) => { problem.textContent = msg; problem.classList.remove("hidden"); };
    async function decide(body) {
      if (busy) return;
      busy = true;
      if (step) body.step = step;
      correctForm.querySelectorAll(".failed").forEach((el) => el.classList.remove("failed"));
      try {
        await api("POST", "/v1/review/tasks/" + encodeURIComponent(id) + "/decision", body);
        location.href = "/ui/review/next";
      } catch (err) {
        busy = false;
        show(err.message + " (" + err.code + ")");
        (err.problems || []).forEach((p) => {  // mark the fields the contract refused
          const el = document.getElementById("f-" + String(p.field || "").split(".")[0]);
          if (el) el.classList.add("failed");
        });
      }
    }
    function open(form) {
      [correctForm, rejectForm].forEach((f) => f.classList.toggle("hidden", f !== form));
      const first = form.querySelector("input, select, textarea");
      if (first) { first.focus(); if (first.select) first.select(); }
    }
    function closeForms() {
      correctForm.classList.add("hidden"); rejectForm.classList.add("hidden");
      document.activeElement && document.activeElement.blur();
    }
    function corrected() {
      const out = {};
      correctForm.querySelectorAll("[data-kind]").forEach((el) => {
        const kind = el.dataset.kind, raw = el.value;
        if (kind === "boolean") out[el.name] = el.checked;
        else if (raw === "" ) out[el.name] = null;
        else if (kind === "integer") out[el.name] = parseInt(raw, 10);
        else if (kind === "number") out[el.name] = parseFloat(raw);
        else if (kind === "json") { try { out[el.name] = JSON.parse(raw); } catch (_) { out[el.name] = raw; } }
        else out[el.name] = raw;
      });
      return out;
    }
    const accept = document.getElementById("accept");
    accept.addEventListener("click", () => decide({ decision: "accept" }));
    document.getElementById("correct").addEventListener("click", () => open(correctForm));
    document.getElementById("reject").addEventListener("click", () => open(rejectForm));
    document.getElementById("skip").addEventListener("click", () => {
      location.href = "/ui/review/next?skip=" + encodeURIComponent(id);
    });
    correctForm.addEventListener("submit", (e) => { e.preventDefault(); decide({ decision: "correct", output: corrected() }); });
    rejectForm.addEventListener("submit", (e) => {
      e.preventDefault();
      decide({ decision: "reject", reason: document.getElementById("reject-reason").value });
    });
    rejectForm.querySelector("textarea").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); rejectForm.requestSubmit(); }
    });
    document.querySelectorAll(".cancel").forEach((b) => b.addEventListener("click", closeForms));
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape") { closeForms(); return; }
      if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
      const k = e.key.toLowerCase();
      if (k === "a" && !accept.disabled) { e.preventDefault(); decide({ decision: "accept" }); }
      else if (k === "c") { e.preventDefault(); open(correctForm); }
      else if (k === "r") { e.preventDefault(); open(rejectForm); }
      else if (k === "s") { e.preventDefault(); document.getElementById("skip").click(); }
    });
    // Keep the task ours while the page is open: renew the lease at half its length.
    const leaseEl = document.getElementById("lease");
    setInterval(() => {
      const left = Math.max(0, Math.round((leaseUntil - Date.now()) / 1000));
      leaseEl.textContent = "held for you for " + Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
    }, 1000);
    setInterval(async () => {
      try { await api("POST", "/v1/review/claim", { task_id: id, lease_s: leaseS }); leaseUntil = Date.now() + leaseS * 1000; }
      catch (err) { show("This task is no longer held for you: " + err.message); }
    }, Math.max(5000, leaseS * 500));
  }

  const COLORS = { accepted: "#12b76a", reviewed: "#2e90fa", fallback: "#fdb022", in_review: "#f79009",
                   quarantined: "#98a2b3", failed: "#f04438" };
  const REASON_COLORS = { low_confidence: "#f79009", audit_sample: "#2e90fa", output_invalid: "#f04438",
                          model_failed: "#b42318", out_of_distribution: "#7a5af8", second_review: "#12b76a",
                          manual: "#667085" };
  const SPARE = ["#0ba5ec", "#ee46bc", "#84cc16", "#6172f3"];
  const pct = (x) => (x === null || x === undefined ? "-" : (x * 100).toFixed(1) + "%");
  const ms = (x) => (x === null || x === undefined ? "-" : x.toFixed(1));

  function dashboard(opts) {
    const charts = {};
    const hasChart = typeof window.Chart !== "undefined";
    function chart(id, config) {
      if (!hasChart) return null;
      if (!charts[id]) charts[id] = new window.Chart(document.getElementById(id), config);
      return charts[id];
    }
    const set = (id, text) => { document.getElementById(id).textContent = text; };
    function render(d) {
      set("t-decided", d.window_decided.toLocaleString());
      set("t-rate", d.recent_per_min.toFixed(1));
      set("t-latency", ms(d.latency_ms.p50) + " / " + ms(d.latency_ms.p95) + " / " + ms(d.latency_ms.p99) + " ms");
      set("t-failed", pct(d.rates.failed));
      set("t-fallback", pct(d.rates.fallback));
      set("t-backlog", d.backlog.open.toLocaleString());
      set("t-sla", d.backlog.sla_breaches.toLocaleString());
      const day = (d.budgets || []).find((b) => b.period === "day") || (d.budgets || [])[0];
      set("t-budget", day ? "$" + day.remaining_usd.toFixed(2) + " of $" + day.limit_usd.toFixed(2) +
        " (" + day.period + ")" : "no budget");
      const w = d.workers;
      set("t-queue", (w.pending + w.leased).toLocaleString() + " / " + w.live + " live" +
        (w.oldest_pending_age_s === null ? "" : " · oldest " + Math.round(w.oldest_pending_age_s) + " s"));
      const acc = (a) => a.accuracy === null ? "-" : pct(a.accuracy) + " (n=" + a.n + ")";
      set("t-audit", acc(d.accuracy.audited));
      set("t-agree", acc(d.accuracy.reviewed));
      const g = d.guarantee;
      set("t-guarantee", !g ? "none (not calibrated)" : g.void ? "VOID: audits contradict it"
        : ">= " + pct(g.target_accuracy) + (g.in_force ? "" : " (not in force)"));
      document.getElementById("t-guarantee").classList.toggle("error", Boolean(g && g.void));
      const today = d.cost_per_day[d.cost_per_day.length - 1];
      set("t-cost", "$" + (today ? today.cost_usd : 0).toFixed(4));
      set("t-ood", d.out_of_distribution.rate === null ? "-" :
        pct(d.out_of_distribution.rate) + " (" + d.out_of_distribution.flagged.toLocaleString() + ")");
      const drift = d.drift || { status: "not monitored" };
      set("t-drift", drift.status === "drift" || drift.status === "ok"
        ? drift.status + " (" + drift.alerts + " of " + drift.checks + " checks)" : drift.status);
      const rel = d.releases;
      set("t-release", rel ? rel.champion : "-");
      const ro = rel && rel.rollout;
      set("t-rollout", ro ? ro.challenger + ": " + (ro.share === 0 ? "shadow" : ro.share + "%") +
        " (step " + ro.step + " of " + ro.steps + ", " + ro.status.replaceAll("_", " ") + ")" : "none");
      agreement(d.agreement_by_release || []);
      set("updated", "updated " + new Date(d.now * 1000).toLocaleTimeString());
      document.body.dataset.decided = d.window_decided;
      document.body.dataset.reviewed = d.window_counts.reviewed || 0;
      const labels = d.series.map((p) => new Date(p.t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
      const mix = chart("c-mix", { type: "bar", data: { labels, datasets: [] },
        options: { animation: false, responsive: true, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } } });
      if (mix) {
        mix.data.labels = labels;
        mix.data.datasets = Object.keys(COLORS).map((k) => ({ label: k.replace("_", " "), backgroundColor: COLORS[k],
          data: d.series.map((p) => p.counts[k] || 0) }));
        mix.update("none");
      }
      const cost = chart("c-cost", { type: "bar", data: { labels: [], datasets: [{ label: "USD", backgroundColor: "#2457d6", data: [] }] },
        options: { animation: false, aspectRatio: 2.2, plugins: { legend: { display: false } } } });
      if (cost) {
        cost.data.labels = d.cost_per_day.map((c) => c.day.slice(5));
        cost.data.datasets[0].data = d.cost_per_day.map((c) => c.cost_usd);
        cost.update("none");
      }
      const waiting = Object.keys(d.backlog.by_reason).length > 0;
      document.getElementById("no-backlog").classList.toggle("hidden", waiting);
      document.getElementById("c-backlog").classList.toggle("hidden", !waiting);
      const backlog = chart("c-backlog", { type: "doughnut", data: { labels: [], datasets: [{ data: [] }] },
        options: { animation: false, aspectRatio: 2.2, plugins: { legend: { position: "right" } } } });
      if (backlog) {
        const reasons = Object.keys(d.backlog.by_reason);
        backlog.data.labels = reasons.map((r) => r.replaceAll("_", " "));
        backlog.data.datasets[0].data = Object.values(d.backlog.by_reason);
        backlog.data.datasets[0].backgroundColor = reasons.map((r, i) => REASON_COLORS[r] || SPARE[i % SPARE.length]);
        backlog.update("none");
      }
    }
    function agreement(rows) {
      const any = rows.length > 0;
      document.getElementById("no-agreement").classList.toggle("hidden", any);
      document.getElementById("c-agree").classList.toggle("hidden", !any);
      const c = chart("c-agree", { type: "line", data: { labels: [], datasets: [] },
        options: { animation: false, responsive: true, scales: { y: { min: 0, max: 1 } } } });
      if (!c) return;
      const times = [...new Set(rows.map((r) => r.at))].sort((a, b) => a - b);
      const names = [...new Set(rows.map((r) => r.release))];
      c.data.labels = times.map((t) => new Date(t * 1000).toLocaleString([], { month: "2-digit", day: "2-digit", hour: "2-digit" }));
      c.data.datasets = names.map((name, i) => ({ label: name, borderColor: SPARE[i % SPARE.length], spanGaps: true,
        data: times.map((t) => { const r = rows.find((x) => x.release === name && x.at === t); return r ? r.agreement : null; }) }));
      c.update("none");
    }
    async function tick() {
      try { render(await api("GET", "/v1/dashboard")); }
      catch (err) { set("updated", "could not refresh: " + err.message); }
      try { money(await api("GET", "/v1/cost/outlook")); }  // the server recomputes it at most every 30 s
      catch (err) { set("o-note", "could not refresh the cost outlook: " + err.message); }
    }
    tick();
    setInterval(tick, opts.refreshMs || 3000);
  }

  const usd = (x, digits) => (x === null || x === undefined ? "unknown" :
    (x < 0 ? "-$" : "$") + Math.abs(x).toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits }));
  const num = (x, digits) => x.toLocaleString(undefined, { maximumFractionDigits: digits });
  const range = (f, fmt) => (f ? fmt(f.low) + " – " + fmt(f.high) + " (95%)" : "");

  /* Spend against budget, net value per day and the projection: GET /v1/cost/outlook, the
     same code as `keel cost --project`. */
  function money(o) {
    const set = (id, text) => { document.getElementById(id).textContent = text; };
    set("o-window", "· last " + o.window + " (" + o.decisions.toLocaleString() + " decisions)");
    const box = document.getElementById("o-budgets");
    box.replaceChildren();
    const budgets = o.budgets.filter((b) => b.limit_usd !== null);
    if (!budgets.length) {
      const none = document.createElement("span");
      none.className = "value";
      none.textContent = "no budget";
      box.append(none);
    }
    budgets.forEach((b) => {
      const row = document.createElement("div");
      row.className = "budget";
      row.dataset.period = b.period;
      const text = document.createElement("span");
      text.className = "value";
      text.textContent = usd(b.spent_usd, 2) + " of " + usd(b.limit_usd, 2);
      const bar = document.createElement("div");
      bar.className = "meter";
      const fill = document.createElement("span");
      fill.style.width = Math.min(100, 100 * b.spent_share).toFixed(1) + "%";
      if (b.spent_share >= 0.9) fill.style.background = "#f04438";
      bar.append(fill);
      const note = document.createElement("span");
      note.className = "muted";
      note.textContent = b.period + " " + b.window + ": " + (100 * b.spent_share).toFixed(1) + "% spent" +
        (b.refused ? ", " + b.refused.toLocaleString() + " records turned away" : "");
      row.append(text, bar, note);
      box.append(row);
    });
    const v = o.value;
    set("o-net", !v || v.net_usd_per_day === null ? "not declared" : usd(v.net_usd_per_day, 2));
    set("o-net-parts", !v || !v.per_day || v.per_day.value_usd === null
      ? "declare keel.Cost(value_per_record_usd=...)"
      : "value " + usd(v.per_day.value_usd, 2) + " - model " + usd(v.per_day.model_usd, 2) +
        " - review " + usd(v.per_day.review_usd, 2) + " - errors " +
        (v.per_day.errors_usd === null ? "unknown" : usd(v.per_day.errors_usd, 2)));
    const p = o.projection;
    const pv = p && p.value;
    set("o-net-projected", pv && pv.net_usd_per_month !== null
      ? "projected: " + usd(pv.net_usd_per_month, 0) + " a month at " + num(p.volume_per_day, 0) + "/day" : "");
    set("o-proj-label", p ? "Projected total per month at " + num(p.volume_per_day, 0) + "/day" : "Projected total per month");
    set("o-proj-total", p ? usd(p.total_usd_per_month.estimate, 0) : "-");
    set("o-proj-interval", p ? range(p.total_usd_per_month, (x) => usd(x, 0)) : "");
    const hours = p && p.review_hours_per_day, people = p && p.reviewers_needed;
    set("o-proj-hours", hours ? num(hours.estimate, 1) + " h" : "-");
    set("o-proj-reviewers", people ? num(people.estimate, 0) + " (" + people.low + " – " + people.high + ")" : "-");
    set("o-note", [o.projection_note, ...(p ? p.missing.map((m) => "missing: " + m) : [])]
      .filter(Boolean).join(" · "));
  }

  window.keel = { inbox, task, dashboard };
  // Each page names itself on <body data-page>; no inline scripts (the CSP forbids them).
  const start = window.keel[document.body.dataset.page];
  if (start) start({ refreshMs: 3000 });
})();
