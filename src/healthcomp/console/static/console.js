// The live console: plain JavaScript, no framework, nothing loaded from elsewhere.
//
// It signs in with a pasted token (or #token=…&competition=… in its address), keeps the
// token in this tab's sessionStorage only, and calls the service's public API with it:
// REST for the lists, the analytics, the payout preview and the flags, the WebSocket
// (docs/API.md §8) for the live leaderboard. Every piece of user-provided text is set
// with textContent, never parsed as HTML.
"use strict";

(() => {
  // --- where things are ---------------------------------------------------------------
  const BASE = new URL(".", location.href); // the page's directory: works behind a path prefix
  const API = new URL("api/v1/", BASE);
  const WS_BASE = new URL("ws/leaderboard/", BASE);
  WS_BASE.protocol = WS_BASE.protocol === "https:" ? "wss:" : "ws:";
  const TOKEN_KEY = "healthcomp.console.token";
  const BOARD_LIMIT = 20; // entries each leaderboard_update carries
  const REFRESH_MS = 5000; // analytics, payouts and flags: at most this often
  const SETTLE_MS = 400; // a burst of events is one refresh
  const MOVE_TTL_MS = 5 * 60 * 1000; // how long a rank change stays marked
  const FLASH_MS = 2400;

  const byId = (id) => document.getElementById(id);
  const enc = encodeURIComponent;
  const nf = new Intl.NumberFormat("en-US");
  const pct = new Intl.NumberFormat("en-US", { style: "percent", maximumFractionDigits: 1 });
  const SVG_NS = byId("chart-days").namespaceURI; // the parser's SVG namespace

  // An element with properties and children; strings become text nodes (never markup).
  function h(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value !== undefined && value !== null) node.setAttribute(key, String(value));
    }
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function titled(node, text) {
    node.append(svg("title", {}, text));
    return node;
  }

  // --- formatting -----------------------------------------------------------------------
  const UNITS = { steps: "steps", distance: "m", calories: "kcal", active_minutes: "min" };

  function unitOf(comp) {
    if (!comp) return "";
    return comp.format === "goal" ? "goal days" : UNITS[comp.metric] || comp.metric;
  }

  function scoreText(value, comp) {
    if (value === null || value === undefined) return "–";
    const unit = unitOf(comp);
    return unit ? `${nf.format(value)} ${unit}` : nf.format(value);
  }

  function compact(value) {
    const abs = Math.abs(value);
    const cut = (v) => v.replace(/\.0$/, "");
    if (abs >= 1e6) return cut((value / 1e6).toFixed(abs >= 1e7 ? 0 : 1)) + "M";
    if (abs >= 1e3) return cut((value / 1e3).toFixed(abs >= 1e4 ? 0 : 1)) + "k";
    return String(Math.round(value));
  }

  function day(iso) {
    if (!iso) return "";
    const date = new Date(`${iso.slice(0, 10)}T00:00:00Z`);
    if (Number.isNaN(date.getTime())) return iso;
    return date.toLocaleDateString("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
  }

  function clip(text, max) {
    const s = String(text ?? "");
    return s.length > max ? `${s.slice(0, max - 1)}…` : s;
  }

  // Minor units as the service writes them: `digits` from one of its own amounts ("42.00").
  function money(cents, currency, digits) {
    return `${(cents / 10 ** digits).toFixed(digits)} ${currency}`;
  }

  // --- the API --------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `The service answered ${status || "nothing"}.`);
      this.status = status;
      this.code = (body && body.error) || `http_${status}`;
      this.details = (body && body.details) || null;
    }
  }

  let auth = { token: null, claims: null, role: null, sub: null, name: null };
  let session = 0; // bumped on every sign-in and sign-out: late answers of an old one are dropped

  async function api(path, { method = "GET", body } = {}) {
    const started = session;
    const headers = { Authorization: `Bearer ${auth.token}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(new URL(path, API), init);
    } catch {
      throw new ApiError(0, {
        error: "network",
        message: "The service did not answer; check the connection and try again.",
      });
    }
    let payload = null;
    try {
      payload = await resp.json();
    } catch {
      payload = null;
    }
    if (!resp.ok || !payload || payload.success !== true) {
      const error = new ApiError(resp.status, payload);
      if (resp.status === 401 && started === session) refused(error.message);
      throw error;
    }
    return payload.data;
  }

  function describe(error) {
    if (!(error instanceof ApiError)) return String((error && error.message) || error);
    const fields = (error.details || [])
      .filter((d) => d && d.field)
      .map((d) => `${d.field}: ${d.message}`);
    return fields.length ? `${error.message} (${fields.join("; ")})` : error.message;
  }

  // The JWT's payload, read only to show who is signed in: the service verifies it.
  function decodeClaims(token) {
    const parts = token.split(".");
    if (parts.length !== 3) return null;
    try {
      let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      b64 += "=".repeat((4 - (b64.length % 4)) % 4);
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === "object" ? claims : null;
    } catch {
      return null;
    }
  }

  // --- signing in and out ---------------------------------------------------------------
  const state = { mine: [], visible: [] };
  let current = null; // the competition on screen

  function showSignin(message) {
    byId("app").hidden = true;
    byId("who").hidden = true;
    byId("signin").hidden = false;
    const error = byId("signin-error");
    error.textContent = message || "";
    error.hidden = !message;
    const button = byId("signin-button");
    button.disabled = false;
    button.textContent = "Sign in";
    byId("token-input").focus();
  }

  function refused(message) {
    if (!auth.token) return;
    signOut(`The service refused the token: ${message}`);
  }

  function signOut(message) {
    closeCompetition();
    session += 1;
    auth = { token: null, claims: null, role: null, sub: null, name: null };
    state.mine = [];
    state.visible = [];
    sessionStorage.removeItem(TOKEN_KEY);
    history.replaceState(null, "", location.pathname + location.search);
    byId("token-input").value = "";
    showSignin(message);
  }

  async function signIn(raw, openId) {
    const token = String(raw || "").trim().replace(/^Bearer\s+/i, "");
    if (!token) {
      showSignin("Paste a token first.");
      return;
    }
    closeCompetition();
    session += 1;
    const mine = session;
    const claims = decodeClaims(token);
    auth = {
      token,
      claims,
      role: claims && typeof claims.role === "string" ? claims.role : null,
      sub: claims && typeof claims.sub === "string" ? claims.sub : null,
      name: null,
    };
    sessionStorage.setItem(TOKEN_KEY, token);
    const button = byId("signin-button");
    button.disabled = true;
    button.textContent = "Signing in…";
    let listing;
    try {
      // One call that every role may make: it verifies the token.
      listing = await api("competitions?limit=100");
    } catch (error) {
      if (mine !== session) return;
      if (error.status !== 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        auth.token = null;
        showSignin(`Could not sign in: ${describe(error)}`);
      }
      return;
    }
    if (mine !== session) return;
    state.visible = listing.items || [];
    if (auth.role !== "service_role" && auth.sub) {
      const [me, comps] = await Promise.allSettled([
        api("users/me"),
        api(`users/${enc(auth.sub)}/competitions`),
      ]);
      if (mine !== session) return;
      if (me.status === "fulfilled") auth.name = me.value.display_name;
      state.mine = comps.status === "fulfilled" ? comps.value.competitions || [] : [];
      if (comps.status === "rejected") notice(`Your competitions: ${describe(comps.reason)}`);
    }
    showApp();
    if (openId) openCompetition(openId);
  }

  function showApp() {
    byId("signin").hidden = true;
    byId("app").hidden = false;
    byId("who").hidden = false;
    const service = auth.role === "service_role";
    const name = service
      ? "Service"
      : auth.name ||
        (auth.claims && auth.claims.user_metadata && auth.claims.user_metadata.full_name) ||
        auth.sub ||
        "Unknown user";
    byId("who-name").textContent = service || !auth.sub || name === auth.sub ? name : `${name} (${auth.sub})`;
    const role = byId("who-role");
    role.textContent = service ? "service role" : auth.role === "authenticated" ? "user" : auth.role || "?";
    role.className = service ? "badge service" : "badge";
    if (auth.claims && typeof auth.claims.exp === "number") {
      const left = auth.claims.exp * 1000 - Date.now();
      byId("who").title =
        left > 0 ? `The token expires in ${Math.round(left / 3600000)} h` : "The token has expired";
    }
    renderLists();
  }

  // --- the competitions lists -----------------------------------------------------------
  function renderLists() {
    const service = auth.role === "service_role";
    const mineIds = new Set(state.mine.map((c) => c.competition_id));
    const myList = byId("my-list");
    const otherList = byId("other-list");
    myList.replaceChildren();
    otherList.replaceChildren();
    for (const c of state.mine) {
      myList.append(
        compItem({
          id: c.competition_id,
          name: c.name,
          status: c.status,
          metric: c.metric,
          start: c.start_date,
          end: c.end_date,
          line: rankLine(c),
        }),
      );
    }
    const others = state.visible.filter((c) => !mineIds.has(c.id));
    for (const c of others) {
      const organizer = auth.sub && c.created_by === auth.sub;
      otherList.append(
        compItem({
          id: c.id,
          name: c.name,
          status: c.status,
          metric: c.metric,
          start: c.start_date,
          end: c.end_date,
          line: h(
            "span",
            { class: "comp-rank" },
            organizer ? "you organize it · " : c.visibility === "public" ? "public · " : "",
            `${nf.format(c.participant_count)} ${c.participant_count === 1 ? "participant" : "participants"}`,
          ),
        }),
      );
    }
    const status = byId("list-status");
    const myTitle = status.previousElementSibling;
    if (service) {
      myTitle.textContent = "All competitions";
      status.hidden = others.length > 0;
      status.textContent = "No competitions yet.";
      byId("other-title").hidden = true;
      myList.replaceChildren(...otherList.childNodes);
    } else {
      myTitle.textContent = "Your competitions";
      status.hidden = state.mine.length > 0;
      status.textContent = "You take part in no competition yet.";
      byId("other-title").hidden = others.length === 0;
    }
    markSelected();
  }

  function rankLine(c) {
    if (c.disqualified) return h("span", { class: "comp-rank" }, "disqualified");
    const comp = { metric: c.metric, format: c.format };
    return h(
      "span",
      { class: "comp-rank" },
      h("strong", { text: c.rank ? `#${c.rank}` : "–" }),
      ` of ${nf.format(c.participant_count)} · ${scoreText(c.score, comp)}`,
    );
  }

  function compItem({ id, name, status, metric, start, end, line }) {
    const button = h(
      "button",
      { type: "button", class: "comp", dataset: { competitionId: id }, onclick: () => openCompetition(id) },
      h("span", { class: "comp-title" }, h("span", { text: name }), h("span", { class: `badge ${status}`, text: status })),
      h("span", { class: "comp-sub", text: `${metric} · ${day(start)} – ${day(end)}` }),
      line,
    );
    return h("li", {}, button);
  }

  function markSelected() {
    for (const button of document.querySelectorAll(".comp")) {
      button.classList.toggle("selected", Boolean(current) && button.dataset.competitionId === current.id);
    }
  }

  function notice(message) {
    const node = byId("notice");
    node.textContent = message || "";
    node.hidden = !message;
  }

  // --- one competition ------------------------------------------------------------------
  function closeCompetition() {
    if (!current) return;
    current.live.stop();
    clearTimeout(current.refreshTimer);
    current = null;
    byId("board-rows").replaceChildren();
    byId("payout-rows").replaceChildren();
    byId("flags-rows").replaceChildren();
    for (const id of ["chart-days", "chart-dist", "chart-win"]) byId(id).replaceChildren();
  }

  async function openCompetition(raw) {
    const id = String(raw || "").trim();
    if (!id || !auth.token) return;
    closeCompetition();
    notice("");
    const view = {
      id,
      comp: null,
      board: { entries: [], me: null, total: 0, recounting: false },
      rows: new Map(), // user_id -> <tr>
      shown: new Map(), // user_id -> {rank, score} as last drawn
      moves: new Map(), // user_id -> {delta, from, at}
      organizer: false,
      flagsShown: false,
      reviewing: null, // the flag whose review form is open
      flagsStale: false,
      refreshTimer: null,
      lastRefresh: 0,
      live: null,
    };
    view.live = new Live(view);
    current = view;
    history.replaceState(null, "", `${location.pathname}${location.search}#competition=${enc(id)}`);
    markSelected();
    byId("empty").hidden = true;
    byId("competition").hidden = false;
    byId("comp-name").textContent = id;
    byId("comp-meta").replaceChildren();
    byId("flags-card").hidden = true;
    setLiveState("connecting");
    byId("live-event").textContent = "";
    for (const id2 of ["payout-error", "analytics-error", "flags-error"]) byId(id2).hidden = true;
    byId("board-count").textContent = "";
    byId("board-me").hidden = true;
    byId("board-empty").hidden = true;

    try {
      view.comp = await api(`competitions/${enc(id)}`);
    } catch (error) {
      if (view !== current) return;
      closeCompetition();
      byId("competition").hidden = true;
      byId("empty").hidden = false;
      history.replaceState(null, "", location.pathname + location.search);
      markSelected();
      if (error.status !== 401) notice(`Cannot open '${id}': ${describe(error)}`);
      return;
    }
    if (view !== current) return;
    view.organizer =
      auth.role === "service_role" || (Boolean(auth.sub) && view.comp.created_by === auth.sub);
    renderHeader(view);
    view.live.start();
    if (view.organizer) showFlags(view);
    refreshPanels(view);
  }

  function renderHeader(view) {
    const c = view.comp;
    byId("comp-name").textContent = c.name;
    const meta = byId("comp-meta");
    const bits = [
      h("span", { class: `badge ${c.status}`, text: c.status }),
      h("code", { text: c.id }),
      h("span", { text: c.format === "goal" ? `goal: ${nf.format(c.goal.daily_target)} ${UNITS[c.metric]} a day on ${c.goal.min_days} days` : c.metric.replace("_", " ") }),
      h("span", { text: `${day(c.start_date)} – ${day(c.end_date)}` }),
      h("span", { id: "comp-count", text: `${nf.format(c.participant_count)} participants` }),
      h("span", { text: c.visibility }),
    ];
    if (c.prize_pool_cents || c.entry_fee_cents) {
      bits.push(h("span", { text: `prize ${c.prize_pool_amount} + entry ${c.entry_fee_amount} ${c.currency}` }));
    }
    if (auth.role === "service_role") bits.push(h("span", { class: "badge service", text: "service role" }));
    else if (view.organizer) bits.push(h("span", { class: "badge organizer", text: "you organize it" }));
    meta.replaceChildren(...bits);
    byId("score-head").textContent = `Score · ${unitOf(c)}`;
  }

  async function reloadMeta(view) {
    try {
      const comp = await api(`competitions/${enc(view.id)}`);
      if (view !== current) return;
      view.comp = comp;
      renderHeader(view);
    } catch {
      /* the live board goes on; the next event tries again */
    }
  }

  // Analytics, payouts and flags follow the board, at most every REFRESH_MS.
  function boardChanged(view) {
    if (view.refreshTimer) return;
    const wait = Math.max(SETTLE_MS, view.lastRefresh + REFRESH_MS - Date.now());
    view.refreshTimer = setTimeout(() => {
      view.refreshTimer = null;
      if (view === current) refreshPanels(view);
    }, wait);
  }

  function refreshPanels(view) {
    view.lastRefresh = Date.now();
    loadAnalytics(view);
    loadPayout(view);
    if (view.flagsShown) loadFlags(view);
  }

  // --- the live leaderboard -------------------------------------------------------------
  function setLiveState(kind, detail) {
    const node = byId("live-state");
    node.dataset.state = kind;
    node.textContent = kind === "live" ? "live" : kind === "stopped" ? "stopped" : kind;
    node.title = detail || "";
  }

  class Live {
    constructor(view) {
      this.view = view;
      this.ws = null;
      this.lastId = null;
      this.lastError = null;
      this.attempt = 0;
      this.heartbeatMs = 25000;
      this.timer = null;
      this.watchdog = null;
      this.stopped = false;
    }

    start() {
      this.connect();
    }

    connect() {
      if (this.stopped) return;
      const url = new URL(enc(this.view.id), WS_BASE);
      url.searchParams.set("limit", String(BOARD_LIMIT));
      if (this.lastId !== null) url.searchParams.set("since", String(this.lastId));
      this.lastError = null;
      let ws;
      try {
        // The token as a subprotocol keeps it out of URLs that proxies log (§8.1).
        ws = new WebSocket(url, ["bearer", auth.token]);
      } catch {
        this.closed(1006);
        return;
      }
      this.ws = ws;
      ws.onmessage = (msg) => {
        if (this.ws !== ws) return;
        this.alive();
        let frame;
        try {
          frame = JSON.parse(msg.data);
        } catch {
          return;
        }
        if (frame && typeof frame === "object") this.handle(frame);
      };
      ws.onclose = (ev) => {
        if (this.ws === ws) this.closed(ev.code, ev.reason);
      };
      this.alive();
    }

    // No frame for two heartbeats: the connection is dead, whatever the socket says.
    alive() {
      clearTimeout(this.watchdog);
      this.watchdog = setTimeout(() => {
        const ws = this.ws;
        this.ws = null;
        if (ws) ws.close();
        this.closed(1006);
      }, 2 * this.heartbeatMs);
    }

    ping() {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send('{"type":"ping"}');
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      clearTimeout(this.watchdog);
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(1000);
    }

    closed(code, reason) {
      clearTimeout(this.watchdog);
      this.ws = null;
      if (this.stopped) return;
      const error = this.lastError;
      if (code === 1008 && (!error || error.error === "unauthorized")) {
        // The token expired while connected (no error frame), or was refused.
        this.stop();
        refused((error && error.message) || "The token has expired.");
        return;
      }
      if (code === 1008 || code === 1009) {
        this.stop();
        const message = (error && error.message) || reason || `closed (${code})`;
        setLiveState("stopped", message);
        notice(`Live updates stopped: ${message}`);
        return;
      }
      let wait = code === 1001 || code === 1012 ? 500 : Math.min(30000, 1000 * 2 ** this.attempt);
      this.attempt += 1;
      wait = wait / 2 + Math.random() * wait; // clients dropped together come back apart
      if (error && error.retry_after) wait = Math.max(wait, Number(error.retry_after) * 1000);
      setLiveState("reconnecting", `next attempt in ${Math.round(wait / 1000)} s`);
      this.timer = setTimeout(() => this.connect(), wait);
    }

    handle(f) {
      const view = this.view;
      const board = view.board;
      if (typeof f.event_id === "number") {
        this.lastId =
          f.type === "connected" || f.snapshot ? f.event_id : Math.max(this.lastId ?? 0, f.event_id);
        byId("live-event").textContent = `event #${nf.format(this.lastId)}`;
      }
      switch (f.type) {
        case "connected":
          this.attempt = 0;
          this.heartbeatMs = (Number(f.heartbeat_seconds) || 25) * 1000;
          this.alive();
          setLiveState("live", f.resumed ? `resumed after event ${f.event_id}` : "");
          if (f.resumed) boardChanged(view);
          return;
        case "leaderboard_update":
          if (!f.snapshot && f.event_id < this.lastId) return; // older than what we applied
          board.entries = f.entries || [];
          board.total = f.total_count;
          board.recounting = Boolean(f.recounting);
          if (f.snapshot) board.me = f.me || null;
          else if (board.me) {
            const mine = board.entries.find((e) => e.user_id === board.me.user_id);
            if (mine) board.me = mine;
          }
          renderBoard(view);
          if (!f.snapshot || f.resync) boardChanged(view);
          return;
        case "score_update":
          applyScore(board, f);
          if (f.previous_rank !== null && f.previous_rank !== undefined && f.previous_rank !== f.rank) {
            view.moves.set(f.user_id, { delta: f.previous_rank - f.rank, from: f.previous_rank, at: Date.now() });
          }
          renderBoard(view);
          boardChanged(view);
          return;
        case "rank_change":
          if (board.me && board.me.user_id === f.user_id) board.me.rank = f.rank;
          renderBoard(view);
          return;
        case "participant_left":
        case "participant_disqualified":
          board.entries = rerank(board.entries.filter((e) => e.user_id !== f.user_id));
          board.total = Math.max(0, (board.total || 1) - 1);
          if (board.me && board.me.user_id === f.user_id) board.me = null;
          renderBoard(view);
          boardChanged(view);
          return;
        case "participant_renamed":
          for (const e of board.entries) if (e.user_id === f.user_id) e.user_name = f.user_name;
          renderBoard(view);
          boardChanged(view);
          return;
        case "competition_cancelled":
        case "competition_finalized":
        case "rules_changed":
        case "recount_finished":
          reloadMeta(view);
          boardChanged(view);
          return;
        case "error":
          this.lastError = f;
          if (f.code === undefined) notice(`Live: ${f.message}`); // about our own frame; stays open
          return;
        case "heartbeat":
        case "pong":
          return;
        default:
          // flag_reviewed, and any board event a later version adds.
          if (typeof f.event_id === "number") boardChanged(view);
      }
    }
  }

  // Standard competition ranking of the top of the board: everyone above an entry of the
  // top is in the top too, so its rank is 1 + how many there score more.
  function rerank(entries) {
    entries.forEach((e, i) => {
      e.rank = i > 0 && entries[i - 1].score === e.score ? entries[i - 1].rank : i + 1;
    });
    if (current && current.board.me) {
      const me = entries.find((e) => e.user_id === current.board.me.user_id);
      if (me) current.board.me.rank = me.rank;
    }
    return entries;
  }

  // A score_update applied at once, so the rows move in one step; the coalesced board
  // that follows within update_interval_ms confirms it (or corrects it).
  function applyScore(board, f) {
    const old = board.entries.find((e) => e.user_id === f.user_id);
    const entries = board.entries.filter((e) => e.user_id !== f.user_id);
    const moved = { ...(old || { user_id: f.user_id, competition_id: f.competition_id }) };
    Object.assign(moved, { user_name: f.user_name, score: f.score, rank: f.rank });
    // Behind everyone on the same score: they reached it first.
    let at = entries.findIndex((e) => e.score < f.score);
    if (at === -1) at = entries.length;
    if (at < entries.length || f.rank <= entries.length + 1) entries.splice(at, 0, moved);
    if (!old && f.cause === "join") board.total = (board.total || 0) + 1;
    board.entries = rerank(entries.slice(0, BOARD_LIMIT));
    if (board.me && board.me.user_id === f.user_id) Object.assign(board.me, { score: f.score, rank: f.rank });
  }

  function renderBoard(view) {
    if (view !== current) return;
    const { entries, me, total, recounting } = view.board;
    const tbody = byId("board-rows");
    const now = Date.now();
    const tops = new Map();
    for (const [uid, tr] of view.rows) tops.set(uid, tr.getBoundingClientRect().top);
    const leader = Math.max(1, ...entries.map((e) => e.score || 0));
    const keep = new Set();
    for (const e of entries) {
      const before = view.shown.get(e.user_id);
      let changed = false;
      if (before) {
        if (before.rank !== e.rank) {
          view.moves.set(e.user_id, { delta: before.rank - e.rank, from: before.rank, at: now });
          changed = true;
        }
        if (before.score !== e.score) changed = true;
      }
      view.shown.set(e.user_id, { rank: e.rank, score: e.score });
      let tr = view.rows.get(e.user_id);
      if (!tr) {
        tr = buildRow();
        view.rows.set(e.user_id, tr);
      }
      fillRow(tr, e, view.moves.get(e.user_id), leader, now);
      tbody.append(tr); // in rank order: existing rows move
      keep.add(e.user_id);
      if (changed) flash(tr);
    }
    for (const [uid, tr] of view.rows) {
      if (!keep.has(uid)) {
        tr.remove();
        view.rows.delete(uid);
      }
    }
    // Rows slide from where they were to where they are.
    for (const [uid, first] of tops) {
      const tr = view.rows.get(uid);
      if (!tr) continue;
      const dy = first - tr.getBoundingClientRect().top;
      if (Math.abs(dy) < 1) continue;
      tr.style.transition = "none";
      tr.style.transform = `translateY(${dy}px)`;
      requestAnimationFrame(() =>
        requestAnimationFrame(() => {
          tr.style.transition = "transform 600ms ease";
          tr.style.transform = "";
        }),
      );
    }
    const count = total || entries.length;
    byId("board-count").textContent =
      (count > entries.length ? `top ${entries.length} of ${nf.format(count)}` : `${nf.format(count)} ${count === 1 ? "participant" : "participants"}`) +
      (recounting ? " · recounting…" : "");
    byId("board-empty").hidden = entries.length > 0;
    const countNode = byId("comp-count");
    if (countNode && total !== undefined) countNode.textContent = `${nf.format(total)} participants`;
    const meLine = byId("board-me");
    if (me && !entries.some((e) => e.user_id === me.user_id)) {
      meLine.textContent = `You: #${me.rank} · ${scoreText(me.score, view.comp)}`;
      meLine.hidden = false;
    } else {
      meLine.hidden = true;
    }
    if (me) updateMyListing(view.id, me);
  }

  function buildRow() {
    const bar = h("span");
    return h(
      "tr",
      {},
      h("td", { class: "rank" }),
      h("td", { class: "move" }),
      h("td", { class: "name" }, h("span", { class: "who-text" })),
      h("td", { class: "score" }, h("div", { class: "scorecell" }, h("div", { class: "scorebar" }, bar), h("span", { class: "scoreval" }))),
    );
  }

  function fillRow(tr, e, move, leader, now) {
    tr.dataset.userId = e.user_id;
    tr.classList.toggle("me", Boolean(auth.sub) && e.user_id === auth.sub);
    const [rank, moveCell, name, score] = tr.children;
    rank.textContent = String(e.rank);
    if (move && move.delta !== 0 && now - move.at < MOVE_TTL_MS) {
      const up = move.delta > 0;
      moveCell.className = `move ${up ? "up" : "down"}`;
      moveCell.textContent = `${up ? "▲" : "▼"}${Math.abs(move.delta)}`;
      moveCell.title = `was #${move.from}`;
    } else {
      moveCell.className = "move";
      moveCell.textContent = "";
      moveCell.title = "";
    }
    name.firstChild.textContent = e.user_name || e.user_id;
    name.title = e.user_id;
    let you = name.querySelector(".you");
    if (tr.classList.contains("me") && !you) name.append(h("span", { class: "badge you", text: "you" }));
    else if (!tr.classList.contains("me") && you) you.remove();
    const bar = score.querySelector(".scorebar > span");
    bar.style.width = `${Math.max(0, Math.min(100, (100 * (e.score || 0)) / leader))}%`;
    score.querySelector(".scoreval").textContent = nf.format(e.score);
  }

  function flash(tr) {
    tr.classList.remove("changed");
    void tr.offsetWidth; // restart the animation
    tr.classList.add("changed");
    clearTimeout(tr.flashTimer);
    tr.flashTimer = setTimeout(() => tr.classList.remove("changed"), FLASH_MS);
  }

  function updateMyListing(id, me) {
    const item = state.mine.find((c) => c.competition_id === id);
    if (!item || (item.rank === me.rank && item.score === me.score)) return;
    item.rank = me.rank;
    item.score = me.score;
    renderLists();
  }

  // --- analytics ------------------------------------------------------------------------
  async function loadAnalytics(view) {
    let data;
    try {
      data = await api(`fitness/analytics/${enc(view.id)}?limit=6`);
    } catch (error) {
      if (view !== current) return;
      const node = byId("analytics-error");
      node.textContent = describe(error);
      node.hidden = false;
      return;
    }
    if (view !== current) return;
    byId("analytics-error").hidden = true;
    if (data.view === "full" && !view.flagsShown) showFlags(view);
    const w = data.window || {};
    byId("analytics-summary").textContent =
      w.days_elapsed > 0
        ? `day ${w.days_elapsed} of ${w.days} · ${w.days_remaining} to go · ${nf.format(data.participants)} on the board`
        : `starts ${day(w.start_date)} · ${nf.format(data.participants)} signed up`;
    drawDays(byId("chart-days"), data, view.comp);
    drawDistribution(byId("chart-dist"), data, view.comp);
    drawChances(byId("chart-win"), data);
  }

  const W = 320;
  const H = 180;
  const PAD = { left: 38, right: 6, top: 12, bottom: 22 };

  function nothing(node, text) {
    node.replaceChildren(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "none" }, text));
  }

  function yAxis(node, max) {
    const plotH = H - PAD.top - PAD.bottom;
    for (const part of [0, 0.5, 1]) {
      const y = PAD.top + plotH * (1 - part);
      node.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: part ? "grid-line" : "axis" }));
      node.append(svg("text", { x: PAD.left - 5, y: y + 3, "text-anchor": "end" }, compact(max * part)));
    }
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const step = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function drawDays(node, data, comp) {
    const days = (data.days || []).filter((d) => d.date);
    if (!days.length) return nothing(node, "No days yet");
    node.replaceChildren();
    const max = niceMax(Math.max(...days.map((d) => d.total || 0)));
    yAxis(node, max);
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const slot = plotW / days.length;
    const gap = Math.min(6, slot * 0.25);
    days.forEach((d, i) => {
      const height = (plotH * (d.total || 0)) / max;
      const x = PAD.left + i * slot + gap / 2;
      const last = i === days.length - 1;
      const bar = svg("rect", {
        x: x.toFixed(1),
        y: (PAD.top + plotH - height).toFixed(1),
        width: Math.max(1, slot - gap).toFixed(1),
        height: Math.max(0, height).toFixed(1),
        rx: Math.min(3, (slot - gap) / 3).toFixed(1),
        class: last ? "bar today" : "bar",
      });
      node.append(
        titled(bar, `${day(d.date)}: ${scoreText(d.total, comp)} from ${d.active_participants} of ${d.participants} (median ${nf.format(d.median || 0)})`),
      );
    });
    const labels = days.length > 1 ? [0, days.length - 1] : [0];
    if (days.length > 4) labels.splice(1, 0, Math.floor((days.length - 1) / 2));
    for (const i of labels) {
      const x = PAD.left + (i + 0.5) * slot;
      node.append(svg("text", { x, y: H - 6, "text-anchor": "middle" }, day(days[i].date)));
    }
  }

  function drawDistribution(node, data, comp) {
    const dist = data.distribution || {};
    const bins = dist.histogram || [];
    if (!dist.count || !bins.length) return nothing(node, "No scores yet");
    node.replaceChildren();
    const max = niceMax(Math.max(...bins.map((b) => b.count)));
    yAxis(node, max);
    const plotW = W - PAD.left - PAD.right;
    const plotH = H - PAD.top - PAD.bottom;
    const slot = plotW / bins.length;
    const myScore = data.me ? data.me.score : null;
    bins.forEach((b, i) => {
      const height = (plotH * b.count) / max;
      const x = PAD.left + i * slot + 1;
      const mine = myScore !== null && myScore >= b.from && (myScore < b.to || i === bins.length - 1);
      const bar = svg("rect", {
        x: x.toFixed(1),
        y: (PAD.top + plotH - height).toFixed(1),
        width: Math.max(1, slot - 2).toFixed(1),
        height: height.toFixed(1),
        rx: 2,
        class: mine ? "bar hist today" : "bar hist",
      });
      node.append(titled(bar, `${compact(b.from)}–${compact(b.to)} ${unitOf(comp)}: ${b.count}${mine ? " (you)" : ""}`));
      if (b.count > 0) {
        node.append(svg("text", { x: x + (slot - 2) / 2, y: PAD.top + plotH - height - 3, "text-anchor": "middle", class: "value" }, b.count));
      }
    });
    node.append(svg("text", { x: PAD.left, y: H - 6, "text-anchor": "start" }, compact(bins[0].from)));
    node.append(svg("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end" }, compact(bins[bins.length - 1].to)));
    node.append(svg("text", { x: PAD.left + plotW / 2, y: H - 6, "text-anchor": "middle" }, `mean ${compact(dist.mean)}`));
  }

  function drawChances(node, data) {
    const leaders = (data.leaders || []).filter((l) => typeof l.chance_to_win === "number").slice(0, 6);
    if (!leaders.length) return nothing(node, "No projection before the first day");
    node.replaceChildren();
    const rowH = Math.min(28, (H - 8) / leaders.length);
    const top = (H - rowH * leaders.length) / 2;
    const labelW = 100;
    const barW = W - labelW - 52;
    leaders.forEach((l, i) => {
      const y = top + i * rowH;
      const mid = y + rowH / 2;
      const name = clip(l.user_name || l.user_id, 14);
      node.append(svg("text", { x: labelW - 8, y: mid + 4, "text-anchor": "end", class: "label" }, name));
      node.append(svg("rect", { x: labelW, y: mid - 7, width: barW, height: 14, rx: 4, class: "bar win-bg" }));
      const bar = svg("rect", {
        x: labelW,
        y: mid - 7,
        width: Math.max(l.chance_to_win > 0 ? 2 : 0, barW * l.chance_to_win).toFixed(1),
        height: 14,
        rx: 4,
        class: "bar win",
      });
      const projected = l.projected_score === null ? "" : `, projected ${nf.format(l.projected_score)} (rank ${l.projected_rank})`;
      node.append(titled(bar, `#${l.rank} ${l.user_name}: ${pct.format(l.chance_to_win)}${projected}`));
      node.append(svg("text", { x: labelW + barW + 6, y: mid + 4, class: "value" }, pct.format(l.chance_to_win)));
    });
  }

  // --- the payout preview ---------------------------------------------------------------
  async function loadPayout(view) {
    let p;
    try {
      p = await api(`prizes/calculate/${enc(view.id)}`, { method: "POST", body: {} });
    } catch (error) {
      if (view !== current) return;
      byId("payout-rows").replaceChildren();
      byId("payout-pool").textContent = "";
      byId("payout-summary").textContent = "";
      const node = byId("payout-error");
      node.textContent = describe(error);
      node.hidden = false;
      return;
    }
    if (view !== current) return;
    byId("payout-error").hidden = true;
    const digits = (String(p.amount).split(".")[1] || "").length;
    const cash = (cents) => money(cents, p.currency, digits);
    byId("payout-pool").textContent = `pool ${p.amount} ${p.currency}`;
    const scheme =
      p.scheme === "top_n"
        ? `top ${p.percentages.length}: ${p.percentages.map((x) => `${x}%`).join(" / ")}`
        : p.scheme.replace(/_/g, " ");
    const parts = [`base ${cash(p.prize_pool_cents)}`, `fees ${cash(p.entry_fees_cents)}`];
    if (p.rake_cents) parts.push(`rake −${cash(p.rake_cents)}`);
    byId("payout-summary").textContent =
      p.outcome === "refunds"
        ? `No prizes now (${String(p.refund_reason || "").replace(/_/g, " ")}): ${cash(p.refunds_cents)} of entry fees would go back.`
        : `${scheme} · ${parts.join(" · ")}${p.final ? " · final" : " · if it ended now"}`;
    const rows = (p.prizes || []).map((prize) =>
      h(
        "tr",
        { dataset: { userId: prize.user_id } },
        h("td", { class: "num", text: prize.places && prize.places[0] !== prize.places[1] ? `${prize.places[0]}–${prize.places[1]}` : prize.rank }),
        h("td", { text: prize.user_name || prize.user_id }),
        h("td", { class: "num amount", dataset: { cents: prize.amount_cents }, text: prize.amount }),
        h("td", { class: "muted", text: prize.currency }),
      ),
    );
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 4, class: "muted", text: "Nobody would be paid yet." })));
    byId("payout-rows").replaceChildren(...rows);
  }

  // --- flags ----------------------------------------------------------------------------
  const KIND_TEXT = {
    own_history: (k) => `far above their usual (${nf.format(k.typical ?? 0)})`,
    stride: (k) => (k.steps ? `stride of ${(k.distance / k.steps).toFixed(1)} m` : "impossible stride"),
    no_active_minutes: () => "more than the active minutes allow",
    field_outlier: (k) => `far above the field (median ${nf.format(k.field_median ?? 0)})`,
    late_raise: (k) => `raised after the end (was ${nf.format(k.before ?? 0)})`,
    late_backfill: () => "backfilled after joining, near the cap",
  };

  function showFlags(view) {
    if (view.flagsShown) return;
    view.flagsShown = true;
    byId("flags-card").hidden = false;
    loadFlags(view);
  }

  async function loadFlags(view) {
    let data;
    try {
      data = await api(`competitions/${enc(view.id)}/flags?limit=50`);
    } catch (error) {
      if (view !== current) return;
      const node = byId("flags-error");
      node.textContent = describe(error);
      node.hidden = false;
      return;
    }
    if (view !== current) return;
    if (view.reviewing) {
      view.flagsStale = true; // not while the organizer types a reason
      return;
    }
    view.flagsStale = false;
    byId("flags-error").hidden = true;
    const c = data.counts || {};
    byId("flags-counts").textContent = `${c.open || 0} open · ${c.dismissed || 0} dismissed · ${c.excluded || 0} excluded`;
    const rows = (data.flags || []).map((flag) => flagRow(view, flag));
    byId("flags-rows").replaceChildren(...rows);
    byId("flags-empty").hidden = rows.length > 0;
    byId("flags").hidden = rows.length === 0;
  }

  function flagRow(view, flag) {
    const kinds = (flag.kinds || []).map((k) => (KIND_TEXT[k.kind] ? KIND_TEXT[k.kind](k) : k.kind)).join("; ");
    const last = flag.last_review;
    const stateCell = h(
      "td",
      {},
      h("span", { class: `state-${flag.state}`, text: flag.state }),
      last ? h("span", { class: "last-review", text: `${last.by}: ${clip(last.reason, 60)}` }) : null,
    );
    const review = h("td", { class: "review" });
    const own = auth.role !== "service_role" && flag.user_id === auth.sub;
    const actions = { open: ["dismiss", "exclude"], excluded: ["restore", "dismiss"], dismissed: ["exclude", "restore"] }[flag.state] || [];
    const buttons = actions.map((action) =>
      h("button", {
        type: "button",
        class: action === "exclude" ? "button small danger" : "button small",
        dataset: { action },
        disabled: own,
        title: own ? "An organizer cannot review their own entry." : `${action} this day`,
        text: action[0].toUpperCase() + action.slice(1),
        onclick: () => openReview(view, flag, action, review, buttons),
      }),
    );
    review.append(...buttons);
    return h(
      "tr",
      { dataset: { flagId: flag.id, userId: flag.user_id } },
      h("td", { text: flag.user_name || flag.user_id }),
      h("td", { text: day(flag.date) }),
      h("td", { class: "kinds", text: kinds }),
      h("td", { class: "num", text: nf.format(flag.value) }),
      stateCell,
      review,
    );
  }

  function openReview(view, flag, action, cell, buttons) {
    view.reviewing = flag.id;
    const input = h("input", { type: "text", maxlength: 500, placeholder: `Why ${action}? (required)`, "aria-label": "Reason" });
    const confirm = h("button", { type: "submit", class: "button small primary", text: action[0].toUpperCase() + action.slice(1) });
    const cancel = h("button", { type: "button", class: "button small", text: "Cancel" });
    const form = h("form", { class: "review-form" }, input, confirm, cancel);
    const close = () => {
      view.reviewing = null;
      cell.replaceChildren(...buttons);
      if (view.flagsStale) loadFlags(view);
    };
    cancel.addEventListener("click", close);
    form.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") close();
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const reason = input.value.trim();
      if (!reason) {
        input.focus();
        return;
      }
      confirm.disabled = true;
      try {
        await api(`competitions/${enc(view.id)}/flags/${enc(flag.id)}`, { method: "POST", body: { action, reason } });
      } catch (error) {
        confirm.disabled = false;
        if (view !== current) return;
        const node = byId("flags-error");
        node.textContent = `Could not ${action}: ${describe(error)}`;
        node.hidden = false;
        return;
      }
      if (view !== current) return;
      view.reviewing = null;
      loadFlags(view);
      boardChanged(view);
    });
    cell.replaceChildren(form);
    input.focus();
  }

  // --- wiring -----------------------------------------------------------------------------
  function fromAddress() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    const competition = params.get("competition");
    if (token !== null) {
      // Out of the address bar (and the history) at once.
      history.replaceState(null, "", location.pathname + location.search + (competition ? `#competition=${enc(competition)}` : ""));
    }
    return { token, competition };
  }

  function boot() {
    byId("signin-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      // A link with #competition=… but no token opens that one once signed in.
      signIn(byId("token-input").value, new URLSearchParams(location.hash.slice(1)).get("competition"));
    });
    byId("token-input").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) byId("signin-form").requestSubmit();
    });
    byId("sign-out").addEventListener("click", () => signOut(""));
    byId("open-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = byId("open-id");
      openCompetition(input.value);
      input.value = "";
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && current) current.live.ping();
    });
    setInterval(() => {
      if (current) renderBoard(current); // rank-change marks expire
    }, 30000);
    window.addEventListener("hashchange", () => {
      const { token, competition } = fromAddress();
      if (token) signIn(token, competition);
      else if (competition && auth.token && (!current || current.id !== competition)) openCompetition(competition);
    });

    const { token, competition } = fromAddress();
    const saved = token || sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved, competition);
    else showSignin("");
  }

  boot();
})();
