// zerosearch view: renders the trajectories embedded in #zs-data, one page at a time.
// Every string from the data goes through esc() before it reaches innerHTML.
(function () {
  "use strict";
  var t0 = performance.now();
  var D = JSON.parse(document.getElementById("zs-data").textContent);
  var T = D.traj, PAGE = 25, MAX_SIDE = 3;
  var compare = !!D.pairs;
  var state = { page: 0, list: [] };
  var hay = null; // lower-cased search text per trajectory, built on the first text search

  function $(id) { return document.getElementById(id); }
  var ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(s) { return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) { return ESC[c]; }); }
  function fmt(x, d) { return x == null ? "–" : (Math.round(x * Math.pow(10, d)) / Math.pow(10, d)).toString(); }
  function signed(x) { return x == null ? "–" : (x > 0 ? "+" : "") + fmt(x, 3); }
  function reEsc(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }
  function num(id) { var v = $(id).value; return v === "" ? null : Number(v); }

  // --- filters ---------------------------------------------------------------------------------------
  function uniq(f) {
    var seen = {}, out = [];
    T.forEach(function (t) { [].concat(f(t)).forEach(function (v) { if (v != null && !seen[v]) { seen[v] = 1; out.push(v); } }); });
    return out;
  }
  function fill(id, values) {
    var sel = $(id);
    values.forEach(function (v) { var o = document.createElement("option"); o.value = v; o.textContent = v; sel.appendChild(o); });
  }
  // The information block the rollout inserted for search j: zerosearch.engines.base.format_documents.
  function infoBlock(t, j) {
    return D.inserted.info[0] + t.docs[j].map(function (d, k) {
      return d.t ? "Doc " + (k + 1) + "(Title: " + d.t + ") " + d.x : "Doc " + (k + 1) + ": " + d.x;
    }).join("\n") + D.inserted.info[1];
  }
  function runText(t, r) {
    return typeof r[0] === "string" ? r[0] : r[0].map(function (p) { return typeof p === "number" ? infoBlock(t, p) : p; }).join("");
  }
  function text(t) {
    return t.mask ? t.mask.map(function (r) { return runText(t, r); }).join("") : (t.resp || "");
  }
  function haystack(t) {
    var docs = t.docs.map(function (s) { return s.map(function (d) { return d.t + " " + d.x; }).join(" "); }).join(" ");
    return [t.q, t.ans || "", t.gold.join(" "), t.queries.join(" "), text(t), docs, t.id || "", t.src].join("\n").toLowerCase();
  }
  function filters() {
    return { src: $("f-src").value, s0: num("f-step-min"), s1: num("f-step-max"), r0: num("f-rw-min"),
             r1: num("f-rw-max"), correct: $("f-correct").value, engine: $("f-engine").value, flag: $("f-flag").value,
             text: $("f-text").value.trim().toLowerCase(), differ: $("f-differ").checked };
  }
  function matches(t, f, i, skipFlag) {
    if (f.src && t.src !== f.src) return false;
    if ((f.s0 != null || f.s1 != null) && t.step == null) return false;
    if (f.s0 != null && t.step < f.s0) return false;
    if (f.s1 != null && t.step > f.s1) return false;
    if ((f.r0 != null || f.r1 != null) && t.rw == null) return false;
    if (f.r0 != null && t.rw < f.r0) return false;
    if (f.r1 != null && t.rw > f.r1) return false;
    if (f.correct === "1" && t.em < 1) return false;
    if (f.correct === "0" && t.em >= 1) return false;
    if (f.engine && (f.engine === "(none)" ? t.eng.length : t.eng.indexOf(f.engine) < 0)) return false;
    if (!skipFlag && f.flag && t.flags.indexOf(f.flag) < 0) return false;
    if (f.text) {
      if (!hay) hay = new Array(T.length);
      if (hay[i] === undefined) hay[i] = haystack(t);
      if (hay[i].indexOf(f.text) < 0) return false;
    }
    return true;
  }
  function apply() {
    var f = filters(), counts = {}, list = [];
    state.key = JSON.stringify(f);
    if (compare) {
      D.pairs.forEach(function (p, k) {
        if (f.differ && p[3] < 2) return;
        var idx = p[1].concat(p[2]);
        if (idx.some(function (i) { return matches(T[i], f, i, true); })) {
          var seen = {};
          idx.forEach(function (i) { if (matches(T[i], f, i, true)) T[i].flags.forEach(function (g) { seen[g] = 1; }); });
          Object.keys(seen).forEach(function (g) { counts[g] = (counts[g] || 0) + 1; });
        }
        if (idx.some(function (i) { return matches(T[i], f, i, false); })) list.push(k);
      });
    } else {
      for (var i = 0; i < T.length; i++) {
        if (!matches(T[i], f, i, true)) continue;
        T[i].flags.forEach(function (g) { counts[g] = (counts[g] || 0) + 1; });
        if (!f.flag || T[i].flags.indexOf(f.flag) >= 0) list.push(i);
      }
    }
    state.list = list;
    state.page = 0;
    $("count").textContent = list.length;
    var sel = $("f-flag");
    for (var j = 1; j < sel.options.length; j++) {
      var o = sel.options[j];
      o.textContent = o.value + " (" + (counts[o.value] || 0) + ")";
    }
    $("flag-counts").innerHTML = Object.keys(D.flags).filter(function (g) { return counts[g]; }).map(function (g) {
      return '<button type="button" class="flag ' + esc(D.flags[g][0]) + '" data-flag="' + esc(g) + '" title="' +
        esc(D.flags[g][1]) + '">' + esc(g) + " <b>" + counts[g] + "</b></button>";
    }).join(" ");
    render();
  }

  // --- one trajectory ------------------------------------------------------------------------------------
  var INSERTED = new RegExp("<information>[\\s\\S]*?</information>|" + reEsc(D.inserted.invalid) + "|" + reEsc(D.inserted.force), "g");
  var ACTION = /<(search|answer)>([\s\S]*?)<\/\1>/;
  function splitInserted(s, out) {
    var last = 0, m;
    INSERTED.lastIndex = 0;
    while ((m = INSERTED.exec(s))) {
      if (m.index > last) out.push({ k: "text", s: s.slice(last, m.index) });
      out.push({ k: m[0] === D.inserted.invalid ? "invalid" : m[0] === D.inserted.force ? "force" : "info", s: m[0] });
      last = INSERTED.lastIndex;
    }
    if (last < s.length) out.push({ k: "text", s: s.slice(last) });
  }
  // The transcript's parts. With a recorded mask, trained runs are the policy's and masked runs are split
  // into the inserted blocks; without one, inserted blocks are found by their text.
  function parts(t) {
    var out = [];
    if (t.mask) {
      t.mask.forEach(function (r) {
        if (r[1]) { out.push({ k: "policy", s: r[0] }); return; }
        var sub = [];
        splitInserted(runText(t, r), sub);
        sub.forEach(function (p) { out.push({ k: p.k === "text" ? "inserted" : p.k, s: p.s }); });
      });
    } else {
      splitInserted(text(t), out);
      out.forEach(function (p) { if (p.k === "text") p.k = "policy"; });
    }
    return out;
  }
  function docsHtml(t, j) {
    var docs = t.docs[j], draw = t.draws[j] || (docs && docs[0] && docs[0].m);
    var head = '<div class="search-head">search ' + (j + 1) + ": <q>" + esc(t.queries[j]) + "</q>" +
      (draw ? ' <span class="draw ' + esc(draw) + '">' + esc(draw) + "</span>" : "") +
      (t.noise != null && draw ? ' <span class="p">p<sub>noise</sub> ' + fmt(t.noise, 3) + "</span>" : "") + "</div>";
    return head + '<ol class="docs">' + docs.map(function (d) {
      return '<li class="doc"><span class="eng">' + esc(d.s) + "</span>" + (d.m ? ' <span class="draw ' + esc(d.m) + '">' + esc(d.m) + "</span>" : "") +
        d.f.map(function (g) { return ' <span class="flag guard" title="' + esc(d.why || D.flags[g][1]) + '">' + esc(g) + "</span>"; }).join("") +
        " <b>" + esc(d.t) + "</b> " + esc(d.x) + "</li>";
    }).join("") + "</ol>";
  }
  // One <li> per policy turn: its reasoning, its action, then what the rollout inserted after it.
  function turnsHtml(t) {
    var items = [], info = 0;
    function add(html) { if (!items.length) items.push(""); items[items.length - 1] += html; }
    parts(t).forEach(function (p) {
      if (p.k === "policy") {
        var m = ACTION.exec(p.s), before = m ? p.s.slice(0, m.index) : p.s, after = m ? p.s.slice(m.index + m[0].length) : "";
        var reason = (before + after).replace(/<\/?think>/g, "").trim();
        var act = !m ? '<div class="act invalid">no action</div>' : m[1] === "search"
          ? '<div class="act search">search <q>' + esc(m[2].trim()) + "</q></div>"
          : '<div class="act answer">answer <q>' + esc(m[2].trim()) + "</q></div>";
        items.push((reason ? '<div class="think">' + esc(reason) + "</div>" : "") + act);
      } else if (p.k === "info") {
        add('<div class="obs">' + (info < t.docs.length ? docsHtml(t, info) : '<pre class="info">' + esc(p.s) + "</pre>") + "</div>");
        info++;
      } else if (p.s.trim()) {
        add('<div class="note ' + p.k + '">' + esc(p.s.trim()) + "</div>");
      }
    });
    var extra = "";
    for (var j = info; j < t.docs.length; j++) extra += '<div class="obs prompt-docs">retrieved into the prompt: ' + docsHtml(t, j) + "</div>";
    return extra + '<ol class="turns">' + items.map(function (h) { return '<li class="turn">' + h + "</li>"; }).join("") + "</ol>";
  }
  function tokensHtml(t) {
    var body = '<span class="tok-masked" title="prompt: masked">[prompt: instruction + question] ' + esc(t.q) + "</span>";
    if (t.mask) {
      body += t.mask.map(function (r) { return '<span class="' + (r[1] ? "tok-trained" : "tok-masked") + '">' + esc(runText(t, r)) + "</span>"; }).join("");
    } else {
      body += '<span class="tok-none">' + esc(t.resp) + "</span>";
    }
    var note = t.mask ? 'loss mask as the trainer used it: <span class="tok-trained">trained on</span> / <span class="tok-masked">masked</span>' :
      "no loss mask recorded for this trajectory (" + (t.method ? "evaluation" : "samples.jsonl without loss_mask") + "): unshaded";
    return '<details class="tokens"><summary>tokens &middot; ' + note + '</summary><pre class="tok">' + body + "</pre></details>";
  }
  function card(i) {
    var t = T[i], run = D.runs[t.run];
    var where = [t.src !== run.label ? t.src : null, t.step != null ? "step " + t.step : null, t.method,
      t.dataset != null ? t.dataset + "/" + t.id : null, t.hops ? t.hops + "-hop" : null].filter(Boolean).map(esc).join(" &middot; ");
    var scores = [t.rw != null ? "reward " + fmt(t.rw, 3) : null, "EM " + fmt(t.em, 0), "F1 " + fmt(t.f1, 2),
      t.adv != null ? "advantage " + signed(t.adv) : null, t.noise != null ? "p<sub>noise</sub> " + fmt(t.noise, 3) : null,
      "searches " + t.searches, t.end ? "end " + esc(t.end) : null].filter(Boolean).join(" &middot; ");
    var group = t.gadv && t.gadv.length > 1 ? '<div class="group">group advantages: ' + t.gadv.map(signed).join(", ") + "</div>" : "";
    var flags = t.flags.map(function (g) {
      return '<span class="flag ' + esc(D.flags[g] ? D.flags[g][0] : "") + '" title="' + esc(D.flags[g] ? D.flags[g][1] : "") + '">' + esc(g) + "</span>";
    }).join(" ");
    return '<article class="traj ' + (t.em >= 1 ? "ok" : "bad") + '" data-i="' + i + '"><header><span class="where">' + where +
      '</span><span class="scores">' + scores + "</span></header>" +
      '<div class="q">' + esc(t.q) + "</div>" +
      '<div class="ans">answer <q>' + (t.ans == null ? "<i>none</i>" : esc(t.ans)) + "</q> &middot; gold " +
      t.gold.map(function (g) { return "<q>" + esc(g) + "</q>"; }).join(", ") + (t.eng.length ? " &middot; engine " + esc(t.eng.join(", ")) : "") + "</div>" +
      group + (flags ? '<div class="flags">' + flags + "</div>" : "") + turnsHtml(t) + tokensHtml(t) + "</article>";
  }
  function pairHtml(k) {
    var p = D.pairs[k];
    var badge = p[3] === 2 ? '<span class="differ">EM differs</span>' : p[3] === 1 ? '<span class="differ soft">answers differ</span>' : '<span class="same">same</span>';
    function side(idx, cls) {
      var more = idx.length > MAX_SIDE ? '<div class="more">+' + (idx.length - MAX_SIDE) + " more</div>" : "";
      return '<div class="col ' + cls + '"><h3>' + esc(D.runs[T[idx[0]].run].label) + "</h3>" + idx.slice(0, MAX_SIDE).map(card).join("") + more + "</div>";
    }
    return '<section class="pair" data-key="' + esc(p[0]) + '"><h2 class="pair-head">' + badge + " " + esc(T[p[1][0]].q) + "</h2>" +
      '<div class="cols">' + side(p[1], "col-a") + side(p[2], "col-b") + "</div></section>";
  }
  function pager() {
    var pages = Math.max(1, Math.ceil(state.list.length / PAGE));
    var h = '<button type="button" data-go="-1"' + (state.page ? "" : " disabled") + '>&larr; previous</button> page <b class="page-no">' +
      (state.page + 1) + "</b> of " + pages + ' <button type="button" data-go="1"' + (state.page + 1 < pages ? "" : " disabled") + ">next &rarr;</button>";
    $("pager-top").innerHTML = h;
    $("pager-bottom").innerHTML = h;
  }
  function render() {
    var slice = state.list.slice(state.page * PAGE, (state.page + 1) * PAGE);
    $("list").innerHTML = slice.length ? slice.map(compare ? pairHtml : card).join("") : '<p class="empty">nothing matches these filters</p>';
    pager();
  }

  // --- set-up ------------------------------------------------------------------------------------------
  $("runs").innerHTML = D.runs.map(function (r, k) {
    return '<div class="run run-' + k + '"><b>' + esc(r.label) + "</b> " + esc(r.kind) + " &middot; " + r.n + " trajectories &middot; <code>" + esc(r.path) + "</code></div>";
  }).join("") + (compare ? '<div class="run">' + D.pairs.length + " questions in both runs, " +
    D.pairs.filter(function (p) { return p[3] === 2; }).length + " with different EM (shown first); questions in one run only: " +
    esc(D.runs[0].label) + " " + D.only[0] + ", " + esc(D.runs[1].label) + " " + D.only[1] + " (not shown)</div>" : "");
  $("notes").innerHTML = [].concat.apply([], D.runs.map(function (r) { return r.notes; })).map(function (n) { return '<div class="note">' + esc(n) + "</div>"; }).join("");
  $("total").textContent = compare ? D.pairs.length : T.length;
  $("unit").textContent = compare ? "question pairs" : "trajectories";
  var srcs = uniq(function (t) { return t.src; });
  fill("f-src", srcs);
  if (srcs.length < 2) $("l-src").hidden = true;
  if (!T.some(function (t) { return t.step != null; })) $("l-step").hidden = true;
  if (!T.some(function (t) { return t.rw != null; })) $("l-rw").hidden = true;
  if (!compare) $("l-differ").hidden = true;
  var engines = uniq(function (t) { return t.eng; }).sort();
  if (T.some(function (t) { return !t.eng.length; })) engines.push("(none)");
  fill("f-engine", engines);
  var present = {};
  T.forEach(function (t) { t.flags.forEach(function (g) { present[g] = 1; }); });
  fill("f-flag", Object.keys(D.flags).filter(function (g) { return present[g]; }));

  var timer = null;
  function later(e) {  // re-filter only when a filter changed ("change" also fires on a text box's blur)
    clearTimeout(timer);
    timer = setTimeout(function () { if (JSON.stringify(filters()) !== state.key) apply(); }, e.target.id === "f-text" ? 150 : 0);
  }
  $("filters").addEventListener("input", later);
  $("filters").addEventListener("change", later);
  $("f-reset").addEventListener("click", function () {
    document.querySelectorAll("#filters input, #filters select").forEach(function (el) {
      if (el.type === "checkbox") el.checked = false; else el.value = "";
    });
    apply();
  });
  $("flag-counts").addEventListener("click", function (e) {
    var b = e.target.closest("[data-flag]");
    if (b) { $("f-flag").value = b.getAttribute("data-flag"); apply(); }
  });
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-go]");
    if (!b) return;
    state.page += Number(b.getAttribute("data-go"));
    render();
    $("summary").scrollIntoView();
  });
  apply();
  window.zsViewer = { renderMs: performance.now(), scriptMs: performance.now() - t0, n: T.length, apply: apply,
    text: function (i) { return text(T[i]); } };
  document.body.setAttribute("data-ready", "1");
})();
