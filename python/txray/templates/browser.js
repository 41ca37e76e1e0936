/* txray neuron browser: a sortable, filterable virtual list of every neuron and a page per neuron.
 *
 *   var browser = TxrayBrowser.mount(element, doc, {loadNeuron: function (n) { return Promise }});
 *
 * `doc` is the JSON document of txray.browser.browser_document (format "txray-browser/1").
 * Per-neuron details come from doc.neurons[n] unless options.loadNeuron fetches them (a server).
 * A page that embeds the document (txray.browser.render_browser) reads it with
 * TxrayBrowser.readEmbedded(id), a promise of the document.
 * Routes: "#neurons" shows the table, "#neuron=17" neuron 17; browser.route(hash) says whether a
 * hash is the browser's, and options.onView(name) hears when its view changes.
 */
(function (global) {
  "use strict";

  var COLUMNS = [
    // key in doc.table, header, kind of value
    { key: "neuron", head: "neuron", type: "id" },
    { key: "state", head: "state", type: "state" },
    { key: "hellinger", head: "Hellinger", type: "float" },
    { key: "length", head: "length", type: "int" },
    { key: "mass", head: "mass", type: "mass" },
    { key: "mass_rank", head: "mass rank", type: "int" },
    { key: "contexts", head: "contexts", type: "int" },
    { key: "p", head: "top p", type: "float" },
    { key: "top_feature", head: "top feature", type: "text" },
  ];
  var OVERSCAN = 10;

  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function fmt(value, type) {
    if (value === null || value === undefined || (typeof value === "number" && isNaN(value))) return "–";
    if (type === "float") return value.toFixed(3);
    if (type === "mass") return value !== 0 && Math.abs(value) < 0.01 ? value.toPrecision(2) : value.toLocaleString("en-US", { maximumSignificantDigits: 4 });
    if (type === "id") return String(value);
    if (type === "int") return value.toLocaleString("en-US");
    return String(value);
  }

  function el(tag, attrs, html) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (html !== undefined) node.innerHTML = html;
    return node;
  }

  function mount(root, doc, options) {
    options = options || {};
    if (!doc || doc.format !== "txray-browser/1") throw new Error("txray browser: not a txray-browser/1 document");
    var table = doc.table, stages = doc.stages, nRows = table.neuron.length;
    var columns = COLUMNS.filter(function (c) { return table[c.key] !== undefined; });
    var state = {
      stage: doc.default_stage !== undefined ? doc.default_stage : stages.length - 1,
      sort: "mass", dir: -1, query: "", states: {}, min: {}, max: {},
      order: [], view: null, neuron: null,
    };
    var stateNames = (doc.states || []).slice();
    table.state.forEach(function (s) { if (stateNames.indexOf(s) < 0) stateNames.push(s); });
    stateNames.forEach(function (s) { state.states[s] = !(doc.hidden_states || []).includes(s); });
    // Row ids of each stage, and a row lookup by (stage, neuron).
    var byStage = stages.map(function () { return []; });
    var rowOf = stages.map(function () { return {}; });
    for (var i = 0; i < nRows; i++) {
      byStage[table.stage[i]].push(i);
      rowOf[table.stage[i]][table.neuron[i]] = i;
    }

    root.classList.add("txb");
    root.innerHTML = "";
    var listView = el("div", { class: "txb-list-view" });
    var neuronView = el("div", { class: "txb-neuron", hidden: "" });
    root.appendChild(listView);
    root.appendChild(neuronView);

    // -- controls ------------------------------------------------------------------
    var controls = el("div", { class: "txb-controls" });
    var stageSelect = el("select", { "aria-label": "stage", "data-control": "stage" });
    stages.forEach(function (s, i) {
      var o = el("option", { value: String(i) }, esc(s + (doc.reference_names ? " (vs " + doc.reference_names[i] + ")" : "")));
      stageSelect.appendChild(o);
    });
    stageSelect.value = String(state.stage);
    var stageLabel = el("label", {}, "stage ");
    stageLabel.appendChild(stageSelect);
    controls.appendChild(stageLabel);
    var search = el("input", { type: "search", placeholder: "neuron id or top feature", "data-control": "search",
      "aria-label": "filter by neuron id or top feature" });
    controls.appendChild(search);
    var stateBox = el("span", { class: "txb-states" });
    stateNames.forEach(function (s) {
      var label = el("label", {});
      var box = el("input", { type: "checkbox", "data-state": s });
      box.checked = state.states[s];
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + s + " "));
      label.appendChild(el("span", { class: "txb-muted", "data-state-count": s }));
      stateBox.appendChild(label);
      stateBox.appendChild(document.createTextNode(" "));
    });
    controls.appendChild(stateBox);
    [["hellinger", "Hellinger"], ["length", "length"], ["mass", "mass"]].forEach(function (pair) {
      if (table[pair[0]] === undefined) return;
      var label = el("label", {}, esc(pair[1]) + " ");
      ["min", "max"].forEach(function (bound) {
        var input = el("input", { type: "number", step: "any", placeholder: bound, "data-bound": bound,
          "data-key": pair[0], "aria-label": pair[1] + " " + bound });
        label.appendChild(input);
        if (bound === "min") label.appendChild(document.createTextNode(" – "));
      });
      controls.appendChild(label);
    });
    var count = el("span", { class: "txb-count", "aria-live": "polite" });
    controls.appendChild(count);
    listView.appendChild(controls);

    var list = el("div", { class: "txb-list", role: "grid", tabindex: "0", "aria-label": "neurons" });
    var head = el("div", { class: "txb-grid txb-head", role: "row" });
    columns.forEach(function (c) {
      var cell = el("span", { role: "columnheader", "data-key": c.key, class: c.type === "text" || c.type === "state" ? "" : "txb-num" }, esc(c.head));
      head.appendChild(cell);
    });
    var spacer = el("div", { class: "txb-spacer" });
    var rowsBox = el("div", { class: "txb-rows" });
    spacer.appendChild(rowsBox);
    list.appendChild(head);
    list.appendChild(spacer);
    listView.appendChild(list);

    function rowHeight() {
      return parseFloat(getComputedStyle(root).getPropertyValue("--txb-row")) || 28;
    }

    // -- filtering and sorting ------------------------------------------------------
    function matches(i) {
      if (!state.states[table.state[i]]) return false;
      var q = state.query;
      if (q) {
        if (/^\d+$/.test(q)) { if (String(table.neuron[i]) !== q) return false; }
        else if (String(table.top_feature[i] || "").toLowerCase().indexOf(q) < 0) return false;
      }
      for (var key in state.min) {
        var v = table[key][i];
        if (v === null || v < state.min[key]) return false;
      }
      for (key in state.max) {
        v = table[key][i];
        if (v === null || v > state.max[key]) return false;
      }
      return true;
    }

    function refresh() {
      var rows = byStage[state.stage].filter(matches);
      var values = table[state.sort], dir = state.dir, text = state.sort === "top_feature" || state.sort === "state";
      rows.sort(function (a, b) {
        var x = values[a], y = values[b];
        if (x === y) return table.neuron[a] - table.neuron[b];
        if (x === null) return 1;  // missing values last, whatever the direction
        if (y === null) return -1;
        if (text) return String(x).localeCompare(String(y)) * dir;
        return (x < y ? -1 : 1) * dir;
      });
      state.order = rows;
      head.querySelectorAll("[data-key]").forEach(function (h) {
        if (h.getAttribute("data-key") === state.sort) h.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
        else h.removeAttribute("aria-sort");
      });
      var counts = {};
      byStage[state.stage].forEach(function (i) { counts[table.state[i]] = (counts[table.state[i]] || 0) + 1; });
      stateBox.querySelectorAll("[data-state-count]").forEach(function (c) {
        var n = counts[c.getAttribute("data-state-count")] || 0;
        c.textContent = "(" + n.toLocaleString("en-US") + ")";
        c.parentNode.hidden = n === 0;  // a state no neuron of this stage has
      });
      count.textContent = rows.length.toLocaleString("en-US") + " of " + byStage[state.stage].length.toLocaleString("en-US") + " neurons";
      spacer.style.height = rows.length * rowHeight() + "px";
      list.scrollTop = 0;
      draw();
    }

    function draw() {
      var h = rowHeight(), rows = state.order;
      var first = Math.max(0, Math.floor(list.scrollTop / h) - OVERSCAN);
      var last = Math.min(rows.length, Math.ceil((list.scrollTop + list.clientHeight) / h) + OVERSCAN);
      var html = [];
      for (var r = first; r < last; r++) {
        var i = rows[r];
        html.push("<div class='txb-grid txb-row' role='row' tabindex='-1' data-neuron='" + table.neuron[i] + "'>");
        columns.forEach(function (c) {
          var v = table[c.key][i];
          if (c.type === "id") { html.push("<span class='txb-num'>" + v + "</span>"); return; }
          if (c.type === "state") html.push("<span><span class='txb-state txb-state-" + esc(v) + "'>" + esc(v) + "</span></span>");
          else html.push("<span" + (c.type === "text" ? "" : " class='txb-num'") + (c.type === "text" && v ? " title='" + esc(v) + "'" : "") + ">" + esc(fmt(v, c.type)) + "</span>");
        });
        html.push("</div>");
      }
      rowsBox.style.transform = "translateY(" + first * h + "px)";
      rowsBox.innerHTML = rows.length ? html.join("") : "<div class='txb-empty'>No neuron matches these filters.</div>";
    }

    var pending = false;
    list.addEventListener("scroll", function () {
      if (pending) return;
      pending = true;
      requestAnimationFrame(function () { pending = false; draw(); });
    });
    head.addEventListener("click", function (e) {
      var key = e.target.getAttribute && e.target.getAttribute("data-key");
      if (!key) return;
      var col = columns.filter(function (c) { return c.key === key; })[0];
      if (state.sort === key) state.dir = -state.dir;
      else { state.sort = key; state.dir = col.type === "text" || col.type === "state" || key === "neuron" || key === "mass_rank" ? 1 : -1; }
      refresh();
    });
    rowsBox.addEventListener("click", function (e) {
      var row = e.target.closest && e.target.closest("[data-neuron]");
      if (row) location.hash = "neuron=" + row.getAttribute("data-neuron");
    });
    stageSelect.addEventListener("change", function () { state.stage = Number(stageSelect.value); refresh(); if (state.view === "neuron") showNeuron(state.neuron); });
    search.addEventListener("input", function () { state.query = search.value.trim().toLowerCase(); refresh(); });
    stateBox.addEventListener("change", function (e) {
      var s = e.target.getAttribute("data-state");
      if (s !== null) { state.states[s] = e.target.checked; refresh(); }
    });
    controls.addEventListener("input", function (e) {
      var key = e.target.getAttribute("data-key"), bound = e.target.getAttribute("data-bound");
      if (!key) return;
      var target = bound === "min" ? state.min : state.max;
      if (e.target.value === "" || isNaN(Number(e.target.value))) delete target[key];
      else target[key] = Number(e.target.value);
      refresh();
    });

    // -- one neuron -------------------------------------------------------------------
    function loadNeuron(n) {
      if (options.loadNeuron) return Promise.resolve(options.loadNeuron(n));
      return Promise.resolve(doc.neurons ? doc.neurons[n] : null);
    }

    function summaryOf(s, n) {
      var i = rowOf[s][n];
      if (i === undefined) return null;
      var row = {};
      Object.keys(table).forEach(function (k) { row[k] = table[k][i]; });
      row.reference = doc.reference_names ? doc.reference_names[s] : null;
      return row;
    }

    function facts(summary) {
      var items = [
        ["state", summary.state === null ? "–" : "<span class='txb-state txb-state-" + esc(summary.state) + "'>" + esc(summary.state) + "</span>"],
        summary.reference ? ["Hellinger vs " + esc(summary.reference), esc(fmt(summary.hellinger, "float"))] : ["compared with", "<span class='txb-muted'>no stage</span>"],
        ["activation mass", esc(fmt(summary.mass, "mass"))],
        ["mass rank", esc(fmt(summary.mass_rank, "int")) + " <span class='txb-muted'>of " + fmt(doc.n_neurons, "int") + "</span>"],
        ["length", esc(fmt(summary.length, "int")) + " <span class='txb-muted'>" + esc(doc.kind) + " features</span>"],
      ];
      return "<dl class='txb-facts'>" + items.map(function (f) { return "<dt>" + f[0] + "</dt><dd>" + f[1] + "</dd>"; }).join("") + "</dl>";
    }

    function bars(rows, peak, previous) {
      if (!rows || !rows.length) return "<p class='txb-muted'>no preferred features</p>";
      return "<table class='txb-bars'><tbody>" + rows.map(function (r) {
        var label = r[0], p = r[1], n = r[2];
        var isNew = previous && previous.indexOf(label) < 0;
        return "<tr><td class='txb-label' title='" + esc(label) + "'>" + esc(label) + "</td>" +
          "<td><div class='txb-bar" + (isNew ? " txb-new" : "") + "' style='width:" + (100 * p / peak).toFixed(1) + "%'></div></td>" +
          "<td class='txb-num'>" + p.toFixed(3) + "</td><td class='txb-num' title='count'>" + fmt(n, "int") + "</td></tr>";
      }).join("") + "</tbody></table>";
    }

    function contexts(rows) {
      if (!rows || !rows.length) return "<p class='txb-muted'>no contexts</p>";
      var top = Math.max.apply(null, rows.map(function (r) { return Math.abs(r[0]); })) || 1;
      return "<ol class='txb-ctx'>" + rows.map(function (r) {
        var act = r[0], text = r[1], at = r[2], len = r[3];
        var alpha = Math.max(0.12, Math.abs(act) / top).toFixed(2);
        var body = text === null ? "<span class='txb-muted'>unit " + esc(at) + " (no text recorded)</span>"
          : esc(text.slice(0, at)) + "<mark style='background: rgba(255, 140, 0, " + alpha + ")'>" + esc(text.slice(at, at + len)) + "</mark>" + esc(text.slice(at + len));
        return "<li><span class='txb-act' title='activation'>" + act.toFixed(3) + "</span>" + body + "</li>";
      }).join("") + "</ol>";
    }

    function change(steps) {
      if (!steps || !steps.length) return "";
      return "<section class='txb-change'><h3>What changed <span class='txb-muted'>(" + esc(doc.kind_words[doc.kind] || doc.kind) + ")</span></h3><ul>" + steps.map(function (s) {
        var tags = function (list, cls) { return list.length ? list.map(function (f) { return "<span class='txb-tag " + cls + "'>" + esc(f) + "</span>"; }).join(" ") : "<span class='txb-muted'>none</span>"; };
        var to = doc.reference === "previous" ? summaryOf(s.to, state.neuron) : null;
        return "<li><b>" + esc(stages[s.from]) + " → " + esc(stages[s.to]) + "</b>" +
          (to ? ": " + esc(to.state) + (to.hellinger !== null ? ", Hellinger " + esc(fmt(to.hellinger, "float")) : "") : "") +
          "<br>gained " + tags(s.gained, "txb-gain") + "<br>lost " + tags(s.lost, "txb-loss") + "</li>";
      }).join("") + "</ul></section>";
    }

    function renderNeuron(n, detail) {
      var pos = state.order.indexOf(rowOf[state.stage][n]);
      var nav = "<div class='txb-nav'><a href='#neurons' data-action='back'>← all neurons</a>" +
        "<button type='button' data-action='prev'" + (pos <= 0 ? " disabled" : "") + ">← previous</button>" +
        "<button type='button' data-action='next'" + (pos < 0 || pos >= state.order.length - 1 ? " disabled" : "") + ">next →</button>" +
        "<span class='txb-muted'>" + (pos >= 0 ? (pos + 1).toLocaleString("en-US") + " of " + state.order.length.toLocaleString("en-US") + " in the table's order" : "not in the filtered table") + "</span></div>";
      if (!detail) {
        neuronView.innerHTML = nav + "<h2>Neuron " + esc(n) + "</h2><p class='txb-empty'>No such neuron: the layer has " + fmt(doc.n_neurons, "int") + " neurons (0 to " + fmt(doc.n_neurons - 1, "int") + ").</p>";
        return;
      }
      var kinds = doc.kinds;
      var shownStages = doc.same_layer ? stages.map(function (_, s) { return s; }) : [state.stage];
      var cards = shownStages.map(function (s) {
        var name = stages[s];
        var summary = summaryOf(s, n);
        var html = "<div class='txb-stage' data-stage='" + s + "'><h3>" + esc(name) + "</h3>";
        if (!summary) return html + "<p class='txb-muted'>no neuron " + esc(n) + " here (" + fmt(doc.widths[s], "int") + " neurons)</p></div>";
        html += facts(summary);
        kinds.forEach(function (kind) {
          var perStage = detail.features[kind];
          if (!perStage || !perStage[s]) return;
          var peak = 0;  // bars scaled within the stage: p values differ by orders of magnitude between stages
          (perStage[s] || []).forEach(function (r) { peak = Math.max(peak, r[1]); });
          var prev = s > 0 && perStage[s - 1] ? perStage[s - 1].map(function (r) { return r[0]; }) : null;
          html += "<h4>top " + esc(doc.kind_words[kind] || kind) + " <span class='txb-muted'>(p, count" + (s > 0 ? "; green: not in " + esc(stages[s - 1]) + "'s top" : "") + ")</span></h4>" + bars(perStage[s], peak || 1, prev);
        });
        if (detail.contexts) html += "<h4>top activating contexts</h4>" + contexts(detail.contexts[s]);
        return html + "</div>";
      }).join("");
      var note = detail.contexts ? "" : "<p class='txb-muted'>These profiles hold no contexts: record with contexts to see the top activating text here.</p>";
      neuronView.innerHTML = nav + "<h2>Neuron " + esc(n) + "</h2>" + note +
        (doc.same_layer ? "" : "<p class='txb-muted'>The profiles are different layers or models: neuron " + esc(n) + " of " + esc(stages[state.stage]) + " alone (choose the profile above the table).</p>") +
        "<div class='txb-stages' style='grid-template-columns: repeat(" + shownStages.length + ", minmax(17em, 1fr))'>" + cards + "</div>" +
        change(detail.change);
    }

    function showNeuron(n) {
      state.neuron = n;
      return loadNeuron(n).then(function (detail) {
        if (state.neuron === n) renderNeuron(n, detail);
      });
    }

    neuronView.addEventListener("click", function (e) {
      var action = e.target.getAttribute && e.target.getAttribute("data-action");
      if (action === "prev" || action === "next") step(action === "next" ? 1 : -1);
    });

    function step(delta) {
      var pos = state.order.indexOf(rowOf[state.stage][state.neuron]);
      var next = state.order[pos + delta];
      if (pos >= 0 && next !== undefined) location.hash = "neuron=" + table.neuron[next];
    }

    document.addEventListener("keydown", function (e) {
      if (state.view !== "neuron" || e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
      if (e.key === "ArrowRight" || e.key === "j") step(1);
      if (e.key === "ArrowLeft" || e.key === "k") step(-1);
    });

    // -- routes -------------------------------------------------------------------------
    function show(view) {
      state.view = view;
      listView.hidden = view !== "list";
      neuronView.hidden = view !== "neuron";
      if (options.onView) options.onView(view);  // first: the page may have to show the browser's container
      if (view === "list") draw();
    }

    // Rows are drawn for the list's height: draw again when it changes (a window resized, a container shown).
    if (typeof ResizeObserver !== "undefined") new ResizeObserver(function () { if (!listView.hidden) draw(); }).observe(list);

    function route(hash) {
      hash = (hash === undefined ? location.hash : hash).replace(/^#/, "");
      var m = /^neuron=(\d+)$/.exec(hash);
      if (m) {
        show("neuron");
        showNeuron(Number(m[1]));
        window.scrollTo(0, 0);
        return true;
      }
      if (hash === "neurons") { show("list"); return true; }
      return false;
    }

    refresh();
    return { route: route, refresh: refresh, state: state, showNeuron: showNeuron };
  }

  // The document a page embeds with txray.browser.render_browser: JSON, gzip, base64 (a tenth of the size).
  function readEmbedded(id) {
    var node = document.getElementById(id);
    if (!node) return Promise.reject(new Error("txray browser: no data element #" + id));
    return decode(node.textContent);
  }

  // JSON from gzip in base64 (what txray embeds in pages), as a promise.
  function decode(text) {
    var raw = atob(text.trim()), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text().then(JSON.parse);
  }

  global.TxrayBrowser = { mount: mount, readEmbedded: readEmbedded, decode: decode };
})(window);
